//! Every call of the Kubernetes driver against a simulated API server ([`fake`]): the objects
//! it creates, the order of its requests, error classification, readiness by watch, and the
//! restore next to a dead Pod that keeps the ship's PVC.

mod fake;

use std::time::Duration;

use bay_core::config::Config;
use bay_core::driver::{ContainerDriver, DriverError, ShipContainerRequest};
use bay_core::model::EffectiveSpec;
use bay_driver_kube::KubeSettings;
use fake::{Fake, Fate, NS, POD_IP, Reply};
use http::Method;
use serde_json::{Value, json};

fn settings() -> KubeSettings {
    let config = Config::from_pairs([
        ("CONTAINER_DRIVER", "kubernetes"),
        ("KUBE_NAMESPACE", NS),
        ("KUBE_IMAGE_PULL_POLICY", "Never"),
        ("KUBE_STORAGE_CLASS", "local"),
        ("KUBE_PVC_SIZE", "2g"),
        ("DOCKER_IMAGE", "ship:test"),
    ])
    .unwrap();
    let mut s = KubeSettings::from_config(&config).unwrap();
    s.extra_labels.insert("bay.test".into(), "mock".into());
    s
}

fn request(id: &str) -> ShipContainerRequest {
    ShipContainerRequest {
        ship_id: id.to_owned(),
        spec: EffectiveSpec {
            cpus: Some(0.5),
            memory_bytes: Some(256 << 20),
            disk_bytes: None,
        },
        auth_token: "secret-token-123".to_owned(),
        ttl: 600,
    }
}

fn pod(name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bay.managed": "true", "bay.ship-id": &name[5..]}},
        "spec": {"containers": [{"name": "ship", "image": "ship:test"}]},
        "status": {"phase": phase},
    })
}

fn pvc(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"bay.managed": "true"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"},
    })
}

