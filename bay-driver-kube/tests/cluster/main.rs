//! The Kubernetes driver against a real cluster: the single-node Kubernetes that
//! `cargo xtask test` (or `cargo xtask with-kube -- <command>`) builds and starts, named by
//! `BAY_TEST_KUBECONFIG` and `BAY_TEST_KUBE_NAMESPACE` (see `bay_test_support::kube`). Without
//! them these tests skip with a loud message, except under `CI=true`, where they fail.
//! Everything a test creates carries `bay.test-run=<id>` (and its ship ids start with that id)
//! and is deleted at the end, even when the test fails: tests running in parallel in the one
//! namespace never see each other's ships.

mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bay_core::config::Config;
use bay_core::driver::{ContainerDriver, ShipContainerRequest};
use bay_core::model::EffectiveSpec;
use bay_driver_kube::{KubeDriver, KubeSettings};
use bay_test_support::kube::Cluster;

/// The label naming a test's run.
const RUN_LABEL: &str = "bay.test-run";
/// The label every object of these tests carries, and its value.
const TEST_LABEL: (&str, &str) = ("bay.test", "kube-driver");
/// The ship image (present in the node's Docker Engine, used with pull policy `Never`).
const IMAGE: &str = "ship:slim";

/// One test's run: its id and the cluster; deletes everything labelled with its id on drop.
struct Run {
    id: String,
    cluster: Cluster,
}

impl Run {
    /// `None` (the test skips, loudly) when there is no cluster outside CI.
    fn new(test: &str) -> Option<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,bay_driver_kube=debug")
            .with_test_writer()
            .try_init();
        let cluster = Cluster::from_env(test)?;
        Some(Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..10].to_owned(),
            cluster,
        })
    }

    fn kubectl_ok(&self, args: &[&str], what: &str) -> String {
        self.cluster.kubectl_ok(args, what)
    }

    /// The labels of this run.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TEST_LABEL.0.to_owned(), TEST_LABEL.1.to_owned()),
            (RUN_LABEL.to_owned(), self.id.clone()),
        ])
    }

    /// The driver's settings for this run, on the API server of `kubeconfig`.
    fn settings(&self, kubeconfig: &str) -> KubeSettings {
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_CONFIG_PATH", kubeconfig),
            ("KUBE_NAMESPACE", self.cluster.namespace.as_str()),
            ("KUBE_IMAGE_PULL_POLICY", "Never"),
            ("KUBE_PVC_SIZE", "100Mi"),
            ("DOCKER_IMAGE", IMAGE),
            ("SHIP_HEALTH_CHECK_TIMEOUT", "180"),
        ])
        .expect("test configuration");
        let mut settings = KubeSettings::from_config(&config).expect("settings");
        settings.extra_labels = self.labels();
        settings
    }

    fn driver(&self) -> Arc<KubeDriver> {
        Arc::new(KubeDriver::new(self.settings(&self.cluster.kubeconfig)))
    }

    fn request(&self, n: u32) -> ShipContainerRequest {
        ShipContainerRequest {
            ship_id: format!("{}-{n}", self.id),
            spec: EffectiveSpec {
                cpus: Some(0.25),
                memory_bytes: Some(256 << 20),
                disk_bytes: None,
            },
            auth_token: format!("token-{}-{n}", self.id),
            ttl: 600,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.cluster
            .delete_labelled(&format!("{RUN_LABEL}={}", self.id));
    }
}

