//! The HTTP client that talks to ship agents (ship-api.md), with pooled connections.
//!
//! Readiness polling starts fast and backs off to the configured interval, bounded in wall-clock
//! time; exec forwarding uses a timeout derived from the operation's own timeout; uploads and
//! downloads are streamed, never held in memory; every request carries the ship's bearer token.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::error::{Error, Result};

/// Characters left as-is in query values (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Largest agent JSON response relayed by exec.
pub const MAX_EXEC_RESPONSE: usize = 64 << 20;

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
///
/// ```
/// assert_eq!(bay_core::ship_client::encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
/// ```
pub fn encode_query_value(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

/// The agent's `host[:port]` authority for a stored address: an address with a port is used as
/// is, otherwise `port` is added; bare IPv6 addresses are bracketed.
///
/// ```
/// use bay_core::ship_client::authority;
/// assert_eq!(authority("172.18.0.5", 8123), "172.18.0.5:8123");
/// assert_eq!(authority("127.0.0.1:49153", 8123), "127.0.0.1:49153");
/// assert_eq!(authority("fd00::5", 8123), "[fd00::5]:8123");
/// assert_eq!(authority("[fd00::5]", 8123), "[fd00::5]:8123");
/// assert_eq!(authority("[fd00::5]:9000", 8123), "[fd00::5]:9000");
/// ```
pub fn authority(address: &str, port: u16) -> String {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        // Bracketed IPv6, with or without a port.
        return match rest.split_once(']') {
            Some((_, "")) => format!("{address}:{port}"),
            _ => address.to_owned(),
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{port}"),
        1 => address.to_owned(),
        _ => format!("[{address}]:{port}"),
    }
}

/// Where and how to reach one ship's agent.
#[derive(Debug, Clone)]
pub struct ShipEndpoint {
    /// `host:port`
    pub authority: String,
    /// the ship's bearer token
    pub token: String,
}

impl ShipEndpoint {
    /// Builds the endpoint from the stored address.
    pub fn new(address: &str, container_port: u16, token: &str) -> Self {
        Self {
            authority: authority(address, container_port),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.authority, path)
    }

    /// The terminal WebSocket URL with percent-encoded query values.
    ///
    /// ```
    /// use bay_core::ship_client::ShipEndpoint;
    /// let e = ShipEndpoint::new("fd00::5", 8123, "t");
    /// assert_eq!(e.terminal_url("a b", 80, 24), "ws://[fd00::5]:8123/term/ws?session_id=a%20b&cols=80&rows=24");
    /// ```
    pub fn terminal_url(&self, session: &str, cols: u16, rows: u16) -> String {
        format!(
            "ws://{}/term/ws?session_id={}&cols={cols}&rows={rows}",
            self.authority,
            encode_query_value(session)
        )
    }
}

/// HTTP method of a forwarded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipMethod {
    /// GET (payload ignored)
    Get,
    /// POST with a JSON body
    Post,
}

/// A streamed download.
pub struct Download {
    /// `Content-Length` as sent by the agent.
    pub content_length: Option<u64>,
    /// The bytes.
    pub stream: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// What the agent answered to `POST /warmup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// A spare interpreter is ready or being started.
    Started,
    /// An older agent without the endpoint (404): the first Python call starts the
    /// interpreter, as before.
    NotSupported,
}

/// A pooled client for ship agents.
#[derive(Debug, Clone)]
pub struct ShipClient {
    http: reqwest::Client,
    transfer: reqwest::Client,
}

fn transport_error(e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::ShipTimeout
    } else {
        Error::ShipConnection(crate::driver::error_chain(e))
    }
}

impl ShipClient {
    /// A client whose uploads and downloads give up after `transfer_idle` without progress.
    pub fn new(transfer_idle: Duration) -> Self {
        let base = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .no_proxy()
        };
        Self {
            http: base().build().unwrap_or_default(),
            transfer: base()
                .read_timeout(transfer_idle)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Polls `GET /health` until it answers 200 or `budget` (wall clock) runs out. The poll
    /// interval starts at 5 ms and doubles up to `max_interval`; each attempt is bounded by
    /// min(5 s, remaining budget).
    pub async fn wait_ready(
        &self,
        ship: &ShipEndpoint,
        budget: Duration,
        max_interval: Duration,
    ) -> bool {
        let deadline = Instant::now() + budget;
        let mut interval = Duration::from_millis(5).min(max_interval);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            let attempt = self
                .http
                .get(ship.url("/health"))
                .bearer_auth(&ship.token)
                .timeout(remaining.min(Duration::from_secs(5)))
                .send()
                .await;
            if matches!(attempt, Ok(ref r) if r.status() == reqwest::StatusCode::OK) {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            tokio::time::sleep(interval.min(remaining)).await;
            interval = (interval * 2).min(max_interval);
        }
    }

    /// `POST /warmup` (ship token, no body): asks the agent to start a spare Python
    /// interpreter so that the first `ipython/exec` does not pay for its start-up. An agent
    /// that does not know the endpoint (404) is [`Warmup::NotSupported`], not an error.
    pub async fn warmup(&self, ship: &ShipEndpoint, timeout: Duration) -> Result<Warmup> {
        let response = self
            .http
            .post(ship.url("/warmup"))
            .bearer_auth(&ship.token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Warmup::NotSupported);
        }
        json_answer(response, ERROR_BODY_PREFIX).await?;
        Ok(Warmup::Started)
    }

