//! The driver conformance suite: the lifecycle contract of [`ContainerDriver`], written once
//! and run against every driver — [`FakeDriver`](super::FakeDriver) first (so the fake is held
//! to the same contract as the engines), then Docker, Podman and Kubernetes in their own test
//! binaries.
//!
//! A target is a [`Target`]: the driver under test (`Arc<dyn ContainerDriver>`) and a [`Probe`]
//! that reads back from the engine itself, not through the driver, what the contract is about
//! (whether a container or a ship's data exists, the hardening of a container), makes a
//! container's process exit, and gives a driver that cannot reach its engine. The probe also
//! owns the target's resources: dropping it removes everything the target created (a Drop
//! guard, so a failing check leaves nothing behind).
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[tokio::test]` per check,
//! in a module named after the target, so a failure names both (`docker_host::hardening_…`).
//! Each test builds its own target: targets must isolate themselves from each other and from
//! other test binaries on the same engine. The suite helps: every ship id it uses starts with
//! the probe's [`prefix`](Probe::prefix) and it only ever looks at those ships (a real engine's
//! `list_managed` also sees other tests' ships).
//!
//! The suite assumes nothing engine-specific: container ids are opaque (Docker and Podman give
//! hex ids, Kubernetes gives the Pod name), ship data is whatever the driver keeps (volumes,
//! host directories, a PVC), and addresses are read with [`authority`](crate::ship_client::authority)
//! (`IP` plus the container port, or `IP:port`). Ship ids are lowercase letters, digits and
//! `-` (valid in DNS-1123 names), at most the prefix plus 4 characters.
//!
//! # Adding a driver
//!
//! In the driver crate's integration tests (dev-dependency `bay-core` with feature `testing`):
//!
//! 1. write a probe: a struct owning the test run's resources (labels, network, temporary
//!    directory; removed in `Drop`) that implements [`Probe`] against the engine's own API or
//!    CLI (`docker inspect`, `podman exec`, `kubectl get pvc`, …);
//! 2. write an `async fn` that builds the run, the driver (labelling everything with the run's
//!    labels) and returns `Target::new(name, driver, probe)` (set
//!    [`concurrency`](Target::concurrency) and [`container_port`](Target::container_port) if the
//!    defaults do not fit);
//! 3. one line per configuration: `bay_core::conformance_tests!(docker_host => docker("docker-host"));`
//!    (the constructor is called in a module inside the caller's, which sees the caller's items).
//!
//! For Kubernetes, for example: `container_exists` is "the Pod exists", `data_exists` "the
//! ship's PVC exists", `hardening` reads the Pod spec's limits and labels and `/proc/1/status`
//! through `kubectl exec`, `exit` kills the agent (`kubectl exec <pod> -- kill 1`, with a
//! restart policy of `Never` the Pod stays, not running), and `unavailable` is the driver
//! configured with an API server address nobody answers on.
//!
//! Driver-specific behaviour (networks, host directories, an engine's odd status codes, crash
//! recovery) stays in the driver's own tests.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! // The FakeDriver target, as bay-core's own conformance tests use it.
//! let target = bay_core::testing::conformance::fake().await;
//! bay_core::testing::conformance::delete_of_missing_data_is_ok(target).await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::driver::{ContainerDriver, ContainerInfo, DriverError, ShipContainerRequest};
use crate::engine::{CAPABILITIES, LABEL_MANAGED, LABEL_SHIP_ID, PIDS_LIMIT};
use crate::model::EffectiveSpec;
use crate::ship_client::{ShipClient, ShipEndpoint};

/// The CPU limit of the ships the suite creates.
pub const CPUS: f64 = 0.5;
/// The memory limit of the ships the suite creates.
pub const MEMORY_BYTES: u64 = 256 << 20;
/// The agent session the suite writes and reads data with.
pub const SESSION: &str = "conformance";

/// The hardening of a container, as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hardening {
    /// The capabilities the container's main process has (names without `CAP_`, any case).
    pub capabilities: BTreeSet<String>,
    /// Whether `no-new-privileges` is set.
    pub no_new_privileges: bool,
    /// The pids limit.
    pub pids_limit: Option<i64>,
    /// The memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// The CPU limit in billionths of a CPU (Docker's `NanoCpus`; Kubernetes: millicores × 10⁶).
    pub nano_cpus: Option<i64>,
    /// The container's labels.
    pub labels: HashMap<String, String>,
}

/// The Linux capability names by number (`include/uapi/linux/capability.h`).
const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

impl Hardening {
    /// Reads the pids, memory and CPU limits and the labels from one container of the
    /// Docker-compatible `inspect` JSON (`docker container inspect` and `podman container
    /// inspect` print an array of them).
    ///
    /// ```
    /// use bay_core::testing::conformance::Hardening;
    /// let mut h = Hardening::default();
    /// h.read_inspect(&serde_json::json!({
    ///     "HostConfig": {"PidsLimit": 512, "Memory": 268435456, "NanoCpus": 500000000},
    ///     "Config": {"Labels": {"bay.managed": "true"}},
    /// }));
    /// assert_eq!((h.pids_limit, h.nano_cpus), (Some(512), Some(500_000_000)));
    /// assert_eq!(h.labels["bay.managed"], "true");
    /// ```
    pub fn read_inspect(&mut self, container: &serde_json::Value) {
        let host = &container["HostConfig"];
        self.pids_limit = host["PidsLimit"].as_i64();
        self.memory_bytes = host["Memory"].as_i64();
        self.nano_cpus = host["NanoCpus"].as_i64();
        self.labels =
            serde_json::from_value(container["Config"]["Labels"].clone()).unwrap_or_default();
    }

    /// Reads the effective capabilities (`CapEff`) and `NoNewPrivs` of a process from its
    /// `/proc/<pid>/status` text (e.g. `cat /proc/1/status` run in the container): what the
    /// kernel enforces, whatever the engine's API says.
    ///
    /// ```
    /// use bay_core::testing::conformance::Hardening;
    /// let mut h = Hardening::default();
    /// h.read_proc_status("Name:\tship\nCapEff:\t00000000000000eb\nNoNewPrivs:\t1\n");
    /// let caps: Vec<&str> = h.capabilities.iter().map(String::as_str).collect();
    /// assert_eq!(caps, ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]);
    /// assert!(h.no_new_privileges);
    /// ```
    pub fn read_proc_status(&mut self, status: &str) {
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim() {
                "CapEff" => {
                    let mask = u64::from_str_radix(value.trim(), 16)
                        .unwrap_or_else(|e| panic!("CapEff {value:?} in /proc/<pid>/status: {e}"));
                    self.capabilities = (0..64)
                        .filter(|bit| mask & (1 << bit) != 0)
                        .map(|bit| {
                            CAPABILITY_NAMES
                                .get(bit)
                                .map_or_else(|| format!("CAP_{bit}"), |n| (*n).to_owned())
                        })
                        .collect();
                }
                "NoNewPrivs" => self.no_new_privileges = value.trim() == "1",
                _ => {}
            }
        }
    }
}

