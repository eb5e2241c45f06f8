//! Shell execution (§7): one fresh process per call, as the session user, in its own session
//! and process group; bounded output with middle elision; background processes with a
//! per-session registry.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::api::{ApiError, ApiResult, Body, ok, session_header};
use crate::paths::resolve;
use crate::users::User;
use crate::{St, sys};

/// Finished background entries kept per session.
const MAX_FINISHED: usize = 100;

/// A byte buffer that keeps the first and the last `cap / 2` bytes of a stream.
#[derive(Debug)]
pub struct OutBuf {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl OutBuf {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let head_cap = self.cap / 2;
        if self.head.len() < head_cap {
            let n = (head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        let tail_cap = self.cap - head_cap;
        if data.len() >= tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - tail_cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// The text (lossy UTF-8, elided in the middle, stripped) and whether it was truncated.
    pub fn render(&self) -> (String, bool) {
        let omitted = self.total - self.head.len() as u64 - self.tail.len() as u64;
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if omitted == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            (String::from_utf8_lossy(&all).trim().to_owned(), false)
        } else {
            let text = format!(
                "{}\n[... {omitted} bytes omitted ...]\n{}",
                String::from_utf8_lossy(&self.head),
                String::from_utf8_lossy(&tail)
            );
            (text.trim().to_owned(), true)
        }
    }
}

type Shared = Arc<Mutex<OutBuf>>;

fn lock(b: &Shared) -> std::sync::MutexGuard<'_, OutBuf> {
    b.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits, at most 1 s in all, for the readers started by [`drain`] to finish, in order.
async fn join_readers(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
    })
    .await;
}

/// Reads `r` to its end into `buf`.
fn drain(
    mut r: impl AsyncRead + Unpin + Send + 'static,
    buf: Shared,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&buf).push(&chunk[..n]),
            }
        }
    })
}

/// One background process.
#[derive(Debug)]
pub struct BgProc {
    id: String,
    pid: i32,
    uid: u32,
    command: String,
    stdout: Shared,
    stderr: Shared,
    return_code: Mutex<Option<i32>>,
}

