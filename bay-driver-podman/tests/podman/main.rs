//! Integration tests of the Podman driver against a real Podman API service (the private
//! socket `cargo xtask test` starts) and the real ship image, in both modes.
//!
//! Every resource carries `bay.test=podman-driver` and `bay.test-run=<run>`; each test uses its
//! own network `bay-ptest-<run>` and removes what it made, even on failure.

mod conformance;
mod harness;

use bay_core::config::PodmanApi;
use bay_core::driver::{ContainerDriver, DriverError};
use bay_core::engine::{self, LABEL_MANAGED, LABEL_SHIP_ID};
use harness::{Run, agent_becomes_healthy, exec, inspect, podman};

/// Checks that `driver` (initialised) drives Podman through the path `PODMAN_API=api` asks
/// for: `auto` is libpod below Podman 5 and the compatible API from 5 on.
fn assert_api_path(driver: &bay_driver_podman::PodmanDriver, api: PodmanApi) {
    assert!(
        driver
            .podman_version()
            .is_some_and(|v| v.starts_with(char::is_numeric)),
        "{:?}",
        driver.podman_version()
    );
    let major: u64 = driver
        .podman_version()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .expect("podman's major version");
    let expected = match api {
        PodmanApi::Auto if major < bay_driver_podman::FIRST_COMPAT_ONLY_MAJOR => PodmanApi::Libpod,
        PodmanApi::Auto => PodmanApi::Compat,
        forced => forced,
    };
    assert_eq!(
        driver.api_path(),
        Some(expected),
        "PODMAN_API={} on podman {major}",
        api.as_str()
    );
}

