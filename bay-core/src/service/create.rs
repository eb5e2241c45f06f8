//! `POST /ship` (bay-api.md §5.4): reuse the session's running ship, restore its stopped one,
//! join a running ship with a free slot, or make a new one (a warm-pool ship when the spec is
//! the default, see `pool.rs`) — and the removal of a new ship
//! that never became ready.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::guards::Slot;
use super::ttl::{grant, recompute_deadline};
use super::{CreateShip, Ship, ShipService, random_token, wanted};
use crate::driver::DriverError;
use crate::error::{Error, Result};
use crate::keyed_lock::KeyGuard;
use crate::model::{EffectiveSpec, ShipStatus, Timestamp};
use crate::store::{ShipRow, q};

impl ShipService {
    /// `POST /ship`: reuse the session's running ship, restore its stopped one, join a running
    /// ship with a free slot, or create a new ship — in that order (only the last with
    /// `force_create`). The returned ship is RUNNING with the caller's relation active.
    ///
    /// The work runs on a task the service owns: if this future is dropped (the client went
    /// away) while the request waits for its session's turn or for a slot, it leaves the queue;
    /// once a start has begun, it runs to its end without the caller.
    pub async fn create_ship(&self, session: &str, req: CreateShip) -> Result<Ship> {
        self.check_ttl(req.ttl)?;
        let caller = CancellationToken::new();
        let _leave = caller.clone().drop_guard();
        let (this, session) = (self.clone(), session.to_owned());
        self.owned(async move { this.create_owned(&session, &req, &caller).await })
            .await
    }

    async fn create_owned(
        &self,
        session: &str,
        req: &CreateShip,
        caller: &CancellationToken,
    ) -> Result<Ship> {
        let _session_guard = wanted(caller, self.inner.session_locks.lock(session)).await?;
        if !req.force_create {
            if let Some(ship) = self.reuse_running(session, req.ttl, caller).await? {
                return Ok(ship);
            }
            if let Some(ship) = self.restore_for_session(session, req.ttl, caller).await? {
                return Ok(ship);
            }
            if let Some(ship) = self.join_running(session, req).await? {
                return Ok(ship);
            }
        }
        if self.fits_pool(req)
            && let Some(ship) = self.claim_warm(session, req).await?
        {
            return Ok(ship);
        }
        self.create_new(session, req, caller).await
    }

    /// Step 1: the session's running ship (latest activity first).
    async fn reuse_running(
        &self,
        session: &str,
        ttl: i64,
        caller: &CancellationToken,
    ) -> Result<Option<Ship>> {
        let sid = session.to_owned();
        let mut waited_for = Vec::new();
        loop {
            let s = sid.clone();
            let mut related = self
                .inner
                .store
                .tx(move |c| q::relations_of_session(c, &s))
                .await?;
            related.sort_by(|(ra, sa), (rb, sb)| {
                rb.last_activity
                    .cmp(&ra.last_activity)
                    .then(sb.created_at.cmp(&sa.created_at))
            });
            // A related ship being started by someone else: wait for that start (it holds the
            // ship's lock until it ends), then re-evaluate.
            if let Some((_, ship)) = related
                .iter()
                .find(|(_, s)| s.status().is_starting() && !waited_for.contains(&s.id))
            {
                waited_for.push(ship.id.clone());
                let budget = self.inner.config.ship_health_check_timeout + Duration::from_secs(5);
                let lock = self.inner.ship_locks.lock(&ship.id);
                let _ = wanted(caller, tokio::time::timeout(budget, lock)).await?;
                continue;
            }
            for (_, ship) in related.iter().filter(|(_, s)| s.status().can_attach()) {
                let _g = self.inner.ship_locks.lock(&ship.id).await;
                let Some(ship) = self.refresh(&ship.id).await? else {
                    continue;
                };
                if !ship.status().can_attach() || !self.container_alive(&ship).await {
                    continue;
                }
                let view = self.grant_and_view(&ship.id, &sid, ttl).await?;
                debug!(ship.id = %ship.id, session.id = %sid, "reusing the session's running ship");
                return Ok(view);
            }
            return Ok(None);
        }
    }

