//! `cargo xtask bay-image`: builds the image of Bay itself (`bay:latest`), and
//! `cargo xtask compose-check`: runs `deploy/compose.yaml` end to end.
//!
//! The image is bay-server built in release on the host, copied onto the local Debian base image
//! that `cargo xtask ship-image` makes ([`ship_image::BASE_IMAGE`]; the base and `ship:latest`
//! are built first when missing). Nothing is pulled from a registry.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd;
use crate::ship_image::{self, BASE_IMAGE, Flavour};

/// The tag `bay-image` builds by default.
pub const DEFAULT_TAG: &str = "bay:latest";
/// The label every resource of `compose-check` carries (besides compose's own).
const TEST_LABEL: &str = "bay.test=docker-driver";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tag of the image.
    #[arg(long, default_value = DEFAULT_TAG)]
    tag: String,
    /// Use the debug build of bay-server (fast when the tests built it already).
    #[arg(long)]
    debug: bool,
}

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Use the existing `bay:latest` instead of building it again.
    #[arg(long)]
    pub no_build: bool,
    /// Leave the stack running after the check (for debugging); ships are still removed.
    #[arg(long)]
    pub keep: bool,
    /// Build the image from the debug build of bay-server (what `cargo xtask test` does).
    #[arg(long)]
    pub debug: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    build(&args.tag, !args.debug)
}

