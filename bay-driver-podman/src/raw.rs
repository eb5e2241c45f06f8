//! Raw JSON requests to Podman's socket, for the answers the typed clients cannot read.
//!
//! Podman's Docker-compatible container list reports states Docker never uses (`stopped`, seen
//! while a container is being stopped), which bollard's typed `State` enum rejects — one such
//! container made the whole list fail. And `podman-api` 0.11 misspells libpod's
//! `no_new_privileges` in its create body, so the libpod path posts that body itself
//! ([`post_json`]). HTTP/1.1 over the Unix socket with hyper; the connection
//! lives inside the returned future, so dropping the future closes it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A failed raw request.
#[derive(Debug)]
pub(crate) enum RawError {
    /// Podman answered with this status and message.
    Answer(u16, String),
    /// Podman did not answer (or not in HTTP/JSON, or not within the timeout).
    NoAnswer(String),
}

/// `GET path` on the Unix socket `socket`; the JSON answer of a 2xx, else Podman's status and
/// message.
pub(crate) async fn get_json(
    socket: &Path,
    path: &str,
    timeout: Duration,
) -> Result<Value, RawError> {
    request_json(socket, Method::GET, path, None, timeout).await
}

/// `POST body` to `path` on the Unix socket `socket` (e.g. libpod's container create, which
/// `podman-api` cannot send correctly); the JSON answer of a 2xx, else Podman's status and
/// message.
pub(crate) async fn post_json(
    socket: &Path,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, RawError> {
    request_json(socket, Method::POST, path, Some(body), timeout).await
}

/// Sends one request with an optional JSON body and reads one JSON answer.
pub(crate) async fn request_json(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, RawError> {
    let exchange = exchange(socket, method, path, body);
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            RawError::NoAnswer(format!(
                "podman ({}) did not answer {path} within {timeout:?}",
                socket.display()
            ))
        })??;
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    if (200..300).contains(&status) {
        return json.ok_or_else(|| {
            RawError::NoAnswer(format!(
                "podman answered {status} without JSON: {}",
                String::from_utf8_lossy(&bytes)
            ))
        });
    }
    let message = json
        .as_ref()
        .and_then(|j| j.get("message").or_else(|| j.get("cause")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
    Err(RawError::Answer(status, message))
}

/// One HTTP exchange: the status and the whole body.
async fn exchange(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Bytes), RawError> {
    let no_answer = |what: &str, e: &dyn std::fmt::Display| {
        RawError::NoAnswer(format!("{what} ({}): {e}", socket.display()))
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| no_answer("cannot connect to podman", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| no_answer("http handshake with podman", &e))?;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "podman");
    let payload = match body {
        Some(body) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(body).map_err(|e| no_answer("request body", &e))?
        }
        None => Vec::new(),
    };
    let request = request
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| no_answer("request", &e))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| no_answer("podman did not answer", &e))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| no_answer("reading podman's answer", &e))?
            .to_bytes();
        // `sender` is dropped here: the connection ends once the answer is read.
        Ok::<_, RawError>((status, bytes))
    };
    let (answer, _connection) = tokio::join!(exchange, connection);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server on a Unix socket answering `status` with `body`; returns the request
    /// it received.
    async fn serve_once(
        socket: std::path::PathBuf,
        status: &'static str,
        body: &'static str,
    ) -> tokio::task::JoinHandle<String> {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        })
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn answers_errors_garbage_and_absence_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ok.sock");
        let server = serve_once(socket.clone(), "200 OK", r#"[{"Id":"abc"}]"#).await;
        let r = get_json(&socket, "/v1.41/containers/json?all=true", T)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /v1.41/containers/json?all=true HTTP/1.1"),
            "{request}"
        );
        assert_eq!(r[0]["Id"], "abc");

        let socket = dir.path().join("post.sock");
        let server = serve_once(socket.clone(), "201 Created", r#"{"Id":"x"}"#).await;
        let body = serde_json::json!({"no_new_privileges": true});
        let r = post_json(&socket, "/create", &body, T).await.unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /create HTTP/1.1"), "{request}");
        assert!(
            request.ends_with(r#"{"no_new_privileges":true}"#),
            "{request}"
        );
        assert_eq!(r["Id"], "x");

        let socket = dir.path().join("conflict.sock");
        let server = serve_once(
            socket.clone(),
            "500 Internal Server Error",
            r#"{"cause":"that name is already in use","message":"name in use","response":500}"#,
        )
        .await;
        let r = get_json(&socket, "/x", T).await;
        server.await.unwrap();
        assert!(
            matches!(r, Err(RawError::Answer(500, ref m)) if m == "name in use"),
            "{r:?}"
        );

        let socket = dir.path().join("garbage.sock");
        let server = serve_once(socket.clone(), "200 OK", "not json").await;
        let r = get_json(&socket, "/x", T).await;
        server.await.unwrap();
        assert!(matches!(r, Err(RawError::NoAnswer(_))), "{r:?}");

        let absent = dir.path().join("absent.sock");
        let r = get_json(&absent, "/x", T).await;
        assert!(
            matches!(r, Err(RawError::NoAnswer(ref m)) if m.contains("absent.sock")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_podman_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let _server = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let r = get_json(&socket, "/x", Duration::from_millis(200)).await;
        assert!(
            matches!(r, Err(RawError::NoAnswer(ref m)) if m.contains("within")),
            "{r:?}"
        );
    }
}
