//! Stop (bay-api.md §5.8: soft delete, expiry, crash, last session deleted) and permanent
//! delete (§5.9).

use tracing::{info, warn};

use super::{ShipEvent, ShipService, StopCause};
use crate::driver::{DriverError, DriverResult};
use crate::error::{Error, Result};
use crate::model::{ShipStatus, Timestamp};
use crate::store::{ShipRow, q};

/// Why not every container of a ship could be removed.
pub(super) struct RemovalFailed {
    /// the first failure
    pub(super) reason: String,
    /// whether the container on record is among those left
    pub(super) known_left: bool,
}

impl ShipService {
    /// The one stop procedure (§5.8): container removed, data kept, relations expired,
    /// terminals told, slot released. The ship lock must be held.
    ///
    /// A container the engine would not remove keeps its id on the (STOPPED) record and keeps
    /// the slot: live containers never exceed `MAX_SHIP_NUM`. The status checker retries the
    /// removal and frees the slot then. Returns whether the stop was recorded.
    pub(super) async fn stop_locked(&self, ship: ShipRow, cause: StopCause) -> bool {
        // Terminals are told first, before the agent closes them itself while it stops.
        let _ = self.inner.events.send(ShipEvent::Stopped {
            ship_id: ship.id.clone(),
        });
        let pending = match ship.container_id.as_deref() {
            None => None,
            Some(cid) => match self.inner.driver.stop_ship_container(cid).await {
                Ok(()) | Err(DriverError::NotFound(_)) => None,
                Err(e) => {
                    warn!(ship.id = %ship.id, container.id = %cid, error = %e,
                        "cannot remove the container; the status checker retries");
                    Some(cid.to_owned())
                }
            },
        };
        let recorded = self.persist_stopped(&ship.id, pending).await;
        if recorded {
            info!(ship.id = %ship.id, cause = ?cause, "ship stopped");
        }
        recorded
    }

