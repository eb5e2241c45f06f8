//! Small helpers to run external commands with clear errors.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory (`CARGO_TARGET_DIR`, relative to the workspace, or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs `cmd`, echoing it first; fails with the command line when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns whether it succeeded, without echoing or failing.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `cmd` quietly and returns its trimmed standard output; fails with the command line and
/// its standard error when it exits non-zero.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs the Debian `packages` that are not installed yet (`apt-get update` first when the
/// install fails, e.g. on stale package lists). Idempotent: nothing runs when all are there.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map(|s| !s.ends_with("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=600", "install", "-y"])
            .args(&missing))
    };
    if install().is_err() {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("update"))?;
        install().with_context(|| {
            format!(
                "could not install {} with apt-get (are you root?)",
                missing.join(" ")
            )
        })?;
    }
    Ok(())
}

/// Starts `command` in a process group of its own (a Ctrl-C in the terminal reaches xtask,
/// which stops it in order), its input closed and its output and errors written to `log`.
pub fn spawn_logged(command: &mut Command, log: std::fs::File) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(command)))
}

/// Runs `from | to` (the standard output of `from` into `to`); fails naming the pipeline
/// when either side fails.
pub fn pipe(from: &mut Command, to: &mut Command) -> anyhow::Result<()> {
    let line = format!("{} | {}", describe(from), describe(to));
    eprintln!("$ {line}");
    let mut producer = from
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(from)))?;
    let stdout = producer.stdout.take().context("the pipe's input")?;
    let consumed = to
        .stdin(stdout)
        .status()
        .with_context(|| format!("could not start `{}`", describe(to)))?;
    let produced = producer.wait()?;
    if !produced.success() || !consumed.success() {
        bail!("`{line}` failed ({produced}, {consumed})");
    }
    Ok(())
}

/// The command a `with-…` wrapper runs (its first word the program), in the workspace root.
pub fn wrapped_command(words: &[String]) -> anyhow::Result<Command> {
    let (program, rest) = words.split_first().context("a command to run")?;
    let mut command = Command::new(program);
    command.args(rest).current_dir(workspace_root());
    Ok(command)
}

/// A `cargo` command using the toolchain that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
