//! The driver conformance suite (`bay_core::testing::conformance`) against the real Podman API
//! service, in both modes and through both API paths (`PODMAN_API=libpod` and `compat`): the
//! probe reads containers and volumes with the `podman` CLI (which shares the service's store)
//! and the kernel's view of the agent (`/proc/1/status`) with `podman exec`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bay_core::config::PodmanApi;
use bay_core::driver::ContainerDriver;
use bay_core::engine::volume_names;
use bay_core::testing::conformance::{Hardening, Probe, Target};

use crate::harness::{Run, exec, inspect, podman};

/// A Podman target in `mode` (`podman-host` or `podman`) forced onto the `api` path, on a run
/// of its own; fails unless the driver really chose that path.
async fn target(mode: &str, api: PodmanApi) -> Target {
    let run = Run::new();
    let driver = run.driver(mode, api);
    driver.initialize().await.expect("initialize");
    assert_eq!(
        driver.api_path(),
        Some(api),
        "PODMAN_API={} must drive Podman {:?} through that path",
        api.as_str(),
        driver.podman_version()
    );
    let api = api.as_str();
    // A socket file nobody listens on.
    let dead = run.dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind a socket"));
    let dead = run.driver_for(&run.config(
        mode,
        &[
            ("PODMAN_API", api),
            ("PODMAN_SOCKET", &dead.display().to_string()),
        ],
    ));
    Target::new(format!("{mode} ({api})"), driver, PodmanProbe { run, dead })
}

bay_core::conformance_tests!(podman_host_libpod => target("podman-host", PodmanApi::Libpod));
bay_core::conformance_tests!(podman_host_compat => target("podman-host", PodmanApi::Compat));
bay_core::conformance_tests!(podman_network_libpod => target("podman", PodmanApi::Libpod));
bay_core::conformance_tests!(podman_network_compat => target("podman", PodmanApi::Compat));

struct PodmanProbe {
    /// Removes everything the run created when dropped.
    run: Run,
    /// A driver on a socket nobody answers on.
    dead: Arc<bay_driver_podman::PodmanDriver>,
}

#[async_trait]
impl Probe for PodmanProbe {
    fn prefix(&self) -> String {
        self.run.id.clone()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.run.labels.clone()
    }

    async fn container_exists(&self, container_id: &str) -> bool {
        podman(&["container", "exists", container_id])
            .status
            .success()
    }

    async fn data_exists(&self, ship_id: &str) -> bool {
        volume_names(ship_id)
            .iter()
            .any(|v| podman(&["volume", "exists", v]).status.success())
    }

    async fn hardening(&self, container_id: &str) -> Hardening {
        let i = inspect(container_id);
        let mut h = Hardening::default();
        h.read_inspect(&i);
        h.read_proc_status(&exec(container_id, "cat /proc/1/status"));
        h
    }

    async fn exit(&self, container_id: &str) {
        let out = podman(&["kill", container_id]);
        assert!(out.status.success(), "podman kill {container_id}: {out:?}");
    }

    fn unavailable(&self) -> Arc<dyn ContainerDriver> {
        self.dead.clone()
    }
}
