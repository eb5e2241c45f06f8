//! Test doubles (feature `testing`): a [`FakeDriver`] that records calls and can inject failures,
//! delays, panics and gates (a call that waits where it stands until the test opens it), and a
//! [`FakeShip`] agent served in-process on loopback.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use bay_core::driver::ContainerDriver;
//! use bay_core::testing::{FakeDriver, FakeShip};
//! let ship = FakeShip::start().await;
//! let driver = FakeDriver::new(ship.address());
//! assert!(driver.list_managed().await.unwrap().is_empty());
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

pub mod conformance;

use crate::config::Config;
use crate::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};

/// The access token of [`test_config`].
pub const TEST_TOKEN: &str = "test-token";

/// A configuration for tests: the database at `db`, a 2 s readiness budget polled every 20 ms,
/// no periodic container check, the token [`TEST_TOKEN`], then `extra` (which wins).
pub fn test_config(db: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut pairs: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), format!("sqlite://{}", db.display())),
        ("SHIP_HEALTH_CHECK_TIMEOUT".into(), "2".into()),
        ("SHIP_READY_POLL_MS".into(), "20".into()),
        ("STATUS_CHECK_INTERVAL".into(), "3600".into()),
        ("ACCESS_TOKEN".into(), TEST_TOKEN.into()),
    ];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_pairs(pairs).expect("valid test configuration")
}

/// A write lock held on a Bay database by another connection (see [`lock_database`]).
pub struct DatabaseLock {
    conn: diesel::sqlite::SqliteConnection,
}

impl std::fmt::Debug for DatabaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLock").finish_non_exhaustive()
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        let _ = self.conn.batch_execute("ROLLBACK");
    }
}

/// Takes the write lock of the SQLite database at `db` from a separate connection and holds it
/// until the guard is dropped: every Bay transaction (`BEGIN IMMEDIATE`) then waits, and fails
/// after SQLite's busy timeout. Simulates a database that does not answer.
pub fn lock_database(db: &std::path::Path) -> DatabaseLock {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let url = db.to_str().expect("UTF-8 database path");
    let mut conn = diesel::sqlite::SqliteConnection::establish(url).expect("open the database");
    conn.batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE")
        .expect("take the write lock");
    DatabaseLock { conn }
}

/// Driver methods, for call records and failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `initialize`
    Initialize,
    /// `create_ship_container`
    Create,
    /// `stop_ship_container`
    Stop,
    /// `ship_data_exists`
    DataExists,
    /// `get_container_logs`
    Logs,
    /// `is_container_running`
    IsRunning,
    /// `delete_ship_data`
    DeleteData,
    /// `list_managed`
    ListManaged,
}

/// One recorded driver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// which method
    pub op: Op,
    /// its main argument (ship id or container id)
    pub arg: String,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    ship_id: String,
    running: bool,
    token: String,
    spec: crate::model::EffectiveSpec,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    containers: HashMap<String, FakeContainer>,
    data: HashSet<String>,
    failures: HashMap<Op, (DriverError, Option<usize>)>,
    delays: HashMap<Op, Duration>,
    panics: HashSet<Op>,
    gates: HashSet<Op>,
    /// Calls waiting at a gate, by method.
    waiting: HashMap<Op, usize>,
    peak_live: usize,
    next_id: usize,
}

/// An in-memory container driver. Containers are records; every one "runs" the same
/// [`FakeShip`] agent, whose address it returns.
#[derive(Debug, Clone)]
pub struct FakeDriver {
    address: String,
    state: Arc<Mutex<State>>,
    /// Bumped on every gate change and every arrival at a gate.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FakeDriver {
    /// A driver whose containers answer at `address` (`IP:port`).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            state: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `op` fail with `error`: `times` calls, or every call when `None`. An injected
    /// `NotFound` is truthful: `stop_ship_container` and `delete_ship_data` remove the thing
    /// before answering it.
    pub fn fail(&self, op: Op, error: DriverError, times: Option<usize>) {
        self.state().failures.insert(op, (error, times));
    }

    /// Stops injecting failures, panics and hangs into `op` (calls waiting at its gate go on).
    pub fn heal(&self, op: Op) {
        {
            let mut s = self.state();
            s.failures.remove(&op);
            s.panics.remove(&op);
            s.gates.remove(&op);
        }
        self.changed();
    }

