//! The warm pool (`WARM_POOL_SIZE`): ships created, started and healthy with the default spec
//! and no session, handed to creates that would otherwise start a new container.
//!
//! A pool ship is a record with `warm = true`:
//!
//! * **filling** — CREATING, its start owned by the refill task (like a new ship's by its
//!   create): container, readiness, then `POST /warmup` so the agent starts a spare Python
//!   interpreter. A failed or aborted fill is discarded like a new ship that never became ready.
//! * **ready** — RUNNING, no relation, no deadline: the reaper ignores it (it never expires while
//!   idle), listings and `GET /ship/{id}` do not show it, and no session can join it.
//! * **claimed** — one transaction, under the ship's lock, checks that it is still warm and
//!   RUNNING, clears the flag, sets the requester's ttl and `max_session_num`, grants the
//!   relation and the deadline: from then on it is an ordinary ship. The check is in the
//!   database, so no ship is handed out twice, also across a restart.
//!
//! The pool holds admission slots like any ship (it counts against `MAX_SHIP_NUM`) and yields
//! to demand: while an admission is in progress the pool takes no slot, and an admission that
//! finds the limit reached retires one warm ship first ([`ShipService::admit`]). The refill
//! task is service-owned: each fill runs through [`ShipService::owned`], sleeps while the pool
//! is full or there is no room, and backs off exponentially after a failure.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::create::new_ship_row;
use super::guards::{InflightGuard, Slot};
use super::ttl::{grant, recompute_deadline};
use super::{CreateShip, Inner, Ship, ShipService};
use crate::driver::DriverError;
use crate::error::{Error, Result};
use crate::model::{EffectiveSpec, ShipStatus, SpecRequest, Timestamp};
use crate::ship_client::{ShipEndpoint, ShipMethod, Warmup};
use crate::store::{ShipRow, q};

/// First pause after a failed fill; doubled after each further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest pause between fill attempts after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the refill task sleeps without a wake-up (a safety net, not a poll).
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Bound of the `POST /warmup` call.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the interpreter start asked for right after a claim ([`ShipService::prepare_session`]).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one pass of the refill task came to.
enum Refill {
    /// The pool has its size.
    Full,
    /// No free slot, or real demand is being admitted: wait for room.
    NoRoom,
    /// A fill failed: back off.
    Failed,
}

/// An admission in progress ([`crate::admission::Admission::begin_demand`]): the pool takes
/// no permit meanwhile. Its end wakes the pool.
pub(super) struct Demand<'a>(&'a Inner);

impl Drop for Demand<'_> {
    fn drop(&mut self) {
        self.0.admission.end_demand();
        self.0.pool_wake.notify_one();
    }
}

impl ShipService {
    /// `WARM_POOL_SIZE`.
    pub(super) fn pool_size(&self) -> usize {
        usize::try_from(self.inner.config.warm_pool_size).unwrap_or(usize::MAX)
    }

    /// The spec of every pool ship: the configured defaults.
    fn pool_spec(&self) -> EffectiveSpec {
        self.effective_spec(&SpecRequest::default())
    }

    /// Whether a create that starts a new container may get a pool ship instead: the pool is
    /// on and the request's effective spec is the default one.
    pub(super) fn fits_pool(&self, req: &CreateShip) -> bool {
        self.pool_size() > 0 && self.effective_spec(&req.spec) == self.pool_spec()
    }

