//! End to end with Podman: the real `bay-server` binary with `CONTAINER_DRIVER=podman-host`
//! against the Podman API service `cargo xtask test` starts (`BAY_TEST_PODMAN_SOCKET`, else
//! the rootful `/run/podman/podman.sock`), running shell and Python in a ship, restoring it
//! with its files and deleting it permanently. Fails (never skips) when Podman is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method as M;
use reqwest::StatusCode;
use serde_json::json;

use super::{Api, TOKEN, health_ok};

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the podman CLI runs (cargo xtask test installs it)")
}

/// A `bay-server` on Podman; its ships, volumes and network are removed on drop.
struct PodmanBay {
    child: Child,
    url: String,
    network: String,
    _dir: tempfile::TempDir,
}

impl PodmanBay {
    fn start() -> Self {
        let socket = std::env::var_os("BAY_TEST_PODMAN_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock"));
        assert!(
            socket.exists(),
            "the podman socket {} is missing: run this test with `cargo xtask test` (or `cargo \
             xtask with-podman -- cargo nextest run …`)",
            socket.display()
        );
        // The small image: this test runs shell and plain Python, and `cargo xtask test`
        // loads only `ship:slim` into Podman's store.
        let image = std::env::var("BAY_SHIP_SLIM_IMAGE").unwrap_or_else(|_| "ship:slim".to_owned());
        assert!(
            podman(&["image", "exists", &image]).status.success(),
            "the ship image {image} is not in podman's store: `cargo xtask test` loads it"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let network = format!("bay-e2e-podman-{}", std::process::id());
        let child = Command::new(env!("CARGO_BIN_EXE_bay-server"))
            .arg("serve")
            .current_dir(dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ACCESS_TOKEN", TOKEN)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/bay.db", dir.path().display()),
            )
            .env("CONTAINER_DRIVER", "podman-host")
            .env("PODMAN_SOCKET", &socket)
            .env("DOCKER_IMAGE", &image)
            .env("DOCKER_NETWORK", &network)
            .env("MAX_SHIP_NUM", "2")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .spawn()
            .expect("bay-server starts");
        let bay = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            network,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !health_ok(port) {
            assert!(
                Instant::now() < deadline,
                "bay-server did not answer /health within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bay
    }
}

impl Drop for PodmanBay {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..150 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let ids = podman(&[
            "ps",
            "-aq",
            "--filter",
            &format!("network={}", self.network),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let ship = podman(&[
                "inspect",
                "-f",
                &format!(
                    "{{{{index .Config.Labels \"{}\"}}}}",
                    bay_core::engine::LABEL_SHIP_ID
                ),
                id,
            ]);
            let ship = String::from_utf8_lossy(&ship.stdout).trim().to_owned();
            let _ = podman(&["rm", "-f", "-v", id]);
            if !ship.is_empty() {
                let [home, metadata] = bay_core::engine::volume_names(&ship);
                let _ = podman(&["volume", "rm", "-f", &home, &metadata]);
            }
        }
        let _ = podman(&["network", "rm", "-f", &self.network]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_host_runs_shell_and_python_in_a_ship() {
    let bay = PodmanBay::start();
    let api = Api::new(&bay.url);

    let (s, ship) = api
        .json(
            M::POST,
            "/ship",
            Some("alice"),
            Some(json!({"ttl": 600, "spec": {"cpus": 0.5, "memory": "256m"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ship}");
    let id = ship["id"].as_str().unwrap().to_owned();
    assert_eq!(ship["status"], 1);
    assert!(
        ship["ip_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{ship}"
    );
    let cid = ship["container_id"].as_str().unwrap().to_owned();
    assert!(
        podman(&["container", "exists", &cid]).status.success(),
        "the ship runs in podman, not docker"
    );

    let out = api
        .exec(
            &id,
            "alice",
            "shell/exec",
            json!({"command": "echo hi > note.txt; cat note.txt; id -u"}),
        )
        .await;
    assert_eq!(out["return_code"], 0, "{out}");
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("hi\n"), "{out}");
    assert_ne!(stdout.lines().nth(1), Some("0"), "never root: {out}");
    let out = api
        .exec(
            &id,
            "alice",
            "ipython/exec",
            json!({"code": "x = 20\nx + 22"}),
        )
        .await;
    assert_eq!(out["output"]["text"], "42", "{out}");

    // Soft delete, restore with the files, permanent delete.
    let resp = api
        .req(M::DELETE, &format!("/ship/{id}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(!podman(&["container", "exists", &cid]).status.success());
    let (s, started) = api
        .json(
            M::POST,
            &format!("/ship/{id}/start"),
            Some("alice"),
            Some(json!({"ttl": 600})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let out = api
        .exec(
            &id,
            "alice",
            "shell/exec",
            json!({"command": "cat note.txt"}),
        )
        .await;
    assert_eq!(
        out["stdout"].as_str().map(str::trim),
        Some("hi"),
        "files survive the restore: {out}"
    );
    let resp = api
        .req(M::DELETE, &format!("/ship/{id}/permanent"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for v in bay_core::engine::volume_names(&id) {
        assert!(
            !podman(&["volume", "exists", &v]).status.success(),
            "{v} removed"
        );
    }
}
