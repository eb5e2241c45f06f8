//! Integration tests of the Podman driver against a real Podman API service (the private
//! socket `cargo xtask test` starts) and the real ship image, in both modes.
//!
//! Every resource carries `bay.test=podman-driver` and `bay.test-run=<run>`; each test uses its
//! own network `bay-ptest-<run>` and removes what it made, even on failure.

mod conformance;
mod harness;

use bay_core::config::PodmanApi;
use bay_core::driver::ContainerDriver;
use bay_core::engine::{self, LABEL_MANAGED, LABEL_SHIP_ID};
use harness::{Run, agent_becomes_healthy, exec, inspect, podman};

/// What Podman adds to the conformance suite (`conformance.rs`) in one mode: the API version,
/// the container's name and environment, the nofile ulimit, publishing on 127.0.0.1 only
/// (host mode) or the attachment to the network (network mode).
async fn identity_ulimits_and_publishing(mode: &str) {
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
    // PODMAN_API=auto (the default): libpod below Podman 5, the compatible API from 5 on.
    let major: u64 = driver
        .podman_version()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .expect("podman's major version");
    let expected = if major < bay_driver_podman::FIRST_COMPAT_ONLY_MAJOR {
        PodmanApi::Libpod
    } else {
        PodmanApi::Compat
    };
    assert_eq!(driver.api_path(), Some(expected), "podman {major}");
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

    driver.stop_ship_container(&cid).await.expect("stop");
    driver.delete_ship_data(&req.ship_id).await.expect("delete");
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_mode_identity_ulimits_and_publishing() {
    identity_ulimits_and_publishing("podman-host").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_mode_identity_ulimits_and_publishing() {
    identity_ulimits_and_publishing("podman").await;
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

/// No socket at all: the error is transient and lists what was tried. (Not found versus
/// unavailable on a dead socket is the conformance suite's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_socket_is_unavailable_and_named() {
    let run = Run::new();
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
