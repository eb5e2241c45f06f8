//! Issue 13 end to end: the warm pool against the real `bay-server` binary, the real Docker
//! Engine and the real ship image. With `WARM_POOL_SIZE=2`, Bay starts two ships before any
//! request; a create is served by one of them (its container existed before the request), the
//! pool refills, the claimed ship runs Python, and everything is removed at the end (the
//! permanent delete here, the warm ships by the [`Bay`] guard).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, Bay, Engine, docker, image};

/// The full ids of the containers on the test Bay's network.
fn containers(bay: &Bay) -> BTreeSet<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("network={}", bay.network),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Polls `/stat/overview` until `warm` ships are ready and none is starting.
async fn pool_ready(api: &Api, warm: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (s, o) = api.json(Method::GET, "/stat/overview", None, None).await;
        assert_eq!(s, StatusCode::OK, "{o}");
        if o["ships"]["warm"] == warm && o["ships"]["warming"] == 0 {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never had {warm} ready ships: {o}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_is_served_from_the_warm_pool_and_the_pool_refills() {
    let bay = Bay::start_with(
        Engine::Docker,
        "e2e-pool",
        &image(),
        &[("MAX_SHIP_NUM", "4"), ("WARM_POOL_SIZE", "2")],
    );
    let api = Api::new(&bay.url);

    let o = pool_ready(&api, 2).await;
    assert_eq!(o["ships"]["total"], 0, "warm ships are counted apart: {o}");
    let (s, list) = api.json(Method::GET, "/ships", None, None).await;
    assert_eq!(
        (s, list.clone()),
        (StatusCode::OK, json!([])),
        "warm ships are not listed"
    );
    let warm = containers(&bay);
    assert_eq!(
        warm.len(),
        2,
        "two warm containers before any request: {warm:?}"
    );
    let (s, metrics) = api.json(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("bay_ships_warm{state=\"ready\"} 2")),
        "{metrics}"
    );

    let (s, ship) = api
        .json(
            Method::POST,
            "/ship",
            Some("pool-e2e"),
            Some(json!({"ttl": 600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ship}");
    assert_eq!(ship["status"], 1, "{ship}");
    assert_eq!(ship["current_session_num"], 1, "{ship}");
    let cid = ship["container_id"].as_str().unwrap().to_owned();
    assert!(
        warm.contains(&cid),
        "the ship's container {cid} existed before the request: {warm:?}"
    );
    let id = ship["id"].as_str().unwrap().to_owned();
    let (s, list) = api.json(Method::GET, "/ships", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let out = api
        .exec(&id, "pool-e2e", "ipython/exec", json!({"code": "6 * 7"}))
        .await;
    assert_eq!(out["output"]["text"], "42", "{out}");

    // Refilled in the background: two warm ships again, one of them new.
    let o = pool_ready(&api, 2).await;
    assert_eq!(o["ships"]["running"], 1, "{o}");
    let now = containers(&bay);
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.is_superset(&warm));

    let (s, body) = api
        .json(Method::DELETE, &format!("/ship/{id}/permanent"), None, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let left = docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("id={cid}")]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "the claimed ship's container is removed"
    );
}
