//! Python execution (§6): one persistent interpreter per session, run as the session user by
//! an embedded driver script (`driver.py`) that speaks newline-delimited JSON over fds 3/4.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::api::{ApiError, ApiResult, Body, ok, session_header};
use crate::shell::OutBuf;
use crate::users::User;
use crate::{St, sys};

const DRIVER: &str = include_str!("driver.py");
/// Reads the driver (`<length>\n<source>`) from fd 3 and runs it, so that the process
/// command line stays short.
const BOOTSTRAP: &str = "import sys;f=open(3,'rb',buffering=0,closefd=False);n=int(f.readline());\
src=b''\nwhile len(src)<n:\n b=f.read(n-len(src))\n if not b:sys.exit(1)\n src+=b\n\
del f,n\nexec(compile(src,'<ship-driver>','exec'))";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
const MAX_IMAGES: usize = 32;
const MAX_IMAGE_BYTES: usize = 32 << 20;
/// Longest event line read from the interpreter: one image at the image cap, plus room.
/// User code can write to the event pipe too; a longer line is skipped, never kept whole.
const MAX_EVENT_BYTES: usize = MAX_IMAGE_BYTES + (1 << 20);

/// Bytes kept from the end of an oversized line, where the driver's own event ends up when
/// user code wrote to the pipe without a newline.
const EVENT_TAIL_BYTES: usize = 1 << 20;

/// One line read from the event pipe.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(String),
    /// A line longer than the limit, skipped: its length in bytes, and the driver event found
    /// at its end, if any.
    Oversized(u64, Option<String>),
}

/// The last driver event (`{"t": …}` as `json.dumps` writes it) that `tail` ends with.
fn trailing_event(tail: &[u8]) -> Option<String> {
    let marker = b"{\"t\": ";
    let start = tail.windows(marker.len()).rposition(|w| w == marker)?;
    let text = std::str::from_utf8(&tail[start..]).ok()?.trim_end();
    serde_json::from_str::<Value>(text)
        .ok()
        .map(|_| text.to_owned())
}

/// Newline-delimited events from the interpreter, each bounded by `limit` bytes. The partial
/// line is kept in the reader, so [`Self::next`] can be cancelled (`select!`) and resumed.
#[derive(Debug)]
struct Events<R> {
    r: BufReader<R>,
    limit: usize,
    buf: Vec<u8>,
    total: u64,
    /// The end of an oversized line (at most 2 × [`EVENT_TAIL_BYTES`]).
    tail: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> Events<R> {
    fn new(r: R, limit: usize) -> Self {
        Self {
            r: BufReader::new(r),
            limit,
            buf: Vec::new(),
            total: 0,
            tail: Vec::new(),
        }
    }

    /// The next event line (without its newline); `None` at the end of the stream.
    async fn next(&mut self) -> std::io::Result<Option<Event>> {
        loop {
            let chunk = self.r.fill_buf().await?;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None if chunk.is_empty() => (0, true),
                None => (chunk.len(), false),
            };
            if take == 0 && self.total == 0 {
                return Ok(None);
            }
            self.total += take as u64;
            if self.total <= self.limit as u64 {
                self.buf.extend_from_slice(&chunk[..take]);
            } else {
                if !self.buf.is_empty() {
                    self.buf = Vec::new();
                }
                self.tail.extend_from_slice(&chunk[..take]);
                if self.tail.len() > 2 * EVENT_TAIL_BYTES {
                    self.tail.drain(..self.tail.len() - EVENT_TAIL_BYTES);
                }
            }
            self.r.consume(take);
            if done {
                let total = std::mem::take(&mut self.total);
                let mut line = std::mem::take(&mut self.buf);
                if total > self.limit as u64 {
                    let tail = std::mem::take(&mut self.tail);
                    return Ok(Some(Event::Oversized(total, trailing_event(&tail))));
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                return Ok(Some(Event::Line(
                    String::from_utf8_lossy(&line).into_owned(),
                )));
            }
        }
    }
}

/// A running interpreter.
#[derive(Debug)]
struct Kernel {
    child: tokio::process::Child,
    pid: i32,
    uid: u32,
    cmd: pipe::Sender,
    events: Events<pipe::Receiver>,
}

/// The session's interpreter slot; the mutex serialises executions.
#[derive(Debug, Default)]
pub struct KernelSlot {
    kernel: Mutex<Option<Kernel>>,
}

fn exit_text(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        None => "unknown status".into(),
    }
}