/// Builds bay-server (release, or the debug profile) and the image `tag` from `images/bay/`.
pub fn build(tag: &str, release: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let step = |what: &str| eprintln!("==> [{:>6.1}s] {what}", start.elapsed().as_secs_f64());
    ensure!(
        cmd::succeeds(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])),
        "the docker engine does not answer (`docker version` failed): is dockerd running?"
    );
    if !ship_image::image_exists(BASE_IMAGE) {
        step(&format!(
            "base image {BASE_IMAGE} missing: running the ship-image build (base and {})",
            Flavour::DEFAULT.default_tag()
        ));
        ship_image::build_flavours(&[Flavour::DEFAULT])?;
    }

    let profile = if release { "release" } else { "debug" };
    step(&format!("building bay-server ({profile})"));
    let mut build = cmd::cargo();
    build.args(["build", "-p", "bay-server", "--bin", "bay-server"]);
    if release {
        build.arg("--release");
    }
    cmd::run(&mut build)?;
    let binary = cmd::target_dir().join(profile).join("bay-server");
    ensure!(binary.exists(), "{} was not built", binary.display());

    let source = cmd::workspace_root().join("images").join("bay");
    let context = cmd::target_dir().join("bay-image").join("context");
    match fs::remove_dir_all(&context) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("could not remove {}", context.display()));
        }
        _ => {}
    }
    fs::create_dir_all(&context)
        .with_context(|| format!("could not create {}", context.display()))?;
    fs::copy(source.join("Dockerfile"), context.join("Dockerfile"))
        .with_context(|| format!("could not copy {}/Dockerfile", source.display()))?;
    fs::copy(&binary, context.join("bay-server"))
        .with_context(|| format!("could not copy {}", binary.display()))?;

    step(&format!("building image {tag}"));
    ship_image::replacing_image(tag, || {
        cmd::run(
            Command::new("docker")
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "--tag", tag])
                .args(["--build-arg", &format!("BASE={BASE_IMAGE}")])
                .args([
                    "--build-arg",
                    &format!("BAY_VERSION={}", env!("CARGO_PKG_VERSION")),
                ])
                .arg(&context),
        )
        .with_context(|| format!("could not build image {tag}"))
    })?;
    let size = ship_image::image_size(tag)?;
    step(&format!(
        "image {tag} ready: {:.1} MB",
        size as f64 / 1_000_000.0
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// compose-check

/// What the check created, removed on drop (even when a step failed).
struct Stack {
    project: String,
    network: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    base: String,
    token: String,
    ships: Vec<String>,
    keep: bool,
    /// Bay's logs are shown when the check did not pass.
    passed: bool,
    _dir: TempDir,
}

impl Stack {
    fn compose(&self) -> Command {
        let mut c = compose_command();
        c.args(["-p", &self.project]);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut c = Command::new("curl");
        c.args(["-sS", "-m", "180", "-X", method, "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-H", "X-SESSION-ID: compose-check"])
            .arg(format!("{}{path}", self.base));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data", b]);
        }
        let out = ship_image::capture(&mut c)?;
        let (text, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        let code = code
            .trim()
            .parse()
            .with_context(|| format!("curl printed no status for {method} {path}: {out:?}"))?;
        Ok((code, text.to_owned()))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        eprintln!("==> tearing down the compose check");
        for id in std::mem::take(&mut self.ships) {
            let _ = self.curl("DELETE", &format!("/ship/{id}/permanent"), None);
            // Whatever the API could not remove: the ship's container and volumes.
            let ids = ship_image::capture(Command::new("docker").args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=bay.ship-id={id}"),
            ]))
            .unwrap_or_default();
            for cid in ids.split_whitespace() {
                cmd::succeeds(Command::new("docker").args(["rm", "-f", "-v", cid]));
            }
            for v in [format!("ship-{id}-home"), format!("ship-{id}-metadata")] {
                cmd::succeeds(Command::new("docker").args(["volume", "rm", "-f", &v]));
            }
        }
        if self.keep {
            eprintln!(
                "    --keep: stack {} left running on {}; remove it with `docker compose -p {} down -v` and `docker network rm {}`",
                self.project, self.base, self.project, self.network
            );
            return;
        }
        if !self.passed
            && let Ok(out) = self
                .compose()
                .args(["logs", "--no-color", "--tail", "50"])
                .output()
        {
            eprintln!(
                "---- bay logs (last 50 lines) ----\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let _ = cmd::run(self.compose().args(["down", "-v", "--remove-orphans"]));
        cmd::succeeds(Command::new("docker").args(["network", "rm", &self.network]));
    }
}

/// A temporary directory removed on drop (xtask has no tempfile dependency).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn compose_check(args: ComposeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let step = |what: &str| eprintln!("==> [{:>6.1}s] {what}", start.elapsed().as_secs_f64());
    if !args.no_build || !ship_image::image_exists(DEFAULT_TAG) {
        build(DEFAULT_TAG, !args.debug)?;
    }
    let ship = Flavour::DEFAULT.default_tag();
    if !ship_image::image_exists(ship) {
        step(&format!("{ship} missing: building it"));
        ship_image::build_flavours(&[Flavour::DEFAULT])?;
    }
    ensure!(
        cmd::succeeds(compose_command().arg("version")),
        "neither `docker compose` nor `docker-compose` is installed"
    );

    let suffix = format!(
        "{:x}",
        std::process::id() ^ (start.elapsed().subsec_nanos())
    );
    let project = format!("bay-check-{suffix}");
    let network = format!("bay-check-{suffix}");
    let port = free_port()?;
    let token = format!("check-{suffix}-token");
    let dir = std::env::temp_dir().join(&project);
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let dir = TempDir(dir);
    // Labels the check's own resources like the driver tests' (compose adds its own labels).
    let override_file = dir.0.join("compose.check.yaml");
    fs::write(
        &override_file,
        "services:\n  bay:\n    labels:\n      bay.test: docker-driver\n\
         volumes:\n  bay-data:\n    labels:\n      bay.test: docker-driver\n",
    )
    .with_context(|| format!("could not write {}", override_file.display()))?;
    let mut stack = Stack {
        project,
        network: network.clone(),
        files: vec![
            cmd::workspace_root().join("deploy").join("compose.yaml"),
            override_file,
        ],
        env: vec![
            ("DOCKER_NETWORK".into(), network.clone()),
            ("BAY_PORT".into(), port.to_string()),
            ("ACCESS_TOKEN".into(), token.clone()),
            ("LOG_LEVEL".into(), "info".into()),
        ],
        base: format!("http://127.0.0.1:{port}"),
        token,
        ships: Vec::new(),
        keep: args.keep,
        passed: false,
        _dir: dir,
    };

    step(&format!(
        "creating network {network} (external in compose.yaml)"
    ));
    cmd::run(Command::new("docker").args([
        "network", "create", "--driver", "bridge", "--label", TEST_LABEL, &network,
    ]))?;
    step(&format!(
        "docker compose up -d (project {}, port {port})",
        stack.project
    ));
    cmd::run(stack.compose().args(["up", "-d"]))?;

    step("waiting for GET /health");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stack.curl("GET", "/health", None) {
            Ok((200, _)) => break,
            other if Instant::now() > deadline => {
                bail!("bay did not answer /health within 60 s: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }

    step("POST /ship");
    let (status, body) = stack.curl("POST", "/ship", Some(r#"{"ttl":600}"#))?;
    if let Some(id) = json_string(&body, "id") {
        stack.ships.push(id);
    }
    ensure!(status == 201, "POST /ship answered {status}: {body}");
    let id = stack
        .ships
        .first()
        .cloned()
        .context("POST /ship returned no id")?;
    ensure!(
        body.contains("\"status\":1"),
        "the new ship is not running: {body}"
    );
    let address = json_string(&body, "ip_address").unwrap_or_default();
    ensure!(
        !address.contains(':'),
        "docker mode must address ships by IP without a port, got {address:?}"
    );

    step(&format!("POST /ship/{id}/exec (shell/exec)"));
    let (status, body) = stack.curl(
        "POST",
        &format!("/ship/{id}/exec"),
        Some(r#"{"type":"shell/exec","payload":{"command":"echo compose-ok-$((6*7))"}}"#),
    )?;
    ensure!(status == 200, "exec answered {status}: {body}");
    ensure!(
        body.contains("compose-ok-42"),
        "the command's output is missing from {body}"
    );

    step(&format!("DELETE /ship/{id}/permanent"));
    let (status, body) = stack.curl("DELETE", &format!("/ship/{id}/permanent"), None)?;
    ensure!(status == 204, "permanent delete answered {status}: {body}");
    let left = ship_image::capture(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=bay.ship-id={id}"),
    ]))?;
    ensure!(
        left.trim().is_empty(),
        "the ship container survived: {left}"
    );
    stack.ships.clear();

    stack.passed = true;
    drop(stack);
    step("compose check passed");
    Ok(())
}

/// `docker compose` (v2 plugin) when installed, else `docker-compose` (Debian 12 ships 1.29).
fn compose_command() -> Command {
    if cmd::succeeds(Command::new("docker").args(["compose", "version"])) {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("could not find a free port")?;
    Ok(l.local_addr()?.port())
}

/// The string value of `"key":"…"` in a flat JSON text (no escapes expected in ids/addresses).
fn json_string(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = json[at..].find('"')?;
    Some(json[at..at + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_json_strings() {
        let body = r#"{"id":"abc-1","status":1,"ip_address":"172.18.0.3","x":null}"#;
        assert_eq!(json_string(body, "id").as_deref(), Some("abc-1"));
        assert_eq!(
            json_string(body, "ip_address").as_deref(),
            Some("172.18.0.3")
        );
        assert_eq!(json_string(body, "missing"), None);
    }

    #[test]
    fn the_compose_file_is_there() {
        assert!(
            cmd::workspace_root().join("deploy/compose.yaml").exists(),
            "deploy/compose.yaml"
        );
    }
}
