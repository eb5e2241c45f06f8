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
