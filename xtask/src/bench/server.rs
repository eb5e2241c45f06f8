//! bay-server (release build) run for a benchmark on a temporary database and a loopback port,
//! with its own ship network; stopped and cleaned up on drop, ships included.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::docker::Engine;
use super::http::{Http, poll_health};
use crate::cmd;

/// The API token of every benchmark server.
pub const TOKEN: &str = "bench-token";

/// Builds bay-server in release mode and returns the binary.
pub fn build() -> anyhow::Result<PathBuf> {
    eprintln!("==> building bay-server (release)");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "bay-server",
        "--bin",
        "bay-server",
    ]))?;
    Ok(cmd::target_dir().join("release").join("bay-server"))
}

/// A running bay-server.
#[derive(Debug)]
pub struct BayServer {
    child: Child,
    /// `127.0.0.1:<port>`
    pub addr: String,
    /// the ship network (`DOCKER_NETWORK`), made for this server alone
    pub network: String,
    dir: PathBuf,
    /// ships created through this server (deleted on drop)
    ships: BTreeSet<String>,
    /// names of every container that was on the network (to clear stale endpoints)
    names: BTreeSet<String>,
}

impl BayServer {
    /// Starts `binary` with the `docker-host` driver, `image`, a fresh database and network
    /// named after `name`, and `env` on top; waits until `/health` answers.
    pub fn start(
        binary: &PathBuf,
        name: &str,
        image: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let tag = format!("bay-bench-{}-{name}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::File::create(dir.join("bay.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ACCESS_TOKEN", TOKEN)
            .env("DATABASE_URL", format!("sqlite://{}/bay.db", dir.display()))
            .env("CONTAINER_DRIVER", "docker-host")
            .env("DOCKER_IMAGE", image)
            .env("DOCKER_NETWORK", &tag)
            .env("LOG_LEVEL", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        // Its own process group: a Ctrl-C in the terminal reaches the benchmark, which cleans
        // up through the server before stopping it.
        let child = crate::cmd::spawn_logged(&mut command, log)?;
        let server = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            network: tag,
            dir,
            ships: BTreeSet::new(),
            names: BTreeSet::new(),
        };
        if !poll_health(
            &server.addr,
            None,
            Duration::from_millis(50),
            Duration::from_secs(60),
        ) {
            bail!(
                "bay-server did not answer /health within 60 s; its log:\n{}",
                server.log()
            );
        }
        Ok(server)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bay.log")).unwrap_or_default()
    }

    /// A keep-alive connection with the API token.
    pub fn http(&self) -> anyhow::Result<Http> {
        Ok(Http::connect(&self.addr)?.with_bearer(TOKEN))
    }

    /// The server's working directory (database, log), removed when it stops.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        super::rss(self.child.id())
    }

    /// Records a ship to delete when the server stops.
    pub fn track(&mut self, ship: &str) {
        self.ships.insert(ship.to_owned());
        self.names.insert(format!("ship-{ship}"));
    }

    /// Records the name of a container put on the server's network by someone else.
    pub fn note_container(&mut self, name: &str) {
        self.names.insert(name.to_owned());
    }

    /// Records that a ship was deleted permanently.
    pub fn untrack(&mut self, ship: &str) {
        self.ships.remove(ship);
    }

    /// Deletes the tracked ships through Bay, stops the server (SIGTERM, then SIGKILL after
    /// 10 s) and removes whatever is left on its network (containers, their volumes) and the
    /// network. Returns what had to be removed behind Bay's back.
    pub fn stop(&mut self) -> usize {
        if let Ok(mut http) = self.http() {
            for id in std::mem::take(&mut self.ships) {
                let _ = http.request("DELETE", &format!("/ship/{id}/permanent"), None, None);
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let left = sweep_network(&self.network, &self.names);
        let _ = fs::remove_dir_all(&self.dir);
        left
    }
}

impl Drop for BayServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Removes every container on `network` and the volumes of their ships (label
/// `bay.ship-id`), then the network. Returns how many containers were removed.
pub fn sweep_network(network: &str, names: &BTreeSet<String>) -> usize {
    let Ok(mut engine) = Engine::connect() else {
        return 0;
    };
    let containers = engine
        .containers(&json!({"network": [network]}))
        .unwrap_or_default();
    for (id, labels) in &containers {
        let _ = engine.remove_container(id);
        if let Some(ship) = labels["bay.ship-id"].as_str() {
            remove_ship_volumes(&mut engine, ship);
        }
    }
    // The engine can still be detaching a removed container's endpoint, or have kept a stale
    // one: retry briefly, then clear the endpoints of every container that was on it.
    for attempt in 0..12 {
        if engine.remove_network(network).is_ok() {
            break;
        }
        if attempt == 4 {
            for (id, _) in &containers {
                engine.disconnect(network, id);
            }
            for name in names {
                engine.disconnect(network, name);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    containers.len()
}

/// Removes the volumes labelled `bay.ship-id=<ship>`.
pub fn remove_ship_volumes(engine: &mut Engine, ship: &str) {
    let filters = json!({"label": [format!("bay.ship-id={ship}")]});
    for v in engine.volumes(&filters).unwrap_or_default() {
        let _ = engine.remove_volume(&v);
    }
}
