//! Authentication (§2.3) and routing (§2.4 step 1, §2.1 trailing slash).

use crate::harness::TestApp;

#[tokio::test]
async fn missing_or_empty_credentials_are_not_authenticated() {
    let app = TestApp::new().await;
    app.get("/ships")
        .no_auth()
        .send()
        .await
        .assert_detail(403, "Not authenticated");
    for value in ["", "Bearer", "Bearer ", "Basic"] {
        app.get("/ships")
            .auth(value)
            .send()
            .await
            .assert_detail(403, "Not authenticated");
    }
}

#[tokio::test]
async fn other_schemes_and_wrong_tokens() {
    let app = TestApp::new().await;
    app.get("/ships")
        .auth("Basic dXNlcjpwYXNz")
        .send()
        .await
        .assert_detail(403, "Invalid authentication credentials");
    let r = app.get("/ships").auth("Bearer nope").send().await;
    r.assert_detail(401, "Invalid access token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // Credentials are compared byte for byte.
    app.get("/ships")
        .auth("Bearer test-token ")
        .send()
        .await
        .assert_detail(401, "Invalid access token");
    let r = app.get("/ships").auth("bEARER test-token").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!([]));
}

#[tokio::test]
async fn authentication_comes_before_the_body() {
    let app = TestApp::new().await;
    app.post("/ship")
        .no_auth()
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .assert_detail(403, "Not authenticated");
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let app = TestApp::new().await;
    let r = app.get("/").no_auth().send().await;
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "ok", "message": "Welcome to Bay API"})
    );
    let r = app.get("/health").no_auth().send().await;
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "ok", "message": "Bay service is running"})
    );
    let r = app.get("/stat").no_auth().send().await;
    assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.json()["author"], "AstrBot Team");
    assert_eq!(app.get("/openapi.json").no_auth().send().await.status, 200);
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_trailing_slashes() {
    let app = TestApp::new().await;
    app.get("/nope")
        .no_auth()
        .send()
        .await
        .assert_detail(404, "Not Found");
    app.get("/ships/")
        .send()
        .await
        .assert_detail(404, "Not Found");
    app.get("/ship/")
        .send()
        .await
        .assert_detail(404, "Not Found");
    let r = app.delete("/ships").no_auth().send().await;
    r.assert_detail(405, "Method Not Allowed");
    assert!(
        r.header("allow").unwrap_or_default().contains("GET"),
        "{:?}",
        r.headers
    );
    let r = app.post("/sessions/abc").send().await;
    r.assert_detail(405, "Method Not Allowed");
    let allow = r.header("allow").unwrap_or_default().to_owned();
    assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
    // `/ship/logs` is `/ship/{ship_id}` with the id `logs`.
    app.get("/ship/logs")
        .send()
        .await
        .assert_detail(404, "Ship not found");
}