fn mutating(fake: &Fake) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .map(|r| r.split('?').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn create_makes_pvc_secret_and_a_hardened_pod_and_waits_for_readiness() {
    let (fake, driver) = Fake::start(settings());
    let info = driver.create_ship_container(&request("s1")).await.unwrap();
    assert_eq!(info.container_id, "ship-s1");
    assert_eq!(info.ip_address, POD_IP);

    let base = format!("/api/v1/namespaces/{NS}");
    assert_eq!(
        mutating(&fake),
        [
            format!("POST {base}/persistentvolumeclaims"),
            format!("POST {base}/secrets"),
            format!("POST {base}/pods"),
        ]
    );
    assert!(
        fake.count("GET", "watch=true") >= 1,
        "readiness is awaited with a watch: {:?}",
        fake.requests()
    );

    let claim = fake.get("persistentvolumeclaims", "ship-s1").unwrap();
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["spec"]["storageClassName"], "local");
    assert_eq!(claim["metadata"]["labels"]["bay.managed"], "true");
    assert_eq!(claim["metadata"]["labels"]["bay.ship-id"], "s1");
    assert_eq!(claim["metadata"]["labels"]["bay.test"], "mock");

    let secret = fake.get("secrets", "ship-s1").unwrap();
    assert_eq!(secret["stringData"]["SHIP_AUTH_TOKEN"], "secret-token-123");
    assert_eq!(secret["metadata"]["labels"]["bay.ship-id"], "s1");

    let p = fake.get("pods", "ship-s1").unwrap();
    let text = p.to_string();
    assert!(
        !text.contains("secret-token-123"),
        "the token is not a plain env value: {text}"
    );
    assert_eq!(p["metadata"]["labels"]["bay.managed"], "true");
    assert_eq!(p["metadata"]["labels"]["bay.ship-id"], "s1");
    let spec = &p["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "ship-s1"
    );
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "ship:test");
    assert_eq!(c["imagePullPolicy"], "Never");
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8123);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        json!(bay_core::engine::CAPABILITIES)
    );
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                m["subPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            (bay_core::engine::HOME_MOUNT.to_owned(), "home".to_owned()),
            (
                bay_core::engine::METADATA_MOUNT.to_owned(),
                "metadata".to_owned()
            ),
        ]
    );
    let env = c["env"].as_array().unwrap();
    let token = env.iter().find(|e| e["name"] == "SHIP_AUTH_TOKEN").unwrap();
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"name": "ship-s1", "key": "SHIP_AUTH_TOKEN", "optional": false})
    );
    let plain: Vec<String> = env
        .iter()
        .filter(|e| e["value"].is_string())
        .map(|e| {
            format!(
                "{}={}",
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(plain, ["SHIP_ID=s1", "TTL=600", "SHIP_PORT=8123"]);
}

#[tokio::test]
async fn bad_quantities_are_rejected_before_anything_is_created() {
    let (fake, driver) = Fake::start(settings());
    for (spec, field) in [
        (
            EffectiveSpec {
                cpus: None,
                memory_bytes: Some(0),
                disk_bytes: None,
            },
            "spec.memory",
        ),
        (
            EffectiveSpec {
                cpus: Some(0.0),
                memory_bytes: None,
                disk_bytes: None,
            },
            "spec.cpus",
        ),
        (
            EffectiveSpec {
                cpus: None,
                memory_bytes: None,
                disk_bytes: Some(u64::MAX),
            },
            "spec.disk",
        ),
    ] {
        let mut req = request("bad");
        req.spec = spec;
        let err = driver.create_ship_container(&req).await.unwrap_err();
        assert!(
            matches!(&err, DriverError::Engine(m) if m.contains(field)),
            "{err}"
        );
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn restore_next_to_a_dead_pod_removes_the_pod_and_keeps_the_pvc() {
    let (fake, driver) = Fake::start(settings());
    fake.put("persistentvolumeclaims", pvc("ship-r1"));
    fake.put("pods", pod("ship-r1", "Failed"));
    fake.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ship-r1"}, "stringData": {"SHIP_AUTH_TOKEN": "old"}}),
    );

    let info = driver.create_ship_container(&request("r1")).await.unwrap();
    assert_eq!(info.ip_address, POD_IP);
    let base = format!("/api/v1/namespaces/{NS}");
    assert_eq!(
        mutating(&fake),
        [
            format!("DELETE {base}/pods/ship-r1"),
            format!("POST {base}/persistentvolumeclaims"),
            format!("POST {base}/secrets"),
            format!("PATCH {base}/secrets/ship-r1"),
            format!("POST {base}/pods"),
        ]
    );
    assert_eq!(
        fake.count("DELETE", "persistentvolumeclaims"),
        0,
        "the data is kept"
    );
    let claim = fake.get("persistentvolumeclaims", "ship-r1").unwrap();
    assert_eq!(
        claim["spec"]["resources"]["requests"]["storage"], "1Gi",
        "the existing claim is reused as is"
    );
    assert_eq!(
        fake.get("secrets", "ship-r1").unwrap()["stringData"]["SHIP_AUTH_TOKEN"],
        "secret-token-123",
        "the token is replaced"
    );
    assert_eq!(
        fake.get("pods", "ship-r1").unwrap()["status"]["phase"],
        "Running"
    );
}

#[tokio::test]
async fn restore_waits_for_a_terminating_pod_to_go() {
    let (fake, driver) = Fake::start(settings());
    fake.put("persistentvolumeclaims", pvc("ship-t1"));
    let mut terminating = pod("ship-t1", "Running");
    terminating["metadata"]["deletionTimestamp"] = json!("2026-12-04T10:00:00Z");
    fake.put("pods", terminating);

    driver.create_ship_container(&request("t1")).await.unwrap();
    // Already being deleted: not deleted again; its DELETED event was awaited.
    assert_eq!(fake.count("DELETE", "/pods/"), 0);
    let reqs = fake.requests();
    let watch = reqs.iter().position(|r| r.contains("watch=true")).unwrap();
    let create = reqs
        .iter()
        .position(|r| r.starts_with("POST") && r.ends_with("/pods?"))
        .unwrap();
    assert!(
        watch < create,
        "the old pod is gone before the new one: {reqs:?}"
    );
    assert!(fake.get("persistentvolumeclaims", "ship-t1").is_some());
}

#[tokio::test]
async fn a_pod_that_cannot_start_is_removed_and_its_data_kept() {
    let (fake, driver) = Fake::start(settings());
    fake.set_fate(Fate::ImageMissing);
    let err = driver
        .create_ship_container(&request("m1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DriverError::ImageMissing(m) if m.contains("ErrImageNeverPull")),
        "{err}"
    );
    assert!(fake.get("pods", "ship-m1").is_none(), "pod removed");
    assert!(fake.get("secrets", "ship-m1").is_none(), "secret removed");
    assert!(
        fake.get("persistentvolumeclaims", "ship-m1").is_some(),
        "claim kept"
    );
}

#[tokio::test]
async fn readiness_is_bounded_by_the_timeout() {
    let mut s = settings();
    s.ready_timeout = Duration::from_millis(300);
    let (fake, driver) = Fake::start(s);
    fake.set_fate(Fate::Pending);
    let err = driver
        .create_ship_container(&request("p1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DriverError::Engine(m) if m.contains("did not become ready") && m.contains("Pending")),
        "{err}"
    );
    assert!(fake.get("pods", "ship-p1").is_none(), "pod removed");
    assert!(fake.get("persistentvolumeclaims", "ship-p1").is_some());
}

#[tokio::test]
async fn an_abandoned_create_removes_its_pod_and_secret() {
    let (fake, driver) = Fake::start(settings());
    fake.set_fate(Fate::Pending);
    let req = request("a1");
    {
        let create = driver.create_ship_container(&req);
        tokio::pin!(create);
        // Drive the create until its watch is parked, then drop it.
        loop {
            tokio::select! {
                r = &mut create => panic!("the create cannot finish: {r:?}"),
                () = tokio::task::yield_now() => {}
            }
            if fake.count("GET", "watch=true") > 0 {
                break;
            }
        }
    }
    // The cleanup runs in a spawned task: wait for it (bounded by the test runner).
    while fake.get("pods", "ship-a1").is_some() || fake.get("secrets", "ship-a1").is_some() {
        tokio::task::yield_now().await;
    }
    assert!(fake.get("persistentvolumeclaims", "ship-a1").is_some());
}

#[tokio::test]
async fn stop_removes_pod_and_secret_but_not_the_claim() {
    let (fake, driver) = Fake::start(settings());
    driver.create_ship_container(&request("s2")).await.unwrap();
    driver.stop_ship_container("ship-s2").await.unwrap();
    assert!(fake.get("pods", "ship-s2").is_none());
    assert!(fake.get("secrets", "ship-s2").is_none());
    assert!(fake.get("persistentvolumeclaims", "ship-s2").is_some());
    // A pod already gone is not an error.
    driver.stop_ship_container("ship-s2").await.unwrap();
    assert!(driver.ship_data_exists("s2").await.unwrap());
    driver.delete_ship_data("s2").await.unwrap();
    assert!(!driver.ship_data_exists("s2").await.unwrap());
    // Data already gone is not an error.
    driver.delete_ship_data("s2").await.unwrap();
}

#[tokio::test]
async fn running_checks_logs_and_list() {
    let (fake, driver) = Fake::start(settings());
    fake.put("pods", pod("ship-up", "Running"));
    fake.put("pods", pod("ship-dead", "Failed"));
    fake.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "other", "labels": {"app": "x"}}, "status": {"phase": "Running"}}),
    );
    assert!(driver.is_container_running("ship-up").await.unwrap());
    assert!(!driver.is_container_running("ship-dead").await.unwrap());
    assert!(matches!(
        driver.is_container_running("ship-none").await,
        Err(DriverError::NotFound(_))
    ));

    fake.set_logs("line 1\nline 2\n");
    assert_eq!(
        driver.get_container_logs("ship-up", 50).await.unwrap(),
        "line 1\nline 2\n"
    );
    let log_req = fake
        .requests()
        .into_iter()
        .find(|r| r.contains("/pods/ship-up/log"))
        .unwrap();
    assert!(log_req.contains("tailLines=50"), "{log_req}");
    assert!(log_req.contains("limitBytes=1048576"), "{log_req}");
    assert!(log_req.contains("container=ship"), "{log_req}");
    assert!(matches!(
        driver.get_container_logs("ship-none", 5).await,
        Err(DriverError::NotFound(_))
    ));

    let mut listed = driver.list_managed().await.unwrap();
    listed.sort_by(|a, b| a.ship_id.cmp(&b.ship_id));
    let listed: Vec<(String, String, bool)> = listed
        .into_iter()
        .map(|m| (m.container_id, m.ship_id, m.running))
        .collect();
    assert_eq!(
        listed,
        [
            ("ship-dead".to_owned(), "dead".to_owned(), false),
            ("ship-up".to_owned(), "up".to_owned(), true),
        ]
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("labelSelector=bay.managed%3Dtrue")),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn initialize_checks_the_server_and_the_namespace() {
    let (fake, driver) = Fake::start(settings());
    driver.initialize().await.unwrap();
    assert!(fake.requests()[0].starts_with("GET /version"));
    assert!(fake.requests()[1].starts_with(&format!("GET /api/v1/namespaces/{NS}/pods?")));
    fake.fault(Method::GET, "/pods", Reply::Status(403));
    let err = driver.initialize().await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Engine(m) if m.contains("403")),
        "{err}"
    );
    driver.close().await.unwrap();
}

