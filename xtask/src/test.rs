//! `cargo xtask test`: what CI runs. Installs what the tests need (idempotently), checks
//! formatting and lints with `-D warnings`, builds the ship images the integration tests run
//! (`ship:latest`, the complete runtime; `ship:slim`; `ship:busybox`), prepares Podman (installed,
//! configured, its API service on a private socket with `ship:slim` loaded: see
//! [`crate::podman`]), starts the single-node Kubernetes cluster (built once and cached, in the
//! background from the start: see [`crate::kube`]), then runs every test with cargo-nextest,
//! stops the Podman service and tears the cluster down, whatever the result.

use crate::cmd;
use crate::ship_image::{self, Flavour};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy (only run the tests).
    #[arg(long)]
    no_lint: bool,
    /// Do not build the ship images (the image tests use whatever images exist).
    #[arg(long)]
    no_image: bool,
    /// Extra arguments passed to `cargo nextest run` (e.g. a test filter).
    #[arg(last = true)]
    nextest_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure_nextest()?;
    // SIGINT reaches the command running; xtask then stops what it started (the background
    // build, the cluster) as it returns.
    crate::kube::watch_signals();
    // A cold Go build of the cluster overlaps everything up to the tests.
    let kube_build = crate::kube::BackgroundBuild::start()?;
    if !args.no_lint {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
        cmd::run(
            cmd::cargo()
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                ])
                .args(["-D", "warnings"]),
        )?;
    }
    if !args.no_image {
        ship_image::build_flavours(&[Flavour::Full, Flavour::Slim, Flavour::Busybox])?;
    }
    // Doc tests and the Compose check first, so that the run ends with nextest's summary.
    cmd::run(cmd::cargo().args(["test", "--workspace", "--all-features", "--doc"]))?;
    if !args.no_image {
        // The Compose deployment, end to end (Bay's image from the debug build).
        crate::bay_image::compose_check(crate::bay_image::ComposeArgs {
            no_build: false,
            keep: false,
            debug: true,
        })?;
    }
    // The Podman driver's tests and the podman-host end-to-end test talk to this service.
    let podman = crate::podman::prepare(&[Flavour::Slim.default_tag()])?;
    // The Kubernetes driver's tests and its end-to-end test use this cluster.
    kube_build.finish()?;
    let kube = crate::kube::Session::start()?;
    let mut c = cmd::cargo();
    c.env("BAY_TEST_PODMAN_SOCKET", podman.socket());
    kube.set_env(&mut c);
    // The images `ship-image-tests` runs (see its crate documentation).
    c.env("BAY_SHIP_IMAGE", Flavour::DEFAULT.default_tag())
        .env("BAY_SHIP_FULL_IMAGE", Flavour::Full.default_tag())
        .env("BAY_SHIP_SLIM_IMAGE", Flavour::Slim.default_tag())
        .env("BAY_SHIP_BUSYBOX_IMAGE", Flavour::Busybox.default_tag());
    c.args([
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
    ]);
    c.args(&args.nextest_args);
    let result = cmd::run(&mut c);
    drop(kube);
    drop(podman);
    result
}

/// Installs cargo-nextest from crates.io when this machine does not have it.
fn ensure_nextest() -> anyhow::Result<()> {
    if cmd::succeeds(cmd::cargo().args(["nextest", "--version"])) {
        return Ok(());
    }
    eprintln!("cargo-nextest is missing: installing it from crates.io");
    cmd::run(cmd::cargo().args(["install", "cargo-nextest", "--locked"]))
}