/// What the suite reads back from the engine itself, and the target's resources (removed when
/// the probe is dropped).
#[async_trait]
pub trait Probe: Send + Sync {
    /// A prefix unique to this target instance: lowercase letters and digits, at most 16
    /// characters. Every ship id the suite uses starts with it and `-`.
    fn prefix(&self) -> String;

    /// Labels every container of this target carries (besides `bay.managed` and
    /// `bay.ship-id`): the run's own, by which it cleans up.
    fn labels(&self) -> BTreeMap<String, String>;

    /// Whether the engine has this container (any state).
    async fn container_exists(&self, container_id: &str) -> bool;

    /// Whether the engine still has any of this ship's data (volumes, directories, PVC).
    async fn data_exists(&self, ship_id: &str) -> bool;

    /// The container's hardening, read from the engine (and the kernel).
    async fn hardening(&self, container_id: &str) -> Hardening;

    /// Makes the container's process exit; the container itself stays.
    async fn exit(&self, container_id: &str);

    /// A driver like the target's, configured at an address nobody answers on.
    fn unavailable(&self) -> Arc<dyn ContainerDriver>;
}

/// A driver under test and its probe.
pub struct Target {
    /// For messages (`docker-host`, `podman (compat)`, …).
    pub name: String,
    /// The driver under test, not yet initialised.
    pub driver: Arc<dyn ContainerDriver>,
    /// Reads the engine.
    pub probe: Box<dyn Probe>,
    /// The agent's port when the driver returns a bare IP (default 8123).
    pub container_port: u16,
    /// How many ships the concurrency check creates at once (default 4).
    pub concurrency: usize,
    /// Whether every container has its own address (false for the fake, whose containers all
    /// answer at one fake agent).
    pub distinct_addresses: bool,
    /// How long a new ship's agent may take to answer `/health` (default 120 s).
    pub ready_budget: Duration,
    /// The pids limit the engine must report for a ship: [`PIDS_LIMIT`] (the default) where
    /// the driver sets one per container, `None` where the engine has no such setting for the
    /// driver to set — Kubernetes: a Pod spec has no pids limit, it is the kubelet's
    /// `--pod-max-pids`, a node setting (the check then holds the engine to reporting none
    /// rather than skipping it).
    pub pids_limit: Option<i64>,
    /// Whether a container's id is its name, the same for every container of a ship (false,
    /// the default: engines give each container a new id). Kubernetes: the id is the Pod's
    /// name, `ship-<id>`, so a restored ship has the id of its stopped container; the check
    /// then holds it to exactly that (the old Pod is gone before, as the check sees).
    pub stable_container_ids: bool,
    next: AtomicUsize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target with the default settings.
    pub fn new(
        name: impl Into<String>,
        driver: Arc<dyn ContainerDriver>,
        probe: impl Probe + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            driver,
            probe: Box::new(probe),
            container_port: 8123,
            concurrency: 4,
            distinct_addresses: true,
            ready_budget: Duration::from_secs(120),
            pids_limit: Some(PIDS_LIMIT),
            stable_container_ids: false,
            next: AtomicUsize::new(0),
        }
    }

    /// A new ship id of this target.
    pub fn ship_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        format!("{}-{n}", self.probe.prefix())
    }

    /// A creation request for a new ship of this target (0.5 CPU, 256 MiB).
    pub fn request(&self) -> ShipContainerRequest {
        let ship_id = self.ship_id();
        ShipContainerRequest {
            auth_token: format!("conformance-token-{ship_id}-0123456789abcdef"),
            ship_id,
            spec: EffectiveSpec {
                cpus: Some(CPUS),
                memory_bytes: Some(MEMORY_BYTES),
                disk_bytes: None,
            },
            ttl: 600,
        }
    }

    async fn initialize(&self) {
        self.driver
            .initialize()
            .await
            .unwrap_or_else(|e| panic!("{}: initialize: {e}", self.name));
    }

    /// Creates a ship and waits until its agent answers `/health` with the ship's token.
    async fn create_ready(&self, req: &ShipContainerRequest) -> Ship {
        let info = self
            .driver
            .create_ship_container(req)
            .await
            .unwrap_or_else(|e| panic!("{}: create {}: {e}", self.name, req.ship_id));
        let ship = Ship::new(req, info, self.container_port);
        self.wait_ready(&ship).await;
        ship
    }

    async fn wait_ready(&self, ship: &Ship) {
        let ready = client()
            .wait_ready(
                &ship.endpoint,
                self.ready_budget,
                Duration::from_millis(200),
            )
            .await;
        assert!(
            ready,
            "{}: the agent of {} does not answer /health at {} (returned address {:?})",
            self.name, ship.ship_id, ship.endpoint.authority, ship.info.ip_address
        );
    }

    async fn running(&self, container_id: &str) -> Result<bool, DriverError> {
        self.driver.is_container_running(container_id).await
    }

    /// This target's ships in `list_managed` (others' are ignored), sorted by container id.
    async fn managed(&self) -> Vec<(String, String, bool)> {
        let prefix = format!("{}-", self.probe.prefix());
        let mut mine: Vec<_> = self
            .driver
            .list_managed()
            .await
            .unwrap_or_else(|e| panic!("{}: list_managed: {e}", self.name))
            .into_iter()
            .filter(|m| m.ship_id.starts_with(&prefix))
            .map(|m| (m.container_id, m.ship_id, m.running))
            .collect();
        mine.sort();
        mine
    }

    /// Stops the container and deletes the ship's data; both must succeed.
    async fn remove(&self, ship: &Ship) {
        self.driver
            .stop_ship_container(&ship.info.container_id)
            .await
            .unwrap_or_else(|e| panic!("{}: stop {}: {e}", self.name, ship.ship_id));
        self.driver
            .delete_ship_data(&ship.ship_id)
            .await
            .unwrap_or_else(|e| panic!("{}: delete data of {}: {e}", self.name, ship.ship_id));
    }

    /// Both the driver (`ship_data_exists`) and the engine (the probe) say whether the ship's
    /// data exists, and they agree with `exists`.
    async fn assert_data(&self, ship_id: &str, exists: bool, when: &str) {
        let said = self.driver.ship_data_exists(ship_id).await;
        assert!(
            matches!(said, Ok(e) if e == exists),
            "{}: ship_data_exists of {ship_id} {when}: {said:?}, expected {exists}",
            self.name
        );
        assert_eq!(
            self.probe.data_exists(ship_id).await,
            exists,
            "{}: the engine's data of {ship_id} {when}",
            self.name
        );
    }

    /// Polls `f` every 100 ms until it holds, for at most 60 s (a bound, not a timing check).
    async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !f().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {what} (waited 60 s)",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A ship the suite created.
