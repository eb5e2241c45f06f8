//! Interactive terminal over WebSocket (§8): a login shell on a pseudo-terminal, as the
//! session user; output decoded as UTF-8 incrementally, input written without blocking.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::unix::AsyncFd;

use crate::api::check_session;
use crate::users::User;
use crate::{St, sys};

/// Largest pending input before the socket stops being read.
const INPUT_LIMIT: usize = 1 << 20;
/// Output read size: at most 3× this after U+FFFD replacement, under the 64 KiB frame cap.
const READ_CHUNK: usize = 16 << 10;

/// Incremental UTF-8 decoder: characters split across reads are kept whole.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn decode(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

fn parse_dim(v: Option<String>, default: u16) -> Result<u16, ()> {
    match v {
        None => Ok(default),
        Some(s) => {
            let n: i64 = crate::api::coerce_int(&Value::String(s)).map_err(|_| ())?;
            if (1..=1000).contains(&n) {
                Ok(n as u16)
            } else {
                Err(())
            }
        }
    }
}

/// WS /term/ws
pub async fn ws(
    State(st): State<St>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let query = uri.query().unwrap_or("");
    let raw_sid = crate::query_param_bytes(query, "session_id")
        .or_else(|| headers.get("x-session-id").map(|v| v.as_bytes().to_vec()));
    let sid = check_session(
        raw_sid.as_deref(),
        vec!["query".into(), "session_id".into()],
    );
    let cols = parse_dim(crate::query_param(query, "cols"), 80);
    let rows = parse_dim(crate::query_param(query, "rows"), 24);
    let params = match (sid, cols, rows) {
        (Ok(s), Ok(c), Ok(r)) => Ok((s, c, r)),
        (Err(_), _, _) => Err("invalid session_id"),
        (_, Err(()), _) => Err("invalid cols: expected an integer from 1 to 1000"),
        (_, _, Err(())) => Err("invalid rows: expected an integer from 1 to 1000"),
    };
    upgrade.on_upgrade(move |mut socket| async move {
        match params {
            Err(reason) => close(&mut socket, 1008, reason).await,
            Ok((sid, cols, rows)) => match st.user(&sid).await {
                Err((name, reason)) => {
                    close(
                        &mut socket,
                        1011,
                        &format!("Failed to create user {name}: {reason}"),
                    )
                    .await;
                }
                Ok(user) => {
                    if let Err(e) = session(st, socket, user, cols, rows).await {
                        tracing::warn!(error = %e, "terminal session ended with an error");
                    }
                }
            },
        }
    })
}

/// Truncates a close reason to 123 bytes on a character boundary.
fn reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

async fn close(socket: &mut WebSocket, code: u16, text: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason(text).into(),
        })))
        .await;
}

