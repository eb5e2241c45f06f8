//! The ship agent: the PID 1 of every ship container. It serves the Ship API
//! (`shared/spec/ship-api.md`) on port 8123 — file API, upload/download, shell execution,
//! persistent per-session Python interpreters and terminals — and runs everything a session
//! triggers as that session's own OS user. As PID 1 it reaps orphans and shuts down cleanly
//! on SIGTERM.

mod api;
mod config;
mod fsapi;
mod paths;
mod procs;
mod python;
mod shell;
mod sys;
mod terminal;
mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use futures::FutureExt as _;
use serde_json::json;

use crate::api::{ApiError, ok};
use crate::config::Config;
use crate::users::{User, Users};

/// The agent's version, reported by `/health`, `/stat` and `/meta`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Per-session in-memory state (lost on restart).
#[derive(Debug, Default)]
pub struct Session {
    pub shell: shell::Registry,
    pub kernel: python::KernelSlot,
}

/// Shared agent state.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub users: Users,
    pub sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub procs: procs::Procs,
    /// The spare Python interpreter (`POST /warmup`).
    pub spare: python::Spare,
    pub shutting_down: AtomicBool,
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

pub type St = Arc<AppState>;

impl AppState {
    /// The in-memory state of a session (created on demand).
    pub fn session(&self, sid: &str) -> Arc<Session> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(sid.to_owned()).or_default().clone()
    }

    /// The in-memory state of a session, if it has any.
    pub fn existing_session(&self, sid: &str) -> Option<Arc<Session>> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(sid).cloned()
    }

    /// Makes sure the session user exists (blocking work on the blocking pool).
    pub async fn user(self: &Arc<Self>, sid: &str) -> Result<User, (String, String)> {
        // Fast path without a trip to the blocking pool: nothing to create or repair.
        if let Some(user) = self.users.ready(sid) {
            return Ok(user);
        }
        let st = self.clone();
        let sid = sid.to_owned();
        tokio::task::spawn_blocking(move || st.users.ensure(&sid))
            .await
            .unwrap_or_else(|e| Err((String::new(), format!("user setup panicked: {e}"))))
    }

    /// Like [`Self::user`], mapping failures to 500 `Failed to create user …`.
    pub async fn user_or_500(self: &Arc<Self>, sid: &str) -> Result<User, ApiError> {
        self.user(sid).await.map_err(|(name, reason)| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed to create user {name}: {reason}"),
            )
        })
    }
}

/// Runs `f` on the blocking pool with the file-system credentials of `user`.
pub async fn as_user<T: Send + 'static>(
    user: &User,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let id = user.ident();
    match tokio::task::spawn_blocking(move || sys::with_fs_creds(id, f)).await {
        Ok(Ok(v)) => Ok(v),
        // Fail closed: nothing ran with root's file-system rights.
        Ok(Err(e)) => {
            tracing::error!(user = %user.name, error = %e, "cannot take on the session user's file-system credentials");
            Err(ApiError::internal())
        }
        Err(e) => {
            tracing::error!(error = %e, "file operation panicked");
            Err(ApiError::internal())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cfg = Arc::new(Config::from_env()?);
    let level = std::env::var("SHIP_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    if !sys::is_root() {
        tracing::warn!(
            "the ship agent is not running as root: session users cannot be switched to"
        );
    }
    if sys::getpid() != 1 {
        sys::become_subreaper();
    }
    harden();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_keep_alive(Duration::from_secs(5))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(cfg))
}

/// Process-wide hardening at start-up (issue 9): a private umask for everything the agent
/// creates itself, an `oom_score_adj` that makes session processes (raised to 800 at their
/// start) the OOM killer's choice before the agent, and — as PID 1 of a container that has
/// `CAP_SYS_ADMIN` — `/proc` with `hidepid=invisible`. What cannot be done is logged.
fn harden() {
    sys::set_umask(0o077);
    match sys::set_own_oom_score_adj(-1000) {
        Ok(v) => tracing::info!(oom_score_adj = v, "agent oom_score_adj set"),
        Err(e) => tracing::warn!(error = %e, "cannot set the agent's oom_score_adj"),
    }
    // Only in a container of its own: elsewhere /proc is the host's.
    if sys::getpid() == 1 {
        match sys::remount_proc_hidepid() {
            Ok(()) => tracing::info!("/proc remounted with hidepid=invisible"),
            Err(e) => tracing::info!(
                error = %e,
                "/proc cannot be remounted with hidepid (no CAP_SYS_ADMIN): sessions can see each other's processes"
            ),
        }
    }
}

async fn run(cfg: Arc<Config>) -> anyhow::Result<()> {
    let port = cfg.port;
    let users = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Users::load(cfg)).await?
    };
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        cfg,
        users,
        sessions: Mutex::new(HashMap::new()),
        procs: procs::Procs::default(),
        spare: python::Spare::default(),
        shutting_down: AtomicBool::new(false),
        shutdown,
    });
    procs::spawn_reaper(state.clone());
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind port {port}"))?;
    tracing::info!(port, version = VERSION, "ship agent listening");
    let app = router(state.clone());
    let server = axum::serve(listener, app.into_make_service());
    tokio::select! {
        res = server => res.context("server failed")?,
        () = signals(state.clone()) => {}
    }
    Ok(())
}

