//! Session routes (§4.19–§4.22).

use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn list_get_extend_delete() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = app.get("/sessions").send().await.json();
    assert_eq!(r["total"], 1);
    assert_eq!(r["sessions"][0]["ship_id"], id.as_str());

    let r = app.get("/sessions/s1").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["session_id"], "s1");
    assert_eq!(
        app.get(&format!("/sessions/s1?ship_id={id}"))
            .send()
            .await
            .status,
        200
    );
    app.get("/sessions/s1?ship_id=other")
        .send()
        .await
        .assert_detail(404, "Session not found");
    app.get("/sessions/nobody")
        .send()
        .await
        .assert_detail(404, "Session not found");

    // Unknown keys are ignored; bounds are 400s; a missing ttl is a 422.
    let r = app
        .post("/sessions/s1/extend-ttl")
        .json(&json!({"ttl": 30, "extra": true}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["is_active"], true);
    app.post("/sessions/s1/extend-ttl")
        .json(&json!({"ttl": 0}))
        .send()
        .await
        .assert_detail(400, "TTL must be greater than 0");
    app.post("/sessions/s1/extend-ttl")
        .json(&json!({"ttl": 2_592_001}))
        .send()
        .await
        .assert_detail(400, "TTL must not exceed 2592000 seconds");
    let r = app
        .post("/sessions/s1/extend-ttl")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["loc"], json!(["body", "ttl"]));
    let r = app
        .post("/sessions/s1/extend-ttl")
        .json(&json!({"ttl": "x"}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["type"], "int_parsing");
    app.post("/sessions/nobody/extend-ttl")
        .json(&json!({"ttl": 5}))
        .send()
        .await
        .assert_detail(404, "Session not found");

    assert_eq!(app.delete(&format!("/ship/{id}")).send().await.status, 204);
    app.post("/sessions/s1/extend-ttl")
        .json(&json!({"ttl": 5}))
        .send()
        .await
        .assert_detail(409, "Ship is not running");

    assert_eq!(
        app.delete("/sessions/s1?ship_id=other").send().await.status,
        404
    );
    let r = app.delete("/sessions/s1").send().await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    app.delete("/sessions/s1")
        .send()
        .await
        .assert_detail(404, "Session not found");
}

#[tokio::test]
async fn deleting_the_last_session_stops_the_ship() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.delete("/sessions/s1").send().await.status, 204);
    assert_eq!(
        app.get(&format!("/ship/{id}")).send().await.json()["status"],
        0
    );
}

/// `serde_json`'s `preserve_order` keeps keys in the order they were written.
fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn list_bodies_keep_the_contract_key_order() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get("/sessions").send().await.json();
    assert_eq!(keys(&r), ["sessions", "total"]);
    assert_eq!(
        keys(&r["sessions"][0]),
        [
            "id",
            "session_id",
            "ship_id",
            "created_at",
            "last_activity",
            "expires_at",
            "initial_ttl",
            "is_active"
        ]
    );
    let r = app.get(&format!("/ship/{id}/sessions")).send().await.json();
    assert_eq!(keys(&r), ["ship_id", "sessions", "total"]);
    let r = app.get("/stat/overview").send().await.json();
    assert_eq!(
        keys(&r),
        ["service", "version", "status", "ships", "sessions"]
    );
    assert_eq!(
        keys(&r["ships"]),
        ["total", "running", "stopped", "creating", "warm", "warming"]
    );
    assert_eq!(keys(&r["sessions"]), ["total", "active"]);
}
