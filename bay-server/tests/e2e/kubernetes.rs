//! End to end with Kubernetes: the real `bay-server` binary with `CONTAINER_DRIVER=kubernetes`
//! against the single-node cluster `cargo xtask test` starts (`BAY_TEST_KUBECONFIG`,
//! `BAY_TEST_KUBE_NAMESPACE`; or `cargo xtask with-kube -- …`): a ship is a Pod reached by its
//! IP, runs shell and Python, is restored with its files from its PVC, and a permanent delete
//! removes the PVC. Skips loudly without the cluster, fails without it under `CI=true`.
//! Everything of the test's ships is deleted at the end, even on failure.

use reqwest::Method as M;
use reqwest::StatusCode;
use serde_json::json;

use bay_test_support::kube::Cluster;

use super::{Api, Bay, Engine, image};

/// Deletes the Pods, PVCs and Secrets of the ships it names when dropped.
struct Ships(Cluster, Vec<String>);

impl Drop for Ships {
    fn drop(&mut self) {
        for id in &self.1 {
            self.0
                .delete_labelled(&format!("{}={id}", bay_core::engine::LABEL_SHIP_ID));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_runs_shell_and_python_in_a_pod() {
    let Some(cluster) = Cluster::from_env("kubernetes_runs_shell_and_python_in_a_pod") else {
        return;
    };
    let (kubeconfig, namespace) = (cluster.kubeconfig.clone(), cluster.namespace.clone());
    // The node's kubelet uses the local Docker Engine, so the image is checked there.
    let bay = Bay::start_with(
        Engine::Docker,
        "e2e-kube",
        &image(),
        &[
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_CONFIG_PATH", &kubeconfig),
            ("KUBE_NAMESPACE", &namespace),
            ("KUBE_IMAGE_PULL_POLICY", "Never"),
            ("KUBE_PVC_SIZE", "200Mi"),
            ("SHIP_HEALTH_CHECK_TIMEOUT", "180"),
            ("MAX_SHIP_NUM", "2"),
        ],
    );
    let api = Api::new(&bay.url);
    let mut ships = Ships(cluster.clone(), Vec::new());

    let (s, ship) = api
        .json(
            M::POST,
            "/ship",
            Some("alice"),
            Some(json!({"ttl": 600, "spec": {"cpus": 0.25, "memory": "256m"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ship}");
    let id = ship["id"].as_str().unwrap().to_owned();
    ships.1.push(id.clone());
    assert_eq!(ship["status"], 1);
    let pod = ship["container_id"].as_str().unwrap().to_owned();
    assert_eq!(pod, format!("ship-{id}"));
    let ip = ship["ip_address"].as_str().unwrap();
    assert!(
        ip.parse::<std::net::IpAddr>().is_ok(),
        "a Pod IP (network mode): {ship}"
    );
    let limits = cluster.kubectl(&[
        "get",
        "pod",
        &pod,
        "-o",
        "jsonpath={.spec.containers[0].resources.limits.memory}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&limits.stdout).trim(),
        "256Mi",
        "`256m` reached Kubernetes as mebibytes"
    );

    api.shell_and_python(&id, "alice").await;

    // Soft delete removes the Pod and keeps the PVC; /start restores the files.
    api.delete(&format!("/ship/{id}")).await;
    assert!(
        cluster.kubectl(&["get", "pvc", &pod]).status.success(),
        "PVC kept"
    );
    api.start(&id, "alice").await;
    api.note_survived(&id, "alice").await;
    let (s, logs) = api
        .json(M::GET, &format!("/ship/logs/{id}?tail=20"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{logs}");

    // Permanent delete removes the PVC too.
    api.delete(&format!("/ship/{id}/permanent")).await;
    let left = cluster.kubectl(&[
        "get",
        "pods,persistentvolumeclaims,secrets",
        "-l",
        &format!("{}={id}", bay_core::engine::LABEL_SHIP_ID),
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        left.lines()
            .all(|l| l.trim().is_empty() || l.split_whitespace().nth(1).is_some()),
        "everything of the ship is gone or being deleted: {left}"
    );
}
