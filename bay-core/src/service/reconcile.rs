//! Reconciliation (bay-api.md §5.11): what the records say against what the engine has, at
//! start-up (before the API answers) and every `STATUS_CHECK_INTERVAL`.
//!
//! The rule: a record is removed only when its containers and data are known to be gone, and
//! whatever an operation could not finish is left in a state this file retries —
//!
//! * a CREATING ship that no operation owns (a panic, a crash, a cleanup the engine refused):
//!   a new ship is removed with its containers and data, an interrupted restore becomes STOPPED;
//! * a STOPPED ship that still has a container id (its removal failed): removed, then the slot
//!   is freed;
//! * a RUNNING ship whose container the engine reports not running or not found: stopped. Any
//!   other engine error is "unknown" and changes nothing;
//! * a warm-pool ship whose container is gone, or that was stopped: removed (the pool refills);
//!   ready warm-pool ships beyond `WARM_POOL_SIZE` (a restart with a smaller pool): removed;
//! * a managed container of a recorded ship that should not have it: removed. Containers of
//!   ship ids Bay has no record of are never touched.

use tracing::{info, warn};

use super::{ShipService, StopCause};
use crate::driver::DriverError;
use crate::model::ShipStatus;
use crate::store::{ShipRow, StoreError, q};

impl ShipService {
    /// Start-up reconciliation (§5.11): slots adopted from the records, overdue ships stopped,
    /// then one status check (nothing is owned yet, so every CREATING ship is a leftover).
    pub(super) async fn recover(&self) -> Result<(), StoreError> {
        for id in self.inner.store.tx(q::slot_holders).await? {
            self.inner.admission.adopt(&id);
        }
        self.reap_once().await;
        self.check_containers().await;
        Ok(())
    }

    /// Runs the periodic status check once (see the module documentation).
    pub async fn check_containers(&self) {
        self.reconcile_unowned_starts().await;
        self.retry_pending_stops().await;
        self.check_running().await;
        self.remove_stopped_warm().await;
        self.trim_pool().await;
        self.remove_orphans().await;
    }

    /// CREATING ships no operation owns: a new ship is removed, a restore becomes STOPPED.
    async fn reconcile_unowned_starts(&self) {
        let Ok(creating) = self
            .inner
            .store
            .tx(|c| q::ships_with_status(c, ShipStatus::Creating))
            .await
        else {
            return;
        };
        for ship in creating {
            if self.is_owned(&ship.id) {
                continue;
            }
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            // Re-checked under the lock: the owner may have finished meanwhile.
            let Ok(Some(ship)) = self.refresh(&ship.id).await else {
                continue;
            };
            if !ship.status().is_starting() || self.is_owned(&ship.id) {
                continue;
            }
            if ship.ever_running {
                info!(ship.id = %ship.id, "a restore no operation owns; marking the ship stopped");
                self.stop_locked(ship, StopCause::Crashed).await;
            } else {
                info!(ship.id = %ship.id, "a new ship no operation owns; removing it");
                self.discard_new_ship(&ship.id).await;
            }
        }
    }

    /// STOPPED ships whose container could not be removed: removed now, slot freed.
    async fn retry_pending_stops(&self) {
        let Ok(pending) = self.inner.store.tx(q::stopped_with_container).await else {
            return;
        };
        for ship in pending {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            let Ok(Some(ship)) = self.refresh(&ship.id).await else {
                continue;
            };
            if !ship.status().can_restore() || ship.container_id.is_none() {
                continue;
            }
            if let Err(e) = self.finish_stop_locked(&ship).await {
                warn!(ship.id = %ship.id, error = %e, "cannot remove the container of a stopped ship yet");
            }
        }
    }

    /// RUNNING ships whose container is gone are stopped.
    async fn check_running(&self) {
        let Ok(running) = self
            .inner
            .store
            .tx(|c| q::ships_with_status(c, ShipStatus::Running))
            .await
        else {
            return;
        };
        for ship in running {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            if let Ok(Some(ship)) = self.refresh(&ship.id).await
                && ship.status().can_attach()
            {
                if ship.warm {
                    self.warm_alive(&ship).await;
                } else {
                    self.container_alive(&ship).await;
                }
            }
        }
    }

    /// A ready warm ship whose container is gone (or has no container) is removed, and the
    /// pool replaces it; an engine error changes nothing. The ship lock must be held.
    async fn warm_alive(&self, ship: &ShipRow) {
        let gone = match ship.container_id.as_deref() {
            None => true,
            Some(cid) => matches!(
                self.inner.driver.is_container_running(cid).await,
                Ok(false) | Err(DriverError::NotFound(_))
            ),
        };
        if gone {
            info!(ship.id = %ship.id, "a warm ship's container is gone; replacing it");
            self.discard_new_ship(&ship.id).await;
            self.inner.pool_wake.notify_one();
        }
    }

    /// A STOPPED warm ship (a stop that reached a pool ship) serves nobody: removed.
    async fn remove_stopped_warm(&self) {
        let Ok(stopped) = self.warm_ships(ShipStatus::Stopped).await else {
            return;
        };
        for ship in stopped {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            if let Ok(Some(ship)) = self.refresh(&ship.id).await
                && ship.warm
                && ship.status() == ShipStatus::Stopped
            {
                self.discard_new_ship(&ship.id).await;
            }
        }
    }

    /// Whether a RUNNING ship's container is alive. Only "not running" or "not found" stops
    /// the ship (crash); any other engine error means the state is unknown: the ship is left
    /// as it is and checked again later. The ship lock must be held.
    pub(super) async fn container_alive(&self, ship: &ShipRow) -> bool {
        let Some(cid) = ship.container_id.as_deref() else {
            self.stop_locked(ship.clone(), StopCause::Crashed).await;
            return false;
        };
        match self.inner.driver.is_container_running(cid).await {
            Ok(true) => true,
            Ok(false) | Err(DriverError::NotFound(_)) => {
                info!(ship.id = %ship.id, "container is gone; stopping the ship");
                self.stop_locked(ship.clone(), StopCause::Crashed).await;
                false
            }
            Err(e) => {
                warn!(ship.id = %ship.id, error = %e, "container state unknown; assuming it runs");
                true
            }
        }
    }

    /// Removes managed containers whose ship is recorded but not supposed to have them
    /// (stopped ships, replaced containers). Containers of unknown ship ids are never touched,
    /// and neither are those of ships being started.
    async fn remove_orphans(&self) {
        let managed = match self.inner.driver.list_managed().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot list managed containers; skipping orphan check");
                return;
            }
        };
        let expected = |ship: &ShipRow, container_id: &str| {
            ship.status().is_starting() || ship.container_id.as_deref() == Some(container_id)
        };
        for container in managed {
            let Ok(Some(ship)) = self.refresh(&container.ship_id).await else {
                continue;
            };
            if expected(&ship, &container.container_id) {
                continue;
            }
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            // Re-checked under the lock: a start may have adopted it meanwhile.
            let Ok(Some(ship)) = self.refresh(&container.ship_id).await else {
                continue;
            };
            if expected(&ship, &container.container_id) {
                continue;
            }
            info!(ship.id = %ship.id, container.id = %container.container_id, "removing orphan container");
            if let Err(e) = self
                .inner
                .driver
                .stop_ship_container(&container.container_id)
                .await
            {
                warn!(container.id = %container.container_id, error = %e, "cannot remove orphan container");
            }
        }
    }

    pub(super) async fn status_check_loop(self) {
        let interval = self.inner.config.status_check_interval;
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => self.check_containers().await,
            }
        }
    }
}
