//! The two ways `bay` reaches ships, behind one set of operations that answer with the API's
//! own types (`bay-api-types`): [`Remote`] is a client of bay-server, [`Local`] composes
//! bay-core with the driver of `CONTAINER_DRIVER` through `bay-factory`, as bay-server does.

use std::io;

use bay_api_types::{
    CreateShipRequest, ErrorBody, ExecRequest, LogsResponse, OverviewResponse, SessionListResponse,
    SessionResponse, ShipResponse, ShipSessionsResponse, StartShipRequest, TtlRequest,
    UploadResponse, responses,
};
use bay_core::config::Config;
use bay_core::model::{SizeField, SpecRequest, parse_spec_size};
use bay_core::service::{CreateShip, ShipService};
use bay_core::ship_client::Download;
use bay_factory::db_lock::{self, DatabaseLock, Holder, LockError};
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::failure::{Failure, Kind, Result};

/// A byte stream to upload.
pub type Upload = BoxStream<'static, io::Result<Bytes>>;

/// Where a terminal connects: the WebSocket URL and the headers to send.
#[derive(Debug)]
pub struct TerminalTarget {
    /// `ws://…`
    pub url: String,
    /// extra request headers (authorization, session)
    pub headers: Vec<(&'static str, String)>,
}

/// Remote or local.
#[derive(Debug)]
pub enum Backend {
    /// bay-server over HTTP
    Remote(Remote),
    /// bay-core in this process
    Local(Local),
}

/// A client of bay-server.
#[derive(Debug)]
pub struct Remote {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

/// bay-core with a driver, holding the database lock.
#[derive(Debug)]
pub struct Local {
    service: ShipService,
    _lock: DatabaseLock,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Remote {
    /// A client of the bay-server at `url`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "invalid --url {url:?}: expected http://host:port"
            )));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Failure::server(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, url, token })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            r = r.bearer_auth(token);
        }
        if let Some(session) = session {
            r = r.header("X-SESSION-ID", session);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = r.send().await.map_err(|e| {
            Failure::server(format!("cannot reach bay-server at {}: {e}", self.url))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response).await)
    }

    async fn json<T: DeserializeOwned>(&self, r: reqwest::RequestBuilder) -> Result<T> {
        let response = self.send(r).await?;
        let text = response
            .text()
            .await
            .map_err(|e| Failure::server(format!("reading the answer of bay-server: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            Failure::server(format!(
                "bay-server answered in an unexpected shape ({e}): {text}"
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(Method::GET, path, None)).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        session: Option<&str>,
        body: &impl Serialize,
    ) -> Result<T> {
        self.json(self.request(Method::POST, path, session).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path, None)).await?;
        Ok(())
    }
}

/// The failure a bay-server error answer means: its class and its `detail`.
async fn error_of(response: reqwest::Response) -> Failure {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.message())
        .unwrap_or_else(|_| {
            if text.is_empty() {
                status.to_string()
            } else {
                text
            }
        });
    // Exec answers 400 for a missing ship and relays the agent's 404 for a missing file:
    // bay-api.md §2.6 lets clients match "not found" in the detail, and so does bay.
    // Session extend-ttl answers a ttl out of bounds with 400 (bay-api.md §4.21): a usage
    // error, as the same ttl is in local mode.
    let kind = if status.is_client_error() && detail.to_lowercase().contains("not found") {
        Kind::NotFound
    } else if status == StatusCode::BAD_REQUEST && detail.starts_with("TTL must") {
        Kind::Usage
    } else {
        Kind::of_status(status.as_u16())
    };
    if status == StatusCode::UNAUTHORIZED
        || (status == StatusCode::FORBIDDEN && detail.contains("authent"))
    {
        return Failure::new(kind, format!("{detail} (check --token or BAY_TOKEN)"));
    }
    Failure::new(kind, detail)
}

