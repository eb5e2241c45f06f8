//! What the API shows: `ShipResponse` and `SessionResponse` views (bay-api.md §3), listings,
//! the overview, a ship's sessions and its logs.

use std::collections::HashMap;

use tracing::debug;

use super::{Overview, Session, SessionCounts, Ship, ShipCounts, ShipService};
use crate::error::{Error, Result};
use crate::model::{ShipStatus, Timestamp};
use crate::store::{RelationRow, ShipRow, q};

impl ShipService {
    pub(super) fn ship_view(ship: &ShipRow, relations: &[RelationRow], now: Timestamp) -> Ship {
        let status = ship.status();
        let running = status == ShipStatus::Running;
        // A STOPPED ship has no container (§5.8); one whose removal is still pending is Bay's
        // business, not the client's.
        let stopped = status == ShipStatus::Stopped;
        let deadline = ship.deadline.map(Timestamp::from_micros);
        Ship {
            id: ship.id.clone(),
            status,
            created_at: Timestamp::from_micros(ship.created_at),
            updated_at: Timestamp::from_micros(ship.updated_at),
            container_id: ship.container_id.clone().filter(|_| !stopped),
            ip_address: ship.ip_address.clone().filter(|_| !stopped),
            ttl: match status {
                ShipStatus::Running => deadline.map_or(0, |d| d.secs_until_ceil(now)),
                ShipStatus::Creating => ship.ttl,
                ShipStatus::Stopped => 0,
            },
            max_session_num: ship.max_session_num,
            current_session_num: if running {
                relations.iter().filter(|r| r.is_active(now)).count() as i64
            } else {
                0
            },
            expires_at: if running { deadline } else { None },
        }
    }

    pub(super) fn session_view(r: &RelationRow, now: Timestamp) -> Session {
        Session {
            id: r.id.clone(),
            session_id: r.session_id.clone(),
            ship_id: r.ship_id.clone(),
            created_at: Timestamp::from_micros(r.created_at),
            last_activity: Timestamp::from_micros(r.last_activity),
            expires_at: Timestamp::from_micros(r.expires_at),
            initial_ttl: r.initial_ttl,
            is_active: r.is_active(now),
        }
    }

    pub(super) async fn load_view(&self, ship_id: &str) -> Result<Option<Ship>> {
        let id = ship_id.to_owned();
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                // Warm-pool ships belong to nobody yet: the API does not show them.
                let Some(ship) = q::ship(c, &id)?.filter(|s| !s.warm) else {
                    return Ok(None);
                };
                let rels = q::relations_of_ship(c, &id)?;
                Ok(Some(Self::ship_view(&ship, &rels, now)))
            })
            .await?)
    }

    /// One ship, any status.
    pub async fn get_ship(&self, ship_id: &str) -> Result<Ship> {
        self.load_view(ship_id).await?.ok_or(Error::ShipNotFound)
    }

    /// Every ship, newest first; warm-pool ships are not listed (they appear in the overview).
    pub async fn list_ships(&self) -> Result<Vec<Ship>> {
        self.list(false).await
    }

    /// The warm-pool ships (ready: RUNNING; being started: CREATING), newest first. The API
    /// does not show them; this is for diagnostics and tests.
    pub async fn list_warm_ships(&self) -> Result<Vec<Ship>> {
        self.list(true).await
    }

    async fn list(&self, warm: bool) -> Result<Vec<Ship>> {
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                let ships = q::all_ships(c)?;
                let rels = q::all_relations(c)?;
                let mut by_ship: HashMap<&str, Vec<RelationRow>> = HashMap::new();
                for r in &rels {
                    by_ship
                        .entry(r.ship_id.as_str())
                        .or_default()
                        .push(r.clone());
                }
                Ok(ships
                    .iter()
                    .filter(|s| s.warm == warm)
                    .map(|s| {
                        Self::ship_view(
                            s,
                            by_ship.get(s.id.as_str()).map_or(&[], Vec::as_slice),
                            now,
                        )
                    })
                    .collect())
            })
            .await?)
    }

    /// Counts of ships by status and of relations; warm-pool ships are counted apart (`warm`
    /// ready, `warming` being started), not in `total`, `running` or `creating`.
    pub async fn overview(&self) -> Result<Overview> {
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                let ships = q::all_ships(c)?;
                let rels = q::all_relations(c)?;
                let count = |s: ShipStatus, warm: bool| {
                    ships
                        .iter()
                        .filter(|r| r.status() == s && r.warm == warm)
                        .count()
                };
                Ok(Overview {
                    ships: ShipCounts {
                        total: ships.iter().filter(|r| !r.warm).count(),
                        running: count(ShipStatus::Running, false),
                        stopped: count(ShipStatus::Stopped, false),
                        creating: count(ShipStatus::Creating, false),
                        warm: count(ShipStatus::Running, true),
                        warming: count(ShipStatus::Creating, true),
                    },
                    sessions: SessionCounts {
                        total: rels.len(),
                        active: rels.iter().filter(|r| r.is_active(now)).count(),
                    },
                })
            })
            .await?)
    }

    /// `GET /ship/{id}/sessions`: every relation of the ship, oldest first.
    pub async fn ship_sessions(&self, ship_id: &str) -> Result<Vec<Session>> {
        let id = ship_id.to_owned();
        let now = Self::now();
        self.inner
            .store
            .tx(move |c| {
                if q::ship(c, &id)?.is_none_or(|s| s.warm) {
                    return Ok(None);
                }
                Ok(Some(
                    q::relations_of_ship(c, &id)?
                        .iter()
                        .map(|r| Self::session_view(r, now))
                        .collect(),
                ))
            })
            .await?
            .ok_or(Error::ShipNotFound)
    }

    /// `GET /ship/logs/{id}`: the last `tail` lines, or `""` when there is no container (a
    /// STOPPED ship), the engine cannot provide them, or the ship is a hidden warm-pool ship.
    pub async fn ship_logs(&self, ship_id: &str, tail: u32) -> Result<String> {
        let Some(ship) = self.refresh(ship_id).await?.filter(|s| !s.warm) else {
            return Ok(String::new());
        };
        if ship.status() == ShipStatus::Stopped {
            return Ok(String::new());
        }
        let Some(cid) = ship.container_id else {
            return Ok(String::new());
        };
        match self.inner.driver.get_container_logs(&cid, tail).await {
            Ok(logs) => Ok(logs),
            Err(e) => {
                debug!(ship.id = %ship_id, error = %e, "logs unavailable");
                Ok(String::new())
            }
        }
    }
}
