//! Issue 13 end to end: the warm pool against the real `bay-server` binary, the real Docker
//! Engine and the real ship image. With `WARM_POOL_SIZE=2`, Bay starts two ships before any
//! request; a create is served by one of them (its container existed before the request), the
//! pool refills, the claimed ship runs Python, and everything is removed at the end (the
//! permanent delete here, the warm ships by the [`Bay`] guard). Fifty concurrent creates from
//! fifty sessions get fifty different ships, some of them from the pool.

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
    // Each warm ship's agent has started its spare Python interpreter already (`/warmup`).
    for cid in &warm {
        let top = docker(&["top", cid]);
        assert!(top.status.success(), "docker top {cid}");
        let procs = String::from_utf8_lossy(&top.stdout);
        assert!(
            procs.contains("python"),
            "no Python interpreter in warm container {cid}:\n{procs}"
        );
    }
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
    // Without any request of the session, the claim has the agent hand the spare interpreter
    // to the session's user: a Python process that no longer runs as root.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let top = docker(&["top", &cid, "-eo", "pid,uid,comm"]);
        let procs = String::from_utf8_lossy(&top.stdout).into_owned();
        let adopted = procs.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            matches!((f.next(), f.next()), (Some(uid), Some(comm))
                if comm.starts_with("python") && uid.parse::<u32>().is_ok_and(|u| u != 0))
        });
        if adopted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claimed ship's interpreter was not started for its session:\n{procs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// The ids of the ship-data volumes of `ship_id`.
fn volumes_of(ship_id: &str) -> String {
    let out = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=bay.ship-id={ship_id}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_get_fifty_different_ships() {
    let bay = Bay::start_with(
        Engine::Docker,
        "e2e-pool50",
        &image(),
        &[
            ("MAX_SHIP_NUM", "60"),
            ("WARM_POOL_SIZE", "5"),
            ("SHIP_HEALTH_CHECK_TIMEOUT", "120"),
        ],
    );
    let api = std::sync::Arc::new(Api::new(&bay.url));
    pool_ready(&api, 5).await;
    let warm = containers(&bay);
    assert_eq!(warm.len(), 5, "{warm:?}");

    let mut tasks = Vec::new();
    for i in 0..50 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("pool50-{i}");
            let (s, ship) = api
                .json(
                    Method::POST,
                    "/ship",
                    Some(&session),
                    Some(json!({"ttl": 600})),
                )
                .await;
            (session, s, ship)
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    for (session, s, ship) in &got {
        assert_eq!(*s, StatusCode::CREATED, "{session}: {ship}");
    }
    let ids: BTreeSet<String> = got
        .iter()
        .map(|(_, _, ship)| ship["id"].as_str().unwrap().to_owned())
        .collect();
    let cids: BTreeSet<String> = got
        .iter()
        .map(|(_, _, ship)| ship["container_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 50, "a ship was handed out twice");
    assert_eq!(cids.len(), 50, "a container was handed out twice");
    assert!(
        cids.intersection(&warm).count() >= 1,
        "no create was served from the pool"
    );
    // Each ship has exactly its own session.
    for (session, _, ship) in &got {
        let id = ship["id"].as_str().unwrap();
        let (s, rels) = api
            .json(Method::GET, &format!("/ship/{id}/sessions"), None, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{rels}");
        assert_eq!(rels["total"], 1, "{id}: {rels}");
        assert_eq!(
            rels["sessions"][0]["session_id"],
            session.as_str(),
            "{rels}"
        );
    }

    // Permanent deletes leave no container and no volume of those ships; the pool stays.
    let mut deletes = Vec::new();
    for id in &ids {
        let (api, id) = (api.clone(), id.clone());
        deletes.push(tokio::spawn(async move {
            api.delete(&format!("/ship/{id}/permanent")).await;
        }));
    }
    for d in deletes {
        d.await.unwrap();
    }
    let o = pool_ready(&api, 5).await;
    assert_eq!(o["ships"]["total"], 0, "{o}");
    let left = containers(&bay);
    assert_eq!(
        left.len(),
        5,
        "only the pool's containers are left: {left:?}"
    );
    assert!(left.is_disjoint(&cids), "{left:?}");
    for id in &ids {
        assert_eq!(volumes_of(id), "", "the data of {id} is left");
    }
}