#[derive(Debug, Clone)]
struct Ship {
    ship_id: String,
    info: ContainerInfo,
    endpoint: ShipEndpoint,
}

impl Ship {
    fn new(req: &ShipContainerRequest, info: ContainerInfo, port: u16) -> Self {
        Self {
            ship_id: req.ship_id.clone(),
            endpoint: ShipEndpoint::new(&info.ip_address, port, &req.auth_token),
            info,
        }
    }
}

fn client() -> ShipClient {
    ShipClient::new(Duration::from_secs(60))
}

fn not_found<T: std::fmt::Debug>(r: &Result<T, DriverError>) -> bool {
    matches!(r, Err(DriverError::NotFound(_)))
}

/// An id no container of this target has.
fn unknown_container(t: &Target) -> String {
    crate::engine::container_name(&format!("{}-missing", t.probe.prefix()))
}

/// Create gives a running container whose agent answers `/health` at the returned address
/// with the ship's token; the engine shows the container.
pub async fn create_runs_and_the_agent_answers(t: Target) {
    t.initialize().await;
    let req = t.request();
    let ship = t.create_ready(&req).await;
    let cid = &ship.info.container_id;
    assert!(!cid.is_empty(), "{}: empty container id", t.name);
    assert!(
        t.probe.container_exists(cid).await,
        "{}: engine lacks {cid}",
        t.name
    );
    assert_eq!(
        t.running(cid).await.ok(),
        Some(true),
        "{}: {cid} running",
        t.name
    );
    t.assert_data(&req.ship_id, true, "of a new ship").await;
    t.remove(&ship).await;
}

