//! Bookkeeping that must happen on every path — success, error, a panic, a dropped future —
//! done by guards instead of being remembered at each call site.
//!
//! * [`Slot`]: an admission permit between its acquisition and the moment a record holds it
//!   (a CREATING ship). Dropped before that, it gives the permit back.
//! * [`Ownership`]: "an operation owns this ship's start". A CREATING ship without an owner is
//!   left over (a panic, a crash) and is reconciled by the status checker. The owner's token is
//!   how a permanent delete (or the shutdown) aborts the start.
//! * [`InflightGuard`]: an exec, upload, download or terminal check in flight keeps the reaper
//!   away; its end wakes the reaper.
//! * [`OperationGuard`]: counts lifecycle operations in flight, so that shutdown can wait for
//!   them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Inner, ShipService};

/// An admission permit not yet held by a record.
pub(super) struct Slot {
    inner: Arc<Inner>,
    ship_id: String,
    armed: bool,
}

impl Slot {
    pub(super) fn new(inner: &Arc<Inner>, ship_id: &str) -> Self {
        Self {
            inner: inner.clone(),
            ship_id: ship_id.to_owned(),
            armed: true,
        }
    }

    /// The record now holds the permit (it is CREATING): whoever moves it out of the
    /// slot-holding states releases it.
    pub(super) fn hand_to_record(mut self) {
        self.armed = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.inner.admission.release(&self.ship_id);
        }
    }
}

/// An operation's claim on a ship's start (a new ship, or a restore).
pub(super) struct Ownership {
    inner: Arc<Inner>,
    ship_id: String,
    /// Cancelled by a permanent delete of the ship, or by the shutdown.
    pub(super) abort: CancellationToken,
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ship_id);
    }
}

impl ShipService {
    /// Claims the start of `ship_id`; `None` when another operation owns it.
    pub(super) fn claim(&self, ship_id: &str) -> Option<Ownership> {
        let mut owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.contains_key(ship_id) {
            return None;
        }
        let abort = self.inner.shutdown.child_token();
        owners.insert(ship_id.to_owned(), abort.clone());
        Some(Ownership {
            inner: self.inner.clone(),
            ship_id: ship_id.to_owned(),
            abort,
        })
    }

    /// Whether an operation owns the start of `ship_id`.
    pub(super) fn is_owned(&self, ship_id: &str) -> bool {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ship_id)
    }

    /// Aborts the start of `ship_id` (queued for a slot or bringing the container up), if one
    /// is in progress. Its owner cleans up and answers "deleted while starting".
    pub(super) fn abort_start(&self, ship_id: &str) -> bool {
        self.inner
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ship_id)
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Why an owned start was aborted.
    pub(super) fn abort_reason(&self) -> crate::Error {
        if self.inner.shutdown.is_cancelled() {
            super::shutting_down()
        } else {
            crate::Error::DeletedWhileStarting
        }
    }
}

/// Keeps a ship from being reaped while an operation is in flight.
pub(super) struct InflightGuard {
    inner: Arc<Inner>,
    ship_id: String,
}

impl InflightGuard {
    pub(super) fn enter(inner: &Arc<Inner>, ship_id: &str) -> Self {
        *inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ship_id.to_owned())
            .or_default() += 1;
        // No wake-up: a busy ship gives the reaper nothing to do (its end does).
        Self {
            inner: inner.clone(),
            ship_id: ship_id.to_owned(),
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ship_id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ship_id);
            }
        }
        drop(map);
        // The reaper skipped this ship while it was busy: it re-checks the deadline now.
        self.inner.reaper.notify_one();
    }
}

/// One lifecycle operation in flight.
pub(super) struct OperationGuard {
    inner: Arc<Inner>,
}

impl OperationGuard {
    pub(super) fn enter(inner: &Arc<Inner>) -> Self {
        inner.operations.send_modify(|n| *n += 1);
        Self {
            inner: inner.clone(),
        }
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.inner.operations.send_modify(|n| *n -= 1);
    }
}
