//! Shared harness of the Podman tests: a run with its own labels, network and temporary
//! directory, the real Podman driver on the test socket, and cleanup (on drop, even when the
//! test fails) of every container, volume and network the run created.
//!
//! The socket is `BAY_TEST_PODMAN_SOCKET` (set by `cargo xtask test`, which starts
//! `podman system service` on a private socket), else the rootful `/run/podman/podman.sock`.
//! A missing socket, `podman` CLI or ship image fails the test: it never skips.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bay_core::config::{Config, PodmanApi};
use bay_core::driver::ShipContainerRequest;
use bay_core::model::EffectiveSpec;
use bay_driver_podman::{PodmanDriver, PodmanSettings};
use serde_json::Value;

/// The label every test resource carries.
pub const TEST_LABEL: &str = "bay.test";
/// Its value for this crate's tests.
pub const TEST_LABEL_VALUE: &str = "podman-driver";
/// Label naming the run (one per test).
pub const RUN_LABEL: &str = "bay.test-run";
/// The ship image the tests use (loaded into Podman's store by `cargo xtask test`).
pub const IMAGE: &str = "ship:slim";

/// The Podman socket the tests talk to.
pub fn socket() -> PathBuf {
    let socket = std::env::var_os("BAY_TEST_PODMAN_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(bay_driver_podman::ROOTFUL_SOCKET));
    assert!(
        socket.exists(),
        "the podman socket {} is missing: run these tests with `cargo xtask test` (it installs \
         podman and starts its API service), or start `podman system service --time=0 \
         unix://<socket>` and set BAY_TEST_PODMAN_SOCKET",
        socket.display()
    );
    socket
}

/// One test's resources.
pub struct Run {
    pub id: String,
    pub network: String,
    pub labels: BTreeMap<String, String>,
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn new() -> Self {
        init_tracing();
        let _ = socket();
        let out = podman(&["image", "exists", IMAGE]);
        assert!(
            out.status.success(),
            "the ship image {IMAGE} is not in podman's store: `cargo xtask test` loads it \
             (or `docker save {IMAGE} | podman load`)"
        );
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let labels = BTreeMap::from([
            (TEST_LABEL.to_owned(), TEST_LABEL_VALUE.to_owned()),
            (RUN_LABEL.to_owned(), id.clone()),
        ]);
        Self {
            network: format!("bay-ptest-{id}"),
            id,
            labels,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// The configuration of a Bay for this run (`mode` = `podman` or `podman-host`).
    pub fn config(&self, mode: &str, extra: &[(&str, &str)]) -> Config {
        let socket = socket().display().to_string();
        let mut pairs: Vec<(String, String)> = vec![
            ("CONTAINER_DRIVER".into(), mode.into()),
            ("DOCKER_NETWORK".into(), self.network.clone()),
            ("DOCKER_IMAGE".into(), IMAGE.into()),
            ("PODMAN_SOCKET".into(), socket),
        ];
        for (k, v) in extra {
            pairs.retain(|(key, _)| key != k);
            pairs.push(((*k).into(), (*v).into()));
        }
        Config::from_pairs(pairs).expect("valid test configuration")
    }

    /// A driver for `config`, labelling everything with this run's labels.
    pub fn driver_for(&self, config: &Config) -> Arc<PodmanDriver> {
        let mut settings = PodmanSettings::from_config(config).expect("podman settings");
        settings.extra_labels = self.labels.clone();
        Arc::new(PodmanDriver::new(settings))
    }

    /// A driver in `mode` on the API path `api` (`PODMAN_API`).
    pub fn driver(&self, mode: &str, api: PodmanApi) -> Arc<PodmanDriver> {
        self.driver_for(&self.config(mode, &[("PODMAN_API", api.as_str())]))
    }

    /// A creation request for a new ship id of this run.
    pub fn request(&self, n: u32) -> ShipContainerRequest {
        ShipContainerRequest {
            ship_id: format!("{}-{n}", self.id),
            spec: EffectiveSpec {
                cpus: Some(0.5),
                memory_bytes: Some(256 << 20),
                disk_bytes: None,
            },
            auth_token: format!("token-{}-{n}-0123456789abcdef", self.id),
            ttl: 600,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let filter = format!("label={RUN_LABEL}={}", self.id);
        for id in lines(&podman(&["ps", "-aq", "--filter", &filter])) {
            let _ = podman(&["rm", "-f", "-v", &id]);
        }
        for v in lines(&podman(&["volume", "ls", "-q", "--filter", &filter])) {
            let _ = podman(&["volume", "rm", "-f", &v]);
        }
        let _ = podman(&["network", "rm", "-f", &self.network]);
    }
}

/// Runs the `podman` CLI (it shares the store with the API service).
pub fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the podman CLI runs (cargo xtask test installs it)")
}

/// `podman inspect` of a container, as JSON.
pub fn inspect(container: &str) -> Value {
    let out = podman(&["container", "inspect", container]);
    assert!(
        out.status.success(),
        "inspect {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    v[0].clone()
}

/// Runs `sh -c script` in a container as root; returns stdout.
pub fn exec(container: &str, script: &str) -> String {
    let out = podman(&["exec", container, "sh", "-c", script]);
    assert!(
        out.status.success(),
        "exec {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the agent at `addr` (`IP:port`) answers `GET /health` with 200, polled for at most
/// 60 s.
pub async fn agent_becomes_healthy(addr: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        for _ in 0..600 {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if write!(
                    s,
                    "GET /health HTTP/1.1\r\nHost: ship\r\nConnection: close\r\n\r\n"
                )
                .is_ok()
                {
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf);
                    if buf.starts_with("HTTP/1.1 200") {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .await
    .unwrap_or(false)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,bay_driver_podman=debug".into()),
        )
        .with_test_writer()
        .try_init();
}
