//! `cargo xtask bench ship`: measures the ship agent in a running container of the ship image
//! and prints each figure beside a baseline measured in the same run, as a ratio, with its
//! budget. Nothing is asserted on timings: the output is a table for people.
//!
//! Figures: shell `echo 1` and Python `print(1)` round trips over HTTP (median and p99), against
//! `docker exec` running the same thing in the same container; the agent's idle RSS and the
//! container's memory with one Python session, against a `sleep infinity` container of the
//! same image; the image size, against the Debian base image.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use super::http::{Http, poll_health};
use super::{Args, Row, mb, ms, print_table, sample};
use crate::ship_image::{self, BASE_IMAGE, capture};

/// Budget of the image size: the complete runtime (`ship:latest`) stays well under the 2.06 GB
/// of the reference image.
const IMAGE_BUDGET_MB: f64 = 1500.0;

/// The label on every container the benchmark starts.
const BENCH_LABEL: &str = "bay.bench=ship";

pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.runs > 0 && args.baseline_runs > 0,
        "--runs and --baseline-runs must be at least 1"
    );
    ship_image::ensure(&args.image)?;

    eprintln!(
        "==> starting the agent ({}) and a `sleep infinity` baseline container",
        args.image
    );
    let agent = Container::run(&["-p", "127.0.0.1::8123", &args.image])?;
    let sleeper = Container::run(&["--entrypoint", "sleep", &args.image, "infinity"])?;
    let port = capture(Command::new("docker").args(["port", &agent.id, "8123/tcp"]))?;
    let addr = port
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .with_context(|| format!("the agent container publishes no 127.0.0.1 port: {port:?}"))?
        .to_owned();
    wait_healthy(&addr, &agent)?;
    std::thread::sleep(Duration::from_secs(1));

    eprintln!("==> idle memory");
    let idle_rss = vm_rss(&agent.id)?;
    let sleep_rss = vm_rss(&sleeper.id)?;

    let mut http = Http::connect(&addr)?;
    let sid = "bench";
    eprintln!(
        "==> shell: {} HTTP round trips, {} docker exec baselines",
        args.runs, args.baseline_runs
    );
    http.post_ok("/shell/exec", sid, r#"{"command":"echo 1"}"#)?; // creates the session user
    let shell = sample(args.runs, || {
        http.post_ok("/shell/exec", sid, r#"{"command":"echo 1"}"#)
    })?;
    let shell_base = sample(args.baseline_runs, || {
        docker_exec(&agent.id, &["sh", "-c", "echo 1"])
    })?;

    eprintln!(
        "==> python: {} HTTP round trips, {} docker exec baselines",
        args.runs, args.baseline_runs
    );
    http.post_ok("/ipython/exec", sid, r#"{"code":"print(1)"}"#)?; // starts the interpreter
    let py = sample(args.runs, || {
        http.post_ok("/ipython/exec", sid, r#"{"code":"print(1)"}"#)
    })?;
    let py_base = sample(args.baseline_runs, || {
        docker_exec(&agent.id, &["python3", "-c", "print(1)"])
    })?;

    eprintln!("==> memory with one python session, image sizes");
    std::thread::sleep(Duration::from_millis(500));
    let mem_py = container_memory(&agent.id)?;
    let mem_sleep = container_memory(&sleeper.id)?;
    let rss_after = vm_rss(&agent.id)?;
    let size = ship_image::image_size(&args.image)?;
    let base_size = ship_image::image_size(BASE_IMAGE).unwrap_or(0);

    let rows = [
        Row::new(
            "shell `echo 1`, median",
            ms(shell.median),
            "ms",
            ms(shell_base.median),
            "docker exec sh -c 'echo 1'",
            Some(5.0),
        ),
        Row::new(
            "shell `echo 1`, p99",
            ms(shell.p99),
            "ms",
            ms(shell_base.p99),
            "docker exec sh -c 'echo 1'",
            None,
        ),
        Row::new(
            "python `print(1)`, median",
            ms(py.median),
            "ms",
            ms(py_base.median),
            "docker exec python3 -c 'print(1)'",
            Some(10.0),
        ),
        Row::new(
            "python `print(1)`, p99",
            ms(py.p99),
            "ms",
            ms(py_base.p99),
            "docker exec python3 -c 'print(1)'",
            None,
        ),
        Row::new(
            "agent idle RSS",
            mb(idle_rss),
            "MB",
            mb(sleep_rss),
            "RSS of `sleep infinity`",
            Some(10.0),
        ),
        Row::new(
            "agent RSS, 1 python session",
            mb(rss_after),
            "MB",
            mb(sleep_rss),
            "RSS of `sleep infinity`",
            None,
        ),
        Row::new(
            "container memory, 1 python session",
            mb(mem_py),
            "MB",
            mb(mem_sleep),
            "`sleep infinity` container",
            Some(40.0),
        ),
        Row::new(
            "image size",
            mb(size),
            "MB",
            mb(base_size),
            BASE_IMAGE,
            Some(IMAGE_BUDGET_MB),
        ),
    ];
    print_table(
        &format!("ship agent benchmark, image {}", args.image),
        &rows,
    );
    drop(http);
    drop(sleeper);
    drop(agent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn docker_exec(id: &str, argv: &[&str]) -> anyhow::Result<()> {
    let out = capture(Command::new("docker").arg("exec").arg(id).args(argv))?;
    ensure!(out.trim() == "1", "docker exec {argv:?} printed {out:?}");
    Ok(())
}

/// `VmRSS` of PID 1 of a container, in bytes.
fn vm_rss(id: &str) -> anyhow::Result<u64> {
    let status = capture(Command::new("docker").args(["exec", id, "cat", "/proc/1/status"]))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/1/status of container {id}"))?;
    Ok(kb * 1024)
}

/// Memory use of a container as `docker stats` reports it (the cgroup's usage without page
/// cache), in bytes.
fn container_memory(id: &str) -> anyhow::Result<u64> {
    let out = capture(Command::new("docker").args([
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        id,
    ]))?;
    let used = out.split('/').next().unwrap_or("").trim();
    parse_size(used)
        .with_context(|| format!("unexpected docker stats memory {out:?} of container {id}"))
}

fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let num: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim() {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((num * mult) as u64)
}

fn wait_healthy(addr: &str, agent: &Container) -> anyhow::Result<()> {
    if !poll_health(
        addr,
        None,
        Duration::from_millis(100),
        Duration::from_secs(30),
    ) {
        let logs = capture(Command::new("docker").args(["logs", &agent.id])).unwrap_or_default();
        bail!(
            "the agent in container {} did not become healthy within 30 s: {logs}",
            agent.id
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// A container removed on drop.
#[derive(Debug)]
struct Container {
    id: String,
}

impl Container {
    fn run(args: &[&str]) -> anyhow::Result<Self> {
        let id = capture(
            Command::new("docker")
                .args(["run", "-d", "--label", BENCH_LABEL])
                .args(args),
        )?
        .trim()
        .to_owned();
        Ok(Self { id })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = capture(Command::new("docker").args(["rm", "-f", "-v", &self.id]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_sizes() {
        assert_eq!(parse_size("1.5MiB"), Some(1_572_864));
        assert_eq!(parse_size("512KiB"), Some(524_288));
        assert_eq!(parse_size("12B"), Some(12));
        assert_eq!(
            parse_size("7.7 GiB"),
            Some((7.7 * 1024.0 * 1024.0 * 1024.0) as u64)
        );
        assert_eq!(parse_size("n/a"), None);
    }
}
