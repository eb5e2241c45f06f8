//! `ShipService`: every lifecycle operation of bay-api.md §5, correct under concurrency,
//! cancelled requests, engine faults and restarts.
//!
//! Each operation is refresh → check (`ShipStatus::can_*`) → act through the driver →
//! persist, and lives in the file named after it:
//!
//! | file | bay-api.md | what |
//! |---|---|---|
//! | `mod.rs` | | the `ShipService` core: start-up, shutdown, the ownership rule ([`ShipService::owned`](#ownership)) |
//! | `guards.rs` | §5.5 | bookkeeping that must happen on every path: admission slots, start ownership, in-flight marks, the count of operations |
//! | `views.rs` | §3, §4.6–4.8, §4.13–4.14 | `ShipResponse`/`SessionResponse` views, listings, logs |
//! | `create.rs` | §5.4 | `POST /ship`: reuse, restore, join, new ship; discarding a new ship that failed |
//! | `start.rs` | §5.6, §5.7 | `POST /ship/{id}/start`, restore, admission, readiness (bring-up) |
//! | `stop.rs` | §5.8, §5.9 | the one stop procedure, soft delete, permanent delete |
//! | `ttl.rs` | §5.2, §5.3 | grant/touch/deadlines, ship extend-ttl, the reaper |
//! | `proxy.rs` | §4.15–4.18 | exec, upload, download, terminal |
//! | `sessions.rs` | §4.19–4.22, §5.10 | sessions, primary relation |
//! | `reconcile.rs` | §5.11 | start-up recovery and the periodic status check |
//! | `pool.rs` | | the warm pool (`WARM_POOL_SIZE`): claim, refill, yield to demand |
//!
//! # Ownership
//!
//! Every operation that changes a ship's lifecycle (create, start, stop, permanent delete,
//! extend, session delete) runs on a task the service owns; the caller only awaits its
//! answer. A caller that goes away (a client that disconnects) never cancels the work half-way:
//! the task finishes it — or aborts it cleanly — and nobody reads the answer. The only waits
//! that follow the caller are those before any effect: the session's turn, a ship's start
//! lock, and the admission queue (a client that disconnects leaves the queue, §5.5). A request
//! that does not have to wait runs even if its caller has already gone.
//!
//! # Reconciliation
//!
//! A record is removed only when its containers and data are known to be gone. What an
//! operation could not finish stays in a state the status checker retries every
//! `STATUS_CHECK_INTERVAL` (and start-up before serving): a CREATING ship that no operation
//! owns (a new ship is discarded, a restore becomes STOPPED), a STOPPED ship that still has a
//! container (removed, then its slot is freed), a RUNNING ship whose container is gone
//! (stopped), a managed container its ship should not have (removed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::admission::Admission;
use crate::config::Config;
use crate::driver::{ContainerDriver, DriverError};
use crate::error::{Error, Result};
use crate::keyed_lock::KeyedLock;
use crate::model::{EffectiveSpec, SpecRequest, Timestamp};
use crate::ship_client::ShipClient;
use crate::store::{ShipRow, Store};

mod create;
mod guards;
mod pool;
mod proxy;
mod reconcile;
mod sessions;
mod start;
mod stop;
mod ttl;
mod views;

pub use proxy::{ExecRoute, exec_timeout, resolve_exec_type};

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
    pub status: crate::model::ShipStatus,
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
    /// warm-pool ships ready to be claimed (not counted above)
    pub warm: usize,
    /// warm-pool ships being started (not counted above)
    pub warming: usize,
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

/// The service's bookkeeping at one instant (for metrics, diagnostics and invariant checks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    /// Ship ids holding an admission slot, sorted.
    pub slots: Vec<String>,
    /// Ship ids whose start (new ship or restore) an operation owns, sorted.
    pub owned: Vec<String>,
    /// Requests queued for a slot.
    pub waiting: usize,
    /// Lifecycle operations in flight (whether or not their callers still wait).
    pub operations: usize,
    /// Passes the reaper has made since the service started.
    pub reaper_passes: u64,
}

/// How long [`ShipService::shutdown`] lets operations in flight finish (or abort cleanly)
/// before it drops them where they stand.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Inner {
    config: Config,
    driver: Arc<dyn ContainerDriver>,
    store: Store,
    client: ShipClient,
    admission: Admission,
    /// Creates of one session (§5.4).
    session_locks: KeyedLock,
    /// Starts of one ship, held from before admission to the end of the bring-up, so that two
    /// restores of one ship never race for its slot.
    start_locks: KeyedLock,
    /// Lifecycle operations of one ship (§5.12). Lock order: session, start, ship.
    ship_locks: KeyedLock,
    reaper: Notify,
    reaper_passes: AtomicU64,
    inflight: Mutex<HashMap<String, usize>>,
    /// Ship id → the abort token of the start that owns it (see `guards::Ownership`).
    owners: Mutex<HashMap<String, CancellationToken>>,
    /// Number of lifecycle operations in flight (see [`ShipService::owned`]).
    operations: watch::Sender<usize>,
    events: broadcast::Sender<ShipEvent>,
    /// Wakes the warm pool's refill task (a claim, a retired warm ship, demand gone).
    pool_wake: Notify,
    /// Stops the background tasks and aborts starts in progress cleanly.
    shutdown: CancellationToken,
    /// Drops every operation where it stands (after the shutdown grace, or a simulated crash).
    halt: CancellationToken,
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

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer of an operation whose caller went away; nobody reads it.
fn caller_left() -> Error {
    Error::Driver(DriverError::Unavailable(
        "the caller left before the operation began".into(),
    ))
}

