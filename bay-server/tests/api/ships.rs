//! Ship routes (§4.5–§4.14).

use std::time::Duration;

use bay_core::driver::DriverError;
use bay_core::testing::{FakeDriver, FakeShip, Op};
use serde_json::{Value, json};

use crate::harness::TestApp;

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn create_get_list_and_overview() {
    let app = TestApp::new().await;
    let ship = app.create_ship("s1").await;
    let keys: Vec<&str> = ship
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "status",
        "created_at",
        "updated_at",
        "container_id",
        "ip_address",
        "ttl",
        "max_session_num",
        "current_session_num",
        "expires_at",
    ] {
        assert!(keys.contains(&k), "{k} missing in {ship}");
    }
    assert_eq!(ship["status"], 1);
    assert_eq!(ship["current_session_num"], 1);
    assert!(
        is_timestamp(&ship["created_at"]) && is_timestamp(&ship["expires_at"]),
        "{ship}"
    );
    let id = ship["id"].as_str().unwrap();

    let got = app.get(&format!("/ship/{id}")).send().await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["id"], id);
    let list = app.get("/ships").send().await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let o = app.get("/stat/overview").send().await.json();
    assert_eq!(
        o["ships"],
        json!({"total": 1, "running": 1, "stopped": 0, "creating": 0, "warm": 0, "warming": 0})
    );
    assert_eq!(o["sessions"], json!({"total": 1, "active": 1}));
    assert_eq!(o["service"], "bay");
    app.get("/ship/unknown")
        .send()
        .await
        .assert_detail(404, "Ship not found");
}

#[tokio::test]
async fn stop_start_extend_and_delete() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = app
        .post(&format!("/ship/{id}/extend-ttl"))
        .json(&json!({"ttl": 100}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["ttl"].as_i64().unwrap() > 600);
    let r = app
        .post(&format!("/ship/{id}/extend-ttl"))
        .json(&json!({"ttl": 5, "x": 1}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["type"], "extra_forbidden");

    let r = app.delete(&format!("/ship/{id}")).send().await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty() && r.header("content-type").is_none());
    let stopped = app.get(&format!("/ship/{id}")).send().await.json();
    assert_eq!(
        (
            stopped["status"].clone(),
            stopped["ttl"].clone(),
            stopped["expires_at"].clone()
        ),
        (json!(0), json!(0), Value::Null)
    );
    app.delete(&format!("/ship/{id}"))
        .send()
        .await
        .assert_detail(404, "Ship not found");
    app.post(&format!("/ship/{id}/extend-ttl"))
        .json(&json!({"ttl": 5}))
        .send()
        .await
        .assert_detail(404, "Ship not found");

    // Start needs the session header; the body is optional.
    let r = app.post(&format!("/ship/{id}/start")).send().await;
    assert_eq!(r.violations()[0]["loc"], json!(["header", "X-SESSION-ID"]));
    let r = app
        .post(&format!("/ship/{id}/start"))
        .session("s1")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], 1);
    let r = app
        .post(&format!("/ship/{id}/start"))
        .session("s1")
        .json(&json!({"ttl": 120}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    app.post("/ship/unknown/start")
        .session("s1")
        .send()
        .await
        .assert_detail(404, "Ship not found or is currently being created");
    app.post(&format!("/ship/{id}/start"))
        .session("s2")
        .send()
        .await
        .assert_detail(409, "Ship has no free session slot");

    assert_eq!(
        app.delete(&format!("/ship/{id}/permanent"))
            .send()
            .await
            .status,
        204
    );
    app.delete(&format!("/ship/{id}/permanent"))
        .send()
        .await
        .assert_detail(404, "Ship not found");
    app.get(&format!("/ship/{id}"))
        .send()
        .await
        .assert_detail(404, "Ship not found");
}

#[tokio::test]
async fn logs_with_tail() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get(&format!("/ship/logs/{id}")).send().await;
    assert_eq!(
        r.json(),
        json!({"logs": "log line 1\nlog line 2\nlog line 3"})
    );
    let r = app.get(&format!("/ship/logs/{id}?tail=1")).send().await;
    assert_eq!(r.json(), json!({"logs": "log line 3"}));
    let r = app.get("/ship/logs/unknown").send().await;
    assert_eq!(r.json(), json!({"logs": ""}));
    let r = app.get(&format!("/ship/logs/{id}?tail=0")).send().await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"greater_than","loc":["query","tail"],"msg":"Input should be greater than 0","input":"0","ctx":{"gt":0}})
        ]
    );
    let r = app
        .get(&format!("/ship/logs/{id}?tail=100001"))
        .send()
        .await;
    assert_eq!(r.violations()[0]["ctx"], json!({"le": 100_000}));
    let r = app.get(&format!("/ship/logs/{id}?tail=abc")).send().await;
    assert_eq!(r.violations()[0]["type"], "int_parsing");
}

