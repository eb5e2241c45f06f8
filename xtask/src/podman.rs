//! Podman for the tests (`cargo xtask test`): installs Debian's `podman` and `slirp4netns` when
//! missing, gives rootful Podman `nofile`/`nproc` defaults it can set on this machine, starts
//! `podman system service` on a private socket (stopped by its PID when the run ends) and
//! loads the ship image from Docker into Podman's store. Every step is idempotent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cmd;

/// Podman's system-wide configuration file.
const CONTAINERS_CONF: &str = "/etc/containers/containers.conf";

/// A running `podman system service` on a private socket; stopped (by PID) on drop.
#[derive(Debug)]
pub struct Service {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Service {
    /// The socket the service listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // SIGTERM lets Podman remove its socket; SIGKILL if it does not go within 10 s.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!("podman API service (pid {pid}) stopped");
    }
}

/// Installs and configures Podman, starts its API service and loads `images` into its store.
pub fn prepare(images: &[&str]) -> anyhow::Result<Service> {
    ensure_installed()?;
    ensure_ulimits()?;
    let service = start_service()?;
    for image in images {
        load_image(image)?;
    }
    Ok(service)
}

/// Podman, and `slirp4netns` (the network stack of every `podman-host` ship; only a
/// Recommends of Debian's `podman`, so installed explicitly).
fn ensure_installed() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("podman").arg("--version"))
        && cmd::succeeds(Command::new("slirp4netns").arg("--version"))
    {
        return Ok(());
    }
    cmd::apt_install(&["podman", "slirp4netns"])
}

/// Rootful Podman sets nofile and nproc limits above what this machine allows (runc then
/// fails with "error setting rlimit type 7"): default them to the machine's own hard limits.
/// An existing `containers.conf` is left alone (Bay's driver sets both limits explicitly on
/// every ship anyway; the CLI's containers need the defaults).
fn ensure_ulimits() -> anyhow::Result<()> {
    let path = Path::new(CONTAINERS_CONF);
    if path.exists() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.contains("default_ulimits") {
            eprintln!(
                "warning: {CONTAINERS_CONF} sets no default_ulimits; `podman run` may fail with \
                 \"error setting rlimit\" (Bay's driver sets them itself)"
            );
        }
        return Ok(());
    }
    let nofile = hard_nofile().unwrap_or(1024);
    let nproc = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32768);
    let text = format!(
        "# Written by `cargo xtask test` (Bay): rootful Podman's default nofile/nproc limits\n\
         # cannot be set on this machine; use its own hard limits.\n\
         [containers]\n\
         default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
    );
    std::fs::create_dir_all("/etc/containers").context("creating /etc/containers")?;
    std::fs::write(path, text).with_context(|| format!("writing {CONTAINERS_CONF}"))?;
    eprintln!("wrote {CONTAINERS_CONF} (nofile={nofile}, nproc={nproc})");
    Ok(())
}

fn hard_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn start_service() -> anyhow::Result<Service> {
    let dir = std::env::temp_dir().join(format!("bay-podman-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socket = dir.join("podman.sock");
    let log = std::fs::File::create(dir.join("service.log")).context("service log")?;
    let child = Command::new("podman")
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", socket.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("could not start `podman system service`")?;
    let service = Service {
        child,
        dir: dir.clone(),
        socket,
    };
    for _ in 0..300 {
        if ping(service.socket()) {
            eprintln!(
                "podman API service (pid {}) listening on {}",
                service.child.id(),
                service.socket.display()
            );
            return Ok(service);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    bail!("podman system service did not answer on its socket within 30 s: {log}")
}

/// Whether the API answers `GET /_ping` with `OK`.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") && buf.ends_with("OK")
}

/// Copies `image` from Docker into Podman's store unless Podman has the same image already.
fn load_image(image: &str) -> anyhow::Result<()> {
    let id = |program: &str| -> Option<String> {
        let out = Command::new(program)
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty())
            .then(|| text.trim_start_matches("sha256:").to_owned())
    };
    let Some(docker_id) = id("docker") else {
        bail!(
            "the ship image {image} is missing from docker: build it with `cargo xtask ship-image`"
        );
    };
    if id("podman").as_deref() == Some(docker_id.as_str()) {
        return Ok(());
    }
    cmd::pipe(
        Command::new("docker").args(["save", image]),
        Command::new("podman").args(["load", "--quiet"]),
    )
}

/// `cargo xtask with-podman -- <command>`: prepares Podman as `cargo xtask test` does, runs
/// the command with `BAY_TEST_PODMAN_SOCKET` set, then stops the service.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The command to run (e.g. `cargo nextest run -p bay-driver-podman`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let service = prepare(&[crate::ship_image::Flavour::Slim.default_tag()])?;
    let mut command = cmd::wrapped_command(&args.command)?;
    let result = cmd::run(command.env("BAY_TEST_PODMAN_SOCKET", service.socket()));
    drop(service);
    result
}
