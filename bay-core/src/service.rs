//! `ShipService`: every lifecycle operation of bay-api.md §5, correct under concurrency and
//! restarts.
//!
//! Each operation is refresh → check → act through the driver → persist. Creates of one
//! session are serialised, lifecycle operations of one ship are serialised, slot accounting is
//! a semaphore ([`Admission`]) and relation changes are single transactions. Every deadline
//! lives in the database; one reaper task sleeps until the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diesel::QueryResult;
use diesel::sqlite::SqliteConnection;
use futures::{Stream, StreamExt};
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::{Admission, AdmissionError, AtLimit};
use crate::config::{Config, MaxShipBehavior};
use crate::driver::{ContainerDriver, DriverError, ShipContainerRequest};
use crate::error::{Error, Result};
use crate::keyed_lock::KeyedLock;
use crate::model::{EffectiveSpec, ShipStatus, SpecRequest, Timestamp};
use crate::ship_client::{Download, ShipClient, ShipEndpoint, ShipMethod};
use crate::store::{RelationRow, ShipRow, Store, q};

/// A request to create (or reuse, join, restore) a ship for a session.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateShip {
    /// Seconds the session wants the ship for (1 … `MAX_TTL`).
    pub ttl: i64,
    /// Requested resources (validated; defaults not yet applied).
    pub spec: SpecRequest,
    /// Simultaneously active sessions allowed on the ship (1 … 100).
    pub max_session_num: i32,
    /// Skip reuse, restore and join: always make a new ship.
    pub force_create: bool,
}

impl CreateShip {
    /// A request with this ttl and every other field at its default.
    pub fn with_ttl(ttl: i64) -> Self {
        Self {
            ttl,
            spec: SpecRequest::default(),
            max_session_num: 1,
            force_create: false,
        }
    }
}

/// A ship as the API shows it (`ShipResponse`, bay-api.md §3.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ship {
    /// ship id
    pub id: String,
    /// status
    pub status: ShipStatus,
    /// record creation
    pub created_at: Timestamp,
    /// last change of a stored attribute
    pub updated_at: Timestamp,
    /// container id while one exists
    pub container_id: Option<String>,
    /// agent address while one exists
    pub ip_address: Option<String>,
    /// RUNNING: seconds left (rounded up); CREATING: requested ttl; STOPPED: 0
    pub ttl: i64,
    /// session slots
    pub max_session_num: i32,
    /// active relations (0 unless RUNNING)
    pub current_session_num: i64,
    /// RUNNING: the deadline
    pub expires_at: Option<Timestamp>,
}

/// A relation as the API shows it (`SessionResponse`, bay-api.md §3.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// relation id
    pub id: String,
    /// the client's session string
    pub session_id: String,
    /// the ship
    pub ship_id: String,
    /// relation creation
    pub created_at: Timestamp,
    /// last use
    pub last_activity: Timestamp,
    /// end of activity
    pub expires_at: Timestamp,
    /// ttl by which activity refreshes the expiry
    pub initial_ttl: i64,
    /// `expires_at > now`
    pub is_active: bool,
}

/// Counts for `/stat/overview`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// ship counts
    pub ships: ShipCounts,
    /// relation counts
    pub sessions: SessionCounts,
}

/// Ship counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShipCounts {
    /// all records
    pub total: usize,
    /// status 1
    pub running: usize,
    /// status 0
    pub stopped: usize,
    /// status 2
    pub creating: usize,
}

/// Relation counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionCounts {
    /// all relations
    pub total: usize,
    /// relations with `expires_at > now`
    pub active: usize,
}

/// What the terminal relay needs to reach a ship's agent.
#[derive(Debug, Clone)]
pub struct TerminalTarget {
    /// `ws://…/term/ws?session_id=…&cols=…&rows=…`
    pub url: String,
    /// the ship's bearer token
    pub token: String,
}

/// Why a ship stopped (for logs and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// `DELETE /ship/{id}`
    SoftDelete,
    /// its deadline passed
    Expired,
    /// its container vanished
    Crashed,
    /// its last session was deleted
    NoSession,
    /// permanent delete
    Deleted,
}

/// A lifecycle event, for terminal relays and other observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipEvent {
    /// The ship stopped or was deleted: open terminals must close (4004 `Ship stopped`).
    Stopped {
        /// the ship
        ship_id: String,
    },
}

/// An exec `type` resolved through the allow-list (bay-api.md §4.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRoute {
    /// GET or POST
    pub method: ShipMethod,
    /// agent path, e.g. `/shell/exec`
    pub path: String,
}

const POST_TYPES: &[&str] = &[
    "shell/exec",
    "ipython/exec",
    "ipython/create_kernel",
    "ipython/kernel/restart",
    "fs/create_file",
    "fs/read_file",
    "fs/write_file",
    "fs/edit_file",
    "fs/delete_file",
    "fs/list_dir",
];

