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

impl Kernel {
    /// Starts the driver as `user` and waits for its ready event.
    async fn start(st: &St, user: &User) -> Result<Self, String> {
        let (cmd_r, cmd_w) = sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (evt_r, evt_w) = sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let mut c = std::process::Command::new(&st.cfg.python);
        c.arg("-u")
            .arg("-c")
            .arg(BOOTSTRAP)
            .env_clear()
            .envs(crate::shell::base_env(user))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sys::user_command(
            &mut c,
            user.ident(),
            &user.workspace,
            vec![(cmd_r.as_raw_fd(), 3), (evt_w.as_raw_fd(), 4)],
        )
        .map_err(|e| format!("cannot start {}: {e}", st.cfg.python))?;
        let mut c = tokio::process::Command::from(c);
        let child = st
            .procs
            .spawn(&mut c)
            .map_err(|e| format!("cannot start {}: {e}", st.cfg.python))?;
        drop(cmd_r);
        drop(evt_w);
        let pid = child.id().map_or(-1, |p| p as i32);
        let mut kernel = Self {
            child,
            pid,
            uid: user.uid,
            cmd: sender(cmd_w).map_err(|e| format!("cannot use the command pipe: {e}"))?,
            events: Events::new(
                receiver(evt_r).map_err(|e| format!("cannot use the event pipe: {e}"))?,
                MAX_EVENT_BYTES,
            ),
        };
        let source = format!("{}\n{DRIVER}", DRIVER.len());
        if let Err(e) = kernel.cmd.write_all(source.as_bytes()).await {
            let status = kernel.kill(st).await;
            return Err(format!(
                "cannot send the driver: {e} ({})",
                exit_text(status)
            ));
        }
        match tokio::time::timeout(START_TIMEOUT, kernel.events.next()).await {
            Ok(Ok(Some(Event::Line(line)))) if line.contains("\"ready\"") => Ok(kernel),
            Ok(_) => {
                let status = kernel.kill(st).await;
                Err(format!(
                    "the Python interpreter exited during start-up ({})",
                    exit_text(status)
                ))
            }
            Err(_) => {
                kernel.kill(st).await;
                Err("the Python interpreter did not start within 60 seconds".into())
            }
        }
    }

    /// Kills the interpreter's process group and everything it started elsewhere
    /// ([`crate::procs::Procs::kill_unit`]) and reaps it.
    async fn kill(&mut self, st: &St) -> Option<std::process::ExitStatus> {
        sys::kill_group(self.pid, libc::SIGKILL);
        crate::procs::Procs::kill_unit_async(st, self.uid, self.pid).await;
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
        let k = Kernel::start(&st, &user).await.map_err(|e| {
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

/// Makes sure the session's interpreter runs.
async fn ensure_kernel(st: &St, user: &User, sid: &str) -> Result<(), String> {
    let session = st.session(sid);
    let mut slot = session.kernel.kernel.lock().await;
    if slot.as_mut().is_some_and(|k| !k.alive())
        && let Some(mut k) = slot.take()
    {
        k.kill(st).await;
    }
    if slot.is_none() {
        *slot = Some(Kernel::start(st, user).await?);
    }
    Ok(())
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