impl Local {
    /// Reads the configuration as bay-server would, takes the database lock and starts
    /// bay-core with the configured driver.
    pub async fn start() -> Result<Self> {
        let config = Config::from_env()
            .map_err(|e| Failure::usage(format!("invalid configuration: {e}")))?;
        let path = config.database_path.clone();
        let lock = match db_lock::try_lock(&path, Holder::Cli) {
            Ok(lock) => lock,
            Err(LockError::Busy {
                server: true,
                holder,
                ..
            }) => {
                return Err(Failure::new(
                    Kind::Refused,
                    format!(
                        "local mode refused: {holder} serves the database {}; use --url (or BAY_URL) to go through it",
                        path.display()
                    ),
                ));
            }
            Err(LockError::Busy { holder, .. }) => {
                eprintln!(
                    "bay: waiting for {holder} to finish with {}",
                    path.display()
                );
                tokio::task::spawn_blocking(move || db_lock::lock(&path, Holder::Cli))
                    .await
                    .map_err(|e| Failure::server(format!("waiting for the database lock: {e}")))?
                    .map_err(|e| Failure::server(e.to_string()))?
            }
            Err(e) => return Err(Failure::server(e.to_string())),
        };
        let driver = bay_factory::build_driver(&config)
            .map_err(|e| Failure::server(format!("local mode: {e}")))?;
        let service = ShipService::start(config, driver)
            .await
            .map_err(|e| Failure::server(format!("local mode: starting bay-core: {e}")))?;
        Ok(Self {
            service,
            _lock: lock,
        })
    }

    fn check_ttl(&self, ttl: i64) -> Result<()> {
        let max = self.service.config().max_ttl;
        if ttl > max {
            return Err(Failure::usage(format!(
                "invalid ttl {ttl}: must not exceed MAX_TTL ({max} seconds)"
            )));
        }
        Ok(())
    }
}

/// The spec of a create request as bay-core wants it (the checks bay-server makes, §3.3).
fn spec_request(req: &CreateShipRequest) -> Result<SpecRequest> {
    let Some(spec) = &req.spec else {
        return Ok(SpecRequest::default());
    };
    if let Some(cpus) = spec.cpus
        && !(cpus > 0.0 && cpus <= bay_core::model::MAX_CPUS)
    {
        return Err(Failure::usage(format!(
            "invalid --cpus {cpus}: must be greater than 0 and at most 256"
        )));
    }
    let size = |field, text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_spec_size(field, t))
            .transpose()
            .map_err(|e| Failure::usage(e.to_string()))
    };
    Ok(SpecRequest {
        cpus: spec.cpus,
        memory_bytes: size(SizeField::Memory, &spec.memory)?,
        disk_bytes: size(SizeField::Disk, &spec.disk)?,
    })
}

impl Backend {
    /// Remote when a URL is given, local otherwise.
    pub async fn connect(url: Option<&str>, token: Option<String>) -> Result<Self> {
        match url {
            Some(url) => Ok(Self::Remote(Remote::new(url, token)?)),
            None => Ok(Self::Local(Local::start().await?)),
        }
    }

    /// Ends background work (local mode) before the process exits.
    pub async fn close(self) {
        if let Self::Local(l) = self {
            l.service.shutdown().await;
        }
    }

    /// `POST /ship`
    pub async fn create_ship(
        &self,
        session: &str,
        req: &CreateShipRequest,
    ) -> Result<ShipResponse> {
        match self {
            Self::Remote(r) => r.post("/ship", Some(session), req).await,
            Self::Local(l) => {
                l.check_ttl(req.ttl)?;
                let create = CreateShip {
                    ttl: req.ttl,
                    spec: spec_request(req)?,
                    max_session_num: req.max_session_num.unwrap_or(1),
                    force_create: req.force_create.unwrap_or(false),
                };
                Ok(l.service.create_ship(session, create).await?.into())
            }
        }
    }

    /// `GET /ships`
    pub async fn list_ships(&self) -> Result<Vec<ShipResponse>> {
        match self {
            Self::Remote(r) => r.get("/ships").await,
            Self::Local(l) => Ok(responses(l.service.list_ships().await?)),
        }
    }

    /// `GET /ship/{id}`
    pub async fn get_ship(&self, id: &str) -> Result<ShipResponse> {
        match self {
            Self::Remote(r) => r.get(&format!("/ship/{}", enc(id))).await,
            Self::Local(l) => Ok(l.service.get_ship(id).await?.into()),
        }
    }

