//! The driver conformance suite (`bay_core::testing::conformance`) against the real Docker
//! Engine, in both modes: the probe reads containers and volumes with the `docker` CLI and
//! the kernel's view of the agent (`/proc/1/status`) with `docker exec`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use bay_core::driver::ContainerDriver;
use bay_core::engine::volume_names;
use bay_core::testing::conformance::{Hardening, Probe, Target};
use bay_driver_docker::{DockerDriver, DockerSettings};
use serde_json::Value;

use crate::harness::Run;

/// A Docker target in `mode` (`docker-host` or `docker`) on a run of its own.
async fn docker(mode: &str) -> Target {
    let run = Run::new();
    let config = run.config(mode, &[]);
    let driver = run.driver(&config);
    let mut dead = DockerSettings::from_config(&config).expect("docker settings");
    dead.docker_host = Some("tcp://127.0.0.1:1".to_owned());
    let mut target = Target::new(mode, driver, DockerProbe { run, dead });
    target.concurrency = 8;
    target
}

bay_core::conformance_tests!(docker_host => docker("docker-host"));
bay_core::conformance_tests!(docker_network => docker("docker"));

struct DockerProbe {
    /// Removes everything the run created when dropped.
    run: Run,
    /// The driver's settings, aimed at a port nobody listens on.
    dead: DockerSettings,
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs")
}

#[async_trait]
impl Probe for DockerProbe {
    fn prefix(&self) -> String {
        self.run.id.clone()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.run.labels.clone()
    }

    async fn container_exists(&self, container_id: &str) -> bool {
        cli(&["container", "inspect", container_id])
            .status
            .success()
    }

    async fn data_exists(&self, ship_id: &str) -> bool {
        volume_names(ship_id)
            .iter()
            .any(|v| cli(&["volume", "inspect", v]).status.success())
    }

    async fn hardening(&self, container_id: &str) -> Hardening {
        let out = cli(&["container", "inspect", container_id]);
        assert!(out.status.success(), "inspect {container_id}: {out:?}");
        let inspect: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
        let i = &inspect[0];
        let mut h = Hardening::default();
        h.read_inspect(i);
        let status = cli(&["exec", container_id, "cat", "/proc/1/status"]);
        assert!(
            status.status.success(),
            "exec in {container_id}: {status:?}"
        );
        h.read_proc_status(&String::from_utf8_lossy(&status.stdout));
        h
    }

    async fn exit(&self, container_id: &str) {
        let out = cli(&["kill", container_id]);
        assert!(out.status.success(), "docker kill {container_id}: {out:?}");
    }

    fn unavailable(&self) -> Arc<dyn ContainerDriver> {
        Arc::new(DockerDriver::new(self.dead.clone()))
    }
}