/// `GET /health` of the agent at `ip` (port 8123), polled for at most 60 s.
async fn healthy(ip: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        for _ in 0..120 {
            if let Ok(mut s) = std::net::TcpStream::connect((ip.as_str(), 8123)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "GET /health HTTP/1.1\r\nHost: ship\r\nConnection: close\r\n\r\n"
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_a_real_cluster() {
    let Some(run) = Run::new("lifecycle_on_a_real_cluster") else {
        return;
    };
    let driver = run.driver();
    driver.initialize().await.expect("initialize");
    let req = run.request(1);
    let pod = format!("ship-{}", req.ship_id);

    let info = driver.create_ship_container(&req).await.expect("create");
    assert_eq!(info.container_id, pod);
    assert!(
        info.ip_address.parse::<std::net::IpAddr>().is_ok(),
        "a pod IP: {info:?}"
    );
    assert!(healthy(info.ip_address.clone()).await, "agent at {info:?}");
    assert!(driver.is_container_running(&pod).await.unwrap());
    assert!(driver.ship_data_exists(&req.ship_id).await.unwrap());
    let listed = driver.list_managed().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|m| m.container_id == pod && m.ship_id == req.ship_id && m.running),
        "{listed:?}"
    );
    let _logs = driver.get_container_logs(&pod, 20).await.expect("logs");

    // What the cluster made of the Pod: limits, capabilities, the token from the Secret.
    let spec = run.kubectl_ok(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.spec.containers[0].resources.limits.memory} {.spec.containers[0].securityContext.capabilities.drop[0]} {.spec.containers[0].env[0].valueFrom.secretKeyRef.name}",
        ],
        "get pod",);
    assert_eq!(spec.trim(), format!("256Mi ALL {pod}"));

    // Data survives a stop and a restore.
    run.kubectl_ok(
        &["exec", &pod, "--", "sh", "-c", "echo kept > /home/marker"],
        "write a file",
    );
    driver.stop_ship_container(&pod).await.expect("stop");
    assert!(matches!(
        driver.is_container_running(&pod).await,
        Err(bay_core::driver::DriverError::NotFound(_))
    ));
    assert!(
        driver.ship_data_exists(&req.ship_id).await.unwrap(),
        "data kept"
    );
    let mut again = req.clone();
    again.auth_token = format!("{}-second", req.auth_token);
    let info = driver.create_ship_container(&again).await.expect("restore");
    assert!(healthy(info.ip_address.clone()).await);
    let marker = run.kubectl_ok(
        &["exec", &pod, "--", "cat", "/home/marker"],
        "read the file",
    );
    assert_eq!(marker.trim(), "kept");

    // Permanent delete.
    driver.stop_ship_container(&pod).await.expect("stop");
    driver
        .delete_ship_data(&req.ship_id)
        .await
        .expect("delete data");
    assert!(!driver.ship_data_exists(&req.ship_id).await.unwrap());
    let left = run.kubectl_ok(
        &[
            "get",
            "pods,secrets",
            "-l",
            &format!("bay.ship-id={}", req.ship_id),
            "-o",
            "name",
        ],
        "list leftovers",
    );
    assert!(left.trim().is_empty(), "left: {left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifests_are_accepted_by_the_cluster() {
    let Some(cluster) = Cluster::from_env("the_manifests_are_accepted_by_the_cluster") else {
        return;
    };
    let namespace = &cluster.namespace;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let tmp = tempfile::tempdir().unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("kind: Namespace") {
            // Cluster-scoped: checked as it is.
            cluster.kubectl_ok(
                &["apply", "--dry-run=server", "-f", path.to_str().unwrap()],
                "the namespace",
            );
            continue;
        }
        // The namespaced objects go into the test namespace (the `bay` one is not created by a
        // dry run).
        let text = text.replace("namespace: bay\n", &format!("namespace: {namespace}\n"));
        std::fs::write(tmp.path().join(path.file_name().unwrap()), text).unwrap();
        files += 1;
    }
    assert!(files >= 5, "found the manifests in {}", dir.display());
    let out = cluster.kubectl_ok(
        &[
            "apply",
            "--dry-run=server",
            "-f",
            tmp.path().to_str().unwrap(),
        ],
        "kubectl apply --dry-run=server -f deploy/k8s/",
    );
    for object in [
        "serviceaccount/bay",
        "role.rbac.authorization.k8s.io/bay-ships",
        "rolebinding.rbac.authorization.k8s.io/bay-ships",
        "configmap/bay-config",
        "secret/bay-access-token",
        "persistentvolumeclaim/bay-data",
        "deployment.apps/bay",
        "service/bay",
    ] {
        assert!(out.contains(object), "{object} missing from: {out}");
    }
}
