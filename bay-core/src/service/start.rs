//! Start and restore (bay-api.md §5.5–5.7): `POST /ship/{id}/start`, the restore shared with
//! create step 2, admission to `MAX_SHIP_NUM`, and the bring-up (container, readiness,
//! RUNNING) shared with new ships.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::guards::Slot;
use super::ttl::{grant, recompute_deadline, recompute_deadline_row};
use super::{Ship, ShipService, StopCause, wanted};
use crate::admission::{AdmissionError, AtLimit};
use crate::config::MaxShipBehavior;
use crate::driver::{ContainerInfo, ShipContainerRequest};
use crate::error::{Error, Result};
use crate::model::{ShipStatus, Timestamp};
use crate::ship_client::ShipEndpoint;
use crate::store::{ShipRow, q};

/// How long an aborted start waits for the engine's answer to its container create.
const CREATE_ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What attaching a session to a RUNNING ship came to.
enum Attach {
    Done,
    NoFreeSlot,
    NotRunning,
}

impl ShipService {
    /// `POST /ship/{id}/start`: restore a STOPPED ship, or attach the caller to a RUNNING one.
    /// Like [`ShipService::create_ship`], the work is owned by the service: a caller that goes
    /// away leaves the slot queue, but never interrupts a restore that has begun.
    pub async fn start_ship(&self, ship_id: &str, session: &str, ttl: Option<i64>) -> Result<Ship> {
        let ttl = ttl.unwrap_or(self.inner.config.default_ship_ttl);
        self.check_ttl(ttl)?;
        let caller = CancellationToken::new();
        let _leave = caller.clone().drop_guard();
        let (this, id, sid) = (self.clone(), ship_id.to_owned(), session.to_owned());
        self.owned(async move { this.start_owned(&id, &sid, ttl, &caller).await })
            .await
    }

    async fn start_owned(
        &self,
        ship_id: &str,
        session: &str,
        ttl: i64,
        caller: &CancellationToken,
    ) -> Result<Ship> {
        // The status may change between a look and the act (another start won the race): look
        // again, a bounded number of times.
        for _ in 0..3 {
            let ship = self
                .refresh(ship_id)
                .await?
                .filter(|s| !s.warm)
                .ok_or(Error::ShipNotFoundOrCreating)?;
            if ship.status().can_restore() {
                info!(ship.id = %ship_id, session.id = %session, "starting a stopped ship");
                if self.restore(ship_id, session, ttl, caller).await? {
                    return self.get_ship(ship_id).await;
                }
            } else if ship.status().can_attach() {
                let _g = wanted(caller, self.inner.ship_locks.lock(ship_id)).await?;
                match self.attach(ship_id, session, ttl).await? {
                    Attach::Done => {
                        self.inner.reaper.notify_one();
                        return self.get_ship(ship_id).await;
                    }
                    Attach::NoFreeSlot => return Err(Error::NoFreeSlot),
                    Attach::NotRunning => {}
                }
            } else {
                return Err(Error::ShipNotFoundOrCreating);
            }
        }
        Err(Error::ShipNotFoundOrCreating)
    }

