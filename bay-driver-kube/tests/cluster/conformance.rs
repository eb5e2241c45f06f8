//! The driver conformance suite (`bay_core::testing::conformance`) against the real test
//! cluster. The probe reads the API server with `kubectl` (the Pod, the PVC, the labels) and
//! the kernel's view of the agent with `kubectl exec` (`/proc/1/status` and the container's
//! cgroup limits: what is enforced, whatever the Pod spec says).
//!
//! Where Kubernetes differs, the target says so: its pids limit is `None` (a Pod spec has no
//! pids limit; it is the kubelet's `--pod-max-pids`, a node setting, and this cluster sets
//! none), so the check holds the engine to reporting none; its container ids are the Pods'
//! names, `ship-<id>`, the same after a restore. Each target creates at most two
//! ships at once: the node's CPU is what the scheduler divides (requests equal the limits).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bay_core::driver::ContainerDriver;
use bay_core::testing::conformance::{Hardening, Probe, Target};
use bay_driver_kube::KubeDriver;
use serde_json::Value;

use crate::Run;

/// A target on a run of its own, or `None` (skipped loudly) without the cluster outside CI.
async fn kube() -> Option<Target> {
    let run = Run::new("the Kubernetes conformance suite")?;
    let driver = run.driver();
    // A kubeconfig like the cluster's, aimed at a port nobody listens on.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dead_config = dir.path().join("kubeconfig");
    std::fs::write(
        &dead_config,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    \
         server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  \
         user:\n    token: nobody\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    \
         user: u\ncurrent-context: dead\n",
    )
    .expect("writing the dead kubeconfig");
    let dead = Arc::new(KubeDriver::new(
        run.settings(dead_config.to_str().expect("a UTF-8 path")),
    ));
    let mut target = Target::new(
        "kubernetes",
        driver,
        KubeProbe {
            run,
            dead,
            _dir: dir,
        },
    );
    target.concurrency = 2;
    target.ready_budget = Duration::from_secs(180);
    target.pids_limit = None;
    target.stable_container_ids = true;
    Some(target)
}

bay_core::conformance_tests!(kubernetes => kube());

struct KubeProbe {
    /// Deletes everything the run created when dropped.
    run: Run,
    /// The driver on an API server nobody answers at.
    dead: Arc<KubeDriver>,
    /// Holds the dead kubeconfig.
    _dir: tempfile::TempDir,
}

impl KubeProbe {
    /// The object `kind/name` of the run's namespace, `None` when there is none (or it is
    /// being deleted: Kubernetes finishes a deletion asynchronously, it is no longer there for
    /// any client).
    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.run.kubectl_ok(
            &["get", kind, name, "--ignore-not-found", "-o", "json"],
            &format!("get {kind} {name}"),
        );
        if out.trim().is_empty() {
            return None;
        }
        let object: Value = serde_json::from_str(&out).expect("kubectl's JSON");
        object["metadata"]["deletionTimestamp"]
            .is_null()
            .then_some(object)
    }
}

/// What the probe runs in the container: the agent's status and its cgroup's limits (cgroup v1
/// and v2 alike), one `key: value` per line.
const LIMITS_SCRIPT: &str = r#"cat /proc/1/status
c=/sys/fs/cgroup
if [ -f $c/memory.max ]; then
  echo "memory: $(cat $c/memory.max)"
  echo "cpu: $(cat $c/cpu.max)"
  echo "pids: $(cat $c/pids.max)"
else
  echo "memory: $(cat $c/memory/memory.limit_in_bytes)"
  echo "cpu: $(cat $c/cpu/cpu.cfs_quota_us) $(cat $c/cpu/cpu.cfs_period_us)"
  echo "pids: $(cat $c/pids/pids.max)"
fi
"#;

/// Reads the cgroup lines of [`LIMITS_SCRIPT`]'s output into `h` ("max" and cgroup v1's
/// "no limit" values are no limit).
fn read_cgroup_limits(h: &mut Hardening, out: &str) {
    let limit = |v: &str| v.parse::<i64>().ok().filter(|n| *n > 0 && *n < (1 << 62));
    for line in out.lines() {
        match line.split_once(": ") {
            Some(("memory", v)) => h.memory_bytes = limit(v.trim()),
            Some(("pids", v)) => h.pids_limit = limit(v.trim()),
            Some(("cpu", v)) => {
                let mut parts = v.split_whitespace().map(limit);
                h.nano_cpus = match (parts.next().flatten(), parts.next().flatten()) {
                    (Some(quota), Some(period)) => Some(quota * 1_000_000_000 / period),
                    _ => None,
                };
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Probe for KubeProbe {
    fn prefix(&self) -> String {
        self.run.id.clone()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.run.labels()
    }

    async fn container_exists(&self, container_id: &str) -> bool {
        self.get("pod", container_id).is_some()
    }

    async fn data_exists(&self, ship_id: &str) -> bool {
        self.get(
            "persistentvolumeclaim",
            &bay_core::engine::container_name(ship_id),
        )
        .is_some()
    }

    async fn hardening(&self, container_id: &str) -> Hardening {
        let pod = self
            .get("pod", container_id)
            .unwrap_or_else(|| panic!("no pod {container_id}"));
        let mut h = Hardening {
            labels: serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default(),
            ..Hardening::default()
        };
        let out = self.run.kubectl_ok(
            &["exec", container_id, "--", "sh", "-c", LIMITS_SCRIPT],
            &format!("reading the limits in {container_id}"),
        );
        h.read_proc_status(&out);
        read_cgroup_limits(&mut h, &out);
        h
    }

    /// The agent is PID 1 of its container, and the kernel ignores a signal sent to a PID
    /// namespace's init from inside unless it handles it: the agent handles SIGTERM (and exits),
    /// so `kill 1` in the container ends it; with restart policy `Never` the Pod stays.
    async fn exit(&self, container_id: &str) {
        self.run.kubectl_ok(
            &["exec", container_id, "--", "sh", "-c", "kill 1"],
            &format!("ending the agent of {container_id}"),
        );
    }

    fn unavailable(&self) -> Arc<dyn ContainerDriver> {
        self.dead.clone()
    }
}

#[test]
fn cgroup_limits_are_read_for_both_versions() {
    let mut h = Hardening::default();
    read_cgroup_limits(&mut h, "memory: 268435456\ncpu: 50000 100000\npids: max\n");
    assert_eq!(
        (h.memory_bytes, h.nano_cpus, h.pids_limit),
        (Some(256 << 20), Some(500_000_000), None)
    );
    read_cgroup_limits(
        &mut h,
        "memory: 9223372036854771712\ncpu: -1 100000\npids: 512\n",
    );
    assert_eq!(
        (h.memory_bytes, h.nano_cpus, h.pids_limit),
        (None, None, Some(512))
    );
    read_cgroup_limits(&mut h, "memory: max\ncpu: max 100000\n");
    assert_eq!((h.memory_bytes, h.nano_cpus), (None, None));
}