/// A file written through the agent survives a stop and comes back with the next container of
/// the same ship (the same session reads it).
pub async fn data_kept_across_stop_and_restore(t: Target) {
    t.initialize().await;
    let req = t.request();
    let ship = t.create_ready(&req).await;
    let content = Bytes::from(format!("kept by {}\n", req.ship_id));
    let path = format!("conformance/{}.txt", req.ship_id);
    let len = content.len() as u64;
    let stored = client()
        .upload(
            &ship.endpoint,
            SESSION,
            &path,
            futures::stream::iter([Ok::<_, std::io::Error>(content.clone())]),
            Some(len),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: upload through the agent: {e}", t.name));
    assert_eq!(
        stored["success"],
        serde_json::json!(true),
        "{}: {stored}",
        t.name
    );

    t.driver
        .stop_ship_container(&ship.info.container_id)
        .await
        .unwrap_or_else(|e| panic!("{}: stop: {e}", t.name));
    assert!(
        !t.probe.container_exists(&ship.info.container_id).await,
        "{}: the container is removed on stop",
        t.name
    );
    t.assert_data(&req.ship_id, true, "after stop").await;

    let again = t.create_ready(&req).await;
    if t.stable_container_ids {
        assert_eq!(
            again.info.container_id, ship.info.container_id,
            "{}: the ship's container id",
            t.name
        );
    } else {
        assert_ne!(
            again.info.container_id, ship.info.container_id,
            "{}: a new container",
            t.name
        );
    }
    let download = client()
        .download(&again.endpoint, SESSION, &path)
        .await
        .unwrap_or_else(|e| panic!("{}: download after restore: {e}", t.name));
    let mut back = Vec::new();
    let mut stream = download.stream;
    while let Some(chunk) = stream.next().await {
        back.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{}: download: {e}", t.name)));
    }
    assert_eq!(back, content.to_vec(), "{}: the file after restore", t.name);
    t.remove(&again).await;
}

/// Stop then `delete_ship_data` leave nothing of the ship: no container, no data, not listed.
pub async fn permanent_delete_removes_the_data(t: Target) {
    t.initialize().await;
    let req = t.request();
    let ship = t.create_ready(&req).await;
    t.remove(&ship).await;
    t.assert_data(&req.ship_id, false, "after delete").await;
    assert!(
        !t.probe.container_exists(&ship.info.container_id).await,
        "{}: the engine still has the container",
        t.name
    );
    assert!(t.managed().await.is_empty(), "{}: still listed", t.name);
}

/// Stopping a container that does not exist (never did, or already stopped) is Ok.
pub async fn stop_of_a_missing_container_is_ok(t: Target) {
    t.initialize().await;
    t.driver
        .stop_ship_container(&unknown_container(&t))
        .await
        .unwrap_or_else(|e| panic!("{}: stop of an unknown container: {e}", t.name));
    let req = t.request();
    let ship = t.create_ready(&req).await;
    t.remove(&ship).await;
    t.driver
        .stop_ship_container(&ship.info.container_id)
        .await
        .unwrap_or_else(|e| panic!("{}: second stop: {e}", t.name));
    assert!(!t.probe.container_exists(&ship.info.container_id).await);
}

/// `is_container_running`: NotFound for an unknown id, true while running, false once its
/// process exited, NotFound after stop.
pub async fn running_checks_tell_running_exited_and_missing_apart(t: Target) {
    t.initialize().await;
    let unknown = t.running(&unknown_container(&t)).await;
    assert!(not_found(&unknown), "{}: unknown id: {unknown:?}", t.name);
    let req = t.request();
    let ship = t.create_ready(&req).await;
    let cid = ship.info.container_id.clone();
    assert_eq!(
        t.running(&cid).await.ok(),
        Some(true),
        "{}: running",
        t.name
    );
    t.probe.exit(&cid).await;
    t.eventually(
        "is_container_running is false once the process exited",
        || async { matches!(t.running(&cid).await, Ok(false)) },
    )
    .await;
    t.remove(&ship).await;
    let gone = t.running(&cid).await;
    assert!(not_found(&gone), "{}: after stop: {gone:?}", t.name);
}

/// Logs: the agent's output, bounded by `tail`; NotFound for an unknown container.
pub async fn logs_are_a_bounded_tail(t: Target) {
    t.initialize().await;
    let unknown = t
        .driver
        .get_container_logs(&unknown_container(&t), 10)
        .await;
    assert!(not_found(&unknown), "{}: unknown id: {unknown:?}", t.name);
    let req = t.request();
    let ship = t.create_ready(&req).await;
    let cid = ship.info.container_id.clone();
    t.eventually("the agent's start-up output shows in the logs", || async {
        t.driver
            .get_container_logs(&cid, 1000)
            .await
            .is_ok_and(|l| !l.trim().is_empty())
    })
    .await;
    for tail in [1u32, 2] {
        let logs = t
            .driver
            .get_container_logs(&cid, tail)
            .await
            .unwrap_or_else(|e| panic!("{}: logs: {e}", t.name));
        let lines = logs.trim_end().lines().count();
        assert!(
            (1..=tail as usize).contains(&lines),
            "{}: tail {tail} gave {lines} lines: {logs:?}",
            t.name
        );
    }
    t.remove(&ship).await;
}

/// `list_managed` lists exactly this target's ships, with the right running flag.
pub async fn list_managed_lists_exactly_the_ships_with_their_state(t: Target) {
    t.initialize().await;
    assert!(
        t.managed().await.is_empty(),
        "{}: listed before any create",
        t.name
    );
    let (a, b) = (t.request(), t.request());
    let ship_a = t.create_ready(&a).await;
    let ship_b = t.create_ready(&b).await;
    t.probe.exit(&ship_b.info.container_id).await;
    t.eventually("b's process exited", || async {
        matches!(t.running(&ship_b.info.container_id).await, Ok(false))
    })
    .await;
    let mut expected = vec![
        (ship_a.info.container_id.clone(), a.ship_id.clone(), true),
        (ship_b.info.container_id.clone(), b.ship_id.clone(), false),
    ];
    expected.sort();
    assert_eq!(t.managed().await, expected, "{}: list_managed", t.name);
    t.remove(&ship_a).await;
    assert_eq!(
        t.managed().await,
        vec![(ship_b.info.container_id.clone(), b.ship_id.clone(), false)],
        "{}: list_managed after a stop",
        t.name
    );
    t.remove(&ship_b).await;
    assert!(
        t.managed().await.is_empty(),
        "{}: listed after removal",
        t.name
    );
}

/// Kept capabilities, no-new-privileges, pids, memory and CPU limits and labels, as the engine
/// reports them.
pub async fn hardening_is_read_back_from_the_engine(t: Target) {
    t.initialize().await;
    let req = t.request();
    let ship = t.create_ready(&req).await;
    let h = t.probe.hardening(&ship.info.container_id).await;
    let caps: BTreeSet<String> = h
        .capabilities
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
        .collect();
    let kept: BTreeSet<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(caps, kept, "{}: capabilities", t.name);
    assert!(h.no_new_privileges, "{}: no-new-privileges", t.name);
    assert_eq!(h.pids_limit, t.pids_limit, "{}: pids limit", t.name);
    assert_eq!(
        h.memory_bytes,
        i64::try_from(MEMORY_BYTES).ok(),
        "{}: memory limit",
        t.name
    );
    assert_eq!(h.nano_cpus, Some(500_000_000), "{}: CPU limit", t.name);
    let mut wanted = t.probe.labels();
    wanted.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    wanted.insert(LABEL_SHIP_ID.to_owned(), req.ship_id.clone());
    for (k, v) in &wanted {
        assert_eq!(
            h.labels.get(k),
            Some(v),
            "{}: label {k}: {:?}",
            t.name,
            h.labels
        );
    }
    t.remove(&ship).await;
}

/// `concurrency` creates at once give distinct running ships whose agents answer, and no
/// other container; removing them all at once leaves nothing.
pub async fn concurrent_creates_give_distinct_running_ships_without_orphans(t: Target) {
    t.initialize().await;
    let reqs: Vec<_> = (0..t.concurrency).map(|_| t.request()).collect();
    let results =
        futures::future::join_all(reqs.iter().map(|r| t.driver.create_ship_container(r))).await;
    let mut ships = Vec::new();
    for (req, result) in reqs.iter().zip(results) {
        let info = result.unwrap_or_else(|e| panic!("{}: create {}: {e}", t.name, req.ship_id));
        ships.push(Ship::new(req, info, t.container_port));
    }
    let ids: HashSet<_> = ships.iter().map(|s| s.info.container_id.clone()).collect();
    assert_eq!(ids.len(), ships.len(), "{}: distinct container ids", t.name);
    if t.distinct_addresses {
        let addrs: HashSet<_> = ships.iter().map(|s| s.endpoint.authority.clone()).collect();
        assert_eq!(addrs.len(), ships.len(), "{}: distinct addresses", t.name);
    }
    futures::future::join_all(ships.iter().map(|s| t.wait_ready(s))).await;
    for s in &ships {
        assert_eq!(
            t.running(&s.info.container_id).await.ok(),
            Some(true),
            "{}",
            t.name
        );
    }
    let mut expected: Vec<_> = ships
        .iter()
        .map(|s| (s.info.container_id.clone(), s.ship_id.clone(), true))
        .collect();
    expected.sort();
    assert_eq!(
        t.managed().await,
        expected,
        "{}: one container per ship",
        t.name
    );
    futures::future::join_all(ships.iter().map(|s| t.remove(s))).await;
    assert!(t.managed().await.is_empty(), "{}: containers left", t.name);
    for s in &ships {
        t.assert_data(&s.ship_id, false, "after delete").await;
    }
}

/// NotFound is only said of what does not exist; an engine that does not answer is
/// Unavailable (transient) on every call, never NotFound and never a silent Ok.
pub async fn not_found_and_unavailable_are_told_apart(t: Target) {
    t.initialize().await;
    let missing = unknown_container(&t);
    let r = t.running(&missing).await;
    assert!(not_found(&r), "{}: is_container_running: {r:?}", t.name);
    let r = t.driver.get_container_logs(&missing, 10).await;
    assert!(not_found(&r), "{}: get_container_logs: {r:?}", t.name);

    let dead = t.probe.unavailable();
    let id = format!("{}-dead", t.probe.prefix());
    let container = crate::engine::container_name(&id);
    let req = ShipContainerRequest {
        ship_id: id.clone(),
        ..t.request()
    };
    let errors = [
        ("initialize", dead.initialize().await.err()),
        (
            "create_ship_container",
            dead.create_ship_container(&req).await.err(),
        ),
        (
            "stop_ship_container",
            dead.stop_ship_container(&container).await.err(),
        ),
        ("ship_data_exists", dead.ship_data_exists(&id).await.err()),
        (
            "get_container_logs",
            dead.get_container_logs(&container, 10).await.err(),
        ),
        (
            "is_container_running",
            dead.is_container_running(&container).await.err(),
        ),
        ("delete_ship_data", dead.delete_ship_data(&id).await.err()),
        ("list_managed", dead.list_managed().await.err()),
    ];
    for (call, err) in errors {
        match err {
            Some(e) if e.is_transient() => {}
            other => panic!("{}: {call} on an engine nobody answers: {other:?}", t.name),
        }
    }
}

/// `delete_ship_data` of data that never existed, or is already gone, is Ok.
pub async fn delete_of_missing_data_is_ok(t: Target) {
    t.initialize().await;
    let id = t.ship_id();
    for round in 0..2 {
        t.driver
            .delete_ship_data(&id)
            .await
            .unwrap_or_else(|e| panic!("{}: delete of missing data ({round}): {e}", t.name));
    }
    t.assert_data(&id, false, "never created").await;
}

/// What a target constructor of [`conformance_tests!`](crate::conformance_tests) gives: a
/// [`Target`], or `Option<Target>` for a target whose engine may be absent (`None`: the check is
/// skipped; the constructor says so loudly, or panics where absence is a failure, as in CI).
pub trait MaybeTarget {
    /// The target to check, if any.
    fn into_target(self) -> Option<Target>;
}

impl MaybeTarget for Target {
    fn into_target(self) -> Option<Target> {
        Some(self)
    }
}

impl MaybeTarget for Option<Target> {
    fn into_target(self) -> Option<Target> {
        self
    }
}

/// One `#[tokio::test]` per conformance check, in a module `$name`, each on a new target built
/// by the async expression `$target` (evaluated inside that module, which imports the caller's
/// items with `use super::*`; the expression must use one of them). It gives a [`Target`] or an
/// `Option<Target>` ([`MaybeTarget`]):
///
/// ```text
/// bay_core::conformance_tests!(docker_host => docker_target("docker-host"));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (@checks $name:ident => $target:expr; $($check:ident),+) => {
        mod $name {
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(target) =
                        $crate::testing::conformance::MaybeTarget::into_target($target.await)
                    {
                        $crate::testing::conformance::$check(target).await;
                    }
                }
            )+
        }
    };
    ($name:ident => $target:expr) => {
        $crate::conformance_tests!(@checks $name => $target;
            create_runs_and_the_agent_answers,
            data_kept_across_stop_and_restore,
            permanent_delete_removes_the_data,
            stop_of_a_missing_container_is_ok,
            running_checks_tell_running_exited_and_missing_apart,
            logs_are_a_bounded_tail,
            list_managed_lists_exactly_the_ships_with_their_state,
            hardening_is_read_back_from_the_engine,
            concurrent_creates_give_distinct_running_ships_without_orphans,
            not_found_and_unavailable_are_told_apart,
            delete_of_missing_data_is_ok
        );
    };
}