    /// Step 2: the session's stopped ship whose data still exists, restored.
    async fn restore_for_session(
        &self,
        session: &str,
        ttl: i64,
        caller: &CancellationToken,
    ) -> Result<Option<Ship>> {
        let s = session.to_owned();
        let mut related = self
            .inner
            .store
            .tx(move |c| q::relations_of_session(c, &s))
            .await?;
        related.retain(|(_, ship)| ship.status().can_restore());
        related.sort_by(|(ra, sa), (rb, sb)| {
            rb.last_activity
                .cmp(&ra.last_activity)
                .then(sb.created_at.cmp(&sa.created_at))
        });
        for (_, ship) in related {
            match self.inner.driver.ship_data_exists(&ship.id).await {
                Ok(true) => {}
                Ok(false) | Err(DriverError::NotFound(_)) => continue,
                Err(e) => return Err(Error::StartFailed(e.to_string())),
            }
            info!(ship.id = %ship.id, session.id = %session, "restoring the session's stopped ship");
            if self.restore(&ship.id, session, ttl, caller).await? {
                return Ok(Some(self.get_ship(&ship.id).await?));
            }
        }
        Ok(None)
    }

    /// Step 3: join a running ship with a free slot, the same `max_session_num` and spec.
    async fn join_running(&self, session: &str, req: &CreateShip) -> Result<Option<Ship>> {
        let spec = self.effective_spec(&req.spec);
        let s = session.to_owned();
        let max = req.max_session_num;
        let now = Self::now();
        let candidates = self
            .inner
            .store
            .tx(move |c| {
                let mut out = Vec::new();
                for ship in q::ships_with_status(c, ShipStatus::Running)? {
                    if ship.warm
                        || ship.max_session_num != max
                        || q::relation(c, &s, &ship.id)?.is_some()
                    {
                        continue;
                    }
                    if q::active_count(c, &ship.id, now.micros())? < i64::from(ship.max_session_num)
                    {
                        out.push(ship);
                    }
                }
                Ok(out)
            })
            .await?;
        for ship in candidates.into_iter().filter(|s| s.spec() == spec) {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            let Some(ship) = self.refresh(&ship.id).await? else {
                continue;
            };
            if !ship.status().can_attach() || !self.container_alive(&ship).await {
                continue;
            }
            let (id, sid, ttl, max_ttl) =
                (ship.id.clone(), session.to_owned(), req.ttl, self.max_ttl());
            let joined = self
                .inner
                .store
                .tx(move |c| {
                    let now = Timestamp::now();
                    let Some(mut ship) = q::ship(c, &id)? else {
                        return Ok(false);
                    };
                    if !ship.status().can_attach()
                        || q::active_count(c, &id, now.micros())? >= i64::from(ship.max_session_num)
                    {
                        return Ok(false);
                    }
                    grant(c, &id, &sid, ttl, now, max_ttl)?;
                    recompute_deadline(c, &mut ship, now)?;
                    Ok(true)
                })
                .await?;
            if joined {
                info!(ship.id = %ship.id, session.id = %session, "session joined a running ship");
                self.inner.reaper.notify_one();
                return self.load_view(&ship.id).await;
            }
        }
        Ok(None)
    }

    /// Step 4: a new ship. Once its slot is granted, the create is the service's: it ends
    /// RUNNING, or removed with its container and data (or, when the engine does not let that
    /// happen now, CREATING without an owner, for the status checker to finish).
    async fn create_new(
        &self,
        session: &str,
        req: &CreateShip,
        caller: &CancellationToken,
    ) -> Result<Ship> {
        let ship_id = uuid::Uuid::new_v4().to_string();
        let owner = self
            .claim(&ship_id)
            .ok_or_else(|| Error::CreateFailed(format!("ship id {ship_id} is taken")))?;
        let slot: Slot = tokio::select! {
            biased;
            () = owner.abort.cancelled() => return Err(self.abort_reason()),
            slot = self.admit(&ship_id, caller) => slot?,
        };
        let spec = self.effective_spec(&req.spec);
        let row = new_ship_row(&ship_id, &spec, req.ttl, req.max_session_num, false);
        let _g = self.insert_new_ship(&row, slot).await?;
        info!(ship.id = %ship_id, session.id = %session, "creating a new ship");
        match self.bring_up(&row, session, req.ttl, &owner.abort).await {
            Ok(()) => self.get_ship(&ship_id).await,
            Err(e) => {
                warn!(ship.id = %ship_id, error = %e, "creating the ship failed; removing it");
                self.discard_new_ship(&ship_id).await;
                Err(match e {
                    Error::Driver(d) => Error::CreateFailed(d.to_string()),
                    other => other,
                })
            }
        }
    }

