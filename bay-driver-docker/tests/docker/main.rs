//! Integration tests of the Docker driver against the real Docker Engine and the real ship
//! image (`ship:latest`, built by `cargo xtask ship-image`), through `ShipService`.
//!
//! Every resource carries the labels `bay.test=docker-driver` and `bay.test-run=<run>`; each
//! test uses its own network `bay-test-<run>` and removes what it made, even on failure.

mod conformance;
mod harness;

use std::collections::HashSet;
use std::time::Duration;

use bay_core::driver::{ContainerDriver, DriverError, ShipContainerRequest};
use bay_core::engine::{self, LABEL_MANAGED, LABEL_SHIP_ID, volume_names};
use bay_core::model::{EffectiveSpec, ShipStatus, SpecRequest};
use bay_core::service::CreateShip;
use bytes::Bytes;
use futures::StreamExt;
use harness::{Bay, Run, eventually};
use serde_json::{Value, json};

async fn shell(bay: &Bay, ship: &str, session: &str, command: &str) -> Value {
    let data = bay
        .service
        .exec(
            ship,
            session,
            "shell/exec",
            Some(json!({ "command": command })),
        )
        .await
        .expect("shell/exec answers");
    assert_eq!(data["success"], json!(true), "shell {command:?}: {data}");
    data
}

async fn download(bay: &Bay, ship: &str, session: &str, path: &str) -> Vec<u8> {
    let download = bay
        .service
        .download(ship, session, path)
        .await
        .expect("download starts");
    let mut bytes = Vec::new();
    let mut stream = download.stream;
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("download chunk"));
    }
    bytes
}

fn ten_megabytes() -> Vec<u8> {
    (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Host mode through `ShipService`: the container's identity, the agent port published on
/// 127.0.0.1 only, exec (shell and Python, never as root), a 10 MB upload and download. (The
/// lifecycle itself — data across stop and restore, permanent delete, logs — is the
/// conformance suite's, `conformance.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_mode_publishes_on_loopback_only_and_serves_exec_and_transfers() {
    let run = Run::new();
    let bay = run.bay("docker-host", &[]).await;
    let session = format!("session-{}", run.id);

    let ship = bay
        .service
        .create_ship(&session, CreateShip::with_ttl(600))
        .await
        .expect("create a ship");
    assert_eq!(ship.status, ShipStatus::Running);
    let cid = ship.container_id.clone().expect("container id");
    let address = ship.ip_address.clone().expect("address");
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    // Container identity.
    let inspect = bay.inspect(&cid).await;
    assert_eq!(
        inspect.name.as_deref(),
        Some(&*format!("/{}", engine::container_name(&ship.id)))
    );
    let labels = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_SHIP_ID), Some(&ship.id));
    let env = inspect
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    assert!(env.iter().any(|e| e == &format!("SHIP_ID={}", ship.id)));
    assert!(
        env.iter()
            .any(|e| e.starts_with("SHIP_AUTH_TOKEN=") && e.len() > 30)
    );
    assert!(env.iter().any(|e| e == "TTL=600"));

    // Host mode: published on 127.0.0.1 only.
    let ports = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default();
    let bindings = ports
        .get("8123/tcp")
        .cloned()
        .flatten()
        .expect("agent port published");
    assert!(!bindings.is_empty());
    for b in &bindings {
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"), "{bindings:?}");
    }
    let host_port = address.rsplit(':').next().unwrap().to_owned();
    // The port does not answer on the host's other addresses (the network's gateway here).
    let gateway = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(&run.network))
        .and_then(|e| e.gateway.clone())
        .expect("ship attached to the run's network");
    let outside = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(format!("{gateway}:{host_port}")),
    )
    .await;
    assert!(
        !matches!(outside, Ok(Ok(_))),
        "the agent port answers on {gateway}:{host_port}"
    );

    // Shell and Python.
    let out = shell(
        &bay,
        &ship.id,
        &session,
        "echo hello > note.txt && id -u && pwd",
    )
    .await;
    let stdout = out["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with("10000\n"),
        "session code never runs as root: {out}"
    );
    let py = bay
        .service
        .exec(
            &ship.id,
            &session,
            "ipython/exec",
            Some(json!({ "code": "import os\nprint(6 * 7, os.getuid())" })),
        )
        .await
        .expect("ipython/exec answers");
    assert_eq!(py["success"], json!(true), "{py}");
    assert_eq!(py["output"]["text"], json!("42 10000"), "{py}");

    // 10 MB upload and download.
    let payload = ten_megabytes();
    let chunks: Vec<std::io::Result<Bytes>> = payload
        .chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let uploaded = bay
        .service
        .upload(
            &ship.id,
            &session,
            "data/big.bin",
            futures::stream::iter(chunks),
            Some(payload.len() as u64),
            true,
        )
        .await
        .expect("upload");
    assert_eq!(uploaded["success"], json!(true), "{uploaded}");
    assert_eq!(uploaded["size"], json!(payload.len()), "{uploaded}");
    let back = download(&bay, &ship.id, &session, "data/big.bin").await;
    assert!(
        back == payload,
        "the downloaded file differs from the uploaded one"
    );

    bay.service
        .delete_ship(&ship.id)
        .await
        .expect("permanent delete");
    assert!(run.containers(false).is_empty(), "nothing left of the run");
    bay.service.shutdown().await;
}