impl BgProc {
    fn rc(&self) -> Option<i32> {
        *self.return_code.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn summary(&self) -> Value {
        let rc = self.rc();
        let status = match rc {
            None => "running",
            Some(0) => "completed",
            Some(_) => "failed",
        };
        json!({"process_id": self.id, "pid": self.pid, "command": self.command, "status": status, "return_code": rc})
    }
}

/// A session's background processes, in start order.
#[derive(Debug, Default)]
pub struct Registry {
    procs: Mutex<Vec<Arc<BgProc>>>,
}

impl Registry {
    fn list(&self) -> Vec<Arc<BgProc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn find(&self, id: &str) -> Option<Arc<BgProc>> {
        self.list().into_iter().find(|p| p.id == id)
    }
    fn add(&self, p: Arc<BgProc>) {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        self.prune();
    }
    /// Drops the oldest finished entries beyond [`MAX_FINISHED`]; called whenever an entry
    /// is added or finishes, so the limit holds at all times.
    fn prune(&self) {
        let mut v = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        while v.iter().filter(|p| p.rc().is_some()).count() > MAX_FINISHED {
            if let Some(i) = v.iter().position(|p| p.rc().is_some()) {
                v.remove(i);
            }
        }
    }
    fn new_id(&self) -> String {
        loop {
            let id = format!("{:08x}", rand::random::<u32>());
            if self.find(&id).is_none() {
                return id;
            }
        }
    }
}

/// The base environment of session processes.
pub fn base_env(user: &User) -> Vec<(String, String)> {
    let home = user.home.to_string_lossy().into_owned();
    vec![
        ("HOME".into(), home),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("SHELL".into(), "/bin/bash".into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "TMPDIR".into(),
            user.tmp_dir().to_string_lossy().into_owned(),
        ),
    ]
}

fn valid_env_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

struct ExecResult {
    success: bool,
    return_code: Option<i32>,
    stdout: String,
    stderr: String,
    pid: Option<i32>,
    process_id: Option<String>,
    error: Option<String>,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl ExecResult {
    fn soft(error: String) -> Self {
        Self {
            success: false,
            return_code: Some(-1),
            stdout: String::new(),
            stderr: String::new(),
            pid: None,
            process_id: None,
            error: Some(error),
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }
    fn into_response(self) -> Response {
        ok(
            json!({"success": self.success, "return_code": self.return_code, "stdout": self.stdout,
            "stderr": self.stderr, "pid": self.pid, "process_id": self.process_id, "error": self.error,
            "stdout_truncated": self.stdout_truncated, "stderr_truncated": self.stderr_truncated}),
        )
    }
}

/// Kills the command (every process of its unit, see [`crate::procs::Procs::kill_unit`])
/// when the request is abandoned before the command finished.
struct KillGuard {
    st: St,
    pid: i32,
    uid: u32,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if self.armed {
            sys::kill_group(self.pid, libc::SIGKILL);
            let (st, pid, uid) = (self.st.clone(), self.pid, self.uid);
            tokio::task::spawn_blocking(move || {
                st.procs.kill_unit(uid, pid);
                st.procs.release(pid);
            });
        }
    }
}

/// The working directory of a command (§7.1), resolved with the user's credentials.
fn resolve_cwd(w: &Path, c: &str) -> Result<PathBuf, String> {
    match resolve(w, c, true) {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(_) | Err(crate::paths::PathError::Nul) => {
            Err(format!("Working directory does not exist: {c}"))
        }
        Err(crate::paths::PathError::Loop) => Err(format!(
            "Working directory does not exist: {c} (too many levels of symbolic links)"
        )),
        Err(crate::paths::PathError::Denied) => Err(format!(
            "Access denied: path must be within user workspace: {}",
            w.display()
        )),
    }
}

/// POST /shell/exec
pub async fn exec(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let sid = session_header(&headers);
    let errors = sid.as_ref().err().cloned().into_iter().collect();
    let mut b = Body::parse(&headers, &body, errors)?;
    let command = b.req_str("command");
    let cwd = b.opt_str("cwd", true);
    let env = b.opt_str_map("env");
    let timeout = b.opt_int("timeout", true).unwrap_or(Some(30));
    let use_shell = b.opt_bool("shell").unwrap_or(true);
    let background = b.opt_bool("background").unwrap_or(false);
    b.finish()?;
    let sid = sid.map_err(|e| ApiError::Validation(vec![e]))?;
    let req = Req {
        command,
        cwd,
        env,
        timeout: timeout.map(|t| Duration::from_secs(t.max(1) as u64)),
        use_shell,
        background,
    };
    Ok(run(&st, &sid, req).await.into_response())
}

struct Req {
    command: String,
    cwd: Option<String>,
    env: Option<Vec<(String, String)>>,
    timeout: Option<Duration>,
    use_shell: bool,
    background: bool,
}

async fn run(st: &St, sid: &str, req: Req) -> ExecResult {
    let user = match st.user(sid).await {
        Ok(u) => u,
        Err((name, reason)) => {
            return ExecResult::soft(format!("Failed to create user {name}: {reason}"));
        }
    };
    // Working directory, resolved with the user's credentials.
    let w = user.workspace.clone();
    let cwd = match req.cwd.clone() {
        // The workspace itself was just checked by `st.user`: no trip to the blocking pool.
        None => Ok(Ok(w)),
        Some(c) => crate::as_user(&user, move || resolve_cwd(&w, &c)).await,
    };
    let cwd = match cwd {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return ExecResult::soft(e),
        Err(_) => return ExecResult::soft("Failed to start command: internal error".into()),
    };
    let mut env = base_env(&user);
    for (k, v) in req.env.unwrap_or_default() {
        if !valid_env_name(&k) {
            return ExecResult::soft(format!("Invalid environment variable name: {k}"));
        }
        if v.contains('\0') {
            return ExecResult::soft(format!("Invalid environment variable value for {k}"));
        }
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    }
    // With a shell, the script travels in an in-memory file on fd 3, never on the command
    // line (which every user of the ship can read in /proc): the shell sources it and the
    // script's first line closes fd 3 so that the command does not inherit it.
    let mut script_fd = None;
    let mut cmd = if req.use_shell {
        let script = format!(
            "exec 3<&-\ncd -- {} || exit 1\n{}",
            shell_quote(&cwd.to_string_lossy()),
            req.command
        );
        match sys::memfd_with(c"ship-command", script.as_bytes()) {
            Ok(f) => script_fd = Some(f),
            Err(e) => return ExecResult::soft(format!("Failed to start command: {e}")),
        }
        let mut c = std::process::Command::new(&st.cfg.shell);
        c.arg("-l").arg("-c").arg(". /proc/self/fd/3");
        c
    } else {
        let words = match shell_words::split(&req.command) {
            Ok(w) => w,
            Err(e) => return ExecResult::soft(format!("Invalid command: {e}")),
        };
        let Some((prog, args)) = words.split_first() else {
            return ExecResult::soft("Invalid command: empty command".into());
        };
        let mut c = std::process::Command::new(prog);
        c.args(args);
        c
    };
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fds = script_fd
        .as_ref()
        .map(|f| vec![(std::os::fd::AsRawFd::as_raw_fd(f), 3)])
        .unwrap_or_default();
    if let Err(e) = sys::user_command(&mut cmd, user.ident(), &cwd, fds) {
        return ExecResult::soft(format!("Failed to start command: {e}"));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    let spawned = st.procs.spawn(&mut cmd);
    drop(script_fd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ExecResult::soft(format!("Failed to start command: {e}")),
    };
    let pid = child.id().map_or(-1, |p| p as i32);
    let cap = st.cfg.max_output_bytes;
    let out: Shared = Arc::new(Mutex::new(OutBuf::new(cap)));
    let err: Shared = Arc::new(Mutex::new(OutBuf::new(cap)));
    let r_out = child.stdout.take().map(|s| drain(s, out.clone()));
    let r_err = child.stderr.take().map(|s| drain(s, err.clone()));

    if req.background {
        let session = st.session(sid);
        let id = session.shell.new_id();
        let entry = Arc::new(BgProc {
            id: id.clone(),
            pid,
            uid: user.uid,
            command: req.command,
            stdout: out,
            stderr: err,
            return_code: Mutex::new(None),
        });
        session.shell.add(entry.clone());
        let st2 = st.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            st2.procs.release(pid);
            let rc = status.map_or(-1, |s| sys::decode_status(&s));
            // Let the readers catch the last output.
            join_readers([r_out, r_err]).await;
            *entry.return_code.lock().unwrap_or_else(|e| e.into_inner()) = Some(rc);
            session.shell.prune();
        });
        return ExecResult {
            success: true,
            return_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            pid: Some(pid),
            process_id: Some(id),
            error: None,
            stdout_truncated: false,
            stderr_truncated: false,
        };
    }

