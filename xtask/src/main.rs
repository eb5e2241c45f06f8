//! `cargo xtask …`: the project's own automation (rust-analyzer style).
//!
//! Every command is plain Rust calling `cargo`, `docker` and friends, so that a fresh machine
//! needs nothing but the toolchain to build, serve and test Bay.

mod bay_image;
mod bench;
mod cmd;
mod kube;
mod podman;
mod serve;
mod ship_image;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Bay's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build what is missing and run bay-server on the embedded SQLite default.
    Serve(serve::Args),
    /// Install what the tests need (idempotent), then run every check and test (what CI runs).
    Test(test::Args),
    /// Build the ship image (`ship:latest` by default) from local parts only.
    ShipImage(ship_image::Args),
    /// Measure bay-server side by side with the engine and the agent alone (`cargo xtask bench`),
    /// or one part (`bench ship`, `bench transfer`); prints a table against same-run baselines.
    Bench(bench::Args),
    /// Build the image of Bay itself (`bay:latest`): bay-server in release on the local base.
    BayImage(bay_image::Args),
    /// Bring up `deploy/compose.yaml`, create a ship and run a command through the API, tear down.
    ComposeCheck(bay_image::ComposeArgs),
    /// Prepare Podman (install, configure, API service on a private socket, ship image loaded),
    /// run a command with `BAY_TEST_PODMAN_SOCKET` set, stop the service.
    WithPodman(podman::Args),
    /// The single-node Kubernetes of the tests: `build`, `up` (left running), `down`, `status`.
    Kube(kube::KubeArgs),
    /// Start the test Kubernetes cluster (or use the one `kube up` left running), run a command
    /// with `BAY_TEST_KUBECONFIG`, `BAY_TEST_KUBE_NAMESPACE` and `BAY_TEST_KUBE_STORAGE_CLASS`
    /// set, tear down.
    WithKube(kube::WithArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Test(args) => test::run(args),
        Command::ShipImage(args) => ship_image::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BayImage(args) => bay_image::run(args),
        Command::ComposeCheck(args) => bay_image::compose_check(args),
        Command::WithPodman(args) => podman::run(args),
        Command::Kube(args) => kube::run_kube(args),
        Command::WithKube(args) => kube::run_with(args),
    }
}
