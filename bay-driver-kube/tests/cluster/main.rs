//! The Kubernetes driver against a real cluster: the single-node Kubernetes that
//! `cargo xtask test` (or `cargo xtask with-kube -- <command>`) starts, named by
//! `BAY_TEST_KUBECONFIG` and `BAY_TEST_KUBE_NAMESPACE`. Without them these tests fail (they
//! never skip) and say how to run them. Everything a test creates carries `bay.test-run=<id>`
//! and is deleted at the end, even when the test fails.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bay_core::config::Config;
use bay_core::driver::{ContainerDriver, ShipContainerRequest};
use bay_core::model::EffectiveSpec;
use bay_driver_kube::{KubeDriver, KubeSettings};

const RUN_LABEL: &str = "bay.test-run";
/// The ship image (present in the node's Docker Engine, used with pull policy `Never`).
const IMAGE: &str = "ship:slim";

/// The kubeconfig and namespace of the test cluster.
fn cluster() -> (String, String) {
    let get =
        |var: &str| {
            std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
            panic!(
                "{var} is not set: these tests need the real single-node Kubernetes; run them \
                 with `cargo xtask test`, or `cargo xtask with-kube -- cargo nextest run -p \
                 bay-driver-kube` (it starts the cluster and sets BAY_TEST_KUBECONFIG and \
                 BAY_TEST_KUBE_NAMESPACE)"
            )
        })
        };
    (get("BAY_TEST_KUBECONFIG"), get("BAY_TEST_KUBE_NAMESPACE"))
}

/// Runs `kubectl` on the test cluster.
fn kubectl(args: &[&str]) -> std::process::Output {
    let (kubeconfig, namespace) = cluster();
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", &namespace])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs")
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's labels; deletes everything labelled with its run id on drop.
struct Run {
    id: String,
}

impl Run {
    fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,bay_driver_kube=debug")
            .with_test_writer()
            .try_init();
        let _ = cluster();
        Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..10].to_owned(),
        }
    }

    fn driver(&self) -> Arc<KubeDriver> {
        let (kubeconfig, namespace) = cluster();
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_CONFIG_PATH", kubeconfig.as_str()),
            ("KUBE_NAMESPACE", namespace.as_str()),
            ("KUBE_IMAGE_PULL_POLICY", "Never"),
            ("KUBE_PVC_SIZE", "100Mi"),
            ("DOCKER_IMAGE", IMAGE),
            ("SHIP_HEALTH_CHECK_TIMEOUT", "180"),
        ])
        .expect("test configuration");
        let mut settings = KubeSettings::from_config(&config).expect("settings");
        settings.extra_labels = BTreeMap::from([
            ("bay.test".to_owned(), "kube-driver".to_owned()),
            (RUN_LABEL.to_owned(), self.id.clone()),
        ]);
        Arc::new(KubeDriver::new(settings))
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
        let selector = format!("{RUN_LABEL}={}", self.id);
        let _ = kubectl(&[
            "delete",
            "pods,persistentvolumeclaims,secrets",
            "-l",
            &selector,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ]);
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
#[ignore = "needs a real cluster (BAY_TEST_KUBECONFIG); the cluster set-up of `cargo xtask test` has not landed yet: run with `cargo nextest run --run-ignored all` against a cluster"]
async fn lifecycle_on_a_real_cluster() {
    let run = Run::new();
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
    let spec = ok(
        &kubectl(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.spec.containers[0].resources.limits.memory} {.spec.containers[0].securityContext.capabilities.drop[0]} {.spec.containers[0].env[0].valueFrom.secretKeyRef.name}",
        ]),
        "get pod",
    );
    assert_eq!(spec.trim(), format!("256Mi ALL {pod}"));

    // Data survives a stop and a restore.
    ok(
        &kubectl(&["exec", &pod, "--", "sh", "-c", "echo kept > /home/marker"]),
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
    let marker = ok(
        &kubectl(&["exec", &pod, "--", "cat", "/home/marker"]),
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
    let left = ok(
        &kubectl(&[
            "get",
            "pods,secrets",
            "-l",
            &format!("bay.ship-id={}", req.ship_id),
            "-o",
            "name",
        ]),
        "list leftovers",
    );
    assert!(left.trim().is_empty(), "left: {left}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a real cluster (BAY_TEST_KUBECONFIG); the cluster set-up of `cargo xtask test` has not landed yet: run with `cargo nextest run --run-ignored all` against a cluster"]
async fn the_manifests_are_accepted_by_the_cluster() {
    let (_, namespace) = cluster();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let tmp = tempfile::tempdir().unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("kind: Namespace") {
            // Cluster-scoped: checked as it is.
            ok(
                &kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]),
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
    let out = ok(
        &kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            tmp.path().to_str().unwrap(),
        ]),
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
