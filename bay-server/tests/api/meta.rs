//! `/openapi.json` and `/metrics`.

use crate::harness::TestApp;

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::new().await;
    let doc = app.get("/openapi.json").no_auth().send().await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for route in bay_server::routes::table() {
        let op = &doc["paths"][route.doc.path][route.doc.method];
        assert!(
            op.is_object(),
            "{} {} undocumented",
            route.doc.method,
            route.doc.path
        );
    }
    assert_eq!(
        doc["paths"]["/ship"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateShipRequest"
    );
    assert!(doc["components"]["schemas"]["ShipResponse"]["properties"]["expires_at"].is_object());
}

#[tokio::test]
async fn metrics_need_the_token_and_count_ships_creates_and_errors() {
    let app = TestApp::new().await;
    app.get("/metrics")
        .no_auth()
        .send()
        .await
        .assert_detail(403, "Not authenticated");
    app.create_ship("s1").await;
    app.get("/ship/nope").send().await;
    let r = app.get("/metrics").send().await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for needle in [
        "bay_ships{status=\"running\"} 1",
        "bay_ship_creates_total{outcome=\"ok\"} 1",
        "bay_ship_create_duration_seconds_count 1",
        "bay_http_errors_total{kind=\"ship_not_found\"} 1",
        "bay_http_errors_total{kind=\"unauthenticated\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_terminals_and_stops_serving() {
    use futures::StreamExt;
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bay_server::app::serve(listener, app.state.clone(), async {
        let _ = rx.await;
    }));
    let url = format!(
        "ws://{addr}/ship/{id}/term?token={}&session_id=s1",
        crate::harness::TOKEN
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("accepted");
    tx.send(()).unwrap();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("closed in time");
    match frame {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1001)
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    // Ships keep running across a shutdown.
    assert_eq!(app.driver.containers().len(), 1);
}

/// bay-api.md §4.1, verbatim: (method, path, bearer auth, `X-SESSION-ID` required).
const SECTION_4_1: &[(&str, &str, bool, bool)] = &[
    ("get", "/", false, false),
    ("get", "/health", false, false),
    ("get", "/stat", false, false),
    ("get", "/stat/overview", true, false),
    ("get", "/ships", true, false),
    ("post", "/ship", true, true),
    ("get", "/ship/{ship_id}", true, false),
    ("delete", "/ship/{ship_id}", true, false),
    ("delete", "/ship/{ship_id}/permanent", true, false),
    ("post", "/ship/{ship_id}/extend-ttl", true, false),
    ("post", "/ship/{ship_id}/start", true, true),
    ("get", "/ship/logs/{ship_id}", true, false),
    ("get", "/ship/{ship_id}/sessions", true, false),
    ("post", "/ship/{ship_id}/exec", true, true),
    ("post", "/ship/{ship_id}/upload", true, true),
    ("get", "/ship/{ship_id}/download", true, true),
    // WS: the handshake is a GET; the token may be in the query, so no bearer scheme.
    ("get", "/ship/{ship_id}/term", false, false),
    ("get", "/sessions", true, false),
    ("get", "/sessions/{session_id}", true, false),
    ("post", "/sessions/{session_id}/extend-ttl", true, false),
    ("delete", "/sessions/{session_id}", true, false),
];

/// Served and documented beyond §4.1 (§1 allows `/openapi.json`; `/metrics` needs the token).
const EXTRA: &[(&str, &str)] = &[("get", "/metrics"), ("get", "/openapi.json")];

#[tokio::test]
async fn openapi_lists_exactly_the_routes_of_section_4_1() {
    let app = TestApp::new().await;
    let doc = app.get("/openapi.json").no_auth().send().await.json();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut expected: Vec<(String, String)> = SECTION_4_1
        .iter()
        .map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned()))
        .chain(
            EXTRA
                .iter()
                .map(|(m, p)| ((*m).to_owned(), (*p).to_owned())),
        )
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);

    for (method, path, auth, session) in SECTION_4_1 {
        let op = &doc["paths"][path][method];
        assert_eq!(
            op.get("security").is_some(),
            *auth,
            "{method} {path}: security"
        );
        let params = op["parameters"].as_array().unwrap();
        let has = |name: &str, place: &str| {
            params
                .iter()
                .any(|p| p["name"] == name && p["in"] == place && p["required"] == true)
        };
        assert_eq!(
            has("X-SESSION-ID", "header"),
            *session,
            "{method} {path}: X-SESSION-ID"
        );
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(has(name, "path"), "{method} {path}: path parameter {name}");
            }
        }
        // The router serves it: no credentials gives 403 (bearer routes) or an answer that is
        // neither 404 nor 405 (public routes; the terminal refuses with 401).
        let uri = path
            .replace("{ship_id}", "some-ship")
            .replace("{session_id}", "some-session");
        let r = app
            .req(method.to_uppercase().parse().unwrap(), &uri)
            .no_auth()
            .send()
            .await;
        if *auth {
            r.assert_detail(403, "Not authenticated");
        } else {
            assert!(
                ![404, 405].contains(&r.status.as_u16()) || path.starts_with("/ship/"),
                "{method} {path}: {} {}",
                r.status,
                r.text()
            );
            assert_ne!(r.status, 405, "{method} {path}");
        }
    }
    assert!(
        doc["paths"]["/ship/{ship_id}/download"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "file_path" && p["in"] == "query" && p["required"] == true)
    );
}

/// Polls `/stat/overview` until the warm pool has `n` ready ships and none starting.
async fn warm_pool_ready(app: &TestApp, n: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let o = app.get("/stat/overview").send().await.json();
        if o["ships"]["warm"] == n && o["ships"]["warming"] == 0 {
            return o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warm pool of {n}: {o}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_warm_pool_is_counted_apart_in_the_overview_and_the_metrics() {
    let app = TestApp::with(&[("WARM_POOL_SIZE", "2")]).await;
    let o = warm_pool_ready(&app, 2).await;
    // The keys of bay-api.md §4.5 keep counting the ships the API shows.
    assert_eq!(
        (o["ships"]["total"].clone(), o["ships"]["running"].clone()),
        (0.into(), 0.into()),
        "{o}"
    );
    assert_eq!(app.get("/ships").send().await.json(), serde_json::json!([]));
    app.create_ship("s1").await;
    // The claimed ship is counted as a ship; the refilled pool apart.
    let o = warm_pool_ready(&app, 2).await;
    assert_eq!(
        (o["ships"]["total"].clone(), o["ships"]["running"].clone()),
        (1.into(), 1.into()),
        "{o}"
    );
    let text = app.get("/metrics").send().await.text();
    for needle in [
        "bay_ships{status=\"running\"} 1",
        "# TYPE bay_ships_warm gauge",
        "bay_ships_warm{state=\"ready\"} 2",
        "bay_ships_warm{state=\"starting\"} 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}