/// What Podman adds to the conformance suite (`conformance.rs`) in one mode and API path: the
/// path chosen, the container's name and environment, the nofile ulimit, the stop grace period
/// (podman-api's stop timeout is ignored by Podman, so the container's own must be the
/// driver's), publishing on 127.0.0.1 only (host mode) or the attachment to the network
/// (network mode).
async fn identity_ulimits_and_publishing(mode: &str, api: PodmanApi) {
    let run = Run::new();
    let driver = run.driver(mode, api);
    driver.initialize().await.expect("initialize");
    assert_api_path(&driver, api);
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
    assert_eq!(
        i["Config"]["StopTimeout"],
        driver.settings().stop_timeout.as_secs(),
        "the container's own stop timeout is the driver's grace period"
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
    identity_ulimits_and_publishing("podman-host", PodmanApi::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_mode_identity_ulimits_and_publishing_compat() {
    identity_ulimits_and_publishing("podman-host", PodmanApi::Compat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_mode_identity_ulimits_and_publishing() {
    identity_ulimits_and_publishing("podman", PodmanApi::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_mode_identity_ulimits_and_publishing_compat() {
    identity_ulimits_and_publishing("podman", PodmanApi::Compat).await;
}

/// Runs an `async fn(PodmanApi)` check once per API path, as two tests.
macro_rules! on_both_paths {
    ($check:ident) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn libpod() {
                super::$check(bay_core::config::PodmanApi::Libpod).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compat() {
                super::$check(bay_core::config::PodmanApi::Compat).await;
            }
        }
    };
}

on_both_paths!(fully_qualified_image_names_and_the_default_network_work);
on_both_paths!(a_stale_container_and_a_vanished_network_are_handled);
on_both_paths!(a_missing_image_is_image_missing);

/// `ship:slim` (every other test) and `localhost/ship:slim` name the same image; ships on
/// Podman's default network (no `DOCKER_NETWORK`) get an address too.
async fn fully_qualified_image_names_and_the_default_network_work(api: PodmanApi) {
    let run = Run::new();
    let config = run.config(
        "podman",
        &[
            ("DOCKER_IMAGE", "localhost/ship:slim"),
            ("DOCKER_NETWORK", ""),
            ("PODMAN_API", api.as_str()),
        ],
    );
    let driver = run.driver_for(&config);
    driver.initialize().await.unwrap();
    assert_api_path(&driver, api);
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
/// Docker's 409 (remove the stale container, with the anonymous volumes of the image's
/// `VOLUME`s: libpod ignores `podman-api`'s spelling of that) and 404 (create the network
/// again).
async fn a_stale_container_and_a_vanished_network_are_handled(api: PodmanApi) {
    let run = Run::new();
    let driver = run.driver("podman", api);
    driver.initialize().await.unwrap();
    assert_api_path(&driver, api);
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
    let stale = inspect(&engine::container_name(&req.ship_id));
    let anonymous: Vec<String> = stale["Mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| Some(m["Name"].as_str()?.to_owned()))
        .collect();
    assert!(
        !anonymous.is_empty(),
        "the ship image declares VOLUMEs: {stale}"
    );
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
    for v in &anonymous {
        assert!(
            !podman(&["volume", "exists", v]).status.success(),
            "the stale container's anonymous volume {v} was left behind"
        );
    }
}

/// An image Podman does not have (compat answers 404, libpod 500) is `ImageMissing`, saying
/// how to load it, and leaves no container behind.
async fn a_missing_image_is_image_missing(api: PodmanApi) {
    let run = Run::new();
    let image = format!("localhost/ship:absent-{}", run.id);
    let driver = run.driver_for(&run.config(
        "podman-host",
        &[("PODMAN_API", api.as_str()), ("DOCKER_IMAGE", &image)],
    ));
    // Initialisation only warns about a missing image.
    driver.initialize().await.expect("initialize");
    assert_api_path(&driver, api);
    let req = run.request(1);
    let e = driver.create_ship_container(&req).await.unwrap_err();
    assert!(matches!(e, DriverError::ImageMissing(_)), "{e:?}");
    assert!(e.to_string().contains(&image), "{e}");
    let name = engine::container_name(&req.ship_id);
    assert!(
        !podman(&["container", "exists", &name]).status.success(),
        "{name} was left behind"
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

on_both_paths!(host_directories_keep_and_delete_data);

/// `SHIP_DATA_DIR`: data in host directories, kept across stop, removed on delete even when
/// the ship's users own files in it.
async fn host_directories_keep_and_delete_data(api: PodmanApi) {
    let run = Run::new();
    let data = run.dir.path().join("ships");
    let config = run.config(
        "podman-host",
        &[
            ("SHIP_DATA_DIR", &data.display().to_string()),
            ("PODMAN_API", api.as_str()),
        ],
    );
    let driver = run.driver_for(&config);
    driver.initialize().await.unwrap();
    assert_api_path(&driver, api);
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

on_both_paths!(host_mode_ships_reach_neither_each_other_nor_the_hosts_loopback);

/// Tries a TCP connection from inside `container` to each `host:port` of `targets` (IPv6
/// hosts bracketed); returns the targets that accepted.
fn connections_from(container: &str, targets: &[String]) -> Vec<String> {
    const PROBE: &str = r#"
import socket, sys
for t in sys.argv[1:]:
    h, p = t.rsplit(":", 1)
    h = h.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((h, int(p)))
        print("open", t)
    except OSError as e:
        print("closed", t, e)
    finally:
        s.close()
"#;
    let mut args = vec!["exec", container, "python3", "-c", PROBE];
    args.extend(targets.iter().map(String::as_str));
    let out = podman(&args);
    assert!(
        out.status.success(),
        "probe in {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count(),
        targets.len(),
        "one line per target: {text}"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("open "))
        .map(str::to_owned)
        .collect()
}

/// The host's own addresses (`ip -o addr`, link-local ones left out, IPv6 bracketed) and
/// slirp4netns's aliases of the host (`10.0.2.2`, `fd00::2`): every way a host-mode ship could
/// try to come back to the host.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("`ip` runs");
    assert!(out.status.success(), "{out:?}");
    let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .next()
                .map(str::to_owned)
        })
        .filter(|a| !a.starts_with("fe80:"))
        .map(|a| if a.contains(':') { format!("[{a}]") } else { a })
        .collect();
    addrs.extend(["10.0.2.2".to_owned(), "[fd00::2]".to_owned()]);
    addrs
}

/// Host mode isolates ships (slirp4netns without host loopback): ship A cannot connect to ship
/// B's published agent port, nor to anything listening on the host's loopback (where Bay
/// listens), by any of the host's addresses — while it still reaches what the host serves on
/// its other addresses (outbound works, and the probe can see an open port).
async fn host_mode_ships_reach_neither_each_other_nor_the_hosts_loopback(api: PodmanApi) {
    let run = Run::new();
    let driver = run.driver("podman-host", api);
    driver.initialize().await.unwrap();
    assert_api_path(&driver, api);
    let a = driver.create_ship_container(&run.request(1)).await.unwrap();
    let b = driver.create_ship_container(&run.request(2)).await.unwrap();
    for ship in [&a, &b] {
        assert!(
            agent_becomes_healthy(ship.ip_address.clone()).await,
            "{ship:?}"
        );
    }
    let b_port = b.ip_address.rsplit(':').next().unwrap().to_owned();
    // Bay's stand-in on the host's loopback, and a control listening on every address.
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let everywhere = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let loopback_port = loopback.local_addr().unwrap().port().to_string();
    let everywhere_port = everywhere.local_addr().unwrap().port().to_string();

    // B's own addresses as Podman reports them (none on slirp4netns; a bridge IP if a ship
    // ever joins a shared network again), with the agent's container port.
    let b_inspect = inspect(&b.container_id);
    assert_eq!(
        b_inspect["HostConfig"]["NetworkMode"], "slirp4netns",
        "{b_inspect}"
    );
    let net = &b_inspect["NetworkSettings"];
    let b_ips: Vec<String> = std::iter::once(&net["IPAddress"])
        .chain(
            net["Networks"]
                .as_object()
                .into_iter()
                .flat_map(|n| n.values().map(|e| &e["IPAddress"])),
        )
        .filter_map(|ip| ip.as_str().filter(|ip| !ip.is_empty()))
        .map(|ip| format!("{ip}:8123"))
        .collect();

    let hosts = host_addresses();
    let forbidden: Vec<String> = hosts
        .iter()
        .flat_map(|h| [format!("{h}:{b_port}"), format!("{h}:{loopback_port}")])
        .chain([
            format!("127.0.0.1:{b_port}"),
            format!("127.0.0.1:{loopback_port}"),
        ])
        .chain(b_ips)
        .collect();
    let reached = connections_from(&a.container_id, &forbidden);
    assert!(
        reached.is_empty(),
        "ship A reached ship B's agent or the host's loopback at {reached:?}"
    );

    // The control: the host's non-loopback IPv4 addresses serve the 0.0.0.0 listener.
    let control: Vec<String> = hosts
        .iter()
        .filter(|h| !h.contains(':') && !h.starts_with("127.") && *h != "10.0.2.2")
        .map(|h| format!("{h}:{everywhere_port}"))
        .collect();
    assert!(
        !control.is_empty(),
        "the host has no IPv4 address: {hosts:?}"
    );
    let reached = connections_from(&a.container_id, &control);
    assert_eq!(
        reached, control,
        "ship A reaches the host's other addresses"
    );

    for ship in [&a, &b] {
        driver
            .stop_ship_container(&ship.container_id)
            .await
            .unwrap();
    }
}