    /// Closes the gate of `op`: every call of it (after recording it and deciding its injected
    /// failure) waits until [`FakeDriver::open`] or [`FakeDriver::heal`] — an engine that hangs.
    /// `create_ship_container` makes its container *before* the gate, like an engine that
    /// created it but whose answer is late; the other methods act after it.
    pub fn gate(&self, op: Op) {
        self.state().gates.insert(op);
        self.changed();
    }

    /// Opens the gate of `op`: waiting calls go on.
    pub fn open(&self, op: Op) {
        self.state().gates.remove(&op);
        self.changed();
    }

    /// Number of calls of `op` waiting at its gate now.
    pub fn waiting(&self, op: Op) -> usize {
        self.state().waiting.get(&op).copied().unwrap_or(0)
    }

    /// Waits until at least `n` calls of `op` wait at its gate.
    pub async fn wait_at_gate(&self, op: Op, n: usize) {
        let mut rx = self.changes.subscribe();
        let _ = rx.wait_for(|_| self.waiting(op) >= n).await;
    }

    /// Delays every call of `op`.
    pub fn delay(&self, op: Op, by: Duration) {
        self.state().delays.insert(op, by);
    }

    /// Makes every call of `op` panic (a bug in a driver), until [`FakeDriver::heal`].
    pub fn panic_on(&self, op: Op) {
        self.state().panics.insert(op);
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: Op) -> usize {
        self.state().calls.iter().filter(|c| c.op == op).count()
    }

    /// Containers that exist now (running or not).
    pub fn containers(&self) -> Vec<ManagedContainer> {
        let mut v: Vec<_> = self
            .state()
            .containers
            .iter()
            .map(|(id, c)| ManagedContainer {
                container_id: id.clone(),
                ship_id: c.ship_id.clone(),
                running: c.running,
            })
            .collect();
        v.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        v
    }

    /// The most containers that ever existed at once.
    pub fn peak_containers(&self) -> usize {
        self.state().peak_live
    }

    /// Ship ids whose data exists.
    pub fn data(&self) -> HashSet<String> {
        self.state().data.clone()
    }

    /// The token given to a container.
    pub fn token_of(&self, container_id: &str) -> Option<String> {
        self.state()
            .containers
            .get(container_id)
            .map(|c| c.token.clone())
    }

    /// The resources a container was created with.
    pub fn spec_of(&self, container_id: &str) -> Option<crate::model::EffectiveSpec> {
        self.state()
            .containers
            .get(container_id)
            .map(|c| c.spec.clone())
    }

    /// Simulates a crash: the container disappears.
    pub fn vanish(&self, container_id: &str) {
        self.state().containers.remove(container_id);
    }

    /// Simulates a container whose process exited: it still exists, but does not run.
    pub fn exit(&self, container_id: &str) {
        if let Some(c) = self.state().containers.get_mut(container_id) {
            c.running = false;
        }
    }

    /// Simulates a container left behind by someone (e.g. a crashed Bay).
    pub fn plant(&self, ship_id: &str) -> String {
        let mut s = self.state();
        s.next_id += 1;
        let id = format!("fake-{:06}", s.next_id);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                ship_id: ship_id.to_owned(),
                running: true,
                token: String::new(),
                spec: crate::model::EffectiveSpec::default(),
            },
        );
        s.peak_live = s.peak_live.max(s.containers.len());
        id
    }

    /// Removes a ship's data behind Bay's back.
    pub fn lose_data(&self, ship_id: &str) {
        self.state().data.remove(ship_id);
    }

    /// Records the call and applies an injected panic or failure.
    fn check(&self, op: Op, arg: &str) -> DriverResult<()> {
        let mut s = self.state();
        s.calls.push(Call {
            op,
            arg: arg.to_owned(),
        });
        if s.panics.contains(&op) {
            drop(s);
            panic!("injected panic in {op:?}");
        }
        if let Some((err, times)) = s.failures.get_mut(&op) {
            let err = err.clone();
            match times {
                Some(0) => {
                    s.failures.remove(&op);
                }
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        s.failures.remove(&op);
                    }
                    return Err(err);
                }
                None => return Err(err),
            }
        }
        Ok(())
    }

    /// Waits at the gate of `op` while it is closed, then for its delay.
    async fn pass(&self, op: Op) {
        let gated = self.state().gates.contains(&op);
        if gated {
            /// Leaves the waiting count even when the call is dropped at the gate.
            struct Waiting<'a>(&'a FakeDriver, Op);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    if let Some(n) = self.0.state().waiting.get_mut(&self.1) {
                        *n -= 1;
                    }
                    self.0.changed();
                }
            }
            let mut rx = self.changes.subscribe();
            *self.state().waiting.entry(op).or_default() += 1;
            let _waiting = Waiting(self, op);
            self.changed();
            let _ = rx.wait_for(|_| !self.state().gates.contains(&op)).await;
        }
        let delay = self.state().delays.get(&op).copied();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }

    async fn enter(&self, op: Op, arg: &str) -> DriverResult<()> {
        self.check(op, arg)?;
        self.pass(op).await;
        Ok(())
    }
}

