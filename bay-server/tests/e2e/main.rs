//! End to end: the real `bay-server` binary with the `docker-host` driver, the real Docker
//! Engine and the real ship image (`BAY_SHIP_IMAGE`, default `ship:latest`, built by
//! `cargo xtask test` / `cargo xtask ship-image`), driven over HTTP and WebSocket — and by the
//! published Python SDK (`shipyard-python-sdk` from PyPI, in a venv the test creates).
//!
//! Every ship and network the tests create is removed at the end, even on failure.
//! [`podman`] runs `bay-server` with `CONTAINER_DRIVER=podman-host` the same way, and
//! [`kubernetes`] with `CONTAINER_DRIVER=kubernetes` on the test cluster.

mod kubernetes;
mod podman;

mod isolation;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod abandoned;

mod pool;

const TOKEN: &str = "e2e-token";

use bay_test_support::ship_image as image;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// The engine a test Bay drives; its command-line tool checks the image and cleans up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// Its command-line tool.
    fn cli(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }

    fn run(self, args: &[&str]) -> std::process::Output {
        match self {
            Self::Docker => docker(args),
            Self::Podman => podman::podman(args),
        }
    }
}

/// A running `bay-server` process and what it created; cleaned up on drop.
struct Bay {
    child: Child,
    url: String,
    network: String,
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Bay {
    /// A Bay on Docker (`docker-host`) with the ship image and room for four ships.
    fn start() -> Self {
        Self::start_with(Engine::Docker, "e2e", &image(), &[("MAX_SHIP_NUM", "4")])
    }

    /// A Bay whose ships use `image` on a network named after `name`; `env` adds to or
    /// overrides the defaults (`docker-host`, 256 MB ships).
    fn start_with(engine: Engine, name: &str, image: &str, env: &[(&str, &str)]) -> Self {
        assert!(
            engine.run(&["image", "inspect", image]).status.success(),
            "the ship image {image} is missing from {engine:?}: the README's test command \
             (`cargo xtask test`) builds and loads it"
        );
        let port = bay_test_support::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let network = format!("bay-{name}-{}", std::process::id());
        let mut command = Command::new(env!("CARGO_BIN_EXE_bay-server"));
        command
            .arg("serve")
            .current_dir(dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ACCESS_TOKEN", TOKEN)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/bay.db", dir.path().display()),
            )
            .env("CONTAINER_DRIVER", "docker-host")
            .env("DOCKER_IMAGE", image)
            .env("DOCKER_NETWORK", &network)
            .env("DEFAULT_SHIP_MEMORY", "256m")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("bay-server starts");
        let bay = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            network,
            engine,
            _dir: dir,
        };
        bay_test_support::wait_healthy(port);
        bay
    }
}

