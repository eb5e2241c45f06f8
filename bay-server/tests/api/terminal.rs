//! The terminal WebSocket (§4.18): handshake statuses, close codes and the relay.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::harness::{TOKEN, TestApp};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// The HTTP status of a refused handshake, and its body.
async fn refused(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    match connect(addr, path, headers).await {
        Err(WsError::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        other => panic!(
            "expected a refused handshake, got {:?}",
            other.map(|_| "accepted")
        ),
    }
}

/// The close code and reason of an accepted-then-closed connection.
async fn closed(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut ws = connect(addr, path, headers).await.expect("accepted");
    next_close(&mut ws).await
}

async fn next_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

const BROWSER: &[(&str, &str)] = &[("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")];

#[tokio::test]
async fn rejections_are_handshake_statuses_or_close_codes() {
    let app = TestApp::new().await;
    let addr = app.serve().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = format!("token={TOKEN}");

    let (status, body, www) = refused(addr, &format!("/ship/{id}/term?session_id=s1"), &[]).await;
    assert_eq!(
        (status, body.as_str(), www.as_deref()),
        (401, r#"{"detail":"Unauthorized"}"#, Some("Bearer"))
    );
    assert_eq!(
        refused(
            addr,
            &format!("/ship/{id}/term?token=bad&session_id=s1"),
            &[]
        )
        .await
        .0,
        401
    );
    assert_eq!(
        refused(addr, &format!("/ship/{id}/term?{t}"), &[]).await.0,
        400
    );
    assert_eq!(
        refused(addr, &format!("/ship/{id}/term?{t}&session_id=%20x"), &[])
            .await
            .0,
        400
    );
    assert_eq!(
        refused(
            addr,
            &format!("/ship/{id}/term?{t}&session_id=s1&cols=0"),
            &[]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        refused(
            addr,
            &format!("/ship/{id}/term?{t}&session_id=s1&rows=abc"),
            &[]
        )
        .await
        .0,
        400
    );
    let (status, body, _) = refused(addr, &format!("/ship/nope/term?{t}&session_id=s1"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"detail":"Ship not found or not running"}"#)
    );
    let (status, body, _) = refused(addr, &format!("/ship/{id}/term?{t}&session_id=s2"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            r#"{"detail":"Session does not have access to this ship"}"#
        )
    );

    // Browsers get accept + close.
    assert_eq!(
        closed(addr, &format!("/ship/{id}/term?session_id=s1"), BROWSER).await,
        (4001, "Unauthorized".into())
    );
    let fetch = &[("sec-fetch-mode", "websocket")];
    assert_eq!(
        closed(
            addr,
            &format!("/ship/{id}/term?token=bad&session_id=s1"),
            fetch
        )
        .await
        .0,
        4001
    );
    assert_eq!(
        closed(
            addr,
            &format!("/ship/{id}/term?{t}&cols=2000&session_id=s1"),
            BROWSER
        )
        .await,
        (1008, "Invalid query parameters".into())
    );
    assert_eq!(
        closed(addr, &format!("/ship/nope/term?{t}&session_id=s1"), BROWSER).await,
        (4004, "Ship not found or not running".into())
    );
    assert_eq!(
        closed(addr, &format!("/ship/{id}/term?{t}&session_id=s2"), BROWSER).await,
        (4003, "Session does not have access to this ship".into())
    );
}

#[tokio::test]
async fn reject_modes_override_the_client_kind() {
    let app = TestApp::with(&[("WS_REJECT_MODE", "close")]).await;
    let addr = app.serve().await;
    assert_eq!(
        closed(addr, "/ship/x/term?session_id=s1", &[]).await.0,
        4001
    );
    let app = TestApp::with(&[("WS_REJECT_MODE", "handshake")]).await;
    let addr = app.serve().await;
    assert_eq!(
        refused(addr, "/ship/x/term?session_id=s1", BROWSER).await.0,
        401
    );
}

#[tokio::test]
async fn relays_frames_both_ways_with_the_ship_token() {
    let app = TestApp::new().await;
    let addr = app.serve().await;
    let id = app.create_ship("user 1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Token in the Authorization header; the query token is then ignored.
    let mut ws = connect(
        addr,
        &format!("/ship/{id}/term?token=wrong&session_id=user%201&cols=100&rows=30"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .expect("accepted");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );

    let seen = app.ship.seen();
    let term = seen
        .iter()
        .find(|s| s.path.starts_with("/term/ws"))
        .expect("agent saw the terminal");
    assert_eq!(term.path, "/term/ws?session_id=user%201&cols=100&rows=30");
    assert_eq!(term.session.as_deref(), Some("user 1"));
    let container = app.driver.containers()[0].container_id.clone();
    assert_eq!(
        term.authorization,
        Some(format!(
            "Bearer {}",
            app.driver.token_of(&container).unwrap()
        ))
    );

    // The ship closing closes the client with the same code.
    ws.send(Message::text("close:4321")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (4321, "bye".into()));
}

#[tokio::test]
async fn stopping_the_ship_closes_terminals_with_4004() {
    let app = TestApp::new().await;
    let addr = app.serve().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = connect(
        addr,
        &format!("/ship/{id}/term?token={TOKEN}&session_id=s1"),
        &[],
    )
    .await
    .expect("accepted");
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    assert_eq!(app.delete(&format!("/ship/{id}")).send().await.status, 204);
    assert_eq!(next_close(&mut ws).await, (4004, "Ship stopped".into()));
}

#[tokio::test]
async fn messages_over_one_mebibyte_close_with_1009() {
    let app = TestApp::new().await;
    let addr = app.serve().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/ship/{id}/term?token={TOKEN}&session_id=s1");
    let mut ws = connect(addr, &path, &[]).await.expect("accepted");
    ws.send(Message::binary(vec![7u8; (1 << 20) + 1]))
        .await
        .unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1009);
    // From the ship side too.
    let mut ws = connect(addr, &path, &[]).await.expect("accepted");
    ws.send(Message::text("big:1100000")).await.unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn client_input_touches_the_session() {
    let ship = bay_core::testing::FakeShip::start().await;
    let driver = bay_core::testing::FakeDriver::new(ship.address());
    let app = TestApp::with_driver(ship, driver, &[], |s| {
        s.terminal_touch_interval = Duration::from_millis(50)
    })
    .await;
    let addr = app.serve().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = connect(
        addr,
        &format!("/ship/{id}/term?token={TOKEN}&session_id=s1"),
        &[],
    )
    .await
    .expect("accepted");
    let before = app.get("/sessions/s1").send().await.json()["last_activity"].clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(Message::text("x")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let mut after = before.clone();
    for _ in 0..50 {
        after = app.get("/sessions/s1").send().await.json()["last_activity"].clone();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(before, after, "terminal input did not touch the session");
    // The client closing ends the relay.
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_plain_get_is_refused_without_touching_the_session() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.get("/sessions/s1").send().await.json();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = app
        .get(&format!("/ship/{id}/term?token={TOKEN}&session_id=s1"))
        .no_auth()
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["detail"].is_string(), "{}", r.text());
    assert_eq!(app.get("/sessions/s1").send().await.json(), before);
    assert!(app.ship.seen().iter().all(|s| s.path != "/term/ws"));
    // The token is still checked first.
    let r = app
        .get(&format!("/ship/{id}/term?session_id=s1"))
        .no_auth()
        .send()
        .await;
    r.assert_detail(401, "Unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}