    /// Forwards an operation and returns the agent's JSON answer.
    pub async fn exec(
        &self,
        ship: &ShipEndpoint,
        session: &str,
        method: ShipMethod,
        path: &str,
        payload: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let request = match method {
            ShipMethod::Get => self.http.get(ship.url(path)),
            ShipMethod::Post => {
                let empty = Value::Object(serde_json::Map::new());
                self.http
                    .post(ship.url(path))
                    .json(payload.unwrap_or(&empty))
            }
        };
        let response = request
            .bearer_auth(&ship.token)
            .header("X-SESSION-ID", session)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        json_answer(response, MAX_EXEC_RESPONSE).await
    }

    /// Streams a file to the agent's `/upload` and returns its JSON answer (2xx only).
    pub async fn upload<S>(
        &self,
        ship: &ShipEndpoint,
        session: &str,
        file_path: &str,
        data: S,
        length: Option<u64>,
        file_first: bool,
    ) -> Result<Value>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let body = reqwest::Body::wrap_stream(data);
        let part = match length {
            Some(len) => reqwest::multipart::Part::stream_with_length(body, len),
            None => reqwest::multipart::Part::stream(body),
        }
        .file_name("upload")
        .mime_str("application/octet-stream")
        .map_err(|e| Error::ShipConnection(crate::driver::error_chain(&e)))?;
        let form = reqwest::multipart::Form::new();
        let form = if file_first {
            form.part("file", part)
                .text("file_path", file_path.to_owned())
        } else {
            form.text("file_path", file_path.to_owned())
                .part("file", part)
        };
        let response = self
            .transfer
            .post(ship.url("/upload"))
            .bearer_auth(&ship.token)
            .header("X-SESSION-ID", session)
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        json_answer(response, 1 << 20).await
    }

    /// Starts a streamed download of `file_path` from the agent.
    pub async fn download(
        &self,
        ship: &ShipEndpoint,
        session: &str,
        file_path: &str,
    ) -> Result<Download> {
        let url = format!(
            "{}?file_path={}",
            ship.url("/download"),
            encode_query_value(file_path)
        );
        let response = self
            .transfer
            .get(url)
            .bearer_auth(&ship.token)
            .header("X-SESSION-ID", session)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &read_prefix(response).await));
        }
        Ok(Download {
            content_length: response.content_length(),
            stream: response
                .bytes_stream()
                .map_err(|e| std::io::Error::other(crate::driver::error_chain(&e)))
                .boxed(),
        })
    }
}

/// The agent's JSON answer of at most `limit` bytes; a non-2xx answer is an error quoting it.
async fn json_answer(response: reqwest::Response, limit: usize) -> Result<Value> {
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(status.as_u16(), &read_prefix(response).await));
    }
    let body = read_limited(response, limit).await?;
    serde_json::from_slice(&body).map_err(|e| Error::ShipInvalidResponse(e.to_string()))
}

/// How much of an error answer is quoted back.
const ERROR_BODY_PREFIX: usize = 4096;

fn status_error(status: u16, body: &[u8]) -> Error {
    let cut = &body[..body.len().min(ERROR_BODY_PREFIX)];
    Error::ShipStatus {
        status,
        body: String::from_utf8_lossy(cut).into_owned(),
    }
}

/// The first bytes of an error answer (whatever could be read: the rest is not needed).
async fn read_prefix(response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while out.len() < ERROR_BODY_PREFIX {
        match stream.next().await {
            Some(Ok(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(ERROR_BODY_PREFIX);
    out
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(Error::ShipResponseTooLarge);
    }
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(&e))?;
        if out.len() + chunk.len() > limit {
            return Err(Error::ShipResponseTooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
