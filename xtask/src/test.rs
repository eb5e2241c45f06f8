//! `cargo xtask test`: what CI runs. Installs what the tests need (idempotently), checks
//! formatting and lints with `-D warnings`, then runs every test with cargo-nextest.

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy (only run the tests).
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments passed to `cargo nextest run` (e.g. a test filter).
    #[arg(last = true)]
    nextest_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
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
    let mut c = cmd::cargo();
    c.args([
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
    ]);
    c.args(&args.nextest_args);
    cmd::run(&mut c)?;
    cmd::run(cmd::cargo().args(["test", "--workspace", "--all-features", "--doc"]))
}