/// The environment of a session's interpreter.
fn kernel_env(user: &User) -> Vec<(String, String)> {
    let mut env = crate::shell::base_env(user);
    env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    env
}

/// The spare's home until it is adopted: a path that nobody, root included, can create, so
/// that nothing is written on its behalf before it knows its user (see `driver.py`).
const SPARE_HOME: &str = "/proc/ship-spare/home";

/// The placeholder identity whose environment the spare starts with.
fn spare_placeholder() -> User {
    User {
        name: "ship-spare".into(),
        uid: 0,
        gid: 0,
        home: SPARE_HOME.into(),
        workspace: "/".into(),
    }
}

impl Kernel {
    /// Starts the driver as `user` and waits for its ready event.
    async fn start(st: &St, user: &User) -> Result<Self, String> {
        let mut kernel = Self::spawn(st, Some(user))?;
        kernel.handshake(st, "", "ready").await?;
        Ok(kernel)
    }

    /// Spawns the interpreter: as `user`, or as the root spare (`None`, see [`Spare`]).
    fn spawn(st: &St, user: Option<&User>) -> Result<Self, String> {
        let (cmd_r, cmd_w) = sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (evt_r, evt_w) = sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let placeholder = spare_placeholder();
        let mut c = std::process::Command::new(&st.cfg.python);
        c.arg("-u")
            .arg("-c")
            .arg(BOOTSTRAP)
            .env_clear()
            .envs(kernel_env(user.unwrap_or(&placeholder)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fds = vec![(cmd_r.as_raw_fd(), 3), (evt_w.as_raw_fd(), 4)];
        match user {
            Some(u) => sys::user_command(&mut c, u.ident(), &u.workspace, fds),
            None => sys::spare_command(&mut c, fds),
        }
        .map_err(|e| format!("cannot start {}: {e}", st.cfg.python))?;
        let mut c = tokio::process::Command::from(c);
        let child = st
            .procs
            .spawn(&mut c)
            .map_err(|e| format!("cannot start {}: {e}", st.cfg.python))?;
        drop(cmd_r);
        drop(evt_w);
        let pid = child.id().map_or(-1, |p| p as i32);
        Ok(Self {
            child,
            pid,
            uid: user.map_or(0, |u| u.uid),
            cmd: sender(cmd_w).map_err(|e| format!("cannot use the command pipe: {e}"))?,
            events: Events::new(
                receiver(evt_r).map_err(|e| format!("cannot use the event pipe: {e}"))?,
                MAX_EVENT_BYTES,
            ),
        })
    }

    /// Sends the driver (after `prefix`, Python source) and waits for its first event, of
    /// type `expect`; kills the interpreter when that fails.
    async fn handshake(&mut self, st: &St, prefix: &str, expect: &str) -> Result<(), String> {
        let source = format!("{}\n{prefix}{DRIVER}", prefix.len() + DRIVER.len());
        if let Err(e) = self.cmd.write_all(source.as_bytes()).await {
            let status = self.kill(st).await;
            return Err(format!(
                "cannot send the driver: {e} ({})",
                exit_text(status)
            ));
        }
        let expected = format!("\"{expect}\"");
        match tokio::time::timeout(START_TIMEOUT, self.events.next()).await {
            Ok(Ok(Some(Event::Line(line)))) if line.contains(&expected) => Ok(()),
            Ok(_) => {
                let status = self.kill(st).await;
                Err(format!(
                    "the Python interpreter exited during start-up ({})",
                    exit_text(status)
                ))
            }
            Err(_) => {
                self.kill(st).await;
                Err("the Python interpreter did not start within 60 seconds".into())
            }
        }
    }

    /// Kills the interpreter's process group and everything it started elsewhere
    /// ([`crate::procs::Procs::kill_unit`]) and reaps it.
    /// A spare not yet adopted (uid 0) has started nothing: only its group is killed.
    async fn kill(&mut self, st: &St) -> Option<std::process::ExitStatus> {
        sys::kill_group(self.pid, libc::SIGKILL);
        if self.uid != 0 {
            crate::procs::Procs::kill_unit_async(st, self.uid, self.pid).await;
        }
        let status = self.child.wait().await.ok();
        st.procs.release(self.pid);
        status
    }

    /// Asks the interpreter to exit (closes its command pipe), kills it after 5 s.
    async fn shutdown(mut self, st: &St) {
        drop(self.cmd);
        if tokio::time::timeout(INTERRUPT_GRACE, self.child.wait())
            .await
            .is_err()
        {
            sys::kill_group(self.pid, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        sys::kill_group(self.pid, libc::SIGKILL);
        crate::procs::Procs::kill_unit_async(st, self.uid, self.pid).await;
        st.procs.release(self.pid);
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The spare interpreter (issue 13): started as root before any session exists (`POST
/// /warmup`), with Python and IPython imported, and adopted by the first session that needs an
/// interpreter, which then skips the start-up. At most one exists; adopting it does not start
/// another.
#[derive(Debug)]
pub struct Spare {
    state: std::sync::Mutex<SpareState>,
    /// Bumped whenever a start ends (ready or failed): adopters wait on it while it starts.
    changed: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
enum SpareState {
    #[default]
    Idle,
    Starting,
    Ready(Box<Kernel>),
}

impl Default for Spare {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new(SpareState::Idle),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Ends a spare's start whatever happens to the task (even a panic): `Starting` never stays.
struct StartEnd<'a>(&'a Spare, Option<Kernel>);

impl Drop for StartEnd<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = match self.1.take() {
            Some(k) => SpareState::Ready(Box::new(k)),
            None => SpareState::Idle,
        };
        drop(s);
        self.0.changed.send_modify(|g| *g = g.wrapping_add(1));
    }
}

impl Spare {
    /// Starts the spare unless one is ready or starting: the process is spawned at once, the
    /// rest (driver, imports) happens in the background.
    fn warm(st: &St) {
        if st.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut state = st.spare.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, SpareState::Idle) {
            return;
        }
        let mut kernel = match Kernel::spawn(st, None) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the spare Python interpreter");
                return;
            }
        };
        *state = SpareState::Starting;
        drop(state);
        let st = st.clone();
        tokio::spawn(async move {
            let mut end = StartEnd(&st.spare, None);
            let prefix = format!("_SHIP_SPARE_HOME = {SPARE_HOME:?}\n");
            match kernel.handshake(&st, &prefix, "spare").await {
                Ok(()) => end.1 = Some(kernel),
                Err(e) => tracing::warn!(error = %e, "the spare Python interpreter did not start"),
            }
        });
    }

    /// Takes the spare: the ready one, or the one starting once it is ready; `None` without.
    async fn take(&self) -> Option<Kernel> {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                match std::mem::take(&mut *state) {
                    SpareState::Ready(k) => return Some(*k),
                    SpareState::Idle => return None,
                    SpareState::Starting => *state = SpareState::Starting,
                }
            }
            changed.changed().await.ok()?;
        }
    }
}