/// What Docker adds to the conformance suite's hardening check: swap equal to memory, every
/// capability dropped first, not privileged, the disk quota where the storage driver enforces
/// it, the configured defaults, and no capability at all for session users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_quota_default_limits_and_session_capabilities() {
    let run = Run::new();
    let bay = run.bay("docker-host", &[]).await;

    let mut req = CreateShip::with_ttl(300);
    req.spec = SpecRequest {
        cpus: Some(0.5),
        memory_bytes: Some(256 << 20),
        disk_bytes: Some(1 << 30),
    };
    let ship = bay
        .service
        .create_ship(&format!("limits-{}", run.id), req)
        .await
        .expect("create with a spec");
    let hc = bay
        .inspect(ship.container_id.as_deref().unwrap())
        .await
        .host_config
        .expect("host config");
    assert_eq!(hc.memory_swap, Some(256 << 20));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(hc.privileged, Some(false));
    // The disk quota is applied only where the storage driver supports it.
    let info = bay.docker().await.info().await.expect("docker info");
    let backing = info
        .driver_status
        .unwrap_or_default()
        .into_iter()
        .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
        .and_then(|kv| kv.get(1).cloned());
    if info.driver.as_deref() == Some("overlay2") && backing.as_deref() == Some("xfs") {
        assert_eq!(
            hc.storage_opt.unwrap_or_default().get("size"),
            Some(&(1u64 << 30).to_string())
        );
    } else {
        assert_eq!(hc.storage_opt, None, "no quota on {:?}", info.driver);
    }
    // The data volumes carry the limit where the volume driver enforces it (xfs with pquota);
    // elsewhere the engine refuses `size` and the ship gets its volumes without it.
    for name in volume_names(&ship.id) {
        let volume = bay
            .docker()
            .await
            .inspect_volume(&name)
            .await
            .expect("ship volume");
        match volume.options.get("size") {
            Some(size) => assert_eq!(size, &(1u64 << 30).to_string(), "{name}"),
            None => assert_ne!(backing.as_deref(), Some("xfs"), "{name}: no size on xfs"),
        }
    }

    // Without a spec the configured defaults apply (1 CPU, 512 MiB).
    let plain = bay
        .service
        .create_ship(&format!("defaults-{}", run.id), CreateShip::with_ttl(300))
        .await
        .expect("create with defaults");
    let hc = bay
        .inspect(plain.container_id.as_deref().unwrap())
        .await
        .host_config
        .unwrap();
    assert_eq!(hc.nano_cpus, Some(1_000_000_000));
    assert_eq!(hc.memory, Some(512 << 20));

    // Inside: the session user has no capabilities at all.
    let out = shell(
        &bay,
        &plain.id,
        &format!("defaults-{}", run.id),
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    )
    .await;
    let text = out["stdout"].as_str().unwrap_or_default();
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");

    for id in [&ship.id, &plain.id] {
        bay.service.delete_ship(id).await.expect("delete");
    }
    assert!(run.containers(false).is_empty());
    assert!(run.volumes().is_empty());
    bay.service.shutdown().await;
}