#[async_trait]
impl ContainerDriver for FakeDriver {
    async fn initialize(&self) -> DriverResult<()> {
        self.enter(Op::Initialize, "").await
    }

    async fn close(&self) -> DriverResult<()> {
        Ok(())
    }

    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo> {
        self.check(Op::Create, &req.ship_id)?;
        let id = {
            let mut s = self.state();
            s.next_id += 1;
            let id = format!("fake-{:06}", s.next_id);
            s.containers.insert(
                id.clone(),
                FakeContainer {
                    ship_id: req.ship_id.clone(),
                    running: true,
                    token: req.auth_token.clone(),
                    spec: req.spec.clone(),
                },
            );
            s.data.insert(req.ship_id.clone());
            s.peak_live = s.peak_live.max(s.containers.len());
            id
        };
        self.pass(Op::Create).await;
        Ok(ContainerInfo {
            container_id: id,
            ip_address: self.address.clone(),
        })
    }

    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()> {
        let checked = self.check(Op::Stop, container_id);
        if let Err(DriverError::NotFound(_)) = &checked {
            // An injected "not found" is truthful: the container is gone.
            self.state().containers.remove(container_id);
        }
        checked?;
        self.pass(Op::Stop).await;
        self.state().containers.remove(container_id);
        Ok(())
    }

    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool> {
        self.enter(Op::DataExists, ship_id).await?;
        Ok(self.state().data.contains(ship_id))
    }

    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String> {
        self.enter(Op::Logs, container_id).await?;
        if !self.state().containers.contains_key(container_id) {
            return Err(DriverError::NotFound(format!("container {container_id}")));
        }
        let lines: Vec<String> = (1..=3).map(|i| format!("log line {i}")).collect();
        let start = lines.len().saturating_sub(tail as usize);
        Ok(lines[start..].join("\n"))
    }

    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool> {
        self.enter(Op::IsRunning, container_id).await?;
        self.state()
            .containers
            .get(container_id)
            .map(|c| c.running)
            .ok_or_else(|| DriverError::NotFound(format!("container {container_id}")))
    }

    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()> {
        let checked = self.check(Op::DeleteData, ship_id);
        if let Err(DriverError::NotFound(_)) = &checked {
            // An injected "not found" is truthful: the data is gone.
            self.state().data.remove(ship_id);
        }
        checked?;
        self.pass(Op::DeleteData).await;
        self.state().data.remove(ship_id);
        Ok(())
    }

    async fn list_managed(&self) -> DriverResult<Vec<ManagedContainer>> {
        self.enter(Op::ListManaged, "").await?;
        Ok(self.containers())
    }
}

/// A request the fake agent received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// method
    pub method: String,
    /// path and query
    pub path: String,
    /// `X-SESSION-ID`
    pub session: Option<String>,
    /// `Authorization`
    pub authorization: Option<String>,
    /// body size in bytes
    pub body_len: usize,
}

#[derive(Debug, Default)]
struct ShipState {
    seen: Mutex<Vec<SeenRequest>>,
    files: Mutex<HashMap<String, Bytes>>,
    unhealthy: AtomicBool,
    health_checks: AtomicUsize,
    /// The bearer tokens of `POST /warmup` requests, in order.
    warmups: Mutex<Vec<String>>,
    /// Answer `/warmup` with 404, as an agent older than the endpoint does.
    no_warmup: AtomicBool,
}

/// An in-process fake ship agent on 127.0.0.1. It answers `/health` (unless made unhealthy),
/// `POST /warmup` (`{"status":"ok"}`, recording the bearer token; 404 after
/// [`FakeShip::set_warmup_supported`]`(false)`),
/// `/shell/exec` (echoes the command; `sleep_ms` in the payload delays the answer), any route
/// with `fail_status` in its payload with that status, any route with `huge_bytes: n` (and optionally `huge_status`) in its
/// payload with a 200 body of `n` spaces (chunked; with `Content-Length` when the payload also
/// has `declare_length: true`), every other route with a JSON echo, `/upload` (stores the bytes)
/// and `/download` (returns them).
///
/// Magic file paths: an upload to `soft-fail…` answers 200 with `success: false` and the error
/// `disk quota exceeded`; an upload to `stall…` or a download of `stall…` answers only after
/// [`STALL`]; a download of `broken…` sends the headers (`Content-Length` 1 MiB) and 64 KiB,
/// then fails the connection; a download of `stall-mid…` sends the headers and 64 KiB, then
/// nothing more.
///
/// `/term/ws` is a WebSocket echo: text and binary messages come back unchanged, except the
/// text `close:<code>` (the agent closes with that code and reason `bye`) and `big:<n>` (the
/// agent sends a text message of `n` bytes).
#[derive(Debug, Clone)]
pub struct FakeShip {
    addr: SocketAddr,
    state: Arc<ShipState>,
}

