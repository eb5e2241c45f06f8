//! Relations and deadlines (bay-api.md §5.2, §5.3): grant, touch, the deadline rule, ship
//! extend-ttl, and the reaper that stops ships whose deadline passed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::QueryResult;
use diesel::sqlite::SqliteConnection;

use super::{Ship, ShipService, StopCause};
use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::store::{RelationRow, ShipRow, q};

/// The longest the reaper sleeps without a deadline to wait for: a safety net against a
/// wall-clock jump, not a poll (every deadline change wakes it).
const REAPER_IDLE: Duration = Duration::from_secs(30);

/// How soon the reaper retries a stop that could not be recorded.
const REAPER_RETRY: Duration = Duration::from_secs(1);

impl ShipService {
    /// `POST /ship/{id}/extend-ttl`: adds `ttl` seconds to every active relation.
    pub async fn extend_ship_ttl(&self, ship_id: &str, ttl: i64) -> Result<Ship> {
        self.check_ttl(ttl)?;
        let (this, id) = (self.clone(), ship_id.to_owned());
        self.owned(async move { this.extend_owned(&id, ttl).await })
            .await
    }

    async fn extend_owned(&self, ship_id: &str, ttl: i64) -> Result<Ship> {
        if let Some(ship) = self.refresh(ship_id).await?
            && ship.status().is_starting()
            && !ship.warm
        {
            return Err(Error::ShipCreating);
        }
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let ship = self
            .refresh(ship_id)
            .await?
            .filter(|s| !s.warm)
            .ok_or(Error::ShipNotFound)?;
        if ship.status().is_starting() {
            return Err(Error::ShipCreating);
        }
        if !ship.status().can_extend() {
            return Err(Error::ShipNotFound);
        }
        let (id, max_ttl) = (ship_id.to_owned(), self.max_ttl());
        let extended = self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let cap = now.plus_secs(max_ttl).micros();
                let mut any = false;
                for mut r in q::relations_of_ship(c, &id)? {
                    if r.is_active(now) {
                        r.expires_at = r
                            .expires_at
                            .saturating_add(ttl.saturating_mul(1_000_000))
                            .min(cap);
                        q::save_relation(c, &r)?;
                        any = true;
                    }
                }
                if let Some(mut ship) = q::ship(c, &id)? {
                    recompute_deadline(c, &mut ship, now)?;
                }
                Ok(any)
            })
            .await?;
        if !extended {
            self.stop_locked(ship, StopCause::Expired).await;
            return Err(Error::ShipNotFound);
        }
        self.inner.reaper.notify_one();
        self.get_ship(ship_id).await
    }

    /// Stops every RUNNING ship whose deadline has passed and that has no operation in flight.
    /// Returns how long until the next deadline the reaper can act on: a busy overdue ship is
    /// not one (the end of its operation wakes the reaper).
    pub async fn reap_once(&self) -> Option<Duration> {
        self.inner.reaper_passes.fetch_add(1, Ordering::Relaxed);
        let now = Self::now().micros();
        let running = self
            .inner
            .store
            .tx(q::running_deadlines)
            .await
            .unwrap_or_default();
        let mut next: Option<Duration> = None;
        let mut soonest = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        for (id, deadline) in running {
            match deadline {
                Some(d) if d > now => {
                    soonest(Timestamp::from_micros(d).duration_since(Self::now()));
                    continue;
                }
                _ => {}
            }
            if self.is_busy(&id) {
                continue;
            }
            let _g = self.inner.ship_locks.lock(&id).await;
            let Ok(Some(ship)) = self.refresh(&id).await else {
                soonest(REAPER_RETRY);
                continue;
            };
            if !ship.status().can_stop() {
                continue;
            }
            let now = Self::now();
            match ship.deadline {
                Some(d) if d > now.micros() => {
                    soonest(Timestamp::from_micros(d).duration_since(now));
                }
                _ if self.is_busy(&id) => {}
                _ => {
                    if !self.stop_locked(ship, StopCause::Expired).await {
                        soonest(REAPER_RETRY);
                    }
                }
            }
        }
        next
    }

    fn is_busy(&self, ship_id: &str) -> bool {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ship_id)
    }

    pub(super) async fn reaper_loop(self) {
        loop {
            // Armed before the pass, so a change during the pass is not missed.
            let notified = self.inner.reaper.notified();
            let next = self.reap_once().await;
            let sleep = next.unwrap_or(REAPER_IDLE).min(REAPER_IDLE);
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = notified => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

/// grant(T): create or refresh the relation (bay-api.md §5.2).
pub(super) fn grant(
    c: &mut SqliteConnection,
    ship_id: &str,
    session: &str,
    ttl: i64,
    now: Timestamp,
    max_ttl: i64,
) -> QueryResult<RelationRow> {
    let cap = now.plus_secs(max_ttl).micros();
    let target = now.plus_secs(ttl).micros().min(cap);
    let row = match q::relation(c, session, ship_id)? {
        Some(mut r) => {
            r.last_activity = now.micros();
            r.initial_ttl = ttl;
            r.expires_at = r.expires_at.max(target).min(cap);
            r
        }
        None => RelationRow {
            id: uuid::Uuid::new_v4().to_string(),
            session_id: session.to_owned(),
            ship_id: ship_id.to_owned(),
            created_at: now.micros(),
            last_activity: now.micros(),
            expires_at: target,
            initial_ttl: ttl,
        },
    };
    q::save_relation(c, &row)?;
    Ok(row)
}

/// touch: activity on a RUNNING ship; false when the session has no relation.
pub(super) fn touch(
    c: &mut SqliteConnection,
    ship: &ShipRow,
    session: &str,
    now: Timestamp,
    max_ttl: i64,
) -> QueryResult<bool> {
    let Some(mut r) = q::relation(c, session, &ship.id)? else {
        return Ok(false);
    };
    let cap = now.plus_secs(max_ttl).micros();
    r.last_activity = now.micros();
    r.expires_at = r
        .expires_at
        .max(now.plus_secs(r.initial_ttl).micros())
        .min(cap);
    q::save_relation(c, &r)?;
    let mut ship = ship.clone();
    recompute_deadline(c, &mut ship, now)?;
    Ok(true)
}

/// Sets a RUNNING ship's deadline to the latest relation expiry and saves it if it changed.
pub(super) fn recompute_deadline(
    c: &mut SqliteConnection,
    ship: &mut ShipRow,
    now: Timestamp,
) -> QueryResult<()> {
    let before = ship.deadline;
    recompute_deadline_row(c, ship, now)?;
    if ship.deadline != before {
        q::save_ship(c, ship)?;
    }
    Ok(())
}

/// Sets the deadline on the row without saving it.
pub(super) fn recompute_deadline_row(
    c: &mut SqliteConnection,
    ship: &mut ShipRow,
    now: Timestamp,
) -> QueryResult<()> {
    let latest = q::relations_of_ship(c, &ship.id)?
        .iter()
        .map(|r| r.expires_at)
        .max();
    if ship.deadline != latest {
        ship.deadline = latest;
        ship.updated_at = now.micros();
    }
    Ok(())
}
