//! The proxy operations (bay-api.md §4.15–4.18): exec, upload, download and terminal, each
//! behind the access check (a RUNNING ship and a relation of the session), and each keeping
//! the ship from being reaped while it is in flight.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::guards::InflightGuard;
use super::ttl::touch;
use super::{ShipService, TerminalTarget};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::ship_client::{Download, ShipEndpoint, ShipMethod};
use crate::store::q;

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

impl ShipService {
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
                if !ship.status().is_usable() {
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
        Ok((endpoint, InflightGuard::enter(&self.inner, ship_id)))
    }

    /// Touches the (session, ship) relation if the ship is still RUNNING (activity).
    pub async fn touch_session(&self, ship_id: &str, session: &str) -> Result<()> {
        let (id, sid, max_ttl) = (ship_id.to_owned(), session.to_owned(), self.max_ttl());
        self.inner
            .store
            .tx(move |c| {
                if let Some(ship) = q::ship(c, &id)?
                    && ship.status().can_attach()
                {
                    touch(c, &ship, &sid, Timestamp::now(), max_ttl)?;
                }
                Ok(())
            })
            .await?;
        // No reaper wake-up: a touch only moves deadlines later.
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
            // The answer does not wait for the second touch (a database transaction, the
            // largest part of Bay's added latency): it is recorded on a task of its own, and
            // the ship stays busy for the reaper until it is.
            let (service, ship, sid) = (self.clone(), ship_id.to_owned(), session.to_owned());
            tokio::spawn(async move {
                if let Err(e) = service.touch_session(&ship, &sid).await {
                    tracing::warn!(ship.id = %ship, session.id = %sid, error = %e, "could not touch the session after an exec");
                }
                drop(guard);
            });
        } else {
            drop(guard);
        }
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
}