impl FakeShip {
    /// Starts the agent on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(ShipState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    /// `IP:port`, as a host-mode driver would return.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Makes `/health` answer 503 (or 200 again).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Number of `/health` requests so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// The bearer tokens (ship tokens) of the `POST /warmup` requests so far, in order.
    pub fn warmups(&self) -> Vec<String> {
        self.state
            .warmups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `/warmup` answer 404, as an agent older than the endpoint does (or 200 again).
    pub fn set_warmup_supported(&self, supported: bool) {
        self.state.no_warmup.store(!supported, Ordering::SeqCst);
    }

    /// Requests received so far (health and warm-up requests excluded).
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bytes stored by uploads, by path.
    pub fn file(&self, path: &str) -> Option<Bytes> {
        self.state
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }
}

/// How long the fake agent stalls on the magic `stall…` paths.
pub const STALL: Duration = Duration::from_secs(10);

type ShipBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(bytes: Bytes) -> ShipBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed body of `chunks`, then the end, an error, or nothing ever (`tail`).
fn chunked(chunks: Vec<Bytes>, tail: Tail) -> ShipBody {
    use futures::StreamExt;
    let data = futures::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))));
    let stream = match tail {
        Tail::End => data.boxed(),
        Tail::Fail => data
            .chain(futures::stream::once(async {
                // Late enough for the headers and the data to be flushed first.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(std::io::Error::other("simulated failure"))
            }))
            .boxed(),
        Tail::Hang => data.chain(futures::stream::pending()).boxed(),
    };
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

#[derive(Clone, Copy)]
enum Tail {
    End,
    Fail,
    Hang,
}

/// `n` spaces in 1 MiB chunks that share one buffer.
fn spaces(n: u64) -> Vec<Bytes> {
    const CHUNK: u64 = 1 << 20;
    let block = Bytes::from(vec![b' '; CHUNK as usize]);
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let len = left.min(CHUNK);
        out.push(block.slice(..usize::try_from(len).unwrap_or(0)));
        left -= len;
    }
    out
}