/// The answer of an operation that Bay's shutdown cut short.
fn shutting_down() -> Error {
    Error::Driver(DriverError::Unavailable("bay is shutting down".into()))
}

/// Runs `fut` unless the caller leaves while it waits (`caller` cancelled): for waits before
/// any effect, which must not outlive the request that asked for them. What is ready at once
/// goes on even if the caller has already left.
async fn wanted<T>(caller: &CancellationToken, fut: impl Future<Output = T>) -> Result<T> {
    tokio::select! {
        biased;
        v = fut => Ok(v),
        () = caller.cancelled() => Err(caller_left()),
    }
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
                start_locks: KeyedLock::default(),
                ship_locks: KeyedLock::default(),
                reaper: Notify::new(),
                reaper_passes: AtomicU64::new(0),
                inflight: Mutex::new(HashMap::new()),
                owners: Mutex::new(HashMap::new()),
                operations: watch::Sender::new(0),
                events,
                pool_wake: Notify::new(),
                shutdown: CancellationToken::new(),
                halt: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        service.recover().await?;
        let reaper = tokio::spawn(service.clone().reaper_loop());
        let checker = tokio::spawn(service.clone().status_check_loop());
        let pool = tokio::spawn(service.clone().pool_loop());
        service
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([reaper, checker, pool]);
        Ok(service)
    }

    /// Stops the background tasks, aborts starts in progress cleanly (a new ship is removed, a
    /// restore goes back to STOPPED), lets the other operations in flight finish for a short
    /// grace, and closes the driver. Ships keep running; their deadlines are in the database and
    /// are honoured by the next start, which also reconciles whatever the grace cut short.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.join_background().await;
        if tokio::time::timeout(SHUTDOWN_GRACE, self.operations_done())
            .await
            .is_err()
        {
            warn!("operations still in flight after the shutdown grace; dropping them");
            self.inner.halt.cancel();
            self.operations_done().await;
        }
        if let Err(e) = self.inner.driver.close().await {
            warn!(error = %e, "closing the container driver failed");
        }
    }

    /// Simulates a crash (feature `testing`): every operation in flight and every background
    /// task is dropped where it stands, with no cleanup; the database keeps whatever was
    /// written. A service started afterwards on the same database must reconcile it.
    #[cfg(feature = "testing")]
    pub async fn crash(&self) {
        self.inner.halt.cancel();
        self.inner.shutdown.cancel();
        self.join_background().await;
        self.operations_done().await;
    }

    async fn join_background(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn operations_done(&self) {
        let mut rx = self.inner.operations.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
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

    /// The service's bookkeeping now: slots, owned starts, queue, operations in flight.
    pub fn diagnostics(&self) -> Diagnostics {
        let mut owned: Vec<String> = self
            .inner
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        owned.sort();
        Diagnostics {
            slots: self.inner.admission.holders(),
            owned,
            waiting: self.inner.admission.waiting(),
            operations: *self.inner.operations.borrow(),
            reaper_passes: self.inner.reaper_passes.load(Ordering::Relaxed),
        }
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

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn max_ttl(&self) -> i64 {
        self.inner.config.max_ttl
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

    async fn refresh(&self, ship_id: &str) -> Result<Option<ShipRow>> {
        let id = ship_id.to_owned();
        Ok(self
            .inner
            .store
            .tx(move |c| crate::store::q::ship(c, &id))
            .await?)
    }

    /// The ownership rule: runs a lifecycle operation on a task the service owns and waits for
    /// its answer. If the caller is dropped, the operation still runs to its end (or to a clean
    /// abort); a panic in it reaches the caller as a panic. Only the service's halt (after the
    /// shutdown grace, or a simulated crash) drops it where it stands.
    async fn owned<T, F>(&self, op: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let count = guards::OperationGuard::enter(&self.inner);
        let halt = self.inner.halt.clone();
        let task = tokio::spawn(async move {
            let _count = count;
            tokio::select! {
                biased;
                () = halt.cancelled() => None,
                r = op => Some(r),
            }
        });
        match task.await {
            Ok(Some(r)) => r,
            Ok(None) => Err(shutting_down()),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(shutting_down()),
        }
    }
}