/// Hands the spare to `user`: the driver drops to the user's uid/gid (no supplementary
/// groups) and reads that back itself, then the agent checks the result from outside
/// ([`verify_identity`]). Any failure kills the spare: the caller starts one normally.
async fn adopt(st: &St, mut kernel: Kernel, user: &User) -> Result<Kernel, String> {
    // From here on a kill is that of a session unit: whatever the drop left running dies too.
    kernel.uid = user.uid;
    let env: serde_json::Map<String, Value> = kernel_env(user)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let req = json!({"adopt": {
        "uid": user.uid,
        "gid": user.gid,
        "cwd": user.workspace.to_string_lossy(),
        "env": env,
    }})
    .to_string()
        + "\n";
    let result = async {
        kernel
            .cmd
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("cannot send the adoption request: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = loop {
            match tokio::time::timeout_at(deadline, kernel.events.next()).await {
                Ok(Ok(Some(Event::Line(line)))) => {
                    let ev: Value = serde_json::from_str(&line).unwrap_or_default();
                    match ev["t"].as_str() {
                        // Printed by the user's site hooks while adopting, as the user: a
                        // normal start discards that output too (it runs before the driver).
                        Some("stream" | "display") => {}
                        Some("ready") => break ev,
                        _ => return Err(format!("the spare refused: {}", ev["error"])),
                    }
                }
                Ok(Ok(Some(Event::Oversized(..)))) => {}
                Ok(_) => return Err("the spare exited during its adoption".into()),
                Err(_) => return Err("the spare did not answer within 60 seconds".into()),
            }
        };
        // `/proc/<pid>/cwd` of another user's process needs CAP_SYS_PTRACE, which a container's
        // root lacks: the driver reports the directory it entered.
        let want = std::fs::canonicalize(&user.workspace)
            .map_err(|e| format!("cannot resolve {}: {e}", user.workspace.display()))?;
        if ready["cwd"].as_str() != want.to_str() {
            return Err(format!(
                "working directory {} instead of {}",
                ready["cwd"],
                want.display()
            ));
        }
        let (pid, u) = (kernel.pid, user.clone());
        tokio::task::spawn_blocking(move || verify_identity(pid, &u))
            .await
            .map_err(|e| format!("identity check failed: {e}"))?
    }
    .await;
    match result {
        Ok(()) => Ok(kernel),
        Err(e) => {
            kernel.kill(st).await;
            Err(e)
        }
    }
}

