//! `cargo xtask ship-image`: builds the ship image from local parts (filled by the ship-agent issue).

use anyhow::bail;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    bail!("the ship image cannot be built yet: the ship agent is not implemented")
}