/// Resolves an exec `type`: leading `/` removed, then it must be in the allow-list.
///
/// ```
/// use bay_core::service::resolve_exec_type;
/// use bay_core::ship_client::ShipMethod;
/// assert_eq!(resolve_exec_type("/shell/exec").unwrap().path, "/shell/exec");
/// assert_eq!(resolve_exec_type("shell/process/0a1b2c3d").unwrap().method, ShipMethod::Get);
/// assert!(resolve_exec_type("shell/process/XYZ").is_none());
/// assert!(resolve_exec_type("../admin").is_none());
/// ```
pub fn resolve_exec_type(exec_type: &str) -> Option<ExecRoute> {
    if exec_type.len() > 256 {
        return None;
    }
    let t = exec_type.trim_start_matches('/');
    let route = |method, t: &str| ExecRoute {
        method,
        path: format!("/{t}"),
    };
    if POST_TYPES.contains(&t) {
        return Some(route(ShipMethod::Post, t));
    }
    if t == "shell/processes" || t == "ipython/kernel/status" {
        return Some(route(ShipMethod::Get, t));
    }
    let id = t.strip_prefix("shell/process/")?;
    (id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| route(ShipMethod::Get, t))
}

/// The HTTP timeout of a forwarded exec (bay-api.md §4.15).
pub fn exec_timeout(config: &Config, route: &ExecRoute, payload: Option<&Value>) -> Duration {
    let base = config.ship_exec_timeout;
    let timed = route.path == "/shell/exec" || route.path == "/ipython/exec";
    let background = payload.and_then(|p| p.get("background")).is_some_and(|b| {
        b == &Value::Bool(true) || b.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
    });
    if !timed || (route.path == "/shell/exec" && background) {
        return Duration::from_secs(base);
    }
    let t = match payload
        .and_then(|p| p.as_object())
        .map(|o| o.get("timeout"))
    {
        None | Some(None) => 30,
        Some(Some(Value::Null)) => config.ship_exec_max_timeout,
        Some(Some(v)) => positive_int(v).unwrap_or(base),
    }
    .min(config.ship_exec_max_timeout);
    Duration::from_secs((t + config.ship_exec_timeout_grace).max(base))
}

fn positive_int(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f > 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps a ship from being reaped while an operation is in flight.
struct InflightGuard {
    service: Arc<Inner>,
    ship_id: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self
            .service
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ship_id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ship_id);
            }
        }
        self.service.reaper.notify_one();
    }
}

struct Inner {
    config: Config,
    driver: Arc<dyn ContainerDriver>,
    store: Store,
    client: ShipClient,
    admission: Admission,
    session_locks: KeyedLock,
    ship_locks: KeyedLock,
    reaper: Notify,
    inflight: Mutex<HashMap<String, usize>>,
    starting: Mutex<HashMap<String, CancellationToken>>,
    events: broadcast::Sender<ShipEvent>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The ship lifecycle service. Cheap to clone; background tasks (reaper, status checker) run
/// until [`ShipService::shutdown`].
#[derive(Clone)]
pub struct ShipService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipService")
            .field("driver", &self.inner.driver)
            .finish_non_exhaustive()
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The driver could not be initialised.
    #[error("container driver {driver} failed to initialise: {source}")]
    Driver {
        /// the configured driver
        driver: &'static str,
        /// why
        source: DriverError,
    },
}

