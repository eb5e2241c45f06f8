//! `bay`: the command-line client of Bay.
//!
//! Not implemented yet. It will be a clap client of bay-server over HTTP (`bay ship create`, …)
//! and a local mode that composes bay-core with a driver through bay-server's factory.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the bay CLI is not implemented yet; use bay-server's HTTP API (see README.md)")
}
