//! `cargo xtask serve`: builds bay-server and runs it on the embedded SQLite default.

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build and run in release mode.
    #[arg(long)]
    release: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut c = cmd::cargo();
    c.args(["run", "--package", "bay-server", "--bin", "bay-server"]);
    if args.release {
        c.arg("--release");
    }
    cmd::run(&mut c)
}
