//! `cargo xtask serve`: builds what is missing (the ship image, bay-server) and runs bay-server
//! on the embedded SQLite default (`./bay.db`), configured by the environment and `./.env`.

use crate::cmd;
use crate::ship_image::{self, Flavour};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build and run in release mode.
    #[arg(long)]
    release: bool,
    /// Do not build the ship image `ship:latest` when it is missing.
    #[arg(long)]
    no_image: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tag = Flavour::DEFAULT.default_tag();
    if !args.no_image {
        ship_image::ensure(tag)?;
    }
    let mut c = cmd::cargo();
    c.args(["run", "--package", "bay-server", "--bin", "bay-server"]);
    if args.release {
        c.arg("--release");
    }
    c.args(["--", "serve"]);
    cmd::run(&mut c)
}