/// Checks from outside that the process `pid` is what [`sys::user_command`] makes of a child:
/// every thread with the user's uid and gid (real, effective, saved, file system), no
/// supplementary groups, no capabilities, umask 077; `oom_score_adj` 800; a session and process
/// group of its own (the kill unit). Only files any user may read are used (`status`, `stat`,
/// `oom_score_adj`): a container's root has no CAP_SYS_PTRACE.
fn verify_identity(pid: i32, user: &User) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot list the threads of {pid}: {e}"))?;
    let mut threads = 0;
    for task in tasks {
        let task = task.map_err(|e| format!("cannot list the threads of {pid}: {e}"))?;
        let status = std::fs::read_to_string(task.path().join("status"))
            .map_err(|e| format!("cannot read the status of {pid}: {e}"))?;
        check_status(&status, user.uid, user.gid)?;
        threads += 1;
    }
    if threads == 0 {
        return Err(format!("process {pid} has no threads"));
    }
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default();
    if oom.trim() != "800" {
        return Err(format!("oom_score_adj {:?} instead of 800", oom.trim()));
    }
    match crate::procs::proc_stat(pid) {
        Some((_, _, pgrp, sid)) if pgrp == pid && sid == pid => Ok(()),
        other => Err(format!("process {pid} is not a unit of its own: {other:?}")),
    }
}

/// One `/proc/<pid>/task/<tid>/status` against the expected identity.
fn check_status(status: &str, uid: u32, gid: u32) -> Result<(), String> {
    let field = |name: &str| -> Option<Vec<&str>> {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|r| r.split_whitespace().collect())
        })
    };
    let (u, g) = (uid.to_string(), gid.to_string());
    if field("Uid") != Some(vec![u.as_str(); 4]) || field("Gid") != Some(vec![g.as_str(); 4]) {
        return Err(format!(
            "credentials {:?}/{:?} instead of {uid}/{gid}",
            field("Uid"),
            field("Gid")
        ));
    }
    if field("Groups") != Some(Vec::new()) {
        return Err(format!("supplementary groups {:?}", field("Groups")));
    }
    for cap in ["CapPrm", "CapEff", "CapAmb"] {
        if let Some(v) = field(cap)
            && v.first()
                .is_none_or(|x| u64::from_str_radix(x, 16) != Ok(0))
        {
            return Err(format!("capabilities left: {cap} {v:?}"));
        }
    }
    if let Some(m) = field("Umask")
        && m != ["0077"]
    {
        return Err(format!("umask {m:?} instead of 0077"));
    }
    Ok(())
}

