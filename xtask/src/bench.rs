//! `cargo xtask bench ship`: measures the ship agent in a running container of the ship image
//! and prints each figure beside a baseline measured in the same run, as a ratio, with its
//! budget. Nothing is asserted on timings: the output is a table for people.
//!
//! Figures: shell `echo 1` and Python `print(1)` round trips over HTTP (median and p99), against
//! `docker exec` running the same thing in the same container; the agent's idle RSS and the
//! container's memory with one Python session, against a `sleep infinity` container of the
//! same image; the image size, against the Debian base image.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::ship_image::{self, BASE_IMAGE, Flavour, capture};

/// Budget of the image size: the complete runtime (`ship:latest`) stays well under the 2.06 GB
/// of the reference image.
const IMAGE_BUDGET_MB: f64 = 1500.0;

/// The label on every container the benchmark starts.
const BENCH_LABEL: &str = "bay.bench=ship";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Target {
    /// The ship agent in its image.
    Ship,
    /// Streaming a large file through bay-server (upload and download) with the real driver.
    Transfer,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to benchmark.
    #[arg(value_enum)]
    target: Target,
    /// Image to run (built with `cargo xtask ship-image` first when missing).
    #[arg(long, default_value = "ship:latest")]
    image: String,
    /// Round trips per HTTP measurement.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Round trips per `docker exec` baseline (each takes tens of milliseconds).
    #[arg(long, default_value_t = 30)]
    baseline_runs: usize,
    /// Size of the file `bench transfer` streams, in MB.
    #[arg(long, default_value_t = 500)]
    size_mb: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.target {
        Target::Ship => bench_ship(&args),
        Target::Transfer => crate::bench_transfer::run(&args.image, args.size_mb),
    }
}

fn bench_ship(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.runs > 0 && args.baseline_runs > 0,
        "--runs and --baseline-runs must be at least 1"
    );
    if !ship_image::image_exists(&args.image) {
        eprintln!("==> image {} is missing: building it", args.image);
        ship_image::build(
            &[(Flavour::for_tag(&args.image), args.image.clone())],
            false,
        )?;
    }

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

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mb = |b: u64| b as f64 / 1_000_000.0;
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

#[derive(Debug)]
struct Stats {
    median: Duration,
    p99: Duration,
}

fn sample(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Stats> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    Ok(stats(times))
}

/// Median and 99th percentile (nearest rank) of a non-empty sample.
fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Stats {
        median: at(0.5),
        p99: at(0.99),
    }
}

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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut http) = Http::connect(addr)
            && http
                .request("GET", "/health", None, None)
                .is_ok_and(|(s, _)| s == 200)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs =
                capture(Command::new("docker").args(["logs", &agent.id])).unwrap_or_default();
            bail!(
                "the agent in container {} did not become healthy within 30 s: {logs}",
                agent.id
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Output

#[derive(Debug)]
pub(crate) struct Row {
    metric: &'static str,
    value: f64,
    unit: &'static str,
    baseline: f64,
    baseline_what: &'static str,
    budget: Option<f64>,
}

impl Row {
    pub(crate) fn new(
        metric: &'static str,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_what: &'static str,
        budget: Option<f64>,
    ) -> Self {
        Self {
            metric,
            value,
            unit,
            baseline,
            baseline_what,
            budget,
        }
    }
}

pub(crate) fn print_table(title: &str, rows: &[Row]) {
    println!();
    println!("{title}");
    println!(
        "{:<36} {:>10} {:>10} {:>8}  {:<12} baseline",
        "metric", "ship", "baseline", "ratio", "budget"
    );
    for r in rows {
        let ratio = match r.value / r.baseline {
            x if !x.is_finite() => "-".to_owned(),
            x if x < 0.1 => format!("{x:.4}x"),
            x => format!("{x:.2}x"),
        };
        let budget = match r.budget {
            Some(b) if r.value < b => format!("< {b:.1} {} ok", r.unit),
            Some(b) => format!("< {b:.1} {} OVER", r.unit),
            None => String::new(),
        };
        println!(
            "{:<36} {:>7.2} {:<2} {:>7.2} {:<2} {:>8}  {:<12} {}",
            r.metric, r.value, r.unit, r.baseline, r.unit, ratio, budget, r.baseline_what
        );
    }
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

/// A minimal keep-alive HTTP/1.1 client (no dependencies): enough to time round trips.
#[derive(Debug)]
struct Http {
    addr: String,
    conn: BufReader<TcpStream>,
}

impl Http {
    fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("could not connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            addr: addr.to_owned(),
            conn: BufReader::new(stream),
        })
    }

    /// POSTs JSON and fails unless the answer is 200 with `"success":true`.
    fn post_ok(&mut self, path: &str, sid: &str, body: &str) -> anyhow::Result<()> {
        let (status, text) = self.request("POST", path, Some(sid), Some(body))?;
        ensure!(
            status == 200 && text.contains("\"success\":true"),
            "POST {path} {body} answered {status}: {text}"
        );
        Ok(())
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        sid: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let body = body.unwrap_or("");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(sid) = sid {
            req.push_str(&format!("X-SESSION-ID: {sid}\r\n"));
        }
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        self.conn
            .get_mut()
            .write_all(req.as_bytes())
            .context("could not send the request")?;

        let mut line = String::new();
        self.conn
            .read_line(&mut line)
            .context("could not read the status line")?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.conn
                .read_line(&mut line)
                .context("could not read a header")?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                data.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.context("response without Content-Length")?;
            data.resize(length, 0);
            self.conn
                .read_exact(&mut data)
                .context("could not read the body")?;
        }
        Ok((status, String::from_utf8_lossy(&data).into_owned()))
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

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let s = stats(times);
        assert_eq!(s.median, Duration::from_millis(100));
        assert_eq!(s.p99, Duration::from_millis(198));
        let one = stats(vec![Duration::from_millis(7)]);
        assert_eq!(
            (one.median, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }
}