/// Host mode: the network the driver creates has inter-container traffic off, so a ship cannot
/// connect to another ship's agent (by container IP, or through the gateway and the other's
/// published port), while Bay reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mode_ships_cannot_reach_each_other() {
    let run = Run::new();
    let bay = run.bay("docker-host", &[]).await;
    let net = bay
        .docker()
        .await
        .inspect_network(&run.network, None)
        .await
        .expect("the driver created the network");
    assert_eq!(
        net.options
            .unwrap_or_default()
            .get(bay_driver_docker::ICC_OPTION)
            .map(String::as_str),
        Some("false")
    );
    let (a, b) = (format!("a-{}", run.id), format!("b-{}", run.id));
    let ship_a = bay
        .service
        .create_ship(&a, CreateShip::with_ttl(300))
        .await
        .expect("create a");
    let ship_b = bay
        .service
        .create_ship(&b, CreateShip::with_ttl(300))
        .await
        .expect("create b");
    let endpoint = bay
        .inspect(ship_b.container_id.as_deref().unwrap())
        .await
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&run.network).cloned())
        .expect("b on the run's network");
    let ip_b = endpoint.ip_address.expect("b's IP");
    let gateway = endpoint.gateway.expect("the network's gateway");
    let port_b = ship_b
        .ip_address
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    // Bay reaches both.
    for (ship, session) in [(&ship_a, &a), (&ship_b, &b)] {
        let out = shell(&bay, &ship.id, session, "echo reached").await;
        assert_eq!(out["stdout"], json!("reached"));
    }
    // From a: its own agent answers (the probe works), b's does not, by either way.
    let probe = format!(
        "python3 - <<'EOF'\n\
         import socket\n\
         for host, port in [('127.0.0.1', 8123), ('{ip_b}', 8123), ('{gateway}', {port_b})]:\n\
         \x20   s = socket.socket(); s.settimeout(3)\n\
         \x20   try:\n\
         \x20       s.connect((host, port)); print(host, port, 'open')\n\
         \x20   except OSError as e:\n\
         \x20       print(host, port, 'closed', e)\n\
         EOF"
    );
    let out = shell(&bay, &ship_a.id, &a, &probe).await;
    let text = out["stdout"].as_str().unwrap_or_default().to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].ends_with("open"), "a's own agent: {text}");
    assert!(lines[1].contains("closed"), "b by container IP: {text}");
    assert!(lines[2].contains("closed"), "b through the gateway: {text}");
    for id in [&ship_a.id, &ship_b.id] {
        bay.service.delete_ship(id).await.expect("delete");
    }
    bay.service.shutdown().await;
}