async fn session(
    st: St,
    mut socket: WebSocket,
    user: User,
    cols: u16,
    rows: u16,
) -> anyhow::Result<()> {
    let (master, slave) = match sys::open_pty(rows, cols) {
        Ok(p) => p,
        Err(e) => {
            close(&mut socket, 1011, &format!("cannot open a terminal: {e}")).await;
            return Ok(());
        }
    };
    let mut cmd = std::process::Command::new(&st.cfg.shell);
    cmd.arg("-l")
        .env_clear()
        .envs(crate::shell::base_env(&user))
        .env("TERM", "xterm-256color");
    if let Err(e) = sys::pty_command(&mut cmd, user.ident(), &user.workspace, slave.as_raw_fd()) {
        close(&mut socket, 1011, &format!("cannot start the shell: {e}")).await;
        return Ok(());
    }
    let mut cmd = tokio::process::Command::from(cmd);
    let mut child = match st.procs.spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            close(&mut socket, 1011, &format!("cannot start the shell: {e}")).await;
            return Ok(());
        }
    };
    drop(slave);
    let pid = child.id().map_or(-1, |p| p as i32);
    let master: AsyncFd<OwnedFd> = sys::async_fd(master)?;
    let mut shutdown = st.shutdown.subscribe();
    let mut decoder = Utf8Decoder::default();
    let mut input: VecDeque<u8> = VecDeque::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut eof = false;
    let (mut tx, mut rx) = socket.split();
    let outcome: Option<(u16, &str)> = loop {
        tokio::select! {
            r = master.readable(), if !eof => {
                let mut guard = r?;
                match guard.try_io(|fd| sys::read_fd(fd.get_ref().as_raw_fd(), &mut buf)) {
                    Ok(Ok(0)) => eof = true,
                    Ok(Ok(n)) => {
                        let text = decoder.decode(&buf[..n]);
                        if !text.is_empty() && tx.send(Message::Text(text.into())).await.is_err() {
                            break None;
                        }
                    }
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => eof = true,
                    Ok(Err(_)) => eof = true,
                    Err(_would_block) => {}
                }
            }
            r = master.writable(), if !input.is_empty() => {
                let mut guard = r?;
                let (a, _) = input.as_slices();
                let chunk = a.to_vec();
                match guard.try_io(|fd| sys::write_fd(fd.get_ref().as_raw_fd(), &chunk)) {
                    Ok(Ok(n)) => { input.drain(..n); }
                    Ok(Err(_)) => input.clear(),
                    Err(_would_block) => {}
                }
            }
            msg = rx.next(), if input.len() < INPUT_LIMIT => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some((c, r)) = resize_request(t.as_str()) {
                            if let (Some(c), Some(r)) = (c, r) {
                                let _ = sys::set_winsize(master.get_ref().as_raw_fd(), r, c);
                            }
                        } else {
                            input.extend(t.as_str().as_bytes());
                        }
                    }
                    Some(Ok(Message::Binary(b))) => input.extend(b.iter()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => {}
                }
            }
            _ = child.wait() => {
                // Send what is left, then close.
                loop {
                    match sys::read_fd(master.get_ref().as_raw_fd(), &mut buf) {
                        Ok(n) if n > 0 => {
                            let text = decoder.decode(&buf[..n]);
                            if !text.is_empty() && tx.send(Message::Text(text.into())).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                break Some((1000, "Shell exited"));
            }
            _ = shutdown.changed() => break Some((1001, "Ship shutting down")),
        }
    };
    if let Some((code, text)) = outcome {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: text.into(),
            })))
            .await;
    }
    // SIGHUP to the terminal's session, SIGKILL a second later to whatever is still in it
    // (every job has a process group of its own), reap.
    hangup_session(pid, libc::SIGHUP).await;
    let st2 = st.clone();
    let uid = user.uid;
    tokio::spawn(async move {
        let kill_at = tokio::time::Instant::now() + Duration::from_secs(1);
        let _ = tokio::time::timeout_at(kill_at, child.wait()).await;
        tokio::time::sleep_until(kill_at).await;
        hangup_session(pid, libc::SIGKILL).await;
        // And what the shell started in sessions of their own (`setsid`, `nohup … &`).
        crate::procs::Procs::kill_unit_async(&st2, uid, pid).await;
        let _ = child.wait().await;
        st2.procs.release(pid);
    });
    Ok(())
}

/// Signals every process of the terminal's session (a `/proc` scan, on the blocking pool).
async fn hangup_session(sid: i32, sig: i32) {
    sys::kill_group(sid, sig);
    let _ = tokio::task::spawn_blocking(move || crate::procs::signal_session(sid, sig)).await;
}

/// A resize message: `Some((cols, rows))` where a `None` dimension means "ignore the message".
fn resize_request(text: &str) -> Option<(Option<u16>, Option<u16>)> {
    let t = text.trim_start();
    if !t.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("resize") {
        return None;
    }
    let dim = |name: &str, default: u16| match v.get(name) {
        None => Some(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=1000).contains(n))
            .map(|n| n as u16),
        Some(_) => None,
    };
    Some((dim("cols", 80), dim("rows", 24)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_kept_whole() {
        let mut d = Utf8Decoder::default();
        let bytes = "héllo €".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&d.decode(&[*b]));
        }
        assert_eq!(out, "héllo €");
        assert_eq!(d.decode(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn resize_messages_are_recognised() {
        assert_eq!(
            resize_request(r#"{"type":"resize","cols":120,"rows":40}"#),
            Some((Some(120), Some(40)))
        );
        assert_eq!(
            resize_request(r#"{"type":"resize"}"#),
            Some((Some(80), Some(24)))
        );
        assert_eq!(
            resize_request(r#"{"type":"resize","cols":0,"rows":40}"#),
            Some((None, Some(40)))
        );
        assert_eq!(resize_request("ls -la\r"), None);
        assert_eq!(resize_request(r#"{"type":"other"}"#), None);
    }
}
