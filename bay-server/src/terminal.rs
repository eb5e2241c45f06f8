//! The terminal WebSocket proxy `/ship/{ship_id}/term` (bay-api.md §4.18).
//!
//! Checks run in the contract's order (token, query parameters, ship running, relation); a
//! rejection is a close code after accepting (browsers, or `WS_REJECT_MODE=close`) or a refused
//! handshake with an HTTP status (other clients, or `WS_REJECT_MODE=handshake`). Once accepted,
//! frames are relayed unchanged both ways to the ship agent's `/term/ws`; either side ending ends
//! both, a stopped ship closes the client with 4004 `Ship stopped`, and client input touches the
//! session at most once per [`crate::app::AppState::terminal_touch_interval`].

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bay_api_types::ErrorBody;
use bay_core::config::WsRejectMode;
use bay_core::model::is_valid_session_id;
use bay_core::service::{ShipEvent, TerminalTarget};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::app::AppState;
use crate::auth::{authorization, check_authorization, token_matches};
use crate::error::TerminalReject;
use crate::extract::{PathParam, Query};
use crate::validate::parse_int_str;

/// Largest WebSocket message relayed in either direction.
pub const MAX_MESSAGE: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type ShipMessage = tungstenite::Message;

/// Truncates a close reason to 123 bytes at a character boundary.
fn reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Codes that cannot be sent on the wire are mapped (1005 → 1000, 1006/1015 → 1011).
fn wire_code(code: u16) -> u16 {
    match code {
        1005 => 1000,
        1006 | 1015 => 1011,
        c => c,
    }
}

fn is_browser(headers: &HeaderMap) -> bool {
    let fetch_mode = headers
        .get("sec-fetch-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let mozilla = headers
        .get(header::USER_AGENT)
        .is_some_and(|v| v.as_bytes().starts_with(b"Mozilla/"));
    fetch_mode || mozilla
}

fn close_message(code: u16, text: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason(text).into(),
    }))
}