    /// A RUNNING ship: grant(T) to a related session, or to a new one when a slot is free.
    async fn attach(&self, ship_id: &str, session: &str, ttl: i64) -> Result<Attach> {
        let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
        Ok(self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(Attach::NotRunning);
                };
                if !ship.status().can_attach() {
                    return Ok(Attach::NotRunning);
                }
                let related = q::relation(c, &sid, &id)?.is_some();
                if !related
                    && q::active_count(c, &id, now.micros())? >= i64::from(ship.max_session_num)
                {
                    return Ok(Attach::NoFreeSlot);
                }
                grant(c, &id, &sid, ttl, now, max_ttl)?;
                recompute_deadline(c, &mut ship, now)?;
                Ok(Attach::Done)
            })
            .await?)
    }

    /// Restores a STOPPED ship with its stored spec and data, then grants `ttl` to `session`.
    /// Returns `false` (nothing done) when the ship is gone or no longer STOPPED.
    ///
    /// One start per ship at a time (the start lock). The slot is awaited **without** the ship
    /// lock, so a permanent delete can abort the queued restore at once (its token), and a
    /// caller that leaves takes the request out of the queue. From the slot on, the restore is
    /// the service's: it ends RUNNING, or STOPPED with its container removed.
    pub(super) async fn restore(
        &self,
        ship_id: &str,
        session: &str,
        ttl: i64,
        caller: &CancellationToken,
    ) -> Result<bool> {
        let _start = wanted(caller, self.inner.start_locks.lock(ship_id)).await?;
        let Some(owner) = self.claim(ship_id) else {
            return Ok(false);
        };
        {
            let _g = wanted(caller, self.inner.ship_locks.lock(ship_id)).await?;
            let Some(ship) = self.refresh(ship_id).await? else {
                return Ok(false);
            };
            if !ship.status().can_restore() {
                return Ok(false);
            }
            // A container an earlier stop could not remove goes first: it holds the slot, and
            // the new container takes its name.
            if ship.container_id.is_some() {
                self.finish_stop_locked(&ship)
                    .await
                    .map_err(|e| Error::StartFailed(e.to_string()))?;
            }
        }
        let slot: Slot = tokio::select! {
            biased;
            () = owner.abort.cancelled() => return Err(self.abort_reason()),
            slot = self.admit(ship_id, caller) => slot?,
        };
        let _g = self.inner.ship_locks.lock(ship_id).await;
        if owner.abort.is_cancelled() {
            return Err(self.abort_reason());
        }
        let Some(mut ship) = self.refresh(ship_id).await? else {
            return Ok(false);
        };
        if !ship.status().can_restore() || ship.container_id.is_some() {
            return Ok(false);
        }
        ship.set_status(ShipStatus::Creating, Self::now());
        ship.ttl = ttl;
        let save = ship.clone();
        self.inner.store.tx(move |c| q::save_ship(c, &save)).await?;
        slot.hand_to_record();
        match self.bring_up(&ship, session, ttl, &owner.abort).await {
            Ok(()) => Ok(true),
            Err(e) => {
                warn!(ship.id = %ship_id, error = %e, "restoring the ship failed");
                match self.refresh(ship_id).await {
                    Ok(Some(row)) => {
                        self.stop_locked(row, StopCause::Crashed).await;
                        // A container whose create answer never came; if the engine cannot
                        // say now, the orphan check removes it later.
                        if let Err(f) = self.remove_containers_of(ship_id, None).await {
                            warn!(ship.id = %ship_id, error = %f.reason, "left for the orphan check");
                        }
                    }
                    Ok(None) => self.inner.admission.release(ship_id),
                    // Left CREATING without an owner: the status checker stops it.
                    Err(_) => {}
                }
                Err(match e {
                    Error::Driver(d) => Error::StartFailed(d.to_string()),
                    other => other,
                })
            }
        }
    }

    /// Waits for (or, in reject mode, tries once for) a slot for `ship_id`. Warm-pool ships
    /// yield to it: when the limit is reached and the pool holds slots, one warm ship is
    /// retired first (its slot goes to this request, or to the head of the queue). Only the
    /// wait in the queue follows `caller`: once a warm ship is retired for it, the request
    /// goes on without its caller, like any request that does not have to wait.
    pub(super) async fn admit(&self, ship_id: &str, caller: &CancellationToken) -> Result<Slot> {
        let _demand = self.demand();
        if self.pool_size() > 0 {
            // A slot freed by a retire is not reserved: a concurrent request may take it, so
            // retire again while pool ships are left rather than refuse or queue.
            loop {
                if self
                    .inner
                    .admission
                    .acquire(ship_id, AtLimit::Reject)
                    .await
                    .is_ok()
                {
                    return Ok(Slot::new(&self.inner, ship_id));
                }
                if !self.retire_for_demand().await {
                    break;
                }
            }
        }
        let c = &self.inner.config;
        let at_limit = match c.behavior_after_max_ship {
            MaxShipBehavior::Reject => AtLimit::Reject,
            MaxShipBehavior::Wait => AtLimit::Wait(c.max_ship_wait),
        };
        match wanted(caller, self.inner.admission.acquire(ship_id, at_limit)).await? {
            Ok(()) => Ok(Slot::new(&self.inner, ship_id)),
            Err(AdmissionError::Timeout) => Err(Error::SlotWaitTimeout),
            Err(AdmissionError::Full) => Err(Error::ShipLimitReached {
                retry_after_secs: self.retry_after().await,
            }),
        }
    }

    /// Seconds until the earliest deadline among RUNNING ships, clamped to 1 … 3600; 5 if none.
    async fn retry_after(&self) -> u64 {
        match self.inner.store.tx(q::next_deadline).await {
            Ok(Some(d)) => {
                let secs = Timestamp::from_micros(d).secs_until_ceil(Self::now());
                u64::try_from(secs.clamp(1, 3600)).unwrap_or(5)
            }
            _ => 5,
        }
    }

    /// Creates the container, waits for readiness and makes the ship RUNNING with the session's
    /// relation granted. The ship lock must be held, the row is CREATING and holds the slot.
    /// `abort` (a permanent delete, the shutdown) ends it promptly with an error; on any error
    /// the caller cleans up. The container id is stored as soon as the engine answers.
    pub(super) async fn bring_up(
        &self,
        row: &ShipRow,
        session: &str,
        ttl: i64,
        abort: &CancellationToken,
    ) -> Result<()> {
        let info = self.create_container(row, ttl, abort).await?;
        tokio::select! {
            biased;
            () = abort.cancelled() => Err(self.abort_reason()),
            r = self.ready_and_running(row, &info, session, ttl) => r,
        }
    }

    /// Asks the engine for the ship's container and records its id. An abort does not drop
    /// the engine's create half-way: the engine would finish it anyway, unseen, and the
    /// container would hold the ship's data. The answer is awaited for a short grace, so the
    /// container is known and removed with the ship; one that answers even later is found by
    /// its labels (now, or by the status checker).
    pub(super) async fn create_container(
        &self,
        row: &ShipRow,
        ttl: i64,
        abort: &CancellationToken,
    ) -> Result<ContainerInfo> {
        if abort.is_cancelled() {
            return Err(self.abort_reason());
        }
        let request = ShipContainerRequest {
            ship_id: row.id.clone(),
            spec: row.spec(),
            auth_token: row.auth_token.clone(),
            ttl,
        };
        let create = self.inner.driver.create_ship_container(&request);
        tokio::pin!(create);
        let answer = tokio::select! {
            biased;
            r = &mut create => r,
            () = abort.cancelled() => {
                let grace = self.inner.config.ship_health_check_timeout.min(CREATE_ANSWER_GRACE);
                if let Ok(Ok(info)) = tokio::time::timeout(grace, create).await {
                    let _ = self.record_container(&row.id, &info).await;
                }
                return Err(self.abort_reason());
            }
        };
        let info = answer?;
        self.record_container(&row.id, &info).await?;
        Ok(info)
    }

    async fn record_container(&self, ship_id: &str, info: &ContainerInfo) -> Result<()> {
        let (id, cid, ip) = (
            ship_id.to_owned(),
            info.container_id.clone(),
            info.ip_address.clone(),
        );
        self.inner
            .store
            .tx(move |c| {
                if let Some(mut ship) = q::ship(c, &id)? {
                    ship.container_id = Some(cid);
                    ship.ip_address = Some(ip);
                    ship.updated_at = Timestamp::now().micros();
                    q::save_ship(c, &ship)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Waits until the agent of a new container answers `/health` (within
    /// `SHIP_HEALTH_CHECK_TIMEOUT`), and returns its endpoint.
    pub(super) async fn agent_ready(
        &self,
        row: &ShipRow,
        info: &ContainerInfo,
    ) -> Result<ShipEndpoint> {
        let endpoint = ShipEndpoint::new(
            &info.ip_address,
            self.inner.config.ship_container_port,
            &row.auth_token,
        );
        let budget = self.inner.config.ship_health_check_timeout;
        if !self
            .inner
            .client
            .wait_ready(&endpoint, budget, self.inner.config.ship_ready_poll)
            .await
        {
            return Err(Error::NotReady {
                secs: budget.as_secs(),
            });
        }
        Ok(endpoint)
    }

    async fn ready_and_running(
        &self,
        row: &ShipRow,
        info: &ContainerInfo,
        session: &str,
        ttl: i64,
    ) -> Result<()> {
        self.agent_ready(row, info).await?;
        let (id, sid, max_ttl) = (row.id.clone(), session.to_owned(), self.max_ttl());
        let found = self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(false);
                };
                grant(c, &id, &sid, ttl, now, max_ttl)?;
                ship.set_status(ShipStatus::Running, now);
                ship.ever_running = true;
                recompute_deadline_row(c, &mut ship, now)?;
                q::save_ship(c, &ship)?;
                Ok(true)
            })
            .await?;
        if !found {
            return Err(Error::DeletedWhileStarting);
        }
        self.inner.reaper.notify_one();
        info!(ship.id = %row.id, container.id = %info.container_id, "ship is running");
        Ok(())
    }
}