/// The session's new interpreter: the spare when there is one and its adoption succeeds,
/// otherwise a normal start.
async fn obtain(st: &St, user: &User) -> Result<Kernel, String> {
    if let Some(spare) = st.spare.take().await {
        let pid = spare.pid;
        match adopt(st, spare, user).await {
            Ok(k) => {
                tracing::debug!(pid, user = %user.name, "spare Python interpreter adopted");
                return Ok(k);
            }
            Err(e) => tracing::warn!(
                pid,
                user = %user.name,
                error = %e,
                "the spare Python interpreter could not be adopted: starting one normally"
            ),
        }
    }
    Kernel::start(st, user).await
}

/// POST /warmup (addition to ship-api.md): starts the spare interpreter in the background
/// unless one is ready or starting; answers at once.
pub async fn warmup(State(st): State<St>) -> ApiResult {
    Spare::warm(&st);
    Ok(ok(json!({"status": "ok"})))
}

fn sender(fd: OwnedFd) -> std::io::Result<pipe::Sender> {
    sys::set_nonblocking(fd.as_raw_fd())?;
    pipe::Sender::from_owned_fd(fd)
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    sys::set_nonblocking(fd.as_raw_fd())?;
    pipe::Receiver::from_owned_fd(fd)
}

/// The collected result of one execution.
#[derive(Debug)]
struct Outcome {
    success: bool,
    count: Option<i64>,
    text: String,
    images: Vec<Value>,
    error: Option<String>,
    truncated: bool,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Self {
            success: false,
            count: None,
            text: String::new(),
            images: Vec::new(),
            error: Some(error),
            truncated: false,
        }
    }
}

/// Output collection with caps.
struct Collector {
    text: OutBuf,
    images: Vec<Value>,
    image_bytes: usize,
    truncated: bool,
}

impl Collector {
    /// The failed outcome with what was collected so far.
    fn failed(self, error: String) -> Outcome {
        let (text, trunc) = self.text.render();
        Outcome {
            success: false,
            count: None,
            text,
            images: self.images,
            error: Some(error),
            truncated: trunc || self.truncated,
        }
    }

    fn event(&mut self, ev: &Value) {
        if let Some(t) = ev.get("text").and_then(Value::as_str) {
            self.text.push(t.as_bytes());
        }
        if let Some(png) = ev.get("png").and_then(Value::as_str) {
            if self.images.len() < MAX_IMAGES && self.image_bytes + png.len() <= MAX_IMAGE_BYTES {
                self.image_bytes += png.len();
                self.images.push(json!({ "image/png": png }));
            } else {
                self.truncated = true;
            }
        }
    }
}

/// `t + d`, saturating at a far-future instant: any `timeout` is valid (§6.1), and the huge
/// ones mean "no practical limit" rather than an overflow.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(100 * 365 * 86_400))
}

/// One execution request.
#[derive(Debug)]
struct Cell {
    code: String,
    silent: bool,
    timeout: u64,
    arrival: Instant,
}

