//! Sessions (bay-api.md §4.19–4.22, §5.10): listing, the primary relation, session extend-ttl
//! and session delete (a RUNNING ship left without an active relation stops).

use super::ttl::recompute_deadline;
use super::{Session, ShipService, StopCause};
use crate::error::{Error, Result};
use crate::model::{ShipStatus, Timestamp};
use crate::store::{RelationRow, ShipRow, q};

impl ShipService {
    /// Every relation, oldest first.
    pub async fn list_sessions(&self) -> Result<Vec<Session>> {
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                Ok(q::all_relations(c)?
                    .iter()
                    .map(|r| Self::session_view(r, now))
                    .collect())
            })
            .await?)
    }

    /// The session's primary relation, or its relation with `ship_id`.
    pub async fn get_session(&self, session: &str, ship_id: Option<&str>) -> Result<Session> {
        let now = Self::now();
        let mut related = self.relations_sorted(session).await?;
        if let Some(ship_id) = ship_id {
            related.retain(|(r, _)| r.ship_id == ship_id);
        }
        related
            .first()
            .map(|(r, _)| Self::session_view(r, now))
            .ok_or(Error::SessionNotFound)
    }

    /// The session's relations, primary first (§5.10).
    async fn relations_sorted(&self, session: &str) -> Result<Vec<(RelationRow, ShipRow)>> {
        let s = session.to_owned();
        let mut related = self
            .inner
            .store
            .tx(move |c| q::relations_of_session(c, &s))
            .await?;
        let now = Self::now();
        let rank = |s: &ShipRow| match s.status() {
            ShipStatus::Running => 0,
            ShipStatus::Creating => 1,
            ShipStatus::Stopped => 2,
        };
        related.sort_by(|(ra, sa), (rb, sb)| {
            rank(sa)
                .cmp(&rank(sb))
                .then(rb.is_active(now).cmp(&ra.is_active(now)))
                .then(rb.last_activity.cmp(&ra.last_activity))
                .then(rb.created_at.cmp(&ra.created_at))
                .then(ra.id.cmp(&rb.id))
        });
        Ok(related)
    }

    /// `POST /sessions/{sid}/extend-ttl`: `expires_at = now + ttl` on every relation of the
    /// session whose ship is RUNNING (or only `ship_id`); the ships' deadlines follow.
    pub async fn extend_session_ttl(
        &self,
        session: &str,
        ttl: i64,
        ship_id: Option<&str>,
    ) -> Result<Session> {
        self.check_ttl(ttl)?;
        let mut related = self.relations_sorted(session).await?;
        if let Some(ship_id) = ship_id {
            related.retain(|(r, _)| r.ship_id == ship_id);
        }
        if related.is_empty() {
            return Err(Error::SessionNotFound);
        }
        let mut primary = None;
        for (rel, ship) in related.iter().filter(|(_, s)| s.status().can_attach()) {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            let (rid, id, max_ttl) = (rel.id.clone(), ship.id.clone(), self.max_ttl());
            let updated = self
                .inner
                .store
                .tx(move |c| {
                    let now = Timestamp::now();
                    let Some(mut ship) = q::ship(c, &id)? else {
                        return Ok(None);
                    };
                    if !ship.status().can_attach() {
                        return Ok(None);
                    }
                    let Some(mut r) = q::relations_of_ship(c, &id)?
                        .into_iter()
                        .find(|r| r.id == rid)
                    else {
                        return Ok(None);
                    };
                    r.expires_at = now.plus_secs(ttl.min(max_ttl)).micros();
                    r.last_activity = now.micros();
                    q::save_relation(c, &r)?;
                    recompute_deadline(c, &mut ship, now)?;
                    Ok(Some(Self::session_view(&r, now)))
                })
                .await?;
            if primary.is_none() {
                primary = updated;
            }
        }
        self.inner.reaper.notify_one();
        primary.ok_or(Error::SessionShipNotRunning)
    }

    /// `DELETE /sessions/{sid}`: removes the session's relations (or only the one with
    /// `ship_id`). A RUNNING ship left without an active relation stops.
    /// Runs to its end even if the caller goes away.
    pub async fn delete_session(&self, session: &str, ship_id: Option<&str>) -> Result<()> {
        let this = self.clone();
        let (session, ship_id) = (session.to_owned(), ship_id.map(str::to_owned));
        self.owned(async move {
            this.delete_session_owned(&session, ship_id.as_deref())
                .await
        })
        .await
    }

    async fn delete_session_owned(&self, session: &str, ship_id: Option<&str>) -> Result<()> {
        let mut related = self.relations_sorted(session).await?;
        if let Some(ship_id) = ship_id {
            related.retain(|(r, _)| r.ship_id == ship_id);
        }
        if related.is_empty() {
            return Err(Error::SessionNotFound);
        }
        for (rel, ship) in related {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            let (rid, id) = (rel.id.clone(), ship.id.clone());
            let left_empty = self
                .inner
                .store
                .tx(move |c| {
                    let now = Timestamp::now();
                    q::delete_relation(c, &rid)?;
                    let Some(mut ship) = q::ship(c, &id)? else {
                        return Ok(None);
                    };
                    if !ship.status().can_attach() {
                        return Ok(None);
                    }
                    recompute_deadline(c, &mut ship, now)?;
                    Ok((q::active_count(c, &id, now.micros())? == 0).then_some(ship))
                })
                .await?;
            if let Some(ship) = left_empty {
                self.stop_locked(ship, StopCause::NoSession).await;
            }
        }
        self.inner.reaper.notify_one();
        Ok(())
    }
}
