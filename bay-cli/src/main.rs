//! `bay`: the command-line client of Bay.
//!
//! Remote mode (`--url`/`BAY_URL`) is a client of bay-server; local mode composes bay-core with
//! the configured driver through `bay-factory`, as bay-server does, on the same database. Both
//! answer with the API's own types (`bay-api-types`), so `--output json` prints the same bodies
//! either way. See `bay --help` for the exit codes.

mod backend;
mod cli;
mod commands;
mod failure;
mod output;
mod term;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::backend::Backend;
use crate::cli::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "bay", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Background reads of stdin (bay term) must not keep the process alive.
    runtime.shutdown_background();
    code
}

async fn run(cli: Cli) -> ExitCode {
    let url = if cli.global.local {
        None
    } else {
        cli.global.url.clone().filter(|u| !u.is_empty())
    };
    let backend = match Backend::connect(url.as_deref(), cli.global.token.clone()).await {
        Ok(b) => b,
        Err(f) => return report(&f),
    };
    let result = commands::run(&backend, &cli.global, cli.command).await;
    backend.close().await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => report(&f),
    }
}

fn report(f: &Failure) -> ExitCode {
    eprintln!("bay: {f}");
    ExitCode::from(f.kind.code())
}