/// Waits for SIGTERM/SIGINT, then shuts down (§11.3). SIGHUP is caught and ignored.
async fn signals(state: St) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
        }
    }
    tracing::info!("termination signal received, shutting down");
    state.shutting_down.store(true, Ordering::SeqCst);
    state.shutdown.send_replace(true);
    // A second signal exits at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(0);
    });
    let groups = state.procs.groups();
    for &g in &groups {
        sys::kill_group(g, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline && procs::any_alive(&groups) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &g in &state.procs.groups() {
        sys::kill_group(g, libc::SIGKILL);
    }
    // And what session processes started outside their units (new sessions, double forks).
    let st = state.clone();
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::task::spawn_blocking(move || {
            for uid in st.users.uids() {
                st.procs.kill_user(uid);
            }
        }),
    )
    .await;
    // Let terminal close frames go out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Pending metadata writes complete (a user being created finishes first), and no new
    // one starts before the exit.
    let st = state.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::task::spawn_blocking(move || st.users.quiesced(|| std::process::exit(0))),
    )
    .await;
    std::process::exit(0);
}

fn router(state: St) -> Router {
    let upload = post(fsapi::upload).layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/stat", get(stat))
        .route("/meta", get(meta))
        .route("/fs/create_file", post(fsapi::create_file))
        .route("/fs/read_file", post(fsapi::read_file))
        .route("/fs/write_file", post(fsapi::write_file))
        .route("/fs/edit_file", post(fsapi::edit_file))
        .route("/fs/delete_file", post(fsapi::delete_file))
        .route("/fs/list_dir", post(fsapi::list_dir))
        .route("/upload", upload.clone())
        .route("/fs/upload", upload)
        .route("/download", get(fsapi::download))
        .route("/fs/download", get(fsapi::download))
        .route("/warmup", post(python::warmup))
        .route("/ipython/exec", post(python::exec))
        .route("/ipython/create_kernel", post(python::create_kernel))
        .route("/ipython/kernel/restart", post(python::restart_kernel))
        .route("/ipython/kernel", delete(python::delete_kernel))
        .route("/ipython/kernel/status", get(python::kernel_status))
        .route("/ipython/kernels", get(python::list_kernels))
        .route("/shell/exec", post(shell::exec))
        .route("/shell/processes", get(shell::list))
        .route(
            "/shell/process/{process_id}",
            get(shell::get_process).delete(shell::kill_process),
        )
        .route("/term/ws", any(terminal::ws))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(64 << 20))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Authentication, JSON 405 bodies and JSON 500 on panics.
async fn guard(State(state): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = req.method() == Method::GET && (path == "/" || path == "/health");
    if !public {
        let query_token = if path == "/term/ws" {
            query_param(req.uri().query().unwrap_or(""), "token")
        } else {
            None
        };
        if !api::authorized(
            state.cfg.auth_token.as_deref(),
            req.headers(),
            query_token.as_deref(),
        ) {
            return api::unauthorized();
        }
    }
    let res = match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => return ApiError::internal().into_response(),
    };
    if res.status() == StatusCode::METHOD_NOT_ALLOWED
        && !res.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = res.headers().get(header::ALLOW).cloned();
        let mut r =
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(header::ALLOW, a);
        }
        return r;
    }
    res
}

/// One decoded query parameter.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = percent_encoding::percent_decode_str(&k.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Raw query parameter bytes (for session-id validation of invalid UTF-8).
pub fn query_param_bytes(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k: Vec<u8> = percent_encoding::percent_decode_str(&k.replace('+', " ")).collect();
        (k == name.as_bytes())
            .then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).collect())
    })
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn root() -> Response {
    ok(json!({"message": "Ship API is running"}))
}

async fn health(State(state): State<St>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        let mut r = ok(json!({"status": "shutting_down", "service": "ship", "version": VERSION}));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    ok(json!({"status": "healthy", "service": "ship", "version": VERSION}))
}

async fn stat() -> Response {
    ok(
        json!({"service": "ship", "version": VERSION, "status": "running", "author": "AstrBot Team"}),
    )
}

async fn meta(State(state): State<St>) -> Response {
    let cfg = state.cfg.clone();
    let skills = tokio::task::spawn_blocking(move || list_skills(&cfg.skills_dir))
        .await
        .unwrap_or_default();
    let cfg = &state.cfg;
    ok(json!({
        "runtime": {"name": "ship", "version": VERSION, "api_version": "v1",
            "build": {"image": cfg.image.clone().unwrap_or_else(|| "ship:default".into()),
                      "image_digest": cfg.image_digest, "git_sha": cfg.git_sha}},
        "workspace": {"mount_path": "/home"},
        "capabilities": {
            "filesystem": {"operations": ["create","read","write","edit","delete","list","upload","download"],
                "path_mode": "relative_to_session_workspace",
                "endpoints": {"create":"/fs/create_file","read":"/fs/read_file","write":"/fs/write_file","edit":"/fs/edit_file",
                    "delete":"/fs/delete_file","list":"/fs/list_dir","upload":"/fs/upload","download":"/fs/download"}},
            "shell": {"operations": ["exec","processes"], "endpoints": {"exec":"/shell/exec","processes":"/shell/processes"}},
            "python": {"operations": ["exec"], "engine": "ipython", "endpoints": {"exec":"/ipython/exec"}},
            "terminal": {"operations": ["ws"], "protocol": "websocket", "endpoints": {"ws":"/term/ws"}}},
        "built_in_skills": skills,
    }))
}

/// `/app/skills/*/SKILL.md` with `name`/`description` from simple front matter.
fn list_skills(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("SKILL.md").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| {
            let path = dir.join(&d).join("SKILL.md");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let (mut name, mut description) = (d.clone(), String::new());
            let mut lines = text.lines();
            if lines.next().map(str::trim) == Some("---") {
                for l in lines.take_while(|l| l.trim() != "---") {
                    if let Some((k, v)) = l.split_once(':') {
                        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
                        match k.trim() {
                            "name" if !v.is_empty() => name = v,
                            "description" => description = v,
                            _ => {}
                        }
                    }
                }
            }
            json!({"name": name, "description": description, "path": path.to_string_lossy()})
        })
        .collect()
}