#[tokio::test]
async fn errors_are_classified() {
    let mut s = settings();
    s.request_timeout = Duration::from_millis(300);
    let (fake, driver) = Fake::start(s);
    fake.put("pods", pod("ship-e", "Running"));

    // Not found.
    assert!(matches!(
        driver.is_container_running("ship-x").await,
        Err(DriverError::NotFound(_))
    ));
    // The API server is overloaded or unreachable: unknown state.
    for reply in [
        Reply::Status(503),
        Reply::Status(504),
        Reply::Status(429),
        Reply::Drop,
        Reply::Hang,
    ] {
        fake.fault(Method::GET, "/pods/ship-e", reply.clone());
        let err = driver.is_container_running("ship-e").await.unwrap_err();
        assert!(err.is_transient(), "{reply:?}: {err:?}");
    }
    fake.fault(Method::GET, "/pods", Reply::Drop);
    assert!(matches!(
        driver.list_managed().await,
        Err(DriverError::Unavailable(_))
    ));
    fake.fault(
        Method::GET,
        "/persistentvolumeclaims/ship-e",
        Reply::Status(503),
    );
    assert!(matches!(
        driver.ship_data_exists("e").await,
        Err(DriverError::Unavailable(_))
    ));
    // Anything else is an engine error, with the server's words.
    for code in [500, 403, 422] {
        fake.fault(Method::GET, "/pods/ship-e", Reply::Status(code));
        let err = driver.is_container_running("ship-e").await.unwrap_err();
        assert!(
            matches!(&err, DriverError::Engine(m) if m.contains(&code.to_string()) && m.contains("ship-e")),
            "{code}: {err:?}"
        );
    }
    // A failing delete is reported, a missing one is not.
    fake.fault(Method::DELETE, "/pods/ship-e", Reply::Status(500));
    assert!(matches!(
        driver.stop_ship_container("ship-e").await,
        Err(DriverError::Engine(_))
    ));
    fake.fault(
        Method::DELETE,
        "/persistentvolumeclaims/ship-e",
        Reply::Status(503),
    );
    assert!(matches!(
        driver.delete_ship_data("e").await,
        Err(DriverError::Unavailable(_))
    ));
    // A create whose claim cannot be made creates no pod.
    fake.fault(Method::POST, "/persistentvolumeclaims", Reply::Status(403));
    assert!(matches!(
        driver.create_ship_container(&request("f1")).await,
        Err(DriverError::Engine(_))
    ));
    assert_eq!(fake.count("POST", "/pods"), 0);
}