/// The [`FakeDriver`](super::FakeDriver) as a target: its containers are records that all
/// answer at one in-process [`FakeShip`](super::FakeShip) (whose uploads stay in memory, so data
/// "survives" a stop as it does on an engine); the probe reads the fake's state.
pub async fn fake() -> Target {
    let ship = super::FakeShip::start().await;
    let driver = super::FakeDriver::new(ship.address());
    let prefix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut target = Target::new(
        "fake",
        Arc::new(driver.clone()),
        FakeProbe {
            driver,
            _ship: ship,
            prefix,
        },
    );
    target.distinct_addresses = false;
    target.concurrency = 20;
    target.ready_budget = Duration::from_secs(10);
    target
}

/// The probe of [`fake`]: the fake's own records are its "engine".
struct FakeProbe {
    driver: super::FakeDriver,
    _ship: super::FakeShip,
    prefix: String,
}

#[async_trait]
impl Probe for FakeProbe {
    fn prefix(&self) -> String {
        self.prefix.clone()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    async fn container_exists(&self, container_id: &str) -> bool {
        self.driver
            .containers()
            .iter()
            .any(|c| c.container_id == container_id)
    }

    async fn data_exists(&self, ship_id: &str) -> bool {
        self.driver.data().contains(ship_id)
    }

    /// The fake applies the engine contract of `bay_core::engine` to every container.
    async fn hardening(&self, container_id: &str) -> Hardening {
        let spec = self
            .driver
            .spec_of(container_id)
            .unwrap_or_else(|| panic!("fake: no container {container_id}"));
        let ship_id = self
            .driver
            .containers()
            .into_iter()
            .find(|c| c.container_id == container_id)
            .map(|c| c.ship_id)
            .unwrap_or_default();
        Hardening {
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            no_new_privileges: true,
            pids_limit: Some(PIDS_LIMIT),
            memory_bytes: spec.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            #[expect(clippy::cast_possible_truncation)]
            nano_cpus: spec.cpus.map(|c| (c * 1e9).round() as i64),
            labels: crate::engine::labels(&BTreeMap::new(), Some(&ship_id)),
        }
    }

    async fn exit(&self, container_id: &str) {
        self.driver.exit(container_id);
    }

    fn unavailable(&self) -> Arc<dyn ContainerDriver> {
        use super::Op;
        let dead = super::FakeDriver::new("127.0.0.1:1");
        for op in [
            Op::Initialize,
            Op::Create,
            Op::Stop,
            Op::DataExists,
            Op::Logs,
            Op::IsRunning,
            Op::DeleteData,
            Op::ListManaged,
        ] {
            dead.fail(op, DriverError::Unavailable("nobody answers".into()), None);
        }
        Arc::new(dead)
    }
}
