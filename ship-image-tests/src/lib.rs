//! Test harness for the ship image: starts the real image in the real Docker engine (with the
//! `docker` CLI) and talks to the agent over HTTP (reqwest) and WebSocket (tokio-tungstenite).
//!
//! Images come from `cargo xtask ship-image` (run by `cargo xtask test`): `BAY_SHIP_IMAGE`, the
//! image most tests run (default `ship:latest`); `BAY_SHIP_FULL_IMAGE`, the complete runtime the
//! runtime tests check (default `ship:latest`, the `full` flavour); `BAY_SHIP_SLIM_IMAGE`
//! (default `ship:slim`) and `BAY_SHIP_BUSYBOX_IMAGE` (default `ship:busybox`). Point them at
//! other tags to test other builds, e.g. `BAY_SHIP_IMAGE=ship:dev` for an agent built with
//! `cargo xtask ship-image --flavour slim --tag ship:dev`. Every container and volume is labelled
//! [`TEST_LABEL`] and removed by a drop guard, also when a test fails. Ports are published on
//! 127.0.0.1 only, on a port the engine picks.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The label (`key=value`) on every container and volume the tests create.
pub const TEST_LABEL: &str = "bay.test=ship-image";

/// The image most tests run (the agent's behaviour does not depend on the flavour).
pub fn image() -> String {
    env_or("BAY_SHIP_IMAGE", "ship:latest")
}

/// The complete runtime of ship-api.md §12 (flavour `full`, `ship:latest`).
pub fn full_image() -> String {
    env_or("BAY_SHIP_FULL_IMAGE", "ship:latest")
}

/// The small image (flavour `slim`, `ship:slim`).
pub fn slim_image() -> String {
    env_or("BAY_SHIP_SLIM_IMAGE", "ship:slim")
}

/// The busybox (`FROM scratch`) image under test.
pub fn busybox_image() -> String {
    env_or("BAY_SHIP_BUSYBOX_IMAGE", "ship:busybox")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Whether the local engine has `image`.
pub fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `docker <args>` and returns its output, whatever the exit status.
pub fn docker_output(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run docker {}", args.join(" ")))
}

/// Runs `docker <args>`, fails unless it succeeds, and returns its trimmed stdout.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = docker_output(args)?;
    ensure!(
        out.status.success(),
        "docker {} failed with {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A labelled named volume, removed on drop.
#[derive(Debug)]
pub struct Volume {
    pub name: String,
}

impl Volume {
    pub fn create() -> anyhow::Result<Self> {
        let name = docker(&["volume", "create", "--label", TEST_LABEL])
            .context("could not create a test volume")?;
        Ok(Self { name })
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker_output(&["volume", "rm", "-f", &self.name]);
    }
}

/// How to start a ship container.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    pub image: String,
    /// `SHIP_AUTH_TOKEN` of the container; also sent by [`Ship`]'s requests.
    pub token: Option<String>,
    /// Volumes mounted at `/home` and `/app/metadata`.
    pub volumes: Option<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl ShipOptions {
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            token: None,
            volumes: None,
            env: Vec::new(),
        }
    }
}