    /// Removes every trace of a ship that never became ready: its containers (the one on
    /// record and any other the engine lists for the ship id), its data, its record, its slot.
    /// Nothing is removed from the record unless the rest is known to be gone: when the engine
    /// cannot list, remove or delete, the ship stays CREATING without an owner and the status
    /// checker retries. The ship lock must be held. Returns whether the ship is gone.
    pub(super) async fn discard_new_ship(&self, ship_id: &str) -> bool {
        let driver = &self.inner.driver;
        let row = match self.refresh(ship_id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                self.inner.admission.release(ship_id);
                return true;
            }
            Err(e) => {
                warn!(ship.id = %ship_id, error = %e, "cannot read the ship to remove it; retrying later");
                return false;
            }
        };
        let mut clean = match self
            .remove_containers_of(ship_id, row.container_id.as_deref())
            .await
        {
            Ok(()) => true,
            Err(f) => {
                warn!(ship.id = %ship_id, error = %f.reason, "cannot remove the new ship's containers; retrying later");
                false
            }
        };
        if clean {
            match driver.delete_ship_data(ship_id).await {
                Ok(()) | Err(DriverError::NotFound(_)) => {}
                Err(e) => {
                    warn!(ship.id = %ship_id, error = %e, "cannot remove ship data; retrying later");
                    clean = false;
                }
            }
        }
        if !clean {
            return false;
        }
        let id = ship_id.to_owned();
        match self.inner.store.tx(move |c| q::delete_ship(c, &id)).await {
            Ok(()) => {
                self.inner.admission.release(ship_id);
                self.inner.reaper.notify_one();
                true
            }
            Err(e) => {
                warn!(ship.id = %ship_id, error = %e, "cannot remove the ship record; retrying later");
                false
            }
        }
    }

    async fn grant_and_view(&self, ship_id: &str, session: &str, ttl: i64) -> Result<Option<Ship>> {
        let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
        let view = self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(None);
                };
                grant(c, &id, &sid, ttl, now, max_ttl)?;
                recompute_deadline(c, &mut ship, now)?;
                let rels = q::relations_of_ship(c, &id)?;
                Ok(Some(Self::ship_view(&ship, &rels, now)))
            })
            .await?;
        self.inner.reaper.notify_one();
        Ok(view)
    }
}

/// The record of a new ship of `spec`: CREATING, no container yet (a create's or a pool fill's).
pub(super) fn new_ship_row(
    ship_id: &str,
    spec: &EffectiveSpec,
    ttl: i64,
    max_session_num: i32,
    warm: bool,
) -> ShipRow {
    let now = ShipService::now();
    ShipRow {
        id: ship_id.to_owned(),
        status: ShipStatus::Creating.code(),
        created_at: now.micros(),
        updated_at: now.micros(),
        container_id: None,
        ip_address: None,
        ttl,
        max_session_num,
        spec_cpus: spec.cpus,
        spec_memory: spec.memory_bytes.and_then(|m| i64::try_from(m).ok()),
        spec_disk: spec.disk_bytes.and_then(|d| i64::try_from(d).ok()),
        auth_token: random_token(),
        deadline: None,
        ever_running: false,
        warm,
    }
}

impl ShipService {
    /// Inserts the new ship `row` under its lock, which is returned held; the admission slot
    /// passes to the record.
    pub(super) async fn insert_new_ship(&self, row: &ShipRow, slot: Slot) -> Result<KeyGuard> {
        let guard = self.inner.ship_locks.lock(&row.id).await;
        let insert = row.clone();
        self.inner
            .store
            .tx(move |c| q::insert_ship(c, &insert))
            .await?;
        slot.hand_to_record();
        Ok(guard)
    }
}
