//! `cargo xtask bench transfer`: streams a large file (500 MB by default) through bay-server
//! (release build, `docker-host` driver, the real ship image) and back, and prints:
//!
//! - upload and download throughput through Bay, against the same transfer sent straight to the
//!   ship agent (the baseline, measured in the same run);
//! - bay-server's peak RSS during the transfers, against its idle RSS: streaming keeps it flat.
//!
//! Transfers are made with `curl`; memory is sampled from `/proc/<pid>/status` every 20 ms.
//! Nothing is asserted: the output is a table for people.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::bench::{Row, print_table};
use crate::cmd;
use crate::ship_image::{self, Flavour, capture};

const TOKEN: &str = "bench-transfer-token";
const SESSION: &str = "bench-transfer";

/// bay-server running for the benchmark; stopped and cleaned up on drop.
struct Bay {
    child: Child,
    base: String,
    network: String,
    dir: PathBuf,
    ship: Option<String>,
}

impl Drop for Bay {
    fn drop(&mut self) {
        if let Some(id) = self.ship.take() {
            let _ = curl(
                &self.base,
                &["-X", "DELETE"],
                &format!("/ship/{id}/permanent"),
            );
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        cmd::succeeds(Command::new("docker").args(["network", "rm", &self.network]));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs curl against Bay with the token and session; returns (status, body).
fn curl(base: &str, args: &[&str], path: &str) -> anyhow::Result<(u16, String)> {
    let out = capture(
        Command::new("curl")
            .args(["-sS", "-m", "600", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["-H", &format!("X-SESSION-ID: {SESSION}")])
            .args(args)
            .arg(format!("{base}{path}")),
    )?;
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    Ok((
        code.trim().parse().context("curl printed no status")?,
        body.to_owned(),
    ))
}

fn json_field(body: &str, key: &str) -> Option<String> {
    let at = body.find(&format!("\"{key}\":\""))? + key.len() + 4;
    Some(body[at..].split('"').next()?.to_owned())
}

fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the peak RSS of `pid` while `f` runs; returns f's duration and the peak (bytes).
fn timed_with_peak(
    pid: u32,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, u64)> {
    let peak = Arc::new(AtomicU64::new(rss_kb(pid)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result?;
    Ok((took, peak.load(Ordering::Relaxed) * 1024))
}

fn make_file(path: &Path, mb: u64) -> anyhow::Result<()> {
    let mut f =
        fs::File::create(path).with_context(|| format!("could not create {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    for i in 0..mb {
        block[0] = i as u8;
        f.write_all(&block)?;
    }
    Ok(())
}

pub fn run(image: &str, size_mb: u64) -> anyhow::Result<()> {
    ensure!(size_mb > 0, "--size-mb must be at least 1");
    if !ship_image::image_exists(image) {
        eprintln!("==> image {image} is missing: building it");
        ship_image::build(&[(Flavour::for_tag(image), image.to_owned())], false)?;
    }
    eprintln!("==> building bay-server (release)");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "bay-server",
        "--bin",
        "bay-server",
    ]))?;
    let binary = cmd::target_dir().join("release").join("bay-server");

    let dir = std::env::temp_dir().join(format!("bay-bench-transfer-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let network = format!("bay-bench-{}", std::process::id());
    let child = Command::new(&binary)
        .arg("serve")
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("ACCESS_TOKEN", TOKEN)
        .env("DATABASE_URL", format!("sqlite://{}/bay.db", dir.display()))
        .env("CONTAINER_DRIVER", "docker-host")
        .env("DOCKER_IMAGE", image)
        .env("DOCKER_NETWORK", &network)
        .env("MAX_UPLOAD_SIZE", ((size_mb + 1) << 20).to_string())
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("could not start bay-server")?;
    let pid = child.id();
    let mut bay = Bay {
        child,
        base: format!("http://127.0.0.1:{port}"),
        network,
        dir: dir.clone(),
        ship: None,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(curl(&bay.base, &[], "/health"), Ok((200, _))) {
        ensure!(
            Instant::now() < deadline,
            "bay-server did not answer /health within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    eprintln!("==> creating a ship");
    let (status, body) = curl(
        &bay.base,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"ttl":3600}"#,
        ],
        "/ship",
    )?;
    ensure!(status == 201, "POST /ship answered {status}: {body}");
    let id = json_field(&body, "id").context("no ship id")?;
    bay.ship = Some(id.clone());
    let agent = json_field(&body, "ip_address").context("no ship address")?;
    let container = json_field(&body, "container_id").context("no container id")?;
    let env = capture(Command::new("docker").args([
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        &container,
    ]))?;
    let ship_token = env
        .split('"')
        .find_map(|e| e.strip_prefix("SHIP_AUTH_TOKEN="))
        .context("the ship has no SHIP_AUTH_TOKEN")?
        .to_owned();

    let file = dir.join("payload.bin");
    eprintln!("==> writing a {size_mb} MB file");
    make_file(&file, size_mb)?;
    let form = format!("file=@{}", file.display());
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kb(pid) * 1024;

    eprintln!("==> upload through Bay, then straight to the agent");
    let (up_bay, up_peak) = timed_with_peak(pid, || {
        let (s, b) = curl(
            &bay.base,
            &["-F", &form, "-F", "file_path=bench/through-bay.bin"],
            &format!("/ship/{id}/upload"),
        )?;
        ensure!(s == 200, "upload through Bay answered {s}: {b}");
        Ok(())
    })?;
    let agent_base = format!("http://{agent}");
    let (up_direct, _) = timed_with_peak(pid, || {
        let out = capture(
            Command::new("curl")
                .args(["-sS", "-m", "600", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", &format!("Authorization: Bearer {ship_token}")])
                .args(["-H", &format!("X-SESSION-ID: {SESSION}")])
                .args(["-F", &form, "-F", "file_path=bench/direct.bin"])
                .arg(format!("{agent_base}/upload")),
        )?;
        if out.trim() != "200" {
            bail!("direct upload answered {out}");
        }
        Ok(())
    })?;

    eprintln!("==> download through Bay, then straight from the agent");
    let (down_bay, down_peak) = timed_with_peak(pid, || {
        let (s, b) = curl(
            &bay.base,
            &["-o", "/dev/null"],
            &format!("/ship/{id}/download?file_path=bench/through-bay.bin"),
        )?;
        ensure!(s == 200, "download through Bay answered {s}: {b}");
        Ok(())
    })?;
    let (down_direct, _) = timed_with_peak(pid, || {
        let out = capture(
            Command::new("curl")
                .args(["-sS", "-m", "600", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", &format!("Authorization: Bearer {ship_token}")])
                .args(["-H", &format!("X-SESSION-ID: {SESSION}")])
                .arg(format!("{agent_base}/download?file_path=bench/direct.bin")),
        )?;
        if out.trim() != "200" {
            bail!("direct download answered {out}");
        }
        Ok(())
    })?;

    let mbps = |d: Duration| size_mb as f64 / d.as_secs_f64();
    let mb = |b: u64| b as f64 / 1_000_000.0;
    let rows = [
        Row::new(
            "upload throughput through Bay",
            mbps(up_bay),
            "MB/s",
            mbps(up_direct),
            "straight to the agent",
            None,
        ),
        Row::new(
            "download throughput through Bay",
            mbps(down_bay),
            "MB/s",
            mbps(down_direct),
            "straight from the agent",
            None,
        ),
        Row::new(
            "bay-server peak RSS, upload",
            mb(up_peak),
            "MB",
            mb(idle),
            "bay-server idle RSS",
            Some(mb(idle) + 64.0),
        ),
        Row::new(
            "bay-server peak RSS, download",
            mb(down_peak),
            "MB",
            mb(idle),
            "bay-server idle RSS",
            Some(mb(idle) + 64.0),
        ),
    ];
    print_table(
        &format!("bay-server transfer benchmark, {size_mb} MB file, image {image}"),
        &rows,
    );
    drop(bay);
    Ok(())
}
