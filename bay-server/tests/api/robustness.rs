//! Unexpected failures (§2.6), `/health` without a database (§4.3), content types (§2.1) and
//! path parameters that are not UTF-8 (§4.1: any string is an id).

use std::time::Duration;

use bay_core::testing::{FakeDriver, FakeShip, Op, lock_database};
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn a_handler_panic_is_a_json_500_with_cors_headers_and_counted() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.driver.panic_on(Op::Logs);
    let r = app
        .get(&format!("/ship/logs/{id}"))
        .header("origin", "http://dash.example")
        .send()
        .await;
    r.assert_detail(500, "Internal Server Error");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let metrics = app.get("/metrics").send().await.text();
    assert!(
        metrics.contains("bay_http_errors_total{kind=\"internal\"} 1"),
        "{metrics}"
    );
    // The server keeps serving, and the same route works once the driver is fixed.
    app.driver.heal(Op::Logs);
    let r = app.get(&format!("/ship/logs/{id}")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// Multi-threaded: the check left running when /health gives up ends on its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_database_does_not_answer() {
    let ship = FakeShip::start().await;
    let driver = FakeDriver::new(ship.address());
    let app = TestApp::with_driver(ship, driver, &[], |s| {
        s.health_timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(app.get("/health").no_auth().send().await.status, 200);
    let lock = lock_database(&app.db_path());
    let r = app.get("/health").no_auth().send().await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"status": "error", "message": "Database unavailable"})
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    drop(lock);
    // The database answers again: the check that was left waiting ends, and /health recovers.
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/health").no_auth().send().await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn json_responses_declare_utf8() {
    let app = TestApp::new().await;
    for r in [
        app.get("/").no_auth().send().await,
        app.get("/ships").send().await,
        app.get("/nope").no_auth().send().await,
        app.delete("/ships").no_auth().send().await,
        app.post("/ship").session("s1").send().await,
        app.get("/ship/x").no_auth().send().await,
    ] {
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{} {}",
            r.status,
            r.text()
        );
    }
    let r = app.delete("/ship/nope/permanent").send().await;
    assert_eq!(r.status, 404);
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.delete(&format!("/ship/{id}")).send().await;
    assert_eq!(r.status, 204);
    assert!(r.header("content-type").is_none() && r.body.is_empty());
}

#[tokio::test]
async fn ids_that_are_not_utf8_are_unknown_ids() {
    let app = TestApp::new().await;
    app.get("/ship/%FF")
        .send()
        .await
        .assert_detail(404, "Ship not found");
    app.delete("/ship/%FF%FE/permanent")
        .send()
        .await
        .assert_detail(404, "Ship not found");
    app.get("/sessions/%C3")
        .send()
        .await
        .assert_detail(404, "Session not found");
    app.post("/ship/%FF/exec")
        .session("s1")
        .json(&json!({"type": "shell/exec"}))
        .send()
        .await
        .assert_detail(400, "Ship not found or not running");
    // Valid percent-encoding is decoded as before.
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let r = app.get(&format!("/ship/{encoded}")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
}