    /// `DELETE /ship/{id}` or `/ship/{id}/permanent`
    pub async fn delete_ship(&self, id: &str, permanent: bool) -> Result<()> {
        match self {
            Self::Remote(r) => {
                let suffix = if permanent { "/permanent" } else { "" };
                r.delete(&format!("/ship/{}{suffix}", enc(id))).await
            }
            Self::Local(l) if permanent => Ok(l.service.delete_ship(id).await?),
            Self::Local(l) => Ok(l.service.stop_ship(id).await?),
        }
    }

    /// `POST /ship/{id}/start`
    pub async fn start_ship(
        &self,
        id: &str,
        session: &str,
        ttl: Option<i64>,
    ) -> Result<ShipResponse> {
        match self {
            Self::Remote(r) => {
                r.post(
                    &format!("/ship/{}/start", enc(id)),
                    Some(session),
                    &StartShipRequest { ttl },
                )
                .await
            }
            Self::Local(l) => {
                if let Some(ttl) = ttl {
                    l.check_ttl(ttl)?;
                }
                Ok(l.service.start_ship(id, session, ttl).await?.into())
            }
        }
    }

    /// `POST /ship/{id}/extend-ttl`
    pub async fn extend_ship_ttl(&self, id: &str, ttl: i64) -> Result<ShipResponse> {
        match self {
            Self::Remote(r) => {
                r.post(
                    &format!("/ship/{}/extend-ttl", enc(id)),
                    None,
                    &TtlRequest { ttl },
                )
                .await
            }
            Self::Local(l) => {
                l.check_ttl(ttl)?;
                Ok(l.service.extend_ship_ttl(id, ttl).await?.into())
            }
        }
    }

    /// `GET /ship/logs/{id}`
    pub async fn logs(&self, id: &str, tail: u32) -> Result<LogsResponse> {
        match self {
            Self::Remote(r) => r.get(&format!("/ship/logs/{}?tail={tail}", enc(id))).await,
            Self::Local(l) => Ok(LogsResponse {
                logs: l.service.ship_logs(id, tail).await?,
            }),
        }
    }

    /// `GET /ship/{id}/sessions`
    pub async fn ship_sessions(&self, id: &str) -> Result<ShipSessionsResponse> {
        match self {
            Self::Remote(r) => r.get(&format!("/ship/{}/sessions", enc(id))).await,
            Self::Local(l) => {
                let list = SessionListResponse::new(l.service.ship_sessions(id).await?);
                Ok(ShipSessionsResponse {
                    ship_id: id.to_owned(),
                    sessions: list.sessions,
                    total: list.total,
                })
            }
        }
    }

    /// `POST /ship/{id}/exec`: the agent's answer (`data`).
    pub async fn exec(&self, id: &str, session: &str, kind: &str, payload: Value) -> Result<Value> {
        match self {
            Self::Remote(r) => {
                let envelope: bay_api_types::ExecResponse = r
                    .post(
                        &format!("/ship/{}/exec", enc(id)),
                        Some(session),
                        &ExecRequest {
                            kind: kind.to_owned(),
                            payload: Some(payload),
                        },
                    )
                    .await?;
                Ok(envelope.data)
            }
            Self::Local(l) => Ok(l.service.exec(id, session, kind, Some(payload)).await?),
        }
    }