impl Drop for Bay {
    fn drop(&mut self) {
        // Graceful stop (SIGTERM), then remove every ship container and volume this Bay made.
        bay_test_support::terminate(&mut self.child);
        bay_test_support::remove_network_and_ships(self.engine.cli(), &self.network);
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        }
    }

    fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        session: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(180));
        if let Some(s) = session {
            r = r.header("X-SESSION-ID", s);
        }
        r
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        session: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path, session);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn exec(&self, ship: &str, session: &str, kind: &str, payload: Value) -> Value {
        let (status, body) = self
            .json(
                reqwest::Method::POST,
                &format!("/ship/{ship}/exec"),
                Some(session),
                Some(json!({"type": kind, "payload": payload})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(body["success"], true, "{kind}: {body}");
        body["data"].clone()
    }

    /// `DELETE path`, which must answer 204.
    async fn delete(&self, path: &str) {
        let resp = self
            .req(reqwest::Method::DELETE, path, None)
            .send()
            .await
            .expect("request sent");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "DELETE {path}");
    }

    /// `POST /ship/{id}/start` as `session`: 200 and running again.
    async fn start(&self, id: &str, session: &str) {
        let (s, started) = self
            .json(
                reqwest::Method::POST,
                &format!("/ship/{id}/start"),
                Some(session),
                Some(json!({"ttl": 600})),
            )
            .await;
        assert_eq!(
            (s, started["status"].as_i64()),
            (StatusCode::OK, Some(1)),
            "{started}"
        );
    }

    /// Creates `session`'s ship (ttl 600, 0.5 CPU, 256 MB) and checks that it runs, published
    /// on 127.0.0.1 only; returns the ship's body.
    async fn create_small_ship(&self, session: &str) -> Value {
        let (s, ship) = self
            .json(
                reqwest::Method::POST,
                "/ship",
                Some(session),
                Some(json!({"ttl": 600, "spec": {"cpus": 0.5, "memory": "256m"}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ship}");
        assert_eq!(ship["status"], 1, "{ship}");
        assert!(
            ship["ip_address"]
                .as_str()
                .unwrap_or_default()
                .starts_with("127.0.0.1:"),
            "{ship}"
        );
        ship
    }

    /// The `note.txt` [`Api::shell_and_python`] left says `hi` (after a stop and restore).
    async fn note_survived(&self, ship: &str, session: &str) {
        let out = self
            .exec(
                ship,
                session,
                "shell/exec",
                json!({"command": "cat note.txt"}),
            )
            .await;
        assert_eq!(
            out["stdout"].as_str().map(str::trim),
            Some("hi"),
            "files survive the restore: {out}"
        );
    }

    /// Shell (never as root; leaves `note.txt` saying `hi`) and Python with state (`x = 20`),
    /// as `session`.
    async fn shell_and_python(&self, ship: &str, session: &str) {
        let out = self
            .exec(
                ship,
                session,
                "shell/exec",
                json!({"command": "echo hi > note.txt; cat note.txt; id -u"}),
            )
            .await;
        assert_eq!(out["return_code"], 0, "{out}");
        let stdout = out["stdout"].as_str().unwrap_or_default();
        assert!(stdout.starts_with("hi\n"), "{out}");
        assert_ne!(
            stdout.lines().nth(1),
            Some("0"),
            "session code never runs as root: {out}"
        );
        let out = self
            .exec(
                ship,
                session,
                "ipython/exec",
                json!({"code": "x = 20\nx + 22"}),
            )
            .await;
        assert_eq!(out["output"]["text"], "42", "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_against_the_real_engine() {
    let bay = Bay::start();
    let api = Api::new(&bay.url);
    use reqwest::Method as M;

    let (s, body) = api.json(M::GET, "/", None, None).await;
    assert_eq!(
        (s, body["message"].as_str()),
        (StatusCode::OK, Some("Welcome to Bay API"))
    );
    let (s, body) = api.json(M::GET, "/stat", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    // Create: a real container, ready, reachable on 127.0.0.1 only.
    let ship = api.create_small_ship("alice").await;
    let id = ship["id"].as_str().unwrap().to_owned();
    let inspect = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        ship["container_id"].as_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "268435456 500000000"
    );

    // The same session gets the same ship back.
    let (s, again) = api
        .json(M::POST, "/ship", Some("alice"), Some(json!({"ttl": 600})))
        .await;
    assert_eq!(
        (s, again["id"].as_str()),
        (StatusCode::CREATED, Some(id.as_str()))
    );

    // Exec: shell, Python with state, the file API.
    api.shell_and_python(&id, "alice").await;
    let out = api
        .exec(
            &id,
            "alice",
            "ipython/exec",
            json!({"code": "print(x * 2)"}),
        )
        .await;
    assert_eq!(out["output"]["text"], "40", "{out}");
    api.exec(
        &id,
        "alice",
        "fs/write_file",
        json!({"path": "notes/a.txt", "content": "hello file"}),
    )
    .await;
    let out = api
        .exec(&id, "alice", "fs/read_file", json!({"path": "notes/a.txt"}))
        .await;
    assert_eq!(out["content"], "hello file");
    let (s, body) = api
        .json(
            M::POST,
            &format!("/ship/{id}/exec"),
            Some("alice"),
            Some(json!({"type": "fs/../../etc"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = api
        .json(
            M::POST,
            &format!("/ship/{id}/exec"),
            Some("mallory"),
            Some(json!({"type": "shell/exec", "payload": {"command": "id"}})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a session without a relation is refused"
    );

    // Upload and download 1 MiB.
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 256) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name("x"),
        )
        .text("file_path", "bin/data.bin");
    let resp = api
        .req(M::POST, &format!("/ship/{id}/upload"), Some("alice"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["file_path"]
            .as_str()
            .unwrap()
            .ends_with("/workspace/bin/data.bin"),
        "{body}"
    );
    let resp = api
        .req(
            M::GET,
            &format!("/ship/{id}/download?file_path=bin/data.bin"),
            Some("alice"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = api
        .req(
            M::GET,
            &format!("/ship/{id}/download?file_path=/etc/shadow"),
            Some("alice"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Terminal: run a command and read its output.
    let ws_url = format!(
        "{}/ship/{id}/term?session_id=alice&cols=100&rows=30",
        bay.url.replacen("http", "ws", 1)
    );
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("terminal connects");
    ws.send(Message::Text("echo term-$((6*7))\r".into()))
        .await
        .unwrap();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                seen.push_str(&t);
                if seen.contains("term-42") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "terminal output: {seen:?}");
    let _ = ws.close(None).await;

    // Logs, sessions, extend-ttl, overview.
    let (s, logs) = api
        .json(M::GET, &format!("/ship/logs/{id}?tail=50"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(logs["logs"].is_string());
    let (s, sessions) = api
        .json(M::GET, &format!("/ship/{id}/sessions"), None, None)
        .await;
    assert_eq!((s, sessions["total"].as_i64()), (StatusCode::OK, Some(1)));
    let (s, extended) = api
        .json(
            M::POST,
            &format!("/ship/{id}/extend-ttl"),
            None,
            Some(json!({"ttl": 300})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(extended["ttl"].as_i64().unwrap() > 800, "{extended}");
    let (s, rel) = api
        .json(
            M::POST,
            "/sessions/alice/extend-ttl",
            None,
            Some(json!({"ttl": 900})),
        )
        .await;
    assert_eq!(
        (s, rel["ship_id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (s, all) = api.json(M::GET, "/sessions", None, None).await;
    assert_eq!(
        (s, all["total"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{all}"
    );
    let (s, one) = api.json(M::GET, "/sessions/alice", None, None).await;
    assert_eq!(
        (s, one["ship_id"].as_str(), one["is_active"].as_bool()),
        (StatusCode::OK, Some(id.as_str()), Some(true))
    );
    let (s, health) = api.json(M::GET, "/health", None, None).await;
    assert_eq!((s, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, overview) = api.json(M::GET, "/stat/overview", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(overview["ships"]["running"], 1);
    let (s, list) = api.json(M::GET, "/ships", None, None).await;
    assert_eq!(
        (s, list.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );

    // Soft delete keeps the data; /start restores the same ship with its files.
    api.delete(&format!("/ship/{id}")).await;
    let (_, stopped) = api.json(M::GET, &format!("/ship/{id}"), None, None).await;
    assert_eq!(
        (
            stopped["status"].as_i64(),
            stopped["container_id"].is_null()
        ),
        (Some(0), true)
    );
    api.start(&id, "alice").await;
    let out = api
        .exec(&id, "alice", "fs/read_file", json!({"path": "notes/a.txt"}))
        .await;
    assert_eq!(out["content"], "hello file", "files survive the restore");

    // Session delete stops a ship left without sessions; permanent delete removes everything.
    api.delete("/sessions/alice").await;
    let (_, after) = api.json(M::GET, &format!("/ship/{id}"), None, None).await;
    assert_eq!(after["status"], 0);
    api.delete(&format!("/ship/{id}/permanent")).await;
    let (s, _) = api.json(M::GET, &format!("/ship/{id}"), None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=bay.ship-id={id}"),
    ]);
    assert!(
        String::from_utf8_lossy(&volumes.stdout).trim().is_empty(),
        "ship data removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_published_python_sdk_works_unchanged() {
    let bay = Bay::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/run.sh");
    let out = tokio::process::Command::new("sh")
        .arg(script)
        .arg(&bay.url)
        .arg(TOKEN)
        .output()
        .await
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK client failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all SDK operations succeeded"), "{stdout}");
}