    let mut guard = KillGuard {
        st: st.clone(),
        pid,
        uid: user.uid,
        armed: true,
    };
    let (status, timed_out) = match req.timeout {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(s) => (s, false),
            Err(_) => {
                // The whole unit: its process group, and what it started elsewhere.
                sys::kill_group(pid, libc::SIGKILL);
                crate::procs::Procs::kill_unit_async(st, user.uid, pid).await;
                (child.wait().await, true)
            }
        },
        None => (child.wait().await, false),
    };
    st.procs.release(pid);
    guard.armed = false;
    // Pipes may be held by processes left in the background: wait at most 1 s for them.
    join_readers([r_out, r_err]).await;
    let (stdout, stdout_truncated) = lock(&out).render();
    let (stderr, stderr_truncated) = lock(&err).render();
    if timed_out {
        return ExecResult {
            success: false,
            return_code: Some(-1),
            stdout,
            stderr,
            pid: Some(pid),
            process_id: None,
            error: Some("Command timed out".into()),
            stdout_truncated,
            stderr_truncated,
        };
    }
    let rc = status.map_or(-1, |s| sys::decode_status(&s));
    ExecResult {
        success: rc == 0,
        return_code: Some(rc),
        stdout,
        stderr,
        pid: Some(pid),
        process_id: None,
        error: None,
        stdout_truncated,
        stderr_truncated,
    }
}

