//! An environment for the `bay` binary: a temporary directory with the database, a Docker
//! network of its own, the `docker-host` driver and the real ship image (`BAY_SHIP_IMAGE`,
//! default `ship:latest`); optionally the real `bay-server` binary serving that database.
//! Every container, volume and network it made is removed on drop, even on failure
//! (`bay-test-support`, shared with bay-server's e2e harness: containers found by network,
//! volumes by ship label).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const TOKEN: &str = "cli-test-token";

use bay_test_support::ship_image as image;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// The `bay-server` binary next to `bay` (a workspace build makes both); built when missing.
fn server_binary() -> PathBuf {
    let bay = PathBuf::from(env!("CARGO_BIN_EXE_bay"));
    let server = bay.with_file_name("bay-server");
    if !server.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "bay-server", "--bin", "bay-server"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building bay-server failed");
    }
    server
}

/// A database, a network and the configuration both binaries read.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub network: String,
    pub server: Option<Server>,
    image: String,
}

pub struct Server {
    child: Child,
    pub url: String,
}

impl Env {
    pub fn new() -> Self {
        Self::with_image(image())
    }

    /// An environment whose ships run `image`.
    pub fn with_image(image: String) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!(
            docker(&["image", "inspect", &image]).status.success(),
            "the ship image {image} is missing: build it with `cargo xtask ship-image`"
        );
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            network: format!(
                "bay-cli-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            server: None,
            image,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("bay.db")
    }

    /// Bay's configuration (bay-api.md §8), the same for the server and local mode.
    fn configure(&self, c: &mut Command) {
        c.current_dir(self.dir.path())
            .env_remove("BAY_URL")
            .env_remove("BAY_TOKEN")
            .env_remove("BAY_SESSION")
            .env_remove("NO_COLOR")
            .env("ACCESS_TOKEN", TOKEN)
            .env("DATABASE_URL", format!("sqlite://{}", self.db().display()))
            .env("CONTAINER_DRIVER", "docker-host")
            .env("DOCKER_IMAGE", &self.image)
            .env("DOCKER_NETWORK", &self.network)
            .env("MAX_SHIP_NUM", "4")
            .env("DEFAULT_SHIP_MEMORY", "256m")
            .env("LOG_LEVEL", "warn");
    }

    /// Starts `bay-server` on this environment's database and waits for `/health`.
    pub fn start_server(&mut self) {
        let port = bay_test_support::free_port();
        let mut c = Command::new(server_binary());
        self.configure(&mut c);
        let child = c
            .arg("serve")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("bay-server starts");
        self.server = Some(Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        });
        bay_test_support::wait_healthy(port);
    }

    /// Stops the server (SIGTERM, as an operator would), keeping its ships.
    pub fn stop_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            bay_test_support::terminate(&mut s.child);
        }
    }

    /// `bay` in local mode.
    pub fn local(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bay"));
        self.configure(&mut c);
        c.env("BAY_SESSION", "cli-test");
        c
    }

    /// `bay` as a client of the running server (`BAY_URL`, `BAY_TOKEN`).
    pub fn remote(&self) -> Command {
        let url = &self.server.as_ref().expect("a running server").url;
        let mut c = self.local();
        c.env("BAY_URL", url).env("BAY_TOKEN", TOKEN);
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_server();
        bay_test_support::remove_network_and_ships("docker", &self.network);
    }
}

/// Removes the volumes of a ship (also of ships whose container is already gone).
pub fn remove_volumes(ship: &str) {
    bay_test_support::remove_ship_volumes("docker", ship);
}

/// What a `bay` run did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `c` with `args`, feeding `stdin`.
pub fn run(mut c: Command, args: &[&str], stdin: Option<&[u8]>) -> Run {
    use std::io::Write;
    let mut child = c
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bay runs");
    let input = stdin.map(<[u8]>::to_vec).unwrap_or_default();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("bay finishes");
    let _ = writer.join();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A 3 MB file of bytes that are not text (every byte value, in a non-repeating order).
pub fn binary_file(path: &Path) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let data: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(path, &data).expect("write the test file");
    data
}
