//! Shared harness of the Docker tests: a test run with its own network and labels, a
//! `ShipService` with the real Docker driver over a temporary SQLite database, and cleanup of
//! everything the run created (on drop, even when the test fails, and of stale runs at start).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bay_core::config::Config;
use bay_core::service::ShipService;
use bay_driver_docker::{DockerDriver, DockerSettings};
use bollard::Docker;
use bollard::models::ContainerInspectResponse;

/// The label every test resource carries.
pub const TEST_LABEL: &str = "bay.test";
/// Its value for this crate's tests.
pub const TEST_LABEL_VALUE: &str = "docker-driver";
/// Label naming the run (one per test).
pub const RUN_LABEL: &str = "bay.test-run";
/// Label with the run's start (unix seconds), to sweep runs whose process died.
pub const STARTED_LABEL: &str = "bay.test-started";
/// The ship image the tests use.
pub const IMAGE: &str = "ship:latest";

/// One test's resources: a network `bay-test-<id>`, labels, a temporary directory.
pub struct Run {
    pub id: String,
    pub network: String,
    pub labels: BTreeMap<String, String>,
    pub dir: tempfile::TempDir,
}

impl Run {
    /// A new run. Fails the test when the engine does not answer or the ship image is missing.
    pub fn new() -> Self {
        init_tracing();
        require_image();
        sweep_stale_runs();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let labels = BTreeMap::from([
            (TEST_LABEL.to_owned(), TEST_LABEL_VALUE.to_owned()),
            (RUN_LABEL.to_owned(), id.clone()),
            (STARTED_LABEL.to_owned(), started.to_string()),
        ]);
        Self {
            network: format!("bay-test-{id}"),
            id,
            labels,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("bay.db")
    }

    /// The configuration of a Bay for this run (`mode` = `docker` or `docker-host`).
    pub fn pairs(&self, mode: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}", self.db().display()),
            ),
            ("CONTAINER_DRIVER".into(), mode.into()),
            ("DOCKER_NETWORK".into(), self.network.clone()),
            ("DOCKER_IMAGE".into(), IMAGE.into()),
            ("MAX_SHIP_NUM".into(), "0".into()),
            ("SHIP_HEALTH_CHECK_TIMEOUT".into(), "60".into()),
            ("SHIP_READY_POLL_MS".into(), "50".into()),
            ("STATUS_CHECK_INTERVAL".into(), "3600".into()),
            ("ACCESS_TOKEN".into(), "test-token".into()),
        ];
        for (k, v) in extra {
            pairs.retain(|(key, _)| key != k);
            pairs.push(((*k).into(), (*v).into()));
        }
        pairs
    }

    pub fn config(&self, mode: &str, extra: &[(&str, &str)]) -> Config {
        Config::from_pairs(self.pairs(mode, extra)).expect("valid test configuration")
    }

    /// A driver for `config`, labelling everything with this run's labels.
    pub fn driver(&self, config: &Config) -> Arc<DockerDriver> {
        let mut settings = DockerSettings::from_config(config).expect("docker settings");
        settings.extra_labels = self.labels.clone();
        Arc::new(DockerDriver::new(settings))
    }

    /// A started `ShipService` with the Docker driver.
    pub async fn bay(&self, mode: &str, extra: &[(&str, &str)]) -> Bay {
        let config = self.config(mode, extra);
        let driver = self.driver(&config);
        let service = ShipService::start(config, driver.clone())
            .await
            .expect("the ship service starts with the docker driver");
        Bay { service, driver }
    }

    /// Ids of this run's containers (all states), optionally only ship containers.
    pub fn containers(&self, managed_only: bool) -> Vec<String> {
        let mut args = vec![
            "ps".to_owned(),
            "-aq".to_owned(),
            "--no-trunc".to_owned(),
            "--filter".to_owned(),
            format!("label={RUN_LABEL}={}", self.id),
        ];
        if managed_only {
            args.extend([
                "--filter".to_owned(),
                format!("label={}", bay_core::engine::managed_filter()),
            ]);
        }
        lines(docker_cli(&args))
    }

    /// Names of this run's volumes.
    pub fn volumes(&self) -> Vec<String> {
        lines(docker_cli(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label={RUN_LABEL}={}", self.id),
        ]))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        remove_run(&self.id);
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A ship service and the driver it uses.
pub struct Bay {
    pub service: ShipService,
    pub driver: Arc<DockerDriver>,
}

impl Bay {
    pub async fn docker(&self) -> Docker {
        self.driver.client().await.expect("docker answers")
    }

    pub async fn inspect(&self, container: &str) -> ContainerInspectResponse {
        self.docker()
            .await
            .inspect_container(container, None)
            .await
            .expect("container exists")
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,bay_driver_docker=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Fails (never skips) when the engine or the ship image is missing.
fn require_image() {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "the ship image {IMAGE} is missing (docker said: {}): build it with `cargo xtask ship-image` \
         before running these tests",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn docker_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(text: String) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Removes every container, volume and network of a run.
fn remove_run(run: &str) {
    let filter = format!("label={RUN_LABEL}={run}");
    let containers = lines(docker_cli(&["ps", "-aq", "--filter", &filter]));
    if !containers.is_empty() {
        // `-v`: a container made without Bay's mounts (the kubelet look-alikes) has anonymous
        // volumes for the image's VOLUMEs.
        let mut args = vec!["rm".to_owned(), "-f".to_owned(), "-v".to_owned()];
        args.extend(containers);
        docker_cli(&args);
    }
    let volumes = lines(docker_cli(&["volume", "ls", "-q", "--filter", &filter]));
    if !volumes.is_empty() {
        let mut args = vec!["volume".to_owned(), "rm".to_owned(), "-f".to_owned()];
        args.extend(volumes);
        docker_cli(&args);
    }
    for net in lines(docker_cli(&["network", "ls", "-q", "--filter", &filter])) {
        docker_cli(&["network", "rm", &net]);
    }
}

/// Removes the leftovers of runs older than an hour (a test process that was killed).
fn sweep_stale_runs() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let filter = format!("label={TEST_LABEL}={TEST_LABEL_VALUE}");
    let format = format!("{{{{.Label \"{RUN_LABEL}\"}}}} {{{{.Label \"{STARTED_LABEL}\"}}}}");
    let mut stale = Vec::new();
    for listing in [
        docker_cli(&["ps", "-a", "--filter", &filter, "--format", &format]),
        docker_cli(&["volume", "ls", "--filter", &filter, "--format", &format]),
        docker_cli(&["network", "ls", "--filter", &filter, "--format", &format]),
    ] {
        for line in lines(listing) {
            let mut parts = line.split_whitespace();
            let (Some(run), Some(started)) = (parts.next(), parts.next()) else {
                continue;
            };
            if started
                .parse::<u64>()
                .is_ok_and(|s| s + 3600 < now && !stale.contains(&run.to_owned()))
            {
                stale.push(run.to_owned());
            }
        }
    }
    for run in stale {
        remove_run(&run);
    }
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `create_loop` example binary, built if cargo has not built it yet.
pub fn create_loop_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/examples/create_loop
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let binary = profile_dir.join("examples").join("create_loop");
    // `cargo test` (and nextest) build the examples with the tests: use that build when it is
    // at least as new as this test binary, else ask cargo for it.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(example), Some(test)) = (modified(&binary), modified(&exe))
        && example + Duration::from_secs(600) >= test
    {
        return binary;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "bay-driver-docker",
            "--example",
            "create_loop",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the create_loop example failed");
    assert!(binary.exists(), "{} is missing", binary.display());
    binary
}