/// Runs one cell with the session's interpreter. `cancel` resolves when the caller is gone.
async fn run_cell(
    st: St,
    sid: String,
    user: User,
    cell: Cell,
    mut cancel: tokio::sync::oneshot::Receiver<()>,
) -> Result<Outcome, ApiError> {
    let Cell {
        code,
        silent,
        timeout,
        arrival,
    } = cell;
    let session = st.session(&sid);
    let mut deadline = later(arrival, Duration::from_secs(timeout));
    let timed_out = || Outcome {
        error: Some(format!("Code execution timed out after {timeout} seconds")),
        ..Outcome::failed(String::new())
    };
    let mut slot = match tokio::time::timeout_at(deadline, session.kernel.kernel.lock()).await {
        Ok(g) => g,
        Err(_) => return Ok(timed_out()),
    };
    if slot.as_mut().is_some_and(|k| !k.alive())
        && let Some(mut k) = slot.take()
    {
        k.kill(&st).await;
    }
    if slot.is_none() {
        let started = Instant::now();
        let k = obtain(&st, &user).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed to execute code: {e}"),
            )
        })?;
        *slot = Some(k);
        deadline = later(deadline, started.elapsed());
    }
    let Some(kernel) = slot.as_mut() else {
        return Err(ApiError::internal());
    };
    let req = json!({ "code": code, "silent": silent }).to_string() + "\n";
    if let Err(e) = kernel.cmd.write_all(req.as_bytes()).await {
        let status = kernel.kill(&st).await;
        *slot = None;
        tracing::warn!(error = %e, "python interpreter pipe closed");
        return Ok(Outcome::failed(format!(
            "Python interpreter exited unexpectedly ({}); its state was lost",
            exit_text(status)
        )));
    }
    let mut col = Collector {
        text: OutBuf::new(st.cfg.max_output_bytes),
        images: Vec::new(),
        image_bytes: 0,
        truncated: false,
    };
    let mut interrupted = false;
    let mut interrupt_deadline = None;
    let finish = loop {
        let line = tokio::select! {
            l = kernel.events.next() => l,
            () = tokio::time::sleep_until(deadline), if !interrupted => {
                interrupted = true;
                sys::kill_group(kernel.pid, libc::SIGINT);
                interrupt_deadline = Some(Instant::now() + INTERRUPT_GRACE);
                continue;
            }
            _ = &mut cancel, if !interrupted => {
                interrupted = true;
                sys::kill_group(kernel.pid, libc::SIGINT);
                interrupt_deadline = Some(Instant::now() + INTERRUPT_GRACE);
                continue;
            }
            () = async { match interrupt_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                kernel.kill(&st).await;
                *slot = None;
                return Ok(col.failed(format!(
                    "Code execution timed out after {timeout} seconds (the Python session was restarted; its state was lost)"
                )));
            }
        };
        match line {
            Ok(Some(Event::Oversized(n, trailing))) => {
                col.text.push(
                    format!("\n[... oversized output event of {n} bytes dropped ...]\n").as_bytes(),
                );
                col.truncated = true;
                let Some(l) = trailing else { continue };
                let Ok(ev) = serde_json::from_str::<Value>(&l) else {
                    continue;
                };
                match ev.get("t").and_then(Value::as_str) {
                    Some("done") => break ev,
                    _ => col.event(&ev),
                }
            }
            Ok(Some(Event::Line(l))) => {
                let Ok(ev) = serde_json::from_str::<Value>(&l) else {
                    continue;
                };
                match ev.get("t").and_then(Value::as_str) {
                    Some("done") => break ev,
                    _ => col.event(&ev),
                }
            }
            Ok(None) | Err(_) => {
                let status = kernel.kill(&st).await;
                *slot = None;
                return Ok(col.failed(format!(
                    "Python interpreter exited unexpectedly ({}); its state was lost",
                    exit_text(status)
                )));
            }
        }
    };
    let (text, trunc) = col.text.render();
    let mut error = finish
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if interrupted {
        error = Some(format!("Code execution timed out after {timeout} seconds"));
    }
    Ok(Outcome {
        success: error.is_none(),
        count: finish.get("count").and_then(Value::as_i64),
        text,
        images: col.images,
        error,
        truncated: trunc || col.truncated,
    })
}

