//! Test harness: runs the real `ship` binary on a loopback port with a temporary root for the
//! homes, the metadata and the user database (`SHIP_HOME_ROOT`, `SHIP_METADATA_DIR`,
//! `SHIP_PASSWD_FILE`, `SHIP_GROUP_FILE`, `SHIP_SHADOW_FILE`). Needs root (to switch users);
//! tests skip themselves otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Skips the test (returns `None`) when not running as root.
pub async fn start(extra_env: &[(&str, &str)]) -> Option<Agent> {
    if !is_root() {
        eprintln!("skipping: the ship agent tests need root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("group"), "root:x:0:\n").unwrap();
    std::fs::write(dir.path().join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ship"));
    cmd.env_remove("SHIP_AUTH_TOKEN")
        .env_remove("PORT")
        .env("SHIP_PORT", port.to_string())
        .env("SHIP_HOME_ROOT", dir.path().join("home"))
        .env("SHIP_METADATA_DIR", dir.path().join("metadata"))
        .env("SHIP_PASSWD_FILE", dir.path().join("passwd"))
        .env("SHIP_GROUP_FILE", dir.path().join("group"))
        .env("SHIP_SHADOW_FILE", dir.path().join("shadow"))
        .env("SHIP_SKILLS_DIR", dir.path().join("skills"))
        // Agents of tests running side by side never share a uid (the kill unit).
        .env(
            "SHIP_FIRST_UID",
            (10_000_000 + u32::from(port) * 64).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut token = None;
    for (k, v) in extra_env {
        cmd.env(k, v);
        if *k == "SHIP_AUTH_TOKEN" {
            token = Some((*v).to_owned());
        }
    }
    let child = cmd.spawn().expect("start the ship binary");
    let agent = Agent {
        child,
        port,
        dir,
        client: reqwest::Client::new(),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = agent.client.get(agent.url("/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(agent)
}

impl Agent {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn home_root(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `req`: (status, JSON body or null).
    async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON as session `sid`: (status, body).
    pub async fn post(&self, sid: &str, path: &str, body: Value) -> (u16, Value) {
        Self::answer(
            self.auth(self.client.post(self.url(path)))
                .header("X-SESSION-ID", sid)
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, sid: &str, path: &str) -> (u16, Value) {
        Self::answer(
            self.auth(self.client.get(self.url(path)))
                .header("X-SESSION-ID", sid),
        )
        .await
    }

    pub async fn delete(&self, sid: &str, path: &str) -> (u16, Value) {
        Self::answer(
            self.auth(self.client.delete(self.url(path)))
                .header("X-SESSION-ID", sid),
        )
        .await
    }

    pub async fn sh(&self, sid: &str, command: &str) -> Value {
        let (s, v) = self
            .post(sid, "/shell/exec", json!({ "command": command }))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn py(&self, sid: &str, code: &str) -> Value {
        let (s, v) = self
            .post(sid, "/ipython/exec", json!({ "code": code }))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Sends SIGTERM and waits for the exit status (at most 10 s).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}