/// Accepts, closes with `code`, and waits briefly for the client's close reply.
async fn close_after_accept(mut socket: WebSocket, code: u16, text: String) {
    let _ = socket.send(close_message(code, &text)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

fn reject(ws: Result<WebSocketUpgrade, Response>, close_mode: bool, r: TerminalReject) -> Response {
    match ws {
        Ok(ws) if close_mode => {
            ws.on_upgrade(move |s| close_after_accept(s, r.close_code, r.reason))
        }
        _ => {
            let mut response = (r.status, Json(ErrorBody::text(r.reason))).into_response();
            if r.status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

fn dimension(query: &Query, name: &str, default: u16) -> Option<u16> {
    match query.get(name) {
        None => Some(default),
        Some(raw) => parse_int_str(raw)
            .filter(|n| (1..=1000).contains(n))
            .and_then(|n| u16::try_from(n).ok()),
    }
}

/// `GET /ship/{ship_id}/term` (WebSocket).
pub async fn terminal(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    headers: HeaderMap,
    query: Query,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = ws.map_err(|rejection| {
        let status = rejection.status();
        (status, Json(ErrorBody::text(rejection.body_text()))).into_response()
    });
    let close_mode = match state.service.config().ws_reject_mode {
        WsRejectMode::Close => true,
        WsRejectMode::Handshake => false,
        WsRejectMode::Auto => is_browser(&headers),
    };
    let authorized = match authorization(&headers) {
        Some(value) => check_authorization(Some(value), state.token.as_bytes()).is_ok(),
        None => query
            .get("token")
            .is_some_and(|t| token_matches(t.as_bytes(), state.token.as_bytes())),
    };
    if !authorized {
        return reject(ws, close_mode, TerminalReject::unauthorized());
    }
    let session = query.get("session_id").filter(|s| is_valid_session_id(s));
    let cols = dimension(&query, "cols", 80);
    let rows = dimension(&query, "rows", 24);
    let (Some(session), Some(cols), Some(rows)) = (session, cols, rows) else {
        return reject(ws, close_mode, TerminalReject::invalid_query());
    };
    // A request that is not a WebSocket handshake is refused before checks 3 and 4, which
    // touch (and may re-activate) the session's relation.
    let ws = match ws {
        Ok(ws) => ws,
        Err(response) => return response,
    };
    let target = match state
        .service
        .open_terminal(&ship_id, session, cols, rows)
        .await
    {
        Ok(t) => t,
        Err(e) => return reject(Ok(ws), close_mode, TerminalReject::from_core(e)),
    };
    let session = session.to_owned();
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| relay(state, socket, target, ship_id, session))
}

/// How the relay ended: the close code and reason for each side (`None` = do not send).
struct Ending {
    client: Option<(u16, String)>,
    ship: Option<(u16, String)>,
    /// The agent went away (1001 or a lost connection): perhaps because its ship is stopping.
    ship_gone: bool,
}

impl Ending {
    fn both(code: u16, text: &str) -> Self {
        Self {
            client: Some((code, text.to_owned())),
            ship: Some((code, text.to_owned())),
            ship_gone: false,
        }
    }

    fn client(code: u16, text: String) -> Self {
        Self {
            client: Some((code, text)),
            ship: None,
            ship_gone: false,
        }
    }

    fn ship(code: u16, text: String) -> Self {
        Self {
            client: None,
            ship: Some((code, text)),
            ship_gone: false,
        }
    }
}

/// How long a relay whose agent went away waits for the ship's stop event (the agent closes
/// its terminals while its container stops, before Bay records the stop).
const STOP_EVENT_GRACE: Duration = Duration::from_secs(5);

/// Waits for the stop event of `ship_id`.
async fn stopped(events: &mut tokio::sync::broadcast::Receiver<ShipEvent>, ship_id: &str) -> bool {
    loop {
        match events.recv().await {
            Ok(ShipEvent::Stopped { ship_id: s }) if s == ship_id => return true,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return false,
        }
    }
}

async fn connect(
    target: &TerminalTarget,
    session: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let h = request.headers_mut();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", target.token)).map_err(|e| e.to_string())?,
    );
    h.insert(
        "x-session-id",
        HeaderValue::from_str(session).map_err(|e| e.to_string())?,
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    {
        Ok(Ok((stream, _))) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".to_owned()),
    }
}

/// Relays frames between the client and the ship agent until either side ends.
async fn relay(
    state: AppState,
    client: WebSocket,
    target: TerminalTarget,
    ship_id: String,
    session: String,
) {
    let mut events = state.service.subscribe();
    let ship = match connect(&target, &session).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(ship.id = %ship_id, error = %e, "terminal: connecting to the ship failed");
            close_after_accept(client, 1011, format!("Failed to connect to Ship: {e}")).await;
            return;
        }
    };
    tracing::debug!(ship.id = %ship_id, session.id = %session, "terminal relay open");
    let (mut ship_tx, mut ship_rx) = ship.split();
    let (mut client_tx, mut client_rx) = client.split();
    let mut last_touch = Instant::now();
    let touch_every = state.terminal_touch_interval;
    let ending = loop {
        tokio::select! {
            msg = client_rx.next() => {
                let forward = match msg {
                    Some(Ok(Message::Text(t))) => ShipMessage::text(t.as_str()),
                    Some(Ok(Message::Binary(b))) => ShipMessage::Binary(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, text) = frame.map_or((1005, String::new()), |f| (f.code, f.reason.to_string()));
                        break Ending::ship(wire_code(code), text);
                    }
                    Some(Err(e)) if e.to_string().contains("Space limit exceeded") => {
                        break Ending::both(1009, "Message too big");
                    }
                    Some(Err(_)) | None => break Ending::ship(1011, String::new()),
                };
                if last_touch.elapsed() >= touch_every {
                    last_touch = Instant::now();
                    let (service, ship, sid) = (state.service.clone(), ship_id.clone(), session.clone());
                    tokio::spawn(async move {
                        if let Err(e) = service.touch_session(&ship, &sid).await {
                            tracing::warn!(ship.id = %ship, error = %e, "terminal: touching the session failed");
                        }
                    });
                }
                if ship_tx.send(forward).await.is_err() {
                    break Ending { ship_gone: true, ..Ending::client(1011, String::new()) };
                }
            }
            msg = ship_rx.next() => {
                let forward = match msg {
                    Some(Ok(ShipMessage::Text(t))) => Message::Text(t.as_str().into()),
                    Some(Ok(ShipMessage::Binary(b))) => Message::Binary(b),
                    Some(Ok(ShipMessage::Ping(_) | ShipMessage::Pong(_) | ShipMessage::Frame(_))) => continue,
                    Some(Ok(ShipMessage::Close(frame))) => {
                        let (code, text) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        break Ending { ship_gone: code == 1001, ..Ending::client(wire_code(code), text) };
                    }
                    Some(Err(tungstenite::Error::Capacity(_))) => break Ending::both(1009, "Message too big"),
                    Some(Err(_)) | None => break Ending { ship_gone: true, ..Ending::client(1011, String::new()) },
                };
                if client_tx.send(forward).await.is_err() {
                    break Ending::ship(1011, String::new());
                }
            }
            event = events.recv() => match event {
                Ok(ShipEvent::Stopped { ship_id: stopped }) if stopped == ship_id => {
                    break Ending::both(4004, "Ship stopped");
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break Ending::both(1001, "Bay is shutting down"),
            },
            () = state.shutdown.cancelled() => break Ending::both(1001, "Bay is shutting down"),
        }
    };
    let mut ending = ending;
    if ending.ship_gone
        && tokio::time::timeout(STOP_EVENT_GRACE, stopped(&mut events, &ship_id))
            .await
            .unwrap_or(false)
    {
        ending.client = Some((4004, "Ship stopped".to_owned()));
    }
    if let Some((code, text)) = ending.ship {
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason(&text).into(),
        };
        let _ = ship_tx.send(ShipMessage::Close(Some(frame))).await;
    }
    let _ = ship_tx.close().await;
    if let Some((code, text)) = ending.client {
        let _ = client_tx.send(close_message(code, &text)).await;
    }
    let _ = client_tx.close().await;
    tracing::debug!(ship.id = %ship_id, session.id = %session, "terminal relay closed");
}
