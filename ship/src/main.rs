//! The ship agent (placeholder until the ship-agent issue lands).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the ship agent is not implemented yet")
}
