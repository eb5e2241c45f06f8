//! A minimal blocking keep-alive HTTP/1.1 client over TCP or a Unix socket (the Docker Engine
//! API): enough to time round trips without an HTTP stack between the benchmark and the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, ensure};

/// A byte stream the client can talk over.
pub trait Stream: Read + Write + Send + std::fmt::Debug {}
impl<T: Read + Write + Send + std::fmt::Debug> Stream for T {}

/// A status and a body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Http {
    host: String,
    headers: Vec<(String, String)>,
    conn: BufReader<Box<dyn Stream>>,
}

impl Http {
    /// Connects to `addr` (`host:port`) over TCP.
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("could not connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self::over(addr, Box::new(stream)))
    }

    /// Connects to the Unix socket at `path`.
    pub fn connect_unix(path: &str) -> anyhow::Result<Self> {
        let stream =
            UnixStream::connect(path).with_context(|| format!("could not connect to {path}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self::over("localhost", Box::new(stream)))
    }

    fn over(host: &str, stream: Box<dyn Stream>) -> Self {
        Self {
            host: host.to_owned(),
            headers: Vec::new(),
            conn: BufReader::new(stream),
        }
    }

    /// Sends `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends a bearer token with every request.
    pub fn with_bearer(self, token: &str) -> Self {
        self.with_header("Authorization", &format!("Bearer {token}"))
    }

    /// POSTs JSON and fails unless the answer is 200 with `"success":true` (the agent's
    /// answer, also relayed by Bay's exec).
    pub fn post_ok(&mut self, path: &str, sid: &str, body: &str) -> anyhow::Result<()> {
        let a = self.request("POST", path, Some(sid), Some(body))?;
        ensure!(
            a.status == 200 && a.body.contains("\"success\":true"),
            "POST {path} {body} answered {}: {}",
            a.status,
            a.body
        );
        Ok(())
    }

    /// GET without a session.
    pub fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", path, None, None)
    }

    /// One request; `sid` goes into `X-SESSION-ID`, `body` is sent as JSON.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        sid: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(sid) = sid {
            req.push_str(&format!("X-SESSION-ID: {sid}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.conn
            .get_mut()
            .write_all(req.as_bytes())
            .with_context(|| format!("could not send {method} {path}"))?;
        self.read_answer()
            .with_context(|| format!("reading the answer to {method} {path}"))
    }

    fn read_answer(&mut self) -> anyhow::Result<Answer> {
        let mut line = String::new();
        self.conn
            .read_line(&mut line)
            .context("could not read the status line")?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.conn
                .read_line(&mut line)
                .context("could not read a header")?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                data.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = length {
            data.resize(length, 0);
            self.conn
                .read_exact(&mut data)
                .context("could not read the body")?;
        } else {
            // 1xx, 204 and 304 have no body; anything else without a length ends with the
            // connection (never sent by the servers benchmarked here).
            ensure!(
                status < 200 || status == 204 || status == 304,
                "answer {status} without Content-Length"
            );
        }
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&data).into_owned(),
        })
    }
}

/// Polls `GET /health` at `addr` every `interval` (a new connection each time, as a client that
/// waits for a new server would) until it answers 200 or `timeout` passes.
pub fn poll_health(addr: &str, token: Option<&str>, interval: Duration, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(http) = Http::connect(addr) {
            let mut http = match token {
                Some(t) => http.with_bearer(t),
                None => http,
            };
            if http.get("/health").is_ok_and(|a| a.status == 200) {
                return true;
            }
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}