/// POST /ipython/exec
pub async fn exec(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let arrival = Instant::now();
    let sid = session_header(&headers);
    let errors = sid.as_ref().err().cloned().into_iter().collect();
    let mut b = Body::parse(&headers, &body, errors)?;
    let code = b.req_str("code");
    let _kernel_id = b.opt_str("kernel_id", true);
    let timeout = b.opt_int("timeout", false).flatten().unwrap_or(30).max(1) as u64;
    let silent = b.opt_bool("silent").unwrap_or(false);
    b.finish()?;
    let sid = sid.map_err(|e| ApiError::Validation(vec![e]))?;
    let user = st.user_or_500(&sid).await?;
    let (_cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_cell(
        st.clone(),
        sid.clone(),
        user,
        Cell {
            code,
            silent,
            timeout,
            arrival,
        },
        cancel_rx,
    ));
    let outcome = match task.await {
        Ok(r) => r?,
        Err(e) => Outcome::failed(format!("Execution error: {e}")),
    };
    Ok(ok(json!({
        "success": outcome.success,
        "execution_count": outcome.count,
        "output": {"text": outcome.text, "images": outcome.images},
        "error": outcome.error,
        "kernel_id": sid,
        "output_truncated": outcome.truncated,
    })))
}

fn required_session(headers: &HeaderMap) -> Result<String, ApiError> {
    session_header(headers).map_err(|e| ApiError::Validation(vec![e]))
}

/// Makes sure the session's interpreter runs. In a task of its own: a caller that goes away
/// does not abandon an interpreter half started or adopted.
async fn ensure_kernel(st: &St, user: &User, sid: &str) -> Result<(), String> {
    let (st, user, session) = (st.clone(), user.clone(), st.session(sid));
    tokio::spawn(async move {
        let mut slot = session.kernel.kernel.lock().await;
        if slot.as_mut().is_some_and(|k| !k.alive())
            && let Some(mut k) = slot.take()
        {
            k.kill(&st).await;
        }
        if slot.is_none() {
            *slot = Some(obtain(&st, &user).await?);
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("interpreter start failed: {e}"))?
}

/// POST /ipython/create_kernel
pub async fn create_kernel(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let sid = required_session(&headers)?;
    let user = st.user_or_500(&sid).await?;
    ensure_kernel(&st, &user, &sid).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to create kernel: {e}"),
        )
    })?;
    Ok(ok(
        json!({"success": true, "kernel_id": sid, "workspace": user.workspace,
        "message": format!("Kernel for session {sid} created successfully")}),
    ))
}

/// POST /ipython/kernel/restart
pub async fn restart_kernel(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let sid = required_session(&headers)?;
    let user = st.user_or_500(&sid).await?;
    let session = st.session(&sid);
    let old = session.kernel.kernel.lock().await.take();
    if let Some(k) = old {
        k.shutdown(&st).await;
    }
    ensure_kernel(&st, &user, &sid).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to restart kernel: {e}"),
        )
    })?;
    Ok(ok(
        json!({"success": true, "message": "Kernel restarted successfully"}),
    ))
}

/// The interpreter status of a session: `None` without one.
async fn status_of(st: &St, sid: &str) -> Option<&'static str> {
    let session = st.existing_session(sid)?;
    let Ok(mut slot) = session.kernel.kernel.try_lock() else {
        // Busy executing: alive.
        return Some("alive");
    };
    let k = slot.as_mut()?;
    Some(if k.alive() { "alive" } else { "dead" })
}

fn kernel_not_found(sid: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Kernel for session {sid} not found"),
    )
}

/// DELETE /ipython/kernel
pub async fn delete_kernel(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let sid = required_session(&headers)?;
    let session = st
        .existing_session(&sid)
        .ok_or_else(|| kernel_not_found(&sid))?;
    let mut slot = session.kernel.kernel.lock().await;
    let k = slot.take().ok_or_else(|| kernel_not_found(&sid))?;
    drop(slot);
    k.shutdown(&st).await;
    Ok(ok(
        json!({"success": true, "message": format!("Kernel for session {sid} shutdown successfully")}),
    ))
}