#[tokio::test]
async fn ship_sessions_lists_relations() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get(&format!("/ship/{id}/sessions")).send().await.json();
    assert_eq!(r["ship_id"], id.as_str());
    assert_eq!(r["total"], 1);
    let s = &r["sessions"][0];
    assert_eq!(s["session_id"], "s1");
    assert_eq!(s["is_active"], true);
    assert!(is_timestamp(&s["last_activity"]));
    app.get("/ship/unknown/sessions")
        .send()
        .await
        .assert_detail(404, "Ship not found");
}

#[tokio::test]
async fn ship_limit_in_reject_mode_answers_429_with_retry_after() {
    let app = TestApp::with(&[("MAX_SHIP_NUM", "1"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    app.create_ship("s1").await;
    let r = app
        .post("/ship")
        .session("s2")
        .json(&json!({"ttl": 60}))
        .send()
        .await;
    r.assert_detail(429, "Maximum number of ships reached");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&secs), "{secs}");
}

#[tokio::test]
async fn ship_limit_in_wait_mode_times_out_with_408() {
    let app = TestApp::with(&[("MAX_SHIP_NUM", "1"), ("MAX_SHIP_WAIT_SECONDS", "1")]).await;
    app.create_ship("s1").await;
    let r = app
        .post("/ship")
        .session("s2")
        .json(&json!({"ttl": 60}))
        .send()
        .await;
    r.assert_detail(408, "Timeout waiting for available ship slot");
}

#[tokio::test]
async fn driver_failures_and_creating_ships() {
    let ship = FakeShip::start().await;
    let driver = FakeDriver::new(ship.address());
    let app = TestApp::with_driver(ship, driver.clone(), &[], |_| {}).await;
    driver.fail(
        Op::Create,
        DriverError::Engine("no space left".into()),
        Some(1),
    );
    app.post("/ship")
        .session("s1")
        .json(&json!({"ttl": 60}))
        .send()
        .await
        .assert_detail(500, "Failed to create ship: no space left");

    app.ship.set_healthy(false);
    app.post("/ship")
        .session("s1")
        .json(&json!({"ttl": 60}))
        .send()
        .await
        .assert_detail(500, "Ship failed to become ready within 2 seconds");
    app.ship.set_healthy(true);

    driver.delay(Op::Create, Duration::from_millis(800));
    let router = app.router.clone();
    let creating = tokio::spawn(async move {
        use tower::ServiceExt;
        let req = http::Request::post("/ship")
            .header("authorization", "Bearer test-token")
            .header("x-session-id", "s3")
            .body(axum::body::Body::from(r#"{"ttl": 60}"#))
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    });
    let mut id = String::new();
    for _ in 0..100 {
        let v = app.get("/ships").send().await.json();
        if let Some(s) = v
            .as_array()
            .and_then(|a| a.iter().find(|s| s["status"] == 2))
        {
            id = s["id"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!id.is_empty(), "no ship in status 2");
    let shown = app.get(&format!("/ship/{id}")).send().await.json();
    assert_eq!(
        (shown["status"].clone(), shown["expires_at"].clone()),
        (json!(2), Value::Null)
    );
    // bay-api.md §4.9/§4.11: DELETE and extend-ttl of a CREATING ship answer 409 at once.
    app.delete(&format!("/ship/{id}"))
        .send()
        .await
        .assert_detail(409, "Ship is currently being created");
    app.post(&format!("/ship/{id}/extend-ttl"))
        .json(&json!({"ttl": 60}))
        .send()
        .await
        .assert_detail(409, "Ship is currently being created");
    assert_eq!(creating.await.unwrap(), 201);
}

#[tokio::test]
async fn data_removal_failure_is_reported() {
    let ship = FakeShip::start().await;
    let driver = FakeDriver::new(ship.address());
    let app = TestApp::with_driver(ship, driver.clone(), &[], |_| {}).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    driver.fail(
        Op::DeleteData,
        DriverError::Engine("volume in use".into()),
        None,
    );
    app.delete(&format!("/ship/{id}/permanent"))
        .send()
        .await
        .assert_detail(500, "Failed to delete ship data: volume in use");
}