fn json_response(status: StatusCode, v: &Value) -> Response<ShipBody> {
    let mut r = Response::new(full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    st: Arc<ShipState>,
    req: Request<Incoming>,
) -> Result<Response<ShipBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        return Ok(if st.unhealthy.load(Ordering::SeqCst) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "starting"}),
            )
        } else {
            json_response(
                StatusCode::OK,
                &json!({"status": "healthy", "service": "ship"}),
            )
        });
    }
    if path == "/warmup" && req.method() == hyper::Method::POST {
        if st.no_warmup.load(Ordering::SeqCst) {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                &json!({"detail": "Not Found"}),
            ));
        }
        let token = header(&req, "authorization")
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
            .unwrap_or_default();
        st.warmups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(token);
        return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})));
    }
    if path == "/term/ws" {
        return Ok(terminal_upgrade(&st, req));
    }
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let session = header(&req, "x-session-id");
    let authorization = header(&req, "authorization");
    let content_type = header(&req, "content-type").unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    st.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(SeenRequest {
            method: method.clone(),
            path: if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            },
            session: session.clone(),
            authorization,
            body_len: body.len(),
        });
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let response = match (method.as_str(), path.as_str()) {
        ("POST", "/shell/exec") => {
            if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let command = payload
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json_response(
                StatusCode::OK,
                &json!({"success": true, "return_code": 0, "stdout": command, "stderr": "",
                        "pid": 1, "process_id": null, "error": null,
                        "stdout_truncated": false, "stderr_truncated": false}),
            )
        }
        ("POST", "/upload") => {
            let (file_path, data) = parse_multipart(&content_type, &body);
            match file_path {
                Some(p) if p.starts_with('/') && !p.starts_with("/home/") => json_response(
                    StatusCode::FORBIDDEN,
                    &json!({"detail": "Access denied: path must be within workspace /home/u/workspace"}),
                ),
                Some(p) if p.starts_with("soft-fail") => json_response(
                    StatusCode::OK,
                    &json!({"success": false, "message": "File upload failed", "file_path": null,
                            "size": null, "error": "disk quota exceeded"}),
                ),
                Some(p) => {
                    if p.starts_with("stall") {
                        tokio::time::sleep(STALL).await;
                    }
                    let size = data.len();
                    st.files
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(p.clone(), data);
                    json_response(
                        StatusCode::OK,
                        &json!({"success": true, "message": "File uploaded successfully",
                                "file_path": format!("/home/u/workspace/{p}"), "size": size, "error": null}),
                    )
                }
                None => json_response(
                    StatusCode::OK,
                    &json!({"success": false, "message": "File upload failed", "file_path": null,
                            "size": null, "error": "no file_path part"}),
                ),
            }
        }
        ("GET", "/download") => {
            let file_path = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("file_path="))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            if file_path.starts_with("stall-mid") || file_path.starts_with("broken") {
                let tail = if file_path.starts_with("broken") {
                    Tail::Fail
                } else {
                    Tail::Hang
                };
                let mut r = Response::new(chunked(spaces(64 << 10), tail));
                r.headers_mut().insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(1u64 << 20),
                );
                return Ok(r);
            }
            if file_path.starts_with("stall") {
                tokio::time::sleep(STALL).await;
            }
            let file = st
                .files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&file_path)
                .cloned();
            match file {
                Some(bytes) => {
                    let mut r = Response::new(full(bytes));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/octet-stream"),
                    );
                    r
                }
                None => json_response(StatusCode::NOT_FOUND, &json!({"detail": "File not found"})),
            }
        }
        _ if payload.get("huge_bytes").is_some() => {
            let n = payload["huge_bytes"].as_u64().unwrap_or(0);
            let mut r = Response::new(chunked(spaces(n), Tail::End));
            if let Some(status) = payload
                .get("huge_status")
                .and_then(Value::as_u64)
                .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
            {
                *r.status_mut() = status;
            }
            if payload.get("declare_length") == Some(&Value::Bool(true)) {
                r.headers_mut().insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(n),
                );
            }
            r
        }
        _ if payload.get("fail_status").is_some() => json_response(
            payload["fail_status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"detail": "boom"}),
        ),
        (_, p) => json_response(
            StatusCode::OK,
            &json!({"route": p, "method": method, "payload": payload, "session": session}),
        ),
    };
    Ok(response)
}

/// Accepts a WebSocket upgrade on `/term/ws` and echoes messages (see [`FakeShip`]).
fn terminal_upgrade(st: &Arc<ShipState>, mut req: Request<Incoming>) -> Response<ShipBody> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    st.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(SeenRequest {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            session: header(&req, "x-session-id"),
            authorization: header(&req, "authorization"),
            body_len: 0,
        });
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"detail": "not a websocket"}),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default().max_message_size(Some(4 << 20));
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => {
                    if let Some(code) = t.strip_prefix("close:").and_then(|c| c.parse::<u16>().ok())
                    {
                        let _ = ws
                            .send(Message::Close(Some(CloseFrame {
                                code: code.into(),
                                reason: "bye".into(),
                            })))
                            .await;
                        continue;
                    }
                    if let Some(n) = t.strip_prefix("big:").and_then(|n| n.parse::<usize>().ok()) {
                        Message::text("x".repeat(n))
                    } else {
                        Message::Text(t)
                    }
                }
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// A minimal multipart/form-data reader for the fake agent (test data only).
fn parse_multipart(content_type: &str, body: &[u8]) -> (Option<String>, Bytes) {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
    else {
        return (None, Bytes::new());
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let mut file_path = None;
    let mut data = Bytes::new();
    let body = Bytes::copy_from_slice(body);
    let mut rest: &[u8] = &body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(headers_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let headers = String::from_utf8_lossy(&rest[..headers_end]).to_ascii_lowercase();
        let content_start = headers_end + 4;
        let Some(next) = find(&rest[content_start..], delimiter.as_bytes()) else {
            break;
        };
        let content = &rest[content_start..content_start + next.saturating_sub(2)];
        if headers.contains("name=\"file_path\"") {
            file_path = Some(String::from_utf8_lossy(content).into_owned());
        } else if headers.contains("name=\"file\"") {
            data = Bytes::copy_from_slice(content);
        }
        rest = &rest[content_start + next..];
    }
    (file_path, data)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