/// GET /ipython/kernel/status
pub async fn kernel_status(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let sid = required_session(&headers)?;
    let status = status_of(&st, &sid)
        .await
        .ok_or_else(|| kernel_not_found(&sid))?;
    let st2 = st.clone();
    let sid2 = sid.clone();
    let workspace = tokio::task::spawn_blocking(move || st2.users.workspace_of(&sid2))
        .await
        .map_err(|_| ApiError::internal())?;
    Ok(ok(
        json!({"session_id": sid, "kernel_id": sid, "status": status, "workspace": workspace,
        "has_kernel": true}),
    ))
}

/// GET /ipython/kernels
pub async fn list_kernels(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let kernels: Vec<Value> = match session_header(&headers) {
        Ok(sid) => match status_of(&st, &sid).await {
            Some(status) => vec![json!({"kernel_id": sid, "status": status, "connections": 1})],
            None => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    Ok(ok(json!({ "kernels": kernels })))
}

#[cfg(test)]
mod spare_tests {
    use super::check_status;

    const GOOD: &str = "Name:\tpython3\nUmask:\t0077\nUid:\t10001\t10001\t10001\t10001\n\
Gid:\t10001\t10001\t10001\t10001\nGroups:\t\nCapInh:\t0000000000000000\n\
CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n";

    #[test]
    fn only_a_complete_drop_passes_the_identity_check() {
        assert_eq!(check_status(GOOD, 10001, 10001), Ok(()));
        // Another user's identity, a saved or file-system uid left at root, a group kept,
        // capabilities kept, another umask, a missing field: all refused.
        assert!(check_status(GOOD, 10002, 10002).is_err());
        let bad = [
            GOOD.replace(
                "Uid:\t10001\t10001\t10001\t10001",
                "Uid:\t10001\t10001\t0\t10001",
            ),
            GOOD.replace(
                "Uid:\t10001\t10001\t10001\t10001",
                "Uid:\t10001\t10001\t10001\t0",
            ),
            GOOD.replace(
                "Gid:\t10001\t10001\t10001\t10001",
                "Gid:\t0\t10001\t10001\t10001",
            ),
            GOOD.replace("Groups:\t", "Groups:\t0"),
            GOOD.replace("CapEff:\t0000000000000000", "CapEff:\t00000000000000c0"),
            GOOD.replace("CapPrm:\t0000000000000000", "CapPrm:\t000001ffffffffff"),
            GOOD.replace("CapAmb:\t0000000000000000", "CapAmb:\t0000000000000080"),
            GOOD.replace("Umask:\t0077", "Umask:\t0022"),
            GOOD.replace("Groups:\t\n", ""),
            GOOD.replace("Uid:\t10001\t10001\t10001\t10001\n", ""),
        ];
        for status in bad {
            assert!(check_status(&status, 10001, 10001).is_err(), "{status}");
        }
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[tokio::test]
    async fn oversized_event_lines_are_skipped_not_buffered() {
        // Issue 9, attack 3: a line without end on the event pipe was buffered whole.
        let mut data = b"{\"t\":\"a\"}\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1000));
        data.extend_from_slice(b"\n");
        data.extend(std::iter::repeat_n(b'y', 1000));
        data.extend_from_slice(b"{\"t\": \"done\"}\nlast");
        let mut ev = Events::new(&data[..], 100);
        assert_eq!(
            ev.next().await.unwrap(),
            Some(Event::Line("{\"t\":\"a\"}".into()))
        );
        assert_eq!(ev.next().await.unwrap(), Some(Event::Oversized(1001, None)));
        assert!(ev.buf.capacity() <= 200, "the long line was never kept");
        assert_eq!(
            ev.next().await.unwrap(),
            Some(Event::Oversized(1014, Some("{\"t\": \"done\"}".into())))
        );
        assert_eq!(ev.next().await.unwrap(), Some(Event::Line("last".into())));
        assert_eq!(ev.next().await.unwrap(), None);
    }
}
