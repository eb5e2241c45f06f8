//! CORS (§2.9).

use crate::harness::TestApp;

#[tokio::test]
async fn default_allows_any_origin_without_credentials() {
    let app = TestApp::new().await;
    let r = app
        .req(http::Method::OPTIONS, "/ships")
        .no_auth()
        .header("origin", "http://dash.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, x-session-id",
        )
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, DELETE, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, x-session-id")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.header("access-control-allow-credentials").is_none());

    let r = app
        .get("/ships")
        .header("origin", "http://dash.example")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("Content-Disposition, Retry-After")
    );
    // Error responses carry the headers too.
    let r = app
        .get("/ships")
        .no_auth()
        .header("origin", "http://dash.example")
        .send()
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn listed_origins_are_echoed_with_credentials() {
    let app = TestApp::with(&[
        ("CORS_ALLOW_ORIGINS", "http://a.example,http://b.example"),
        ("CORS_ALLOW_CREDENTIALS", "true"),
    ])
    .await;
    let preflight = |origin: &str| {
        app.req(http::Method::OPTIONS, "/ship")
            .no_auth()
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("http://b.example").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://b.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("Origin"));
    preflight("http://evil.example")
        .await
        .assert_detail(400, "Disallowed CORS origin");
    let r = app
        .get("/ships")
        .header("origin", "http://evil.example")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn disabled_cors_sends_no_headers_and_preflights_get_405() {
    let app = TestApp::with(&[("CORS_ALLOW_ORIGINS", "")]).await;
    let r = app
        .req(http::Method::OPTIONS, "/ships")
        .no_auth()
        .header("origin", "http://a.example")
        .header("access-control-request-method", "GET")
        .send()
        .await;
    r.assert_detail(405, "Method Not Allowed");
    let r = app
        .get("/ships")
        .header("origin", "http://a.example")
        .send()
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn preflights_of_unknown_paths_are_404() {
    let app = TestApp::new().await;
    for path in ["/nope", "/ships/", "/ship/x/unknown"] {
        let r = app
            .req(http::Method::OPTIONS, path)
            .no_auth()
            .header("origin", "http://dash.example")
            .header("access-control-request-method", "GET")
            .send()
            .await;
        r.assert_detail(404, "Not Found");
        assert!(r.header("access-control-allow-methods").is_none(), "{path}");
    }
    // Path parameters match any value.
    let r = app
        .req(http::Method::OPTIONS, "/ship/any-id/exec")
        .no_auth()
        .header("origin", "http://dash.example")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, DELETE, OPTIONS")
    );
}
