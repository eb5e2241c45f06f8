//! Integration tests of the Podman driver against a real Podman API service (the private
//! socket `cargo xtask test` starts) and the real ship image, in both modes.
//!
//! Every resource carries `bay.test=podman-driver` and `bay.test-run=<run>`; each test uses its
//! own network `bay-ptest-<run>` and removes what it made, even on failure.

mod harness;

use std::collections::HashSet;

use bay_core::driver::{ContainerDriver, DriverError};
use bay_core::engine::{
    self, CAPABILITIES, LABEL_MANAGED, LABEL_SHIP_ID, PIDS_LIMIT, volume_names,
};
use harness::{Run, agent_becomes_healthy, exec, inspect, podman};

/// The whole lifecycle in one mode: create, identity and hardening read back from the engine,
/// the agent answering at the returned address, logs, running checks, list_managed, data kept
/// across stop and restore, permanent delete removing the data.
async fn lifecycle(mode: &str) {
    let run = Run::new();
    let driver = run.driver(mode);
    driver.initialize().await.expect("initialize");
    assert!(
        driver
            .podman_version()
            .is_some_and(|v| v.starts_with(char::is_numeric)),
        "{:?}",
        driver.podman_version()
    );
    let req = run.request(1);
    let info = driver.create_ship_container(&req).await.expect("create");
    let cid = info.container_id.clone();
    if mode == "podman-host" {
        assert!(info.ip_address.starts_with("127.0.0.1:"), "{info:?}");
    } else {
        assert!(!info.ip_address.contains(':'), "{info:?}");
    }
    let addr = if mode == "podman-host" {
        info.ip_address.clone()
    } else {
        format!("{}:8123", info.ip_address)
    };
    assert!(
        agent_becomes_healthy(addr.clone()).await,
        "the agent at {addr} does not answer /health"
    );

    // Identity, environment, limits and hardening, as the engine reports them.
    let i = inspect(&cid);
    assert_eq!(i["Name"], engine::container_name(&req.ship_id));
    assert_eq!(i["Config"]["Labels"][LABEL_MANAGED], "true");
    assert_eq!(i["Config"]["Labels"][LABEL_SHIP_ID], req.ship_id.as_str());
    assert_eq!(i["Config"]["Labels"]["bay.test-run"], run.id.as_str());
    let env: Vec<String> = serde_json::from_value(i["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&format!("SHIP_ID={}", req.ship_id)), "{env:?}");
    assert!(env.contains(&format!("SHIP_AUTH_TOKEN={}", req.auth_token)));
    assert!(env.contains(&"TTL=600".to_owned()));
    assert_eq!(i["HostConfig"]["PidsLimit"], PIDS_LIMIT);
    assert_eq!(i["HostConfig"]["Memory"], 256 << 20);
    assert_eq!(i["HostConfig"]["NanoCpus"], 500_000_000);
    let caps: HashSet<String> = serde_json::from_value(i["EffectiveCaps"].clone()).unwrap();
    let wanted: HashSet<String> = CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect();
    assert_eq!(caps, wanted, "only the kept capabilities");
    let status = exec(&cid, "cat /proc/1/status");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "no-new-privileges: {status}"
    );
    let limits = exec(&cid, "cat /proc/1/limits");
    let nofile = driver.settings().nofile.hard.to_string();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&nofile)),
        "nofile {nofile}: {limits}"
    );
    if mode == "podman-host" {
        let bindings = &i["HostConfig"]["PortBindings"]["8123/tcp"];
        assert_eq!(bindings[0]["HostIp"], "127.0.0.1", "{bindings}");
    } else {
        assert!(
            i["NetworkSettings"]["Networks"][&run.network].is_object(),
            "attached to {}",
            run.network
        );
    }

    // Running checks, logs, list_managed.
    assert!(driver.is_container_running(&cid).await.unwrap());
    let logs = driver.get_container_logs(&cid, 1000).await.unwrap();
    assert!(logs.contains("listening"), "{logs:?}");
    let one = driver.get_container_logs(&cid, 1).await.unwrap();
    assert!(one.trim_end().lines().count() <= 1, "{one:?}");
    let managed = driver.list_managed().await.unwrap();
    let mine = managed
        .iter()
        .find(|m| m.container_id == cid)
        .expect("listed");
    assert_eq!(mine.ship_id, req.ship_id);
    assert!(mine.running);

    // Data survives a stop and comes back with the next container.
    exec(
        &cid,
        "echo kept > /home/probe && echo meta > /app/metadata/probe",
    );
    driver.stop_ship_container(&cid).await.expect("stop");
    assert!(!podman(&["container", "exists", &cid]).status.success());
    assert!(matches!(
        driver.is_container_running(&cid).await,
        Err(DriverError::NotFound(_))
    ));
    driver
        .stop_ship_container(&cid)
        .await
        .expect("stopping a missing container is fine");
    assert!(driver.ship_data_exists(&req.ship_id).await.unwrap());
    let again = driver.create_ship_container(&req).await.expect("restore");
    assert_ne!(again.container_id, cid);
    assert_eq!(
        exec(&again.container_id, "cat /home/probe /app/metadata/probe"),
        "kept\nmeta\n"
    );

    // Permanent delete.
    driver
        .stop_ship_container(&again.container_id)
        .await
        .unwrap();
    driver.delete_ship_data(&req.ship_id).await.expect("delete");
    assert!(!driver.ship_data_exists(&req.ship_id).await.unwrap());
    for v in volume_names(&req.ship_id) {
        assert!(!podman(&["volume", "exists", &v]).status.success(), "{v}");
    }
    driver
        .delete_ship_data(&req.ship_id)
        .await
        .expect("data already gone is fine");
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_mode_lifecycle() {
    lifecycle("podman-host").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_mode_lifecycle() {
    lifecycle("podman").await;
}

/// `ship:slim` and `localhost/ship:slim` name the same image; ships on Podman's default
/// network (no `DOCKER_NETWORK`) get an address too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fully_qualified_image_names_and_the_default_network_work() {
    let run = Run::new();
    let config = run.config(
        "podman",
        &[
            ("DOCKER_IMAGE", "localhost/ship:slim"),
            ("DOCKER_NETWORK", ""),
        ],
    );
    let driver = run.driver_for(&config);
    driver.initialize().await.unwrap();
    let info = driver.create_ship_container(&run.request(1)).await.unwrap();
    assert!(
        agent_becomes_healthy(format!("{}:8123", info.ip_address)).await,
        "{info:?}"
    );
    driver
        .stop_ship_container(&info.container_id)
        .await
        .unwrap();
}