fn required_session(headers: &HeaderMap) -> Result<String, ApiError> {
    session_header(headers).map_err(|e| ApiError::Validation(vec![e]))
}

/// GET /shell/processes
pub async fn list(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    let sid = required_session(&headers)?;
    let procs: Vec<Value> = st
        .existing_session(&sid)
        .map(|s| s.shell.list().iter().map(|p| p.summary()).collect())
        .unwrap_or_default();
    Ok(ok(json!({ "processes": procs })))
}

/// The process `id` of the session named by the request's header; 404 when unknown.
fn find_process(st: &St, headers: &HeaderMap, id: &str) -> Result<Arc<BgProc>, ApiError> {
    let sid = required_session(headers)?;
    st.existing_session(&sid)
        .and_then(|s| s.shell.find(id))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Process not found: {id}")))
}

/// GET /shell/process/{process_id}
pub async fn get_process(
    State(st): State<St>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let p = find_process(&st, &headers, &id)?;
    let mut v = p.summary();
    let (stdout, so_t) = lock(&p.stdout).render();
    let (stderr, se_t) = lock(&p.stderr).render();
    v["stdout"] = stdout.into();
    v["stderr"] = stderr.into();
    v["stdout_truncated"] = so_t.into();
    v["stderr_truncated"] = se_t.into();
    Ok(ok(v))
}

/// DELETE /shell/process/{process_id}
pub async fn kill_process(
    State(st): State<St>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let p = find_process(&st, &headers, &id)?;
    if p.rc().is_some() {
        return Ok(ok(
            json!({"success": true, "message": format!("Process {id} is not running")}),
        ));
    }
    sys::kill_group(p.pid, libc::SIGKILL);
    crate::procs::Procs::kill_unit_async(&st, p.uid, p.pid).await;
    // Wait briefly so that the listing shows the final status.
    for _ in 0..40 {
        if p.rc().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(ok(json!({"success": true, "message": format!("Process {id} killed")})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole_and_stripped() {
        let mut b = OutBuf::new(16);
        b.push(b"  hello\n");
        assert_eq!(b.render(), ("hello".to_owned(), false));
        let mut b = OutBuf::new(16);
        b.push(b"0123456789abcdef");
        assert_eq!(b.render(), ("0123456789abcdef".to_owned(), false));
    }

    #[test]
    fn large_output_is_elided_in_the_middle() {
        let mut b = OutBuf::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qr"] {
            b.push(chunk);
        }
        // 18 bytes: first 4, last 4, 10 omitted.
        assert_eq!(
            b.render(),
            ("abcd\n[... 10 bytes omitted ...]\nopqr".to_owned(), true)
        );
        let mut b = OutBuf::new(8);
        b.push(&[b'x'; 1000]);
        let (t, trunc) = b.render();
        assert!(trunc);
        assert_eq!(t, "xxxx\n[... 992 bytes omitted ...]\nxxxx");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut b = OutBuf::new(64);
        b.push(b"a\xffb");
        assert_eq!(b.render().0, "a\u{fffd}b");
    }

    #[test]
    fn env_names_and_quoting() {
        assert!(valid_env_name("FOO_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