/// An existing network that lets containers talk: a user's is kept (with a warning), Bay's own
/// (`bay.managed=true`, as older Bays created it), unused, is replaced by an isolated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_ship_network_of_bay_without_isolation_is_replaced() {
    let run = Run::new();
    let icc = |run: &Run| {
        let out = std::process::Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
                &run.network,
            ])
            .output()
            .expect("docker CLI");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let create = |run: &Run, extra: &[&str]| {
        let mut args = vec!["network".to_owned(), "create".to_owned()];
        for (k, v) in &run.labels {
            args.extend(["--label".to_owned(), format!("{k}={v}")]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(run.network.clone());
        let status = std::process::Command::new("docker")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker CLI");
        assert!(status.success(), "docker {args:?}");
    };
    // A user's network: Bay cannot change it and leaves it alone.
    create(&run, &[]);
    let bay = run.bay("docker-host", &[]).await;
    bay.service.shutdown().await;
    assert_eq!(icc(&run), "", "the user's network is untouched");
    let removed = std::process::Command::new("docker")
        .args(["network", "rm", &run.network])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker CLI");
    assert!(removed.success());
    // Bay's own, from before isolation: replaced.
    create(&run, &["--label", &engine::managed_filter()]);
    let bay = run.bay("docker-host", &[]).await;
    assert_eq!(
        icc(&run),
        "false",
        "Bay's unused network is recreated isolated"
    );
    bay.service.shutdown().await;
}

/// Network mode: nothing published; the ship answers on its IP on DOCKER_NETWORK (which the
/// driver created), and refuses calls without its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_mode_ships_are_reached_by_container_ip() {
    let run = Run::new();
    let bay = run.bay("docker", &[]).await;
    let net = bay
        .docker()
        .await
        .inspect_network(&run.network, None)
        .await
        .expect("the driver created the network");
    assert_eq!(net.driver.as_deref(), Some("bridge"));

    let session = format!("net-{}", run.id);
    let ship = bay
        .service
        .create_ship(&session, CreateShip::with_ttl(300))
        .await
        .expect("create");
    let ip = ship.ip_address.clone().unwrap();
    assert!(ip.parse::<std::net::IpAddr>().is_ok(), "a bare IP: {ip}");
    let inspect = bay.inspect(ship.container_id.as_deref().unwrap()).await;
    let published = inspect
        .host_config
        .and_then(|h| h.port_bindings)
        .unwrap_or_default();
    assert!(published.is_empty(), "nothing published: {published:?}");
    let on_net = inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&run.network).cloned())
        .and_then(|e| e.ip_address);
    assert_eq!(on_net.as_deref(), Some(ip.as_str()));

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{ip}:8123/health"))
        .send()
        .await
        .expect("the host reaches the bridge IP");
    assert_eq!(health.status(), 200);
    let refused = http
        .post(format!("http://{ip}:8123/shell/exec"))
        .header("X-SESSION-ID", "intruder")
        .json(&json!({"command": "id"}))
        .send()
        .await
        .expect("answer");
    assert!(
        refused.status() == 401 || refused.status() == 403,
        "calls without the ship token are refused: {}",
        refused.status()
    );
    let out = shell(&bay, &ship.id, &session, "echo via-network").await;
    assert_eq!(out["stdout"], json!("via-network"));

    bay.service.delete_ship(&ship.id).await.expect("delete");
    assert!(run.containers(false).is_empty());
    bay.service.shutdown().await;
}