impl ShipService {
    /// Opens the database (applying migrations), initialises the driver, reconciles what a
    /// previous run left behind (ships stuck in CREATING, overdue deadlines, vanished and orphan
    /// containers) and starts the reaper and the status checker. Returns once the service is
    /// ready to answer.
    pub async fn start(
        config: Config,
        driver: Arc<dyn ContainerDriver>,
    ) -> std::result::Result<Self, StartError> {
        let store = Store::open(&config.database_path).await?;
        driver
            .initialize()
            .await
            .map_err(|source| StartError::Driver {
                driver: config.container_driver.as_str(),
                source,
            })?;
        let (events, _) = broadcast::channel(256);
        let service = Self {
            inner: Arc::new(Inner {
                client: ShipClient::new(config.ship_transfer_timeout),
                admission: Admission::new(config.ship_limit()),
                config,
                driver,
                store,
                session_locks: KeyedLock::default(),
                ship_locks: KeyedLock::default(),
                reaper: Notify::new(),
                inflight: Mutex::new(HashMap::new()),
                starting: Mutex::new(HashMap::new()),
                events,
                shutdown: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        service.recover().await?;
        let reaper = tokio::spawn(service.clone().reaper_loop());
        let checker = tokio::spawn(service.clone().status_check_loop());
        service
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([reaper, checker]);
        Ok(service)
    }

    /// Stops the background tasks and closes the driver. Ships keep running; their deadlines
    /// are in the database and are honoured by the next start.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.inner.driver.close().await {
            warn!(error = %e, "closing the container driver failed");
        }
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Lifecycle events (ship stopped or deleted).
    pub fn subscribe(&self) -> broadcast::Receiver<ShipEvent> {
        self.inner.events.subscribe()
    }

    /// Checks that the database answers (for `/health`).
    pub async fn health(&self) -> Result<()> {
        Ok(self.inner.store.ping().await?)
    }

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn max_ttl(&self) -> i64 {
        self.inner.config.max_ttl
    }

    /// The effective spec of a request: the request's values, else the configured defaults.
    pub fn effective_spec(&self, spec: &SpecRequest) -> EffectiveSpec {
        let c = &self.inner.config;
        EffectiveSpec {
            cpus: spec.cpus.or(c.default_ship_cpus),
            memory_bytes: spec.memory_bytes.or(c.default_ship_memory),
            disk_bytes: spec.disk_bytes,
        }
    }

    fn check_ttl(&self, ttl: i64) -> Result<()> {
        if ttl <= 0 {
            Err(Error::TtlNotPositive)
        } else if ttl > self.max_ttl() {
            Err(Error::TtlTooLarge {
                max: self.max_ttl(),
            })
        } else {
            Ok(())
        }
    }

    // ----------------------------------------------------------------------------------------
    // Views

    fn ship_view(ship: &ShipRow, relations: &[RelationRow], now: Timestamp) -> Ship {
        let status = ship.status();
        let running = status == ShipStatus::Running;
        let deadline = ship.deadline.map(Timestamp::from_micros);
        Ship {
            id: ship.id.clone(),
            status,
            created_at: Timestamp::from_micros(ship.created_at),
            updated_at: Timestamp::from_micros(ship.updated_at),
            container_id: ship.container_id.clone(),
            ip_address: ship.ip_address.clone(),
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

    fn session_view(r: &RelationRow, now: Timestamp) -> Session {
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

    async fn load_view(&self, ship_id: &str) -> Result<Option<Ship>> {
        let id = ship_id.to_owned();
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                let Some(ship) = q::ship(c, &id)? else {
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

    /// Every ship, newest first.
    pub async fn list_ships(&self) -> Result<Vec<Ship>> {
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

    /// Counts of ships by status and of relations.
    pub async fn overview(&self) -> Result<Overview> {
        let now = Self::now();
        Ok(self
            .inner
            .store
            .tx(move |c| {
                let ships = q::all_ships(c)?;
                let rels = q::all_relations(c)?;
                let count = |s: ShipStatus| ships.iter().filter(|r| r.status() == s).count();
                Ok(Overview {
                    ships: ShipCounts {
                        total: ships.len(),
                        running: count(ShipStatus::Running),
                        stopped: count(ShipStatus::Stopped),
                        creating: count(ShipStatus::Creating),
                    },
                    sessions: SessionCounts {
                        total: rels.len(),
                        active: rels.iter().filter(|r| r.is_active(now)).count(),
                    },
                })
            })
            .await?)
    }

    // ----------------------------------------------------------------------------------------
    // Create: bay-api.md §5.4

    /// `POST /ship`: reuse the session's running ship, restore its stopped one, join a running
    /// ship with a free slot, or create a new ship — in that order (only the last with
    /// `force_create`). The returned ship is RUNNING with the caller's relation active.
    pub async fn create_ship(&self, session: &str, req: CreateShip) -> Result<Ship> {
        self.check_ttl(req.ttl)?;
        let _session_guard = self.inner.session_locks.lock(session).await;
        if !req.force_create {
            if let Some(ship) = self.reuse_running(session, req.ttl).await? {
                return Ok(ship);
            }
            if let Some(ship) = self.restore_stopped(session, req.ttl).await? {
                return Ok(ship);
            }
            if let Some(ship) = self.join_running(session, &req).await? {
                return Ok(ship);
            }
        }
        self.create_new(session, &req).await
    }

    /// Step 1: the session's running ship (latest activity first).
    async fn reuse_running(&self, session: &str, ttl: i64) -> Result<Option<Ship>> {
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
            // A related ship being started by someone else: wait for that start, then re-evaluate.
            if let Some((_, ship)) = related
                .iter()
                .find(|(_, s)| s.status() == ShipStatus::Creating && !waited_for.contains(&s.id))
            {
                waited_for.push(ship.id.clone());
                let budget = self.inner.config.ship_health_check_timeout + Duration::from_secs(5);
                let _ = tokio::time::timeout(budget, self.inner.ship_locks.lock(&ship.id)).await;
                continue;
            }
            for (_, ship) in related
                .iter()
                .filter(|(_, s)| s.status() == ShipStatus::Running)
            {
                let _g = self.inner.ship_locks.lock(&ship.id).await;
                let Some(ship) = self.refresh(&ship.id).await? else {
                    continue;
                };
                if ship.status() != ShipStatus::Running || !self.container_alive(&ship).await {
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
    async fn restore_stopped(&self, session: &str, ttl: i64) -> Result<Option<Ship>> {
        let s = session.to_owned();
        let mut related = self
            .inner
            .store
            .tx(move |c| q::relations_of_session(c, &s))
            .await?;
        related.retain(|(_, ship)| ship.status() == ShipStatus::Stopped);
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
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            let Some(ship) = self.refresh(&ship.id).await? else {
                continue;
            };
            if ship.status() != ShipStatus::Stopped {
                continue;
            }
            info!(ship.id = %ship.id, session.id = %session, "restoring the session's stopped ship");
            let ship_id = ship.id.clone();
            self.restore_locked(ship, session, ttl).await?;
            return Ok(Some(self.get_ship(&ship_id).await?));
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
                    if ship.max_session_num != max || q::relation(c, &s, &ship.id)?.is_some() {
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
            if ship.status() != ShipStatus::Running || !self.container_alive(&ship).await {
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
                    if ship.status() != ShipStatus::Running
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

    /// Step 4: a new ship.
    async fn create_new(&self, session: &str, req: &CreateShip) -> Result<Ship> {
        let ship_id = uuid::Uuid::new_v4().to_string();
        self.admit(&ship_id).await?;
        let spec = self.effective_spec(&req.spec);
        let now = Self::now();
        let row = ShipRow {
            id: ship_id.clone(),
            status: ShipStatus::Creating.code(),
            created_at: now.micros(),
            updated_at: now.micros(),
            container_id: None,
            ip_address: None,
            ttl: req.ttl,
            max_session_num: req.max_session_num,
            spec_cpus: spec.cpus,
            spec_memory: spec.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            spec_disk: spec.disk_bytes.and_then(|d| i64::try_from(d).ok()),
            auth_token: random_token(),
            deadline: None,
            ever_running: false,
        };
        let _g = self.inner.ship_locks.lock(&ship_id).await;
        let insert = row.clone();
        if let Err(e) = self
            .inner
            .store
            .tx(move |c| q::insert_ship(c, &insert))
            .await
        {
            self.inner.admission.release(&ship_id);
            return Err(e.into());
        }
        info!(ship.id = %ship_id, session.id = %session, "creating a new ship");
        match self.bring_up(&row, session, req.ttl).await {
            Ok(()) => self.get_ship(&ship_id).await,
            Err(e) => {
                warn!(ship.id = %ship_id, error = %e, "creating the ship failed; removing it");
                self.discard_new_ship(&ship_id, row.container_id.as_deref())
                    .await;
                Err(match e {
                    Error::Driver(d) => Error::CreateFailed(d.to_string()),
                    other => other,
                })
            }
        }
    }

    /// Removes every trace of a ship that never became ready: containers, data, record, slot.
    async fn discard_new_ship(&self, ship_id: &str, container_id: Option<&str>) {
        let driver = &self.inner.driver;
        let mut containers: Vec<String> = container_id.map(str::to_owned).into_iter().collect();
        let id = ship_id.to_owned();
        if let Ok(Some(row)) = self.inner.store.tx(move |c| q::ship(c, &id)).await {
            containers.extend(row.container_id);
        }
        match driver.list_managed().await {
            Ok(list) => containers.extend(
                list.into_iter()
                    .filter(|m| m.ship_id == ship_id)
                    .map(|m| m.container_id),
            ),
            Err(e) => warn!(ship.id = %ship_id, error = %e, "cannot list containers to clean up"),
        }
        containers.sort();
        containers.dedup();
        let mut clean = true;
        for cid in &containers {
            if let Err(e) = driver.stop_ship_container(cid).await {
                warn!(ship.id = %ship_id, container.id = %cid, error = %e, "cannot remove container");
                clean = false;
            }
        }
        if let Err(e) = driver.delete_ship_data(ship_id).await {
            warn!(ship.id = %ship_id, error = %e, "cannot remove ship data");
        }
        let id = ship_id.to_owned();
        let result = if clean {
            self.inner.store.tx(move |c| q::delete_ship(c, &id)).await
        } else {
            // Keep the record (STOPPED) so that the status checker removes the container later.
            self.inner
                .store
                .tx(move |c| {
                    if let Some(mut row) = q::ship(c, &id)? {
                        row.set_status(ShipStatus::Stopped, Timestamp::now());
                        row.container_id = None;
                        row.ip_address = None;
                        q::save_ship(c, &row)?;
                    }
                    Ok(())
                })
                .await
        };
        if let Err(e) = result {
            warn!(ship.id = %ship_id, error = %e, "cannot remove the ship record");
        }
        self.inner.admission.release(ship_id);
    }

    async fn admit(&self, ship_id: &str) -> Result<()> {
        let c = &self.inner.config;
        let at_limit = match c.behavior_after_max_ship {
            MaxShipBehavior::Reject => AtLimit::Reject,
            MaxShipBehavior::Wait => AtLimit::Wait(c.max_ship_wait),
        };
        match self.inner.admission.acquire(ship_id, at_limit).await {
            Ok(()) => Ok(()),
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
    /// relation granted. The ship lock must be held and the slot reserved; the row is CREATING.
    /// On error the caller cleans up; `row.container_id` is updated as soon as one exists.
    async fn bring_up(&self, row: &ShipRow, session: &str, ttl: i64) -> Result<()> {
        let cancel = CancellationToken::new();
        self.inner
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id.clone(), cancel.clone());
        let result = tokio::select! {
            r = self.bring_up_inner(row, session, ttl) => r,
            () = cancel.cancelled() => Err(Error::DeletedWhileStarting),
        };
        self.inner
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&row.id);
        result
    }

    async fn bring_up_inner(&self, row: &ShipRow, session: &str, ttl: i64) -> Result<()> {
        let request = ShipContainerRequest {
            ship_id: row.id.clone(),
            spec: row.spec(),
            auth_token: row.auth_token.clone(),
            ttl,
        };
        let info = self.inner.driver.create_ship_container(&request).await?;
        let (id, cid, ip) = (
            row.id.clone(),
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

    /// Restores a STOPPED ship with its stored spec and data, then grants `ttl` to `session`.
    /// The ship lock must be held.
    async fn restore_locked(&self, mut ship: ShipRow, session: &str, ttl: i64) -> Result<()> {
        self.admit(&ship.id).await?;
        ship.set_status(ShipStatus::Creating, Self::now());
        ship.ttl = ttl;
        let save = ship.clone();
        if let Err(e) = self.inner.store.tx(move |c| q::save_ship(c, &save)).await {
            self.inner.admission.release(&ship.id);
            return Err(e.into());
        }
        match self.bring_up(&ship, session, ttl).await {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!(ship.id = %ship.id, error = %e, "restoring the ship failed");
                let id = ship.id.clone();
                let row = self
                    .inner
                    .store
                    .tx(move |c| q::ship(c, &id))
                    .await
                    .ok()
                    .flatten();
                if let Some(row) = row {
                    self.stop_locked(row, StopCause::Crashed).await;
                } else {
                    self.inner.admission.release(&ship.id);
                }
                Err(match e {
                    Error::Driver(d) => Error::StartFailed(d.to_string()),
                    other => other,
                })
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

    async fn refresh(&self, ship_id: &str) -> Result<Option<ShipRow>> {
        let id = ship_id.to_owned();
        Ok(self.inner.store.tx(move |c| q::ship(c, &id)).await?)
    }

    /// Whether a RUNNING ship's container is alive; a container that is gone stops the ship
    /// (crash). An engine error counts as alive: nothing is concluded from it. Ship lock held.
    async fn container_alive(&self, ship: &ShipRow) -> bool {
        let Some(cid) = ship.container_id.as_deref() else {
            self.stop_locked(ship.clone(), StopCause::Crashed).await;
            return false;
        };
        match self.inner.driver.is_container_running(cid).await {
            Ok(true) => true,
            Err(e) if e.is_transient() => {
                warn!(ship.id = %ship.id, error = %e, "container state unknown; assuming it runs");
                true
            }
            Ok(false) | Err(_) => {
                info!(ship.id = %ship.id, "container is gone; stopping the ship");
                self.stop_locked(ship.clone(), StopCause::Crashed).await;
                false
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Stop, delete, extend, start

    /// The one stop procedure (§5.8): container removed, data kept, relations expired, slot
    /// released, terminals told. The ship lock must be held.
    async fn stop_locked(&self, ship: ShipRow, cause: StopCause) {
        // Terminals are told first, before the agent closes them itself while it stops.
        let _ = self.inner.events.send(ShipEvent::Stopped {
            ship_id: ship.id.clone(),
        });
        // A container that cannot be removed now is removed later by the status checker (orphan).
        if let Some(cid) = ship.container_id.as_deref()
            && let Err(e) = self.inner.driver.stop_ship_container(cid).await
        {
            warn!(ship.id = %ship.id, container.id = %cid, error = %e, "cannot remove the container");
        }
        let id = ship.id.clone();
        let result = self
            .inner
            .store
            .tx(move |c| {
                let now = Timestamp::now();
                let Some(mut ship) = q::ship(c, &id)? else {
                    return Ok(());
                };
                ship.set_status(ShipStatus::Stopped, now);
                ship.container_id = None;
                ship.ip_address = None;
                ship.deadline = None;
                q::save_ship(c, &ship)?;
                for mut r in q::relations_of_ship(c, &id)? {
                    if r.expires_at > now.micros() {
                        r.expires_at = now.micros();
                        q::save_relation(c, &r)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            warn!(ship.id = %ship.id, error = %e, "cannot record the stop");
        }
        self.inner.admission.release(&ship.id);
        info!(ship.id = %ship.id, cause = ?cause, "ship stopped");
    }

    /// A ship being created or started answers at once (409) instead of waiting for its
    /// lock, which the start holds until the ship is ready.
    async fn refuse_if_creating(&self, ship_id: &str) -> Result<()> {
        match self.refresh(ship_id).await? {
            Some(ship) if ship.status() == ShipStatus::Creating => Err(Error::ShipCreating),
            _ => Ok(()),
        }
    }

    /// `DELETE /ship/{id}`: stop a RUNNING ship, keeping its data.
    pub async fn stop_ship(&self, ship_id: &str) -> Result<()> {
        self.refuse_if_creating(ship_id).await?;
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let ship = self.refresh(ship_id).await?.ok_or(Error::ShipNotFound)?;
        match ship.status() {
            ShipStatus::Creating => Err(Error::ShipCreating),
            ShipStatus::Stopped => Err(Error::ShipNotFound),
            ShipStatus::Running => {
                self.stop_locked(ship, StopCause::SoftDelete).await;
                Ok(())
            }
        }
    }

    /// `DELETE /ship/{id}/permanent`: container, data, relations and record removed. A start in
    /// progress is aborted first.
    pub async fn delete_ship(&self, ship_id: &str) -> Result<()> {
        let aborted = self
            .inner
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ship_id)
            .map(CancellationToken::cancel)
            .is_some();
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let ship = match self.refresh(ship_id).await? {
            Some(ship) => ship,
            // The aborted create already removed everything it had made.
            None if aborted => return Ok(()),
            None => return Err(Error::ShipNotFound),
        };
        let _ = self.inner.events.send(ShipEvent::Stopped {
            ship_id: ship_id.to_owned(),
        });
        if let Some(cid) = ship.container_id.as_deref() {
            match self.inner.driver.stop_ship_container(cid).await {
                Ok(()) | Err(DriverError::NotFound(_)) => {}
                Err(e) => {
                    self.stop_locked(ship, StopCause::Deleted).await;
                    return Err(Error::DataDeleteFailed(e.to_string()));
                }
            }
        }
        if let Err(e) = self.inner.driver.delete_ship_data(ship_id).await {
            let mut stopped = ship.clone();
            stopped.container_id = None;
            self.stop_locked(stopped, StopCause::Deleted).await;
            return Err(Error::DataDeleteFailed(e.to_string()));
        }
        let id = ship_id.to_owned();
        self.inner.store.tx(move |c| q::delete_ship(c, &id)).await?;
        self.inner.admission.release(ship_id);
        self.inner.reaper.notify_one();
        info!(ship.id = %ship_id, "ship deleted permanently");
        Ok(())
    }

    /// `POST /ship/{id}/extend-ttl`: adds `ttl` seconds to every active relation.
    pub async fn extend_ship_ttl(&self, ship_id: &str, ttl: i64) -> Result<Ship> {
        self.check_ttl(ttl)?;
        self.refuse_if_creating(ship_id).await?;
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let ship = self.refresh(ship_id).await?.ok_or(Error::ShipNotFound)?;
        match ship.status() {
            ShipStatus::Creating => return Err(Error::ShipCreating),
            ShipStatus::Stopped => return Err(Error::ShipNotFound),
            ShipStatus::Running => {}
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

    /// `POST /ship/{id}/start`: restore a STOPPED ship, or attach the caller to a RUNNING one.
    pub async fn start_ship(&self, ship_id: &str, session: &str, ttl: Option<i64>) -> Result<Ship> {
        let ttl = ttl.unwrap_or(self.inner.config.default_ship_ttl);
        self.check_ttl(ttl)?;
        let _g = self.inner.ship_locks.lock(ship_id).await;
        let ship = self
            .refresh(ship_id)
            .await?
            .ok_or(Error::ShipNotFoundOrCreating)?;
        match ship.status() {
            ShipStatus::Creating => Err(Error::ShipNotFoundOrCreating),
            ShipStatus::Stopped => {
                info!(ship.id = %ship_id, session.id = %session, "starting a stopped ship");
                self.restore_locked(ship, session, ttl).await?;
                self.get_ship(ship_id).await
            }
            ShipStatus::Running => {
                let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
                let attached = self
                    .inner
                    .store
                    .tx(move |c| {
                        let now = Timestamp::now();
                        let related = q::relation(c, &sid, &id)?.is_some();
                        let Some(mut ship) = q::ship(c, &id)? else {
                            return Ok(false);
                        };
                        if !related
                            && q::active_count(c, &id, now.micros())?
                                >= i64::from(ship.max_session_num)
                        {
                            return Ok(false);
                        }
                        grant(c, &id, &sid, ttl, now, max_ttl)?;
                        recompute_deadline(c, &mut ship, now)?;
                        Ok(true)
                    })
                    .await?;
                if !attached {
                    return Err(Error::NoFreeSlot);
                }
                self.inner.reaper.notify_one();
                self.get_ship(ship_id).await
            }
        }
    }

    /// `GET /ship/logs/{id}`: the last `tail` lines, or `""` when there is no container or the
    /// engine cannot provide them.
    pub async fn ship_logs(&self, ship_id: &str, tail: u32) -> Result<String> {
        let Some(ship) = self.refresh(ship_id).await? else {
            return Ok(String::new());
        };
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

    /// `GET /ship/{id}/sessions`: every relation of the ship, oldest first.
    pub async fn ship_sessions(&self, ship_id: &str) -> Result<Vec<Session>> {
        let id = ship_id.to_owned();
        let now = Self::now();
        self.inner
            .store
            .tx(move |c| {
                if q::ship(c, &id)?.is_none() {
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

    // ----------------------------------------------------------------------------------------
    // Access: exec, upload, download, terminal

    /// Checks that the ship is RUNNING and the session related (re-activating an expired
    /// relation), touches the relation and marks an operation in flight.
    async fn access(&self, ship_id: &str, session: &str) -> Result<(ShipEndpoint, InflightGuard)> {
        let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
        let port = self.inner.config.ship_container_port;
        let endpoint = self
            .inner
            .store
            .tx(move |c| {
                let Some(ship) = q::ship(c, &id)? else {
                    return Ok(Err(Error::ShipNotRunning));
                };
                if ship.status() != ShipStatus::Running {
                    return Ok(Err(Error::ShipNotRunning));
                }
                let Some(address) = ship.ip_address.clone() else {
                    return Ok(Err(Error::ShipNotRunning));
                };
                if !touch(c, &ship, &sid, Timestamp::now(), max_ttl)? {
                    return Ok(Err(Error::NoAccess));
                }
                Ok(Ok(ShipEndpoint::new(&address, port, &ship.auth_token)))
            })
            .await??;
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(ship_id.to_owned()).or_default() += 1;
        drop(map);
        self.inner.reaper.notify_one();
        Ok((
            endpoint,
            InflightGuard {
                service: self.inner.clone(),
                ship_id: ship_id.to_owned(),
            },
        ))
    }

    /// Touches the (session, ship) relation if the ship is still RUNNING (activity).
    pub async fn touch_session(&self, ship_id: &str, session: &str) -> Result<()> {
        let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
        self.inner
            .store
            .tx(move |c| {
                if let Some(ship) = q::ship(c, &id)?
                    && ship.status() == ShipStatus::Running
                {
                    touch(c, &ship, &sid, Timestamp::now(), max_ttl)?;
                }
                Ok(())
            })
            .await?;
        self.inner.reaper.notify_one();
        Ok(())
    }

    /// `POST /ship/{id}/exec`: forwards an allow-listed operation and returns the agent's JSON.
    pub async fn exec(
        &self,
        ship_id: &str,
        session: &str,
        exec_type: &str,
        payload: Option<Value>,
    ) -> Result<Value> {
        let route = resolve_exec_type(exec_type)
            .ok_or_else(|| Error::UnsupportedExecType(exec_type.to_owned()))?;
        let (endpoint, guard) = self.access(ship_id, session).await?;
        let timeout = exec_timeout(&self.inner.config, &route, payload.as_ref());
        let result = self
            .inner
            .client
            .exec(
                &endpoint,
                session,
                route.method,
                &route.path,
                payload.as_ref(),
                timeout,
            )
            .await;
        if !matches!(result, Err(Error::ShipConnection(_) | Error::ShipTimeout)) {
            self.touch_session(ship_id, session).await?;
        }
        drop(guard);
        result
    }

    /// `POST /ship/{id}/upload`: streams `data` to the agent. Returns the agent's resolved path.
    pub async fn upload<S>(
        &self,
        ship_id: &str,
        session: &str,
        file_path: &str,
        data: S,
        length: Option<u64>,
        file_first: bool,
    ) -> Result<Value>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let (endpoint, guard) = self.access(ship_id, session).await?;
        let result = self
            .inner
            .client
            .upload(&endpoint, session, file_path, data, length, file_first)
            .await;
        self.touch_session(ship_id, session).await?;
        drop(guard);
        let body = result?;
        if body.get("success") == Some(&Value::Bool(false)) {
            let reason = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned();
            return Err(Error::UploadFailed(reason));
        }
        Ok(body)
    }

    /// `GET /ship/{id}/download`: a stream of the file's bytes. The ship counts as busy until
    /// the stream ends.
    pub async fn download(
        &self,
        ship_id: &str,
        session: &str,
        file_path: &str,
    ) -> Result<Download> {
        let (endpoint, guard) = self.access(ship_id, session).await?;
        let download = self
            .inner
            .client
            .download(&endpoint, session, file_path)
            .await;
        self.touch_session(ship_id, session).await?;
        let download = download?;
        let service = self.clone();
        let (ship, sid) = (ship_id.to_owned(), session.to_owned());
        let stream = download.stream.chain(futures::stream::once(async move {
            let _ = service.touch_session(&ship, &sid).await;
            drop(guard);
            Ok(Bytes::new())
        }));
        Ok(Download {
            content_length: download.content_length,
            stream: stream
                .filter(|c| futures::future::ready(!matches!(c, Ok(b) if b.is_empty())))
                .boxed(),
        })
    }

    /// Terminal checks 3 and 4 of bay-api.md §4.18, then the agent URL to relay to. The
    /// relation is touched (re-activated when expired).
    pub async fn open_terminal(
        &self,
        ship_id: &str,
        session: &str,
        cols: u16,
        rows: u16,
    ) -> Result<TerminalTarget> {
        let (endpoint, guard) = self.access(ship_id, session).await?;
        drop(guard);
        Ok(TerminalTarget {
            url: endpoint.terminal_url(session, cols, rows),
            token: endpoint.token,
        })
    }

    // ----------------------------------------------------------------------------------------
    // Sessions: bay-api.md §4.19–4.22

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
        for (rel, ship) in related
            .iter()
            .filter(|(_, s)| s.status() == ShipStatus::Running)
        {
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
                    if ship.status() != ShipStatus::Running {
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
    pub async fn delete_session(&self, session: &str, ship_id: Option<&str>) -> Result<()> {
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
                    if ship.status() != ShipStatus::Running {
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

    // ----------------------------------------------------------------------------------------
    // Background: recovery, reaper, status checker

    /// Start-up reconciliation (§5.11).
    async fn recover(&self) -> Result<(), crate::store::StoreError> {
        let creating = self
            .inner
            .store
            .tx(|c| q::ships_with_status(c, ShipStatus::Creating))
            .await?;
        for ship in creating {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            if ship.ever_running {
                info!(ship.id = %ship.id, "a restore was interrupted; marking the ship stopped");
                self.stop_locked(ship, StopCause::Crashed).await;
            } else {
                info!(ship.id = %ship.id, "a create was interrupted; removing the ship");
                self.discard_new_ship(&ship.id, ship.container_id.as_deref())
                    .await;
            }
        }
        let running = self
            .inner
            .store
            .tx(|c| q::ships_with_status(c, ShipStatus::Running))
            .await?;
        for ship in &running {
            self.inner.admission.adopt(&ship.id);
        }
        let now = Self::now();
        for ship in running {
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            if ship.deadline.is_none_or(|d| d <= now.micros()) {
                info!(ship.id = %ship.id, "deadline passed while Bay was down");
                self.stop_locked(ship, StopCause::Expired).await;
            } else {
                self.container_alive(&ship).await;
            }
        }
        self.remove_orphans().await;
        Ok(())
    }

    /// Removes managed containers whose ship is recorded but not supposed to have them
    /// (stopped ships, replaced containers). Containers of unknown ship ids are never touched.
    async fn remove_orphans(&self) {
        let managed = match self.inner.driver.list_managed().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot list managed containers; skipping orphan check");
                return;
            }
        };
        for container in managed {
            let Ok(Some(ship)) = self.refresh(&container.ship_id).await else {
                continue;
            };
            let expected = match ship.status() {
                ShipStatus::Creating => continue,
                ShipStatus::Running => {
                    ship.container_id.as_deref() == Some(container.container_id.as_str())
                }
                ShipStatus::Stopped => false,
            };
            if expected {
                continue;
            }
            let _g = self.inner.ship_locks.lock(&ship.id).await;
            // Re-check under the lock: a start may have adopted it meanwhile.
            let Ok(Some(ship)) = self.refresh(&container.ship_id).await else {
                continue;
            };
            if ship.status() == ShipStatus::Creating
                || ship.container_id.as_deref() == Some(container.container_id.as_str())
            {
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

    /// Runs the periodic container check once: RUNNING ships whose container is gone are
    /// stopped; engine errors change nothing; orphans are removed.
    pub async fn check_containers(&self) {
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
                && ship.status() == ShipStatus::Running
            {
                self.container_alive(&ship).await;
            }
        }
        self.remove_orphans().await;
    }

    async fn status_check_loop(self) {
        let interval = self.inner.config.status_check_interval;
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => self.check_containers().await,
            }
        }
    }

    /// Stops every RUNNING ship whose deadline has passed and that has no operation in flight.
    /// Returns the time until the next deadline.
    pub async fn reap_once(&self) -> Option<Duration> {
        let now = Self::now();
        let overdue = self
            .inner
            .store
            .tx(move |c| q::overdue_ships(c, now.micros()))
            .await
            .unwrap_or_default();
        for id in overdue {
            if self.is_busy(&id) {
                continue;
            }
            let _g = self.inner.ship_locks.lock(&id).await;
            let Ok(Some(ship)) = self.refresh(&id).await else {
                continue;
            };
            let still_due = ship.status() == ShipStatus::Running
                && ship.deadline.is_none_or(|d| d <= Self::now().micros());
            if still_due && !self.is_busy(&id) {
                self.stop_locked(ship, StopCause::Expired).await;
            }
        }
        let next = self.inner.store.tx(q::next_deadline).await.ok().flatten()?;
        Some(Timestamp::from_micros(next).duration_since(Self::now()))
    }

    fn is_busy(&self, ship_id: &str) -> bool {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ship_id)
    }

    async fn reaper_loop(self) {
        loop {
            let notified = self.inner.reaper.notified();
            let next = self.reap_once().await;
            // Busy ships are re-checked when their operation ends (it notifies); the 1 s cap
            // also bounds how late an expiry can be noticed.
            let sleep = next
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(5));
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = notified => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

/// grant(T): create or refresh the relation (bay-api.md §5.2).
fn grant(
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
fn touch(
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
fn recompute_deadline(
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

fn recompute_deadline_row(
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