/// A running ship container (removed with its anonymous volumes on drop) and an HTTP client.
#[derive(Debug)]
pub struct Ship {
    pub id: String,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Drop for Ship {
    fn drop(&mut self) {
        // The test runner shows a test's output only when it fails: keep the agent's logs there.
        if let Ok(out) = docker_output(&["logs", "--tail", "50", &self.id]) {
            eprintln!(
                "--- last logs of ship container {} ---\n{}{}",
                self.id,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = docker_output(&["rm", "-f", "-v", &self.id]);
    }
}

/// A decoded HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `detail` of an error body, as a string.
    pub fn detail(&self) -> String {
        match &self.json()["detail"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Ship {
    /// Starts [`image()`] with default options.
    pub async fn start_default() -> anyhow::Result<Self> {
        Self::start(ShipOptions::new(image())).await
    }

    /// Starts a container and waits until `GET /health` answers 200.
    pub async fn start(opts: ShipOptions) -> anyhow::Result<Self> {
        ensure!(
            image_exists(&opts.image),
            "image {} does not exist: build it with `cargo xtask ship-image` (or run `cargo xtask test`)",
            opts.image
        );
        let mut args: Vec<String> = ["run", "-d", "--label", TEST_LABEL, "-p", "127.0.0.1::8123"]
            .map(String::from)
            .to_vec();
        args.extend(
            [
                "--security-opt",
                "no-new-privileges",
                "--pids-limit",
                "1024",
            ]
            .map(String::from),
        );
        if let Some(token) = &opts.token {
            args.extend(["-e".to_owned(), format!("SHIP_AUTH_TOKEN={token}")]);
        }
        for (k, v) in &opts.env {
            args.extend(["-e".to_owned(), format!("{k}={v}")]);
        }
        if let Some((home, meta)) = &opts.volumes {
            args.extend(["-v".to_owned(), format!("{home}:/home")]);
            args.extend(["-v".to_owned(), format!("{meta}:/app/metadata")]);
        }
        args.push(opts.image.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker(&argv).with_context(|| format!("could not start {}", opts.image))?;
        let mut ship = Ship {
            id,
            addr: String::new(),
            token: opts.token.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .context("could not build the HTTP client")?,
        };
        let port = docker(&["port", &ship.id, "8123/tcp"])?;
        ship.addr = port
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .with_context(|| format!("no 127.0.0.1 port in `docker port`: {port:?}"))?
            .to_owned();
        ship.wait_healthy(Duration::from_secs(30)).await?;
        Ok(ship)
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = self.http.get(self.url("/health")).send().await
                && r.status() == StatusCode::OK
            {
                return Ok(());
            }
            let running = docker(&["inspect", "--format", "{{.State.Running}}", &self.id])?;
            if running != "true" {
                let logs = docker_output(&["logs", &self.id])?;
                bail!(
                    "ship container exited before /health answered: {}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            if Instant::now() > deadline {
                bail!("ship /health did not answer 200 within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; `sid` goes in `X-SESSION-ID`, the token (if any) as a bearer token.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        sid: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Resp> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(sid) = sid {
            req = req.header("X-SESSION-ID", sid);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends a prepared request and reads the whole response.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Resp> {
        let r = req.send().await.context("request failed")?;
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.context("could not read the body")?.to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// A request builder with the token (if any) but nothing else.
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, sid: Option<&str>) -> anyhow::Result<Resp> {
        self.request(Method::GET, path, sid, None).await
    }

    pub async fn post(&self, path: &str, sid: &str, body: Value) -> anyhow::Result<Resp> {
        self.request(Method::POST, path, Some(sid), Some(body))
            .await
    }

    /// `POST /shell/exec {"command": cmd}`; returns the JSON body (fails on a non-200).
    pub async fn sh(&self, sid: &str, cmd: &str) -> anyhow::Result<Value> {
        let r = self
            .post("/shell/exec", sid, serde_json::json!({ "command": cmd }))
            .await?;
        ensure!(
            r.status == StatusCode::OK,
            "/shell/exec answered {}: {}",
            r.status,
            r.text()
        );
        Ok(r.json())
    }

    /// Runs `cmd` with `shell: true` and returns its stdout; fails unless it exits 0.
    pub async fn sh_ok(&self, sid: &str, cmd: &str) -> anyhow::Result<String> {
        let v = self.sh(sid, cmd).await?;
        ensure!(v["success"] == true, "`{cmd}` failed: {v}");
        Ok(v["stdout"].as_str().unwrap_or_default().to_owned())
    }

    /// `POST /ipython/exec {"code": code}`; returns the JSON body (fails on a non-200).
    pub async fn py(&self, sid: &str, code: &str) -> anyhow::Result<Value> {
        let r = self
            .post(
                "/ipython/exec",
                sid,
                serde_json::json!({ "code": code, "timeout": 60 }),
            )
            .await?;
        ensure!(
            r.status == StatusCode::OK,
            "/ipython/exec answered {}: {}",
            r.status,
            r.text()
        );
        Ok(r.json())
    }

    /// The session's workspace `W`, learnt by creating a file with the file API.
    pub async fn workspace(&self, sid: &str) -> anyhow::Result<String> {
        let r = self
            .post(
                "/fs/create_file",
                sid,
                serde_json::json!({"path": ".probe", "content": ""}),
            )
            .await?;
        ensure!(
            r.status == StatusCode::OK,
            "create_file answered {}: {}",
            r.status,
            r.text()
        );
        let path = r.json()["path"]
            .as_str()
            .context("no path in create_file")?
            .to_owned();
        Ok(path.trim_end_matches("/.probe").to_owned())
    }

    /// `docker exec <ctr> <args>` as root; returns the output whatever the status.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut argv = vec!["exec", self.id.as_str()];
        argv.extend_from_slice(args);
        docker_output(&argv)
    }

    /// Opens `/term/ws` with the given query (e.g. `session_id=a&cols=80`).
    pub async fn terminal(&self, query: &str, with_token_header: bool) -> anyhow::Result<Terminal> {
        let url = format!("ws://{}/term/ws?{query}", self.addr);
        let mut req = url
            .as_str()
            .into_client_request()
            .context("bad terminal URL")?;
        if with_token_header && let Some(t) = &self.token {
            req.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).context("bad token")?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .with_context(|| format!("could not open {url}"))?;
        Ok(Terminal {
            ws,
            output: String::new(),
        })
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An open terminal WebSocket with the output received so far.
#[derive(Debug)]
pub struct Terminal {
    ws: Ws,
    pub output: String,
}

/// How a terminal ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

impl Terminal {
    pub async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(text))
            .await
            .context("could not send to the terminal")
    }

    /// Reads until the output contains `needle`; fails after `within`.
    pub async fn expect(&mut self, needle: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self.output.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => bail!(
                    "terminal output has no {needle:?} after {within:?}: {:?}",
                    self.output
                ),
                Ok(None) => bail!("terminal closed before {needle:?}: {:?}", self.output),
                Ok(Some(msg)) => match msg.context("terminal read failed")? {
                    Message::Text(t) => self.output.push_str(t.as_str()),
                    Message::Close(c) => bail!(
                        "terminal closed ({c:?}) before {needle:?}: {:?}",
                        self.output
                    ),
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// Reads until the server closes the socket; returns the close code and reason.
    pub async fn closed(&mut self, within: Duration) -> anyhow::Result<Closed> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => bail!("terminal not closed after {within:?}: {:?}", self.output),
                Ok(None) => {
                    return Ok(Closed {
                        code: None,
                        reason: String::new(),
                    });
                }
                Ok(Some(Err(e))) => bail!("terminal read failed before the close frame: {e}"),
                Ok(Some(Ok(Message::Text(t)))) => self.output.push_str(t.as_str()),
                Ok(Some(Ok(Message::Close(c)))) => {
                    return Ok(Closed {
                        code: c.as_ref().map(|c| u16::from(c.code)),
                        reason: c.map(|c| c.reason.to_string()).unwrap_or_default(),
                    });
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A multipart body with parts `file` (bytes) and `file_path`, built by hand.
pub fn multipart(file_path: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "bay-test-boundary-7d1f0e";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file_path\"\r\n\r\n{file_path}\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