    pub(super) fn demand(&self) -> Demand<'_> {
        self.inner.admission.begin_demand();
        Demand(&self.inner)
    }

    /// Hands a ready pool ship to `session` (see the module documentation), or `None` when no
    /// pool ship is ready. A pool ship whose container is gone is retired on the way.
    pub(super) async fn claim_warm(&self, session: &str, req: &CreateShip) -> Result<Option<Ship>> {
        let ready = self.warm_ships(ShipStatus::Running).await?;
        for candidate in ready {
            let id = candidate.id;
            let _g = self.inner.ship_locks.lock(&id).await;
            let Some(row) = self.refresh(&id).await? else {
                continue;
            };
            // Made under other default limits (the status check removes it): not this spec.
            if !(row.warm && row.status().can_attach() && row.spec() == self.pool_spec()) {
                continue;
            }
            if let Some(cid) = row.container_id.as_deref() {
                match self.inner.driver.is_container_running(cid).await {
                    Ok(false) | Err(DriverError::NotFound(_)) => {
                        info!(ship.id = %id, "a warm ship's container is gone; replacing it");
                        self.discard_new_ship(&id).await;
                        self.inner.pool_wake.notify_one();
                        continue;
                    }
                    // Unknown: like a reuse, the ship is assumed to run.
                    Ok(true) | Err(_) => {}
                }
            }
            let (sid, ttl, max, max_ttl) = (
                session.to_owned(),
                req.ttl,
                req.max_session_num,
                self.max_ttl(),
            );
            let cid = id.clone();
            let port = self.inner.config.ship_container_port;
            let claimed = self
                .inner
                .store
                .tx(move |c| {
                    let Some(mut ship) = q::ship(c, &cid)? else {
                        return Ok(None);
                    };
                    if !(ship.warm && ship.status().can_attach()) {
                        return Ok(None);
                    }
                    let now = Timestamp::now();
                    ship.warm = false;
                    ship.ever_running = true;
                    ship.ttl = ttl;
                    ship.max_session_num = max;
                    // To its session the ship is new: it was created for this request.
                    ship.created_at = now.micros();
                    ship.updated_at = now.micros();
                    q::save_ship(c, &ship)?;
                    grant(c, &cid, &sid, ttl, now, max_ttl)?;
                    recompute_deadline(c, &mut ship, now)?;
                    let rels = q::relations_of_ship(c, &cid)?;
                    let endpoint = ship
                        .ip_address
                        .as_deref()
                        .map(|a| ShipEndpoint::new(a, port, &ship.auth_token));
                    Ok(Some((Self::ship_view(&ship, &rels, now), endpoint)))
                })
                .await?;
            if let Some((view, endpoint)) = claimed {
                info!(ship.id = %id, session.id = %session, "claimed a warm ship");
                self.inner.reaper.notify_one();
                self.inner.pool_wake.notify_one();
                if let Some(endpoint) = endpoint {
                    self.prepare_session(&id, endpoint, session);
                }
                return Ok(Some(view));
            }
        }
        Ok(None)
    }

    /// After a claim: asks the ship's agent to start the session's Python interpreter now
    /// (`POST /ipython/create_kernel`; the agent hands it the spare `/warmup` started), on a
    /// task of its own, so that the session's first `ipython/exec` finds it running instead of
    /// waiting for the session's user and the adoption. The claim's answer does not wait for
    /// it; an `ipython/exec` arriving meanwhile waits for the same start in the agent. Best
    /// effort: after a failure the first call starts the interpreter, as without a pool. The
    /// ship counts as busy for the reaper until the call ends; the service's shutdown abandons it.
    fn prepare_session(&self, ship_id: &str, endpoint: ShipEndpoint, session: &str) {
        let busy = InflightGuard::enter(&self.inner, ship_id);
        let (client, halt) = (self.inner.client.clone(), self.inner.halt.clone());
        let shutdown = self.inner.shutdown.clone();
        let (id, sid) = (ship_id.to_owned(), session.to_owned());
        tokio::spawn(async move {
            let _busy = busy;
            let start = client.exec(
                &endpoint,
                &sid,
                ShipMethod::Post,
                "/ipython/create_kernel",
                None,
                PREPARE_TIMEOUT,
            );
            tokio::select! {
                () = halt.cancelled() => {}
                () = shutdown.cancelled() => {}
                r = start => match r {
                    Ok(_) => debug!(ship.id = %id, session.id = %sid, "the claimed ship's Python interpreter is ready"),
                    Err(e) => debug!(ship.id = %id, session.id = %sid, error = %e, "could not start the claimed ship's Python interpreter ahead; its first call will"),
                },
            }
        });
    }

    /// The pool ships in `status`.
    pub(super) async fn warm_ships(&self, status: ShipStatus) -> Result<Vec<ShipRow>> {
        Ok(self
            .inner
            .store
            .tx(move |c| q::warm_ships(c, status))
            .await?)
    }

    /// Retires one pool ship so that its slot serves real demand: a ready one if any (removed
    /// with its container and data), else a filling one (its fill is aborted and cleans up).
    /// Runs on a service-owned task, so a caller that leaves never interrupts a removal.
    /// Returns whether a pool ship gave its slot back.
    pub(super) async fn retire_for_demand(&self) -> bool {
        let this = self.clone();
        self.owned(async move { Ok(this.retire_one().await) })
            .await
            .unwrap_or(false)
    }

    async fn retire_one(&self) -> bool {
        let Ok(ready) = self.warm_ships(ShipStatus::Running).await else {
            return false;
        };
        // The newest first: the oldest have had longest to warm up.
        for candidate in ready.iter().rev() {
            if self
                .retire_ready(
                    &candidate.id,
                    "retiring a warm ship for a request at the limit",
                )
                .await
            {
                return true;
            }
        }
        let Ok(filling) = self.warm_ships(ShipStatus::Creating).await else {
            return false;
        };
        for candidate in filling {
            if !self.abort_start(&candidate.id) {
                continue;
            }
            info!(ship.id = %candidate.id, "aborting a warm ship's start for a request at the limit");
            // The fill holds the ship's lock until it has cleaned up.
            let _g = self.inner.ship_locks.lock(&candidate.id).await;
            if !self.inner.admission.holds(&candidate.id) {
                return true;
            }
        }
        false
    }

    /// Removes the ready pool ship `id` with its container and data, unless a claim took it
    /// meanwhile; whether it is gone. Takes the ship's lock.
    async fn retire_ready(&self, id: &str, why: &'static str) -> bool {
        let _g = self.inner.ship_locks.lock(id).await;
        let Ok(Some(row)) = self.refresh(id).await else {
            return false;
        };
        if !(row.warm && row.status().can_attach()) {
            return false;
        }
        info!(ship.id = %id, "{why}");
        self.discard_new_ship(id).await
    }

    /// Ready pool ships made with other default limits, and those beyond `WARM_POOL_SIZE` —
    /// made before a restart with another configuration, a smaller pool or none — are removed
    /// (the surplus newest first): they would hold their slots for ever, since nothing else
    /// claims, expires or retires them. Part of the status check.
    pub(super) async fn trim_pool(&self) {
        let Ok(ready) = self.warm_ships(ShipStatus::Running).await else {
            return;
        };
        // Made under other default limits (before a restart with a changed configuration):
        // a create would get limits it did not ask for.
        let spec = self.pool_spec();
        let (current, stale): (Vec<_>, Vec<_>) =
            ready.into_iter().partition(|row| row.spec() == spec);
        for candidate in &stale {
            self.retire_ready(
                &candidate.id,
                "removing a warm ship made with other default limits",
            )
            .await;
        }
        let surplus = current.len().saturating_sub(self.pool_size());
        for candidate in current.iter().rev().take(surplus) {
            self.retire_ready(&candidate.id, "removing a warm ship beyond WARM_POOL_SIZE")
                .await;
        }
    }

    /// The refill task: keeps `WARM_POOL_SIZE` pool ships, ready or filling, while there is
    /// room and no demand waits. Ends with the service.
    pub(super) async fn pool_loop(self) {
        if self.pool_size() == 0 {
            return;
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let outcome = self.refill().await;
            let pause = match outcome {
                Refill::Full | Refill::NoRoom => {
                    backoff = BACKOFF_MIN;
                    POOL_IDLE
                }
                Refill::Failed => {
                    let pause = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    pause
                }
            };
            let room = matches!(outcome, Refill::NoRoom);
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                // After a failure only the back-off ends the pause: a fault must not spin.
                () = self.inner.pool_wake.notified(), if !matches!(outcome, Refill::Failed) => {}
                () = self.inner.admission.freed(), if room => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn refill(&self) -> Refill {
        loop {
            if self.inner.shutdown.is_cancelled() {
                return Refill::NoRoom;
            }
            if self.inner.admission.demand() > 0 {
                return Refill::NoRoom;
            }
            let Some(count) = self.pool_count().await else {
                return Refill::Failed;
            };
            if count >= self.pool_size() {
                return Refill::Full;
            }
            let this = self.clone();
            match self.owned(async move { this.fill_one().await }).await {
                Ok(true) => {}
                Ok(false) => return Refill::NoRoom,
                // Aborted for a request at the limit: not an engine fault, so no back-off —
                // the slot went to demand.
                Err(Error::DeletedWhileStarting) => return Refill::NoRoom,
                Err(e) => {
                    warn!(error = %e, "filling the warm pool failed; backing off");
                    return Refill::Failed;
                }
            }
        }
    }

    /// Pool ships ready or being filled. A fill that ended without cleaning up (the engine
    /// refused) left a CREATING pool ship nobody owns: it is removed now, and `None` (back off)
    /// while the engine still refuses.
    async fn pool_count(&self) -> Option<usize> {
        let rows = match self
            .inner
            .store
            .tx(|c| {
                let mut rows = q::warm_ships(c, ShipStatus::Running)?;
                rows.extend(q::warm_ships(c, ShipStatus::Creating)?);
                Ok(rows)
            })
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot count the warm pool");
                return None;
            }
        };
        let mut count = 0;
        for row in rows {
            if row.status().can_attach() || self.is_owned(&row.id) {
                count += 1;
                continue;
            }
            let _g = self.inner.ship_locks.lock(&row.id).await;
            match self.refresh(&row.id).await {
                Ok(Some(row)) if row.status().is_starting() && !self.is_owned(&row.id) => {
                    if !self.discard_new_ship(&row.id).await {
                        return None;
                    }
                }
                Ok(Some(_)) => count += 1,
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        Some(count)
    }

    /// Starts one pool ship. `Ok(false)`: no free slot (or demand arrived). On failure the
    /// ship is discarded like a new ship that never became ready.
    async fn fill_one(&self) -> Result<bool> {
        let ship_id = uuid::Uuid::new_v4().to_string();
        let owner = self
            .claim(&ship_id)
            .ok_or_else(|| Error::CreateFailed(format!("ship id {ship_id} is taken")))?;
        // Only a free permit nobody asks for: never one given back for a request.
        if !self.inner.admission.try_acquire_spare(&ship_id) {
            return Ok(false);
        }
        let slot = Slot::new(&self.inner, &ship_id);
        let row = new_ship_row(
            &ship_id,
            &self.pool_spec(),
            self.inner.config.default_ship_ttl,
            1,
            true,
        );
        let _g = self.insert_new_ship(&row, slot).await?;
        debug!(ship.id = %ship_id, "filling the warm pool");
        let up = async {
            let info = self.create_container(&row, row.ttl, &owner.abort).await?;
            tokio::select! {
                biased;
                () = owner.abort.cancelled() => Err(self.abort_reason()),
                r = self.warm_up(&row, &info) => r,
            }
        };
        match up.await {
            Ok(()) => {
                info!(ship.id = %ship_id, "a warm ship is ready");
                Ok(true)
            }
            Err(e) => {
                self.discard_new_ship(&ship_id).await;
                Err(match e {
                    Error::Driver(d) => Error::CreateFailed(d.to_string()),
                    other => other,
                })
            }
        }
    }

    /// Readiness, the agent's warm-up (an agent without `/warmup` is fine), then RUNNING —
    /// still warm, without relation or deadline.
    async fn warm_up(&self, row: &ShipRow, info: &crate::driver::ContainerInfo) -> Result<()> {
        let endpoint = self.agent_ready(row, info).await?;
        match self.inner.client.warmup(&endpoint, WARMUP_TIMEOUT).await {
            Ok(Warmup::Started) => {}
            Ok(Warmup::NotSupported) => {
                debug!(ship.id = %row.id, "the agent has no /warmup; the first Python call starts the interpreter");
            }
            Err(e) => {
                warn!(ship.id = %row.id, error = %e, "the agent's warm-up failed; the ship is kept");
            }
        }
        let id = row.id.clone();
        let found = self
            .inner
            .store
            .tx(move |c| {
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(false);
                };
                // `ever_running` stays false until a claim: a pool ship that never served a
                // session is discarded, never restored, whatever interrupts it.
                ship.set_status(ShipStatus::Running, Timestamp::now());
                q::save_ship(c, &ship)?;
                Ok(true)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::DeletedWhileStarting)
        }
    }
}
