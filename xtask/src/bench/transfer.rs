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
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::server::{self, BayServer, TOKEN};
use super::{Row, mb, print_table};
use crate::ship_image::{self, Flavour, capture};

const SESSION: &str = "bench-transfer";

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

/// Samples the peak RSS of `pid` while `f` runs; returns f's duration and the peak (bytes).
fn timed_with_peak(
    pid: u32,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, u64)> {
    let peak = Arc::new(AtomicU64::new(super::rss(pid)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(super::rss(pid), Ordering::Relaxed);
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
    Ok((took, peak.load(Ordering::Relaxed)))
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
    let binary = server::build()?;
    let mut bay = BayServer::start(
        &binary,
        "transfer",
        image,
        &[("MAX_UPLOAD_SIZE", ((size_mb + 1) << 20).to_string())],
    )?;
    let base = format!("http://{}", bay.addr);
    let pid = bay.pid();
    eprintln!("==> creating a ship");
    let (status, body) = curl(
        &base,
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
    bay.track(&id);
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

    let file = bay.dir().join("payload.bin");
    eprintln!("==> writing a {size_mb} MB file");
    make_file(&file, size_mb)?;
    let form = format!("file=@{}", file.display());
    std::thread::sleep(Duration::from_secs(1));
    let idle = super::rss(pid);

    eprintln!("==> upload through Bay, then straight to the agent");
    let (up_bay, up_peak) = timed_with_peak(pid, || {
        let (s, b) = curl(
            &base,
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
            &base,
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