/// SHIP_DATA_DIR: host directories (0700 root, 0755 home, 0700 metadata), data kept across a
/// restore, removed by a permanent delete; the helper container removes files of session users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_directories_hold_ship_data() {
    use std::os::unix::fs::PermissionsExt;
    let run = Run::new();
    let data = run.dir.path().join("ships");
    let data_str = data.display().to_string();
    let bay = run
        .bay("docker-host", &[("SHIP_DATA_DIR", data_str.as_str())])
        .await;
    let session = format!("dirs-{}", run.id);
    let ship = bay
        .service
        .create_ship(&session, CreateShip::with_ttl(300))
        .await
        .expect("create");
    let root = data.join(&ship.id);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("home")), 0o755);
    assert_eq!(mode(&root.join("metadata")), 0o700);
    assert!(run.volumes().is_empty(), "no volumes with SHIP_DATA_DIR");

    shell(&bay, &ship.id, &session, "echo kept > kept.txt").await;
    let users = std::fs::read_to_string(root.join("metadata/session_users.json"))
        .expect("the agent's metadata lands in the host directory");
    assert!(users.contains(&session), "{users}");

    bay.service.stop_ship(&ship.id).await.expect("stop");
    assert!(bay.driver.ship_data_exists(&ship.id).await.unwrap());
    let again = bay
        .service
        .create_ship(&session, CreateShip::with_ttl(300))
        .await
        .expect("restore");
    assert_eq!(again.id, ship.id);
    let out = shell(&bay, &ship.id, &session, "cat kept.txt").await;
    assert_eq!(out["stdout"], json!("kept"));

    // The helper container empties the directories as root.
    bay.service.stop_ship(&ship.id).await.expect("stop");
    bay.driver
        .remove_host_data_with_helper(&ship.id)
        .await
        .expect("helper container");
    assert!(!root.join("home").exists() && !root.join("metadata").exists());
    let helpers = run.containers(false);
    assert!(helpers.is_empty(), "helper container removed: {helpers:?}");

    bay.service.delete_ship(&ship.id).await.expect("delete");
    assert!(!root.exists(), "ship data directory removed");
    assert!(!bay.driver.ship_data_exists(&ship.id).await.unwrap());
    bay.service.shutdown().await;
}

/// A missing image: the driver says so and how to build it, and leaves nothing behind. (Not
/// found versus unavailable is the conformance suite's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_explained_and_leaves_nothing() {
    let run = Run::new();
    // A missing image: the driver says so and how to build it, and leaves no container.
    let image = format!("bay-test-missing-{}:none", run.id);
    let config = run.config("docker-host", &[("DOCKER_IMAGE", image.as_str())]);
    let no_image = run.driver(&config);
    let req = ShipContainerRequest {
        ship_id: format!("noimage-{}", run.id),
        spec: EffectiveSpec::default(),
        auth_token: "t".into(),
        ttl: 60,
    };
    let err = no_image
        .create_ship_container(&req)
        .await
        .expect_err("no image");
    assert!(matches!(err, DriverError::ImageMissing(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&image) && text.contains("cargo xtask ship-image"),
        "{text}"
    );
    assert!(run.containers(false).is_empty());
    no_image.delete_ship_data(&req.ship_id).await.unwrap();

    // Through the service: the create fails with the reason and leaves nothing behind.
    let bay = run
        .bay("docker-host", &[("DOCKER_IMAGE", image.as_str())])
        .await;
    let err = bay
        .service
        .create_ship(&format!("noimage-{}", run.id), CreateShip::with_ttl(60))
        .await
        .expect_err("create without image");
    assert!(err.to_string().contains("cargo xtask ship-image"), "{err}");
    assert!(bay.service.list_ships().await.unwrap().is_empty());
    assert!(run.containers(false).is_empty());
    assert!(
        run.volumes().is_empty(),
        "volumes of the failed create removed"
    );
    bay.service.shutdown().await;
}