    /// Records a ship as STOPPED (relations expired, no address, no deadline), keeping
    /// `pending` as its container id when that container could not be removed. The slot is
    /// released once no container is left.
    async fn persist_stopped(&self, ship_id: &str, pending: Option<String>) -> bool {
        let id = ship_id.to_owned();
        let keep = pending.clone();
        let result = self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(false);
                };
                ship.set_status(ShipStatus::Stopped, now);
                ship.container_id = keep;
                ship.ip_address = None;
                ship.deadline = None;
                q::save_ship(c, &ship)?;
                for mut r in q::relations_of_ship(c, &id)? {
                    if r.expires_at > now.micros() {
                        r.expires_at = now.micros();
                        q::save_relation(c, &r)?;
                    }
                }
                Ok(true)
            })
            .await;
        match result {
            Ok(_) => {
                if pending.is_none() {
                    self.inner.admission.release(ship_id);
                }
                self.inner.reaper.notify_one();
                true
            }
            Err(e) => {
                // Still RUNNING or CREATING on record, with its slot: the reaper or the status
                // checker stops it again.
                warn!(ship.id = %ship_id, error = %e, "cannot record the stop");
                false
            }
        }
    }

    /// Removes the container a stop could not remove (a STOPPED ship with a container id),
    /// then clears it and frees the slot. The ship lock must be held.
    pub(super) async fn finish_stop_locked(&self, ship: &ShipRow) -> DriverResult<()> {
        let Some(cid) = ship.container_id.clone() else {
            return Ok(());
        };
        match self.inner.driver.stop_ship_container(&cid).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let id = ship.id.clone();
        self.inner
            .store
            .tx(move |c| {
                if let Some(mut ship) = q::ship(c, &id)?
                    && ship.status().can_restore()
                    && ship.container_id.as_deref() == Some(cid.as_str())
                {
                    ship.container_id = None;
                    ship.updated_at = Timestamp::now().micros();
                    q::save_ship(c, &ship)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| DriverError::Engine(e.to_string()))?;
        info!(ship.id = %ship.id, "the left-over container of a stopped ship is removed");
        self.inner.admission.release(&ship.id);
        Ok(())
    }

    /// Removes every container of `ship_id`: `known` (the one on record) and any other the
    /// engine lists for the ship (a create whose answer never came, a container someone
    /// re-created). A container the engine reports not found is gone.
    pub(super) async fn remove_containers_of(
        &self,
        ship_id: &str,
        known: Option<&str>,
    ) -> std::result::Result<(), RemovalFailed> {
        let driver = &self.inner.driver;
        let mut containers: Vec<String> = known.map(str::to_owned).into_iter().collect();
        let mut failed = match driver.list_managed().await {
            Ok(list) => {
                containers.extend(
                    list.into_iter()
                        .filter(|m| m.ship_id == ship_id)
                        .map(|m| m.container_id),
                );
                None
            }
            Err(e) => Some(RemovalFailed {
                reason: format!("cannot list the ship's containers: {e}"),
                known_left: false,
            }),
        };
        containers.sort();
        containers.dedup();
        for cid in &containers {
            match driver.stop_ship_container(cid).await {
                Ok(()) | Err(DriverError::NotFound(_)) => {}
                Err(e) => {
                    warn!(ship.id = %ship_id, container.id = %cid, error = %e, "cannot remove container");
                    let f = failed.get_or_insert_with(|| RemovalFailed {
                        reason: e.to_string(),
                        known_left: false,
                    });
                    f.known_left |= known == Some(cid.as_str());
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// A ship being created or started answers at once (409) instead of waiting for its
    /// lock, which the start holds until the ship is ready.
    async fn refuse_if_creating(&self, ship_id: &str) -> Result<()> {
        match self.refresh(ship_id).await? {
            Some(ship) if ship.status().is_starting() && !ship.warm => Err(Error::ShipCreating),
            _ => Ok(()),
        }
    }

    /// `DELETE /ship/{id}`: stop a RUNNING ship, keeping its data. Runs to its end even if
    /// the caller goes away.
    pub async fn stop_ship(&self, ship_id: &str) -> Result<()> {
        let (this, id) = (self.clone(), ship_id.to_owned());
        self.owned(async move { this.stop_owned(&id).await }).await
    }

    async fn stop_owned(&self, ship_id: &str) -> Result<()> {
        self.refuse_if_creating(ship_id).await?;
        let _g = self.inner.ship_locks.lock(ship_id).await;
        // Warm-pool ships are not the API's to stop (they are hidden; see `pool.rs`).
        let ship = self
            .refresh(ship_id)
            .await?
            .filter(|s| !s.warm)
            .ok_or(Error::ShipNotFound)?;
        if ship.status().is_starting() {
            return Err(Error::ShipCreating);
        }
        if !ship.status().can_stop() {
            return Err(Error::ShipNotFound);
        }
        self.stop_locked(ship, StopCause::SoftDelete).await;
        Ok(())
    }

    /// `DELETE /ship/{id}/permanent`: container, data, relations and record removed. A start in
    /// progress — queued for a slot or bringing its container up — is aborted first (its
    /// requester gets "deleted while starting"). Runs to its end even if the caller goes away.
    ///
    /// An unknown id is `ShipNotFound`; so is a ship another delete removed meanwhile. When the
    /// engine cannot remove a container or the data, the ship stays (STOPPED, or CREATING for a
    /// new ship that never ran) with its record, and the call can be retried.
    pub async fn delete_ship(&self, ship_id: &str) -> Result<()> {
        let (this, id) = (self.clone(), ship_id.to_owned());
        self.owned(async move { this.delete_owned(&id).await })
            .await
    }

    async fn delete_owned(&self, ship_id: &str) -> Result<()> {
        // Warm-pool ships are not the API's to delete (they are hidden; see `pool.rs`); a
        // claim makes a ship an ordinary one, never the other way round.
        if self.refresh(ship_id).await?.is_none_or(|s| s.warm) {
            return Err(Error::ShipNotFound);
        }
        let aborted = self.abort_start(ship_id);
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let Some(ship) = self.refresh(ship_id).await? else {
            // The start this delete aborted removed everything it had made.
            return if aborted {
                Ok(())
            } else {
                Err(Error::ShipNotFound)
            };
        };
        self.delete_locked(ship).await
    }

    /// The permanent delete of a ship whose lock is held and whose start (if any) is over.
    async fn delete_locked(&self, ship: ShipRow) -> Result<()> {
        let ship_id = ship.id.clone();
        let _ = self.inner.events.send(ShipEvent::Stopped {
            ship_id: ship_id.clone(),
        });
        let (mut failure, pending) = match self
            .remove_containers_of(&ship_id, ship.container_id.as_deref())
            .await
        {
            Ok(()) => (None, None),
            Err(f) => (
                Some(f.reason),
                ship.container_id.clone().filter(|_| f.known_left),
            ),
        };
        if failure.is_none()
            && let Err(e) = self.inner.driver.delete_ship_data(&ship_id).await
            && !matches!(e, DriverError::NotFound(_))
        {
            failure = Some(e.to_string());
        }
        if let Some(reason) = failure {
            warn!(ship.id = %ship_id, error = %reason, "permanent delete failed; the ship is kept");
            if ship.ever_running {
                self.persist_stopped(&ship_id, pending).await;
            } else {
                // A new ship that never ran: it stays CREATING without an owner, and the status
                // checker finishes removing it.
                let (id, keep) = (ship_id.clone(), pending);
                let _ = self
                    .inner
                    .store
                    .tx(move |c| {
                        if let Some(mut row) = q::ship(c, &id)? {
                            row.container_id = keep;
                            q::save_ship(c, &row)?;
                        }
                        Ok(())
                    })
                    .await;
            }
            return Err(Error::DataDeleteFailed(reason));
        }
        let id = ship_id.clone();
        self.inner.store.tx(move |c| q::delete_ship(c, &id)).await?;
        self.inner.admission.release(&ship_id);
        self.inner.reaper.notify_one();
        info!(ship.id = %ship_id, "ship deleted permanently");
        Ok(())
    }
}
