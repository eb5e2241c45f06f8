//! `bay term SHIP`: an interactive terminal over the ship's terminal WebSocket (bay-api.md
//! §4.18 remote, ship-api.md §8 local). The local terminal is put in raw mode (so Ctrl-C,
//! arrows and tab go to the remote shell, as with ssh) and restored on every way out: the shell
//! exiting, the connection closing, SIGTERM/SIGHUP, an error or a panic. Window size changes
//! are sent as `{"type":"resize",…}` messages.

use std::io::{IsTerminal, Read, Write};

use futures::{SinkExt, StreamExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::backend::Backend;
use crate::failure::{Failure, Kind, Result};

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enable() -> Result<Option<Self>> {
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| Failure::server(format!("term: cannot enter raw mode: {e}")))?;
        Ok(Some(Self))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn size() -> (u16, u16) {
    crossterm::terminal::size()
        .ok()
        .filter(|(c, r)| *c > 0 && *r > 0)
        .unwrap_or((80, 24))
}

fn resize_message((cols, rows): (u16, u16)) -> Message {
    Message::text(serde_json::json!({"type": "resize", "cols": cols, "rows": rows}).to_string())
}

/// Runs the terminal until the remote side ends it; 0 on a normal close.
pub async fn run(backend: &Backend, session: &str, ship: &str) -> Result<u8> {
    let (cols, rows) = size();
    let target = backend
        .terminal(ship, session, cols, rows)
        .await
        .map_err(|f| f.context(format!("term {ship}")))?;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::usage(format!("term {ship}: invalid terminal URL: {e}")))?;
    for (name, value) in &target.headers {
        let value = HeaderValue::from_str(value)
            .map_err(|e| Failure::usage(format!("term {ship}: invalid {name} header: {e}")))?;
        request.headers_mut().insert(*name, value);
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| handshake_failure(ship, e))?;
    let (mut sink, mut stream) = ws.split();

    let raw = RawMode::enable()?;
    // stdin is read by a plain thread: a blocking read cannot be cancelled, and the runtime is
    // shut down without waiting for it when bay exits.
    let (tx, mut input) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut stdin_open = true;
    let mut stdout = std::io::stdout();
    let outcome: Result<u8> = loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    stdout.write_all(t.as_bytes())?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) if u16::from(f.code) != 1000 => Err(Failure::new(
                            if u16::from(f.code) == 4004 { Kind::NotFound } else { Kind::Server },
                            format!("term {ship}: closed ({}): {}", u16::from(f.code), f.reason),
                        )),
                        _ => Ok(0),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(Failure::server(format!("term {ship}: {e}"))),
                None => break Ok(0),
            },
            bytes = input.recv(), if stdin_open => match bytes {
                Some(b) => {
                    if let Err(e) = sink.send(Message::binary(b)).await {
                        break Err(Failure::server(format!("term {ship}: {e}")));
                    }
                }
                None => stdin_open = false,
            },
            _ = winch.recv() => {
                let _ = sink.send(resize_message(size())).await;
            }
            _ = term.recv() => break Ok(143),
            _ = hup.recv() => break Ok(129),
        }
    };
    let _ = sink.close().await;
    drop(raw);
    outcome
}

/// A refused handshake: the server's status and `detail`.
fn handshake_failure(ship: &str, e: tokio_tungstenite::tungstenite::Error) -> Failure {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(response) => {
            let status = response.status().as_u16();
            let detail = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<bay_api_types::ErrorBody>(b).ok())
                .map_or_else(|| response.status().to_string(), |b| b.message());
            Failure::new(Kind::of_status(status), format!("term {ship}: {detail}"))
        }
        other => Failure::server(format!("term {ship}: cannot connect: {other}")),
    }
}