/// A Bay killed with SIGKILL in the middle of creates leaves, after a restart on the same
/// database, no orphan container and no ship stuck in Creating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_creates_leaves_no_orphans_after_restart() {
    use std::io::{BufRead, BufReader};
    let run = Run::new();
    let binary = harness::create_loop_binary();
    let mut cmd = std::process::Command::new(&binary);
    cmd.current_dir(run.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", host);
    }
    for (k, v) in run.pairs("docker-host", &[]) {
        cmd.env(k, v);
    }
    for (k, v) in &run.labels {
        cmd.arg(format!("{k}={v}"));
    }
    let mut child = cmd.spawn().expect("start create_loop");
    let stdout = child.stdout.take().unwrap();
    // Wait for a few ships to be ready (creates keep going on three workers), then kill.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut created = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while created < 3 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1))
            && line.starts_with("created ")
        {
            created += 1;
        }
    }
    assert!(
        created >= 3,
        "the create loop made {created} ships in 120 s"
    );
    // In the middle of the next creates.
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reap");
    assert!(!status.success());
    // Let the engine finish requests that were in flight.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left_by_the_crash = run.containers(true).len();
    eprintln!(
        "killed after {created} ready ships (and more in flight); {left_by_the_crash} ship containers exist"
    );

    let bay = run.bay("docker-host", &[]).await;
    let overview = bay.service.overview().await.unwrap();
    assert_eq!(overview.ships.creating, 0, "no ship stuck in Creating");
    let ships = bay.service.list_ships().await.unwrap();
    assert!(ships.len() >= 3, "the ready ships are still recorded");
    let owned: HashSet<String> = ships
        .iter()
        .filter(|s| s.status == ShipStatus::Running)
        .filter_map(|s| s.container_id.clone())
        .collect();
    let containers: HashSet<String> = run.containers(true).into_iter().collect();
    assert_eq!(
        containers, owned,
        "every ship container belongs to a running ship"
    );
    // Volumes belong to recorded ships only.
    let known: HashSet<String> = ships.iter().flat_map(|s| volume_names(&s.id)).collect();
    for v in run.volumes() {
        assert!(known.contains(&v), "volume {v} of an unknown ship");
    }
    // The recovered ships still work.
    let running: Vec<_> = ships
        .iter()
        .filter(|s| s.status == ShipStatus::Running)
        .collect();
    assert!(!running.is_empty());
    assert!(
        eventually(Duration::from_secs(10), || async {
            bay.driver
                .is_container_running(running[0].container_id.as_deref().unwrap())
                .await
                .unwrap_or(false)
        })
        .await
    );
    for s in &ships {
        bay.service.delete_ship(&s.id).await.expect("delete");
    }
    assert!(run.containers(false).is_empty());
    assert!(run.volumes().is_empty());
    bay.service.shutdown().await;
}

/// A kubelet's dockershim on the same engine copies a Pod's labels onto the containers it
/// creates: a Pod of the Kubernetes driver (`bay.managed=true`, `bay.ship-id`) shows up in
/// Docker with those labels next to dockershim's `io.kubernetes.*` ones. The Docker driver must
/// not take it for one of its ships (its reconciliation would stop it); a container with the
/// same Bay labels and no kubelet label still is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_created_by_a_kubelet_are_not_ships() {
    use bollard::models::ContainerCreateBody;
    let run = Run::new();
    let config = run.config("docker-host", &[]);
    let driver = run.driver(&config);
    let docker = driver.client().await.expect("docker answers");
    let create = |ship_id: &str, kubelet: bool| {
        let mut labels: std::collections::HashMap<String, String> = run
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_SHIP_ID.to_owned(), ship_id.to_owned());
        if kubelet {
            labels.insert(
                "io.kubernetes.docker.type".to_owned(),
                "podsandbox".to_owned(),
            );
            labels.insert(
                "io.kubernetes.pod.name".to_owned(),
                format!("ship-{ship_id}"),
            );
            labels.insert("io.kubernetes.pod.namespace".to_owned(), "bay".to_owned());
        }
        let docker = docker.clone();
        async move {
            docker
                .create_container(
                    None::<bollard::query_parameters::CreateContainerOptions>,
                    ContainerCreateBody {
                        image: Some(harness::IMAGE.to_owned()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                )
                .await
                .expect("container created")
                .id
        }
    };
    let pod = create(&format!("k{}", run.id), true).await;
    let ship = create(&format!("d{}", run.id), false).await;
    let managed = driver.list_managed().await.expect("list_managed");
    assert!(
        !managed.iter().any(|m| m.container_id == pod),
        "a kubelet's container listed as a Docker ship: {managed:?}"
    );
    let listed = managed
        .iter()
        .find(|m| m.container_id == ship)
        .expect("the look-alike Docker ship is listed");
    assert_eq!(listed.ship_id, format!("d{}", run.id));
}