/// Podman answers 500 for a taken name and a missing network; the driver treats them as
/// Docker's 409 (remove the stale container) and 404 (create the network again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_container_and_a_vanished_network_are_handled() {
    let run = Run::new();
    let driver = run.driver("podman");
    driver.initialize().await.unwrap();
    let req = run.request(1);
    let label = format!("bay.test-run={}", run.id);
    let out = podman(&[
        "create",
        "--name",
        &engine::container_name(&req.ship_id),
        "--label",
        &label,
        harness::IMAGE,
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = podman(&["network", "rm", "-f", &run.network]);
    assert!(out.status.success(), "{out:?}");
    let info = driver
        .create_ship_container(&req)
        .await
        .expect("create despite the stale container and the missing network");
    assert!(
        driver
            .is_container_running(&info.container_id)
            .await
            .unwrap()
    );
    assert!(
        podman(&["network", "exists", &run.network])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_give_distinct_running_ships() {
    let run = Run::new();
    let driver = run.driver("podman-host");
    driver.initialize().await.unwrap();
    let reqs: Vec<_> = (0..4).map(|n| run.request(n)).collect();
    let results =
        futures_util::future::join_all(reqs.iter().map(|r| driver.create_ship_container(r))).await;
    let infos: Vec<_> = results.into_iter().map(|r| r.expect("create")).collect();
    let ids: HashSet<_> = infos.iter().map(|i| i.container_id.clone()).collect();
    let addrs: HashSet<_> = infos.iter().map(|i| i.ip_address.clone()).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(addrs.len(), 4);
    for i in &infos {
        assert!(driver.is_container_running(&i.container_id).await.unwrap());
    }
    let managed: HashSet<_> = driver
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.container_id)
        .collect();
    assert!(ids.is_subset(&managed));
}

/// A missing container is `NotFound`; a socket nobody answers on is `Unavailable` (transient),
/// never `NotFound`, so a healthy ship is never marked stopped because Podman is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_found_and_unavailable_are_told_apart() {
    let run = Run::new();
    let driver = run.driver("podman-host");
    let missing = engine::container_name(&format!("{}-missing", run.id));
    assert!(matches!(
        driver.is_container_running(&missing).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(matches!(
        driver.get_container_logs(&missing, 10).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!driver.ship_data_exists(&missing).await.unwrap());

    // A dead socket: the file exists, nobody listens.
    let dead = run.dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let dead_config = run.config(
        "podman-host",
        &[("PODMAN_SOCKET", &dead.display().to_string())],
    );
    let dead_driver = run.driver_for(&dead_config);
    for e in [
        dead_driver
            .is_container_running("ship-x")
            .await
            .unwrap_err(),
        dead_driver.initialize().await.unwrap_err(),
        dead_driver.list_managed().await.unwrap_err(),
    ] {
        assert!(e.is_transient(), "{e:?}");
    }

    // No socket at all: the error lists what was tried.
    let absent = run.dir.path().join("absent.sock");
    let absent_config = run.config(
        "podman",
        &[("PODMAN_SOCKET", &absent.display().to_string())],
    );
    let e = run
        .driver_for(&absent_config)
        .initialize()
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains(&absent.display().to_string()), "{e}");
}

/// `SHIP_DATA_DIR`: data in host directories, kept across stop, removed on delete even when
/// the ship's users own files in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_directories_keep_and_delete_data() {
    let run = Run::new();
    let data = run.dir.path().join("ships");
    let config = run.config(
        "podman-host",
        &[("SHIP_DATA_DIR", &data.display().to_string())],
    );
    let driver = run.driver_for(&config);
    driver.initialize().await.unwrap();
    let req = run.request(1);
    let info = driver.create_ship_container(&req).await.unwrap();
    exec(
        &info.container_id,
        "echo kept > /home/probe && mkdir -p /home/u && chown 12345:12345 /home/u && echo x > /home/u/f && chown 12345 /home/u/f",
    );
    driver
        .stop_ship_container(&info.container_id)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join(&req.ship_id).join("home/probe")).unwrap(),
        "kept\n"
    );
    assert!(driver.ship_data_exists(&req.ship_id).await.unwrap());
    driver.delete_ship_data(&req.ship_id).await.unwrap();
    assert!(!data.join(&req.ship_id).exists());
    assert!(!driver.ship_data_exists(&req.ship_id).await.unwrap());
}