    /// `POST /ship/{id}/upload`: streams `data` (`length` bytes) to `path`; the resolved path.
    pub async fn upload(
        &self,
        id: &str,
        session: &str,
        path: &str,
        data: Upload,
        length: u64,
    ) -> Result<String> {
        match self {
            Self::Remote(r) => {
                let part = reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::wrap_stream(data),
                    length,
                )
                .file_name("upload")
                .mime_str("application/octet-stream")
                .map_err(|e| Failure::server(e.to_string()))?;
                let form = reqwest::multipart::Form::new()
                    .part("file", part)
                    .text("file_path", path.to_owned());
                let answer: UploadResponse = r
                    .json(
                        r.request(
                            Method::POST,
                            &format!("/ship/{}/upload", enc(id)),
                            Some(session),
                        )
                        .multipart(form),
                    )
                    .await?;
                Ok(answer.file_path)
            }
            Self::Local(l) => {
                let answer = l
                    .service
                    .upload(id, session, path, data, Some(length), true)
                    .await?;
                Ok(answer
                    .get("file_path")
                    .and_then(Value::as_str)
                    .unwrap_or(path)
                    .to_owned())
            }
        }
    }

    /// `GET /ship/{id}/download`: the file's bytes as a stream.
    pub async fn download(&self, id: &str, session: &str, path: &str) -> Result<Download> {
        match self {
            Self::Remote(r) => {
                let response = r
                    .send(r.request(
                        Method::GET,
                        &format!("/ship/{}/download?file_path={}", enc(id), enc(path)),
                        Some(session),
                    ))
                    .await?;
                Ok(Download {
                    content_length: response.content_length(),
                    stream: Box::pin(response.bytes_stream().map_err(io::Error::other)),
                })
            }
            Self::Local(l) => Ok(l.service.download(id, session, path).await?),
        }
    }

    /// Where the terminal of `id` is.
    pub async fn terminal(
        &self,
        id: &str,
        session: &str,
        cols: u16,
        rows: u16,
    ) -> Result<TerminalTarget> {
        match self {
            Self::Remote(r) => {
                let base = r
                    .url
                    .replacen("http://", "ws://", 1)
                    .replacen("https://", "wss://", 1);
                let mut headers = Vec::new();
                if let Some(token) = &r.token {
                    headers.push(("Authorization", format!("Bearer {token}")));
                }
                Ok(TerminalTarget {
                    url: format!(
                        "{base}/ship/{}/term?session_id={}&cols={cols}&rows={rows}",
                        enc(id),
                        enc(session)
                    ),
                    headers,
                })
            }
            Self::Local(l) => {
                let target = l.service.open_terminal(id, session, cols, rows).await?;
                Ok(TerminalTarget {
                    url: target.url,
                    headers: vec![
                        ("Authorization", format!("Bearer {}", target.token)),
                        ("X-SESSION-ID", session.to_owned()),
                    ],
                })
            }
        }
    }

    /// `GET /sessions`
    pub async fn list_sessions(&self) -> Result<SessionListResponse> {
        match self {
            Self::Remote(r) => r.get("/sessions").await,
            Self::Local(l) => Ok(SessionListResponse::new(l.service.list_sessions().await?)),
        }
    }

    fn ship_query(ship: Option<&str>) -> String {
        ship.map(|s| format!("?ship_id={}", enc(s)))
            .unwrap_or_default()
    }

    /// `GET /sessions/{sid}`
    pub async fn get_session(&self, session: &str, ship: Option<&str>) -> Result<SessionResponse> {
        match self {
            Self::Remote(r) => {
                r.get(&format!(
                    "/sessions/{}{}",
                    enc(session),
                    Self::ship_query(ship)
                ))
                .await
            }
            Self::Local(l) => Ok(l.service.get_session(session, ship).await?.into()),
        }
    }

    /// `POST /sessions/{sid}/extend-ttl`
    pub async fn extend_session_ttl(
        &self,
        session: &str,
        ttl: i64,
        ship: Option<&str>,
    ) -> Result<SessionResponse> {
        match self {
            Self::Remote(r) => {
                r.post(
                    &format!(
                        "/sessions/{}/extend-ttl{}",
                        enc(session),
                        Self::ship_query(ship)
                    ),
                    None,
                    &TtlRequest { ttl },
                )
                .await
            }
            Self::Local(l) => Ok(l
                .service
                .extend_session_ttl(session, ttl, ship)
                .await?
                .into()),
        }
    }

    /// `DELETE /sessions/{sid}`
    pub async fn delete_session(&self, session: &str, ship: Option<&str>) -> Result<()> {
        match self {
            Self::Remote(r) => {
                r.delete(&format!(
                    "/sessions/{}{}",
                    enc(session),
                    Self::ship_query(ship)
                ))
                .await
            }
            Self::Local(l) => Ok(l.service.delete_session(session, ship).await?),
        }
    }

    /// `GET /stat/overview`
    pub async fn overview(&self) -> Result<OverviewResponse> {
        match self {
            Self::Remote(r) => r.get("/stat/overview").await,
            Self::Local(l) => Ok(OverviewResponse::new(
                env!("CARGO_PKG_VERSION"),
                l.service.overview().await?,
            )),
        }
    }
}
