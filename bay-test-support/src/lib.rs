//! Helpers shared by the tests that run Bay's binaries (`bay-server`, `bay`) against a real
//! container engine: bay-server's `tests/e2e` and bay-cli's `tests/cli`; [`kube`]: the test
//! Kubernetes cluster, for bay-driver-kube's `tests/cluster` and bay-server's
//! `e2e/kubernetes.rs`. A dev-dependency only.
//!
//! ```
//! let port = bay_test_support::free_port();
//! assert!(port > 0);
//! assert!(!bay_test_support::health_ok(port), "nobody listens on a port just freed");
//! ```

pub mod kube;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The ship image the tests run: `BAY_SHIP_IMAGE`, default `ship:latest`.
pub fn ship_image() -> String {
    std::env::var("BAY_SHIP_IMAGE").unwrap_or_else(|_| "ship:latest".to_owned())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A blocking `GET /health` on `127.0.0.1:port` (no runtime needed): whether it answered 200.
pub fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: bay\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = stream.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Waits until `127.0.0.1:port` answers `/health` with 200; panics after 60 s.
pub fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !health_ok(port) {
        assert!(
            Instant::now() < deadline,
            "bay-server did not answer /health on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a server process as an operator would (SIGTERM), then SIGKILL if it has not exited
/// after 15 s; reaps it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs an engine's CLI (`docker` or `podman`, which take the same arguments here).
pub fn engine_cli(cli: &str, args: &[&str]) -> Output {
    Command::new(cli)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("the {cli} CLI runs: {e}"))
}

/// Removes a ship's volumes (also of ships whose container is already gone).
pub fn remove_ship_volumes(cli: &str, ship: &str) {
    let [home, metadata] = bay_core::engine::volume_names(ship);
    let _ = engine_cli(cli, &["volume", "rm", "-f", &home, &metadata]);
}

/// Removes every container on `network` (any state) with the volumes of its ship, then the
/// network: the clean-up of a test Bay whose ships all live on a network of its own.
pub fn remove_network_and_ships(cli: &str, network: &str) {
    let ids = engine_cli(
        cli,
        &["ps", "-aq", "--filter", &format!("network={network}")],
    );
    let label = format!(
        "{{{{index .Config.Labels \"{}\"}}}}",
        bay_core::engine::LABEL_SHIP_ID
    );
    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
        let ship = engine_cli(cli, &["inspect", "-f", &label, id]);
        let ship = String::from_utf8_lossy(&ship.stdout).trim().to_owned();
        let _ = engine_cli(cli, &["rm", "-f", "-v", id]);
        if !ship.is_empty() {
            remove_ship_volumes(cli, &ship);
        }
    }
    let _ = engine_cli(cli, &["network", "rm", network]);
}
