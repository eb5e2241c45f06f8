//! `POST /ship/{id}/exec` (§4.15): envelope, allow-list, access and the ship error table.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::TestApp;

#[tokio::test]
async fn success_envelope_relays_the_ship_json() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(&format!("/ship/{id}/exec"))
        .session("s1")
        .json(&json!({"type": "shell/exec", "payload": {"command": "echo hi"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["data"]["stdout"], "echo hi");
    // GET types ignore the payload; leading slashes are removed.
    let r = app
        .post(&format!("/ship/{id}/exec"))
        .session("s1")
        .json(&json!({"type": "//shell/processes"}))
        .send()
        .await;
    assert_eq!(r.json()["data"]["method"], "GET");
    assert_eq!(r.json()["data"]["route"], "/shell/processes");
    let seen = app.ship.seen();
    assert!(seen.iter().all(|s| s.session.as_deref() == Some("s1")));
    assert!(seen.iter().all(|s| {
        s.authorization
            .as_deref()
            .unwrap_or_default()
            .starts_with("Bearer ")
    }));
    let metrics = app.get("/metrics").send().await.text();
    assert!(
        metrics.contains("bay_exec_duration_seconds_count{type=\"shell/exec\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn error_table() {
    let app = TestApp::with(&[("SHIP_EXEC_TIMEOUT", "1")]).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let exec = |session: &str, body: serde_json::Value| {
        app.post(&format!("/ship/{id}/exec"))
            .session(session)
            .json(&body)
            .send()
    };
    exec("s1", json!({"type": "../admin"}))
        .await
        .assert_detail(400, "Unsupported exec type: ../admin");
    exec("s2", json!({"type": "shell/exec"}))
        .await
        .assert_detail(400, "Session does not have access to this ship");
    exec(
        "s1",
        json!({"type": "fs/read_file", "payload": {"fail_status": 404}}),
    )
    .await
    .assert_detail(400, r#"Ship returned 404: {"detail":"boom"}"#);
    exec("s1", json!({"type": "shell/exec", "payload": {"command": "x", "background": true, "sleep_ms": 3000}}))
        .await
        .assert_detail(504, "Request timeout");
    let r = exec("s1", json!({"payload": null, "extra": 1})).await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"missing","loc":["body","type"],"msg":"Field required","input":null}),
            json!({"type":"extra_forbidden","loc":["body","extra"],"msg":"Extra inputs are not permitted","input":1}),
        ]
    );
    let r = exec("s1", json!({"type": 5})).await;
    assert_eq!(r.violations()[0]["type"], "string_type");
    app.post("/ship/unknown/exec")
        .session("s1")
        .json(&json!({"type": "shell/exec"}))
        .send()
        .await
        .assert_detail(400, "Ship not found or not running");
}

/// A ship agent that is healthy but answers operations with text, or hangs up.
async fn broken_agent() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.starts_with("GET /health") {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                } else if head.contains("/shell/exec") {
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await;
                }
                // anything else: hang up without answering
            });
        }
    });
    addr
}

#[tokio::test]
async fn invalid_answers_and_broken_connections_are_502() {
    let addr = broken_agent().await;
    let ship = bay_core::testing::FakeShip::start().await;
    let driver = bay_core::testing::FakeDriver::new(addr);
    let app = TestApp::with_driver(ship, driver, &[], |_| {}).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(&format!("/ship/{id}/exec"))
        .session("s1")
        .json(&json!({"type": "shell/exec", "payload": {}}))
        .send()
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ship returned an invalid response: ")
    );
    let r = app
        .post(&format!("/ship/{id}/exec"))
        .session("s1")
        .json(&json!({"type": "fs/list_dir"}))
        .send()
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Connection error: "),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn ship_responses_over_64_mib_are_502() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let exec = |payload: serde_json::Value| {
        app.post(&format!("/ship/{id}/exec"))
            .session("s1")
            .json(&json!({"type": "fs/read_file", "payload": payload}))
            .send()
    };
    let limit: u64 = 64 << 20;
    // Streamed without a length: refused once the bytes read pass the limit.
    exec(json!({"huge_bytes": limit + 1}))
        .await
        .assert_detail(502, "Ship response too large");
    // A declared length above the limit is refused before reading.
    exec(json!({"huge_bytes": limit + 1, "declare_length": true}))
        .await
        .assert_detail(502, "Ship response too large");
    // Exactly the limit is read (it is whitespace, so not JSON: 502 invalid response).
    let r = exec(json!({"huge_bytes": limit})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ship returned an invalid response: "),
        "{}",
        r.text()
    );
}
