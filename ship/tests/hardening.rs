//! Sandbox hardening (issue 9) on the agent binary: symlink chains, FIFOs, escaped processes
//! and command lines (as root on a loopback port, like `agent.rs`).

#[expect(
    dead_code,
    reason = "the shared harness: this test binary uses only part of it"
)]
mod common;

use std::time::Duration;

use serde_json::json;

use common::start;

/// Command lines of every process on the host, one per line.
fn all_args() -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
            out.push_str(&String::from_utf8_lossy(&b).replace('\0', " "));
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn symlink_chains_longer_than_the_limit_are_refused() {
    let Some(a) = start(&[]).await else { return };
    let sid = "links";
    let v = a
        .sh(sid, "ln -s . d && ln -s /etc e && ln -s /proc/self/fd fds")
        .await;
    assert_eq!(v["success"], true, "{v}");
    let chain = "d/".repeat(41);
    let (s, v) = a
        .post(
            sid,
            "/fs/read_file",
            json!({"path": format!("{chain}e/passwd")}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["detail"],
        "Invalid path: too many levels of symbolic links"
    );
    for n in 0..16 {
        for path in [format!("fds/{n}"), format!("{chain}fds/{n}")] {
            let (s, v) = a.post(sid, "/fs/read_file", json!({"path": path})).await;
            assert!(s == 400 || s == 403, "{path}: {s} {v}");
        }
    }
}

#[tokio::test]
async fn a_fifo_answers_400_at_once() {
    let Some(a) = start(&[]).await else { return };
    let sid = "fifo";
    assert_eq!(a.sh(sid, "mkfifo f").await["success"], true);
    for (route, body) in [
        ("/fs/write_file", json!({"path": "f", "content": "x"})),
        ("/fs/read_file", json!({"path": "f"})),
    ] {
        let (s, v) = tokio::time::timeout(Duration::from_secs(30), a.post(sid, route, body))
            .await
            .expect("the agent answers");
        assert_eq!(
            (s, v["detail"].clone()),
            (400, json!("Path is not a file: f")),
            "{route}"
        );
    }
}

#[tokio::test]
async fn a_timeout_kills_processes_started_in_new_sessions() {
    let Some(a) = start(&[]).await else { return };
    let (s, v) = a
        .post(
            "escape",
            "/shell/exec",
            json!({"command": "setsid sh -c 'sleep 307' & sleep 30", "timeout": 2}),
        )
        .await;
    assert_eq!((s, v["error"].clone()), (200, json!("Command timed out")));
    assert!(
        !still_running("sleep 307").await,
        "the escaped `sleep 307` survived the timeout"
    );
}

#[tokio::test]
async fn command_text_is_not_on_any_command_line() {
    let Some(a) = start(&[]).await else { return };
    let secret = "token=SECRET-0815";
    let (_, v) = a
        .post(
            "argv",
            "/shell/exec",
            json!({"command": format!("sleep 30; echo {secret}"), "background": true}),
        )
        .await;
    assert_eq!(v["success"], true, "{v}");
    let args = all_args();
    assert!(!args.contains(secret), "{args}");
    let id = v["process_id"].as_str().unwrap().to_owned();
    let (s, _) = a.delete("argv", &format!("/shell/process/{id}")).await;
    assert_eq!(s, 200);
}

/// Waits (bounded) until no process runs `needle`; whether one is left.
async fn still_running(needle: &str) -> bool {
    for _ in 0..20 {
        if !all_args().lines().any(|l| l.trim() == needle) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    true
}

#[tokio::test]
async fn shutdown_kills_what_sessions_started_in_new_sessions() {
    let Some(mut a) = start(&[]).await else {
        return;
    };
    let v = a
        .sh(
            "bye",
            "setsid sh -c 'sleep 308' </dev/null >/dev/null 2>&1 & echo started",
        )
        .await;
    assert_eq!(v["stdout"], "started", "{v}");
    let mut started = false;
    for _ in 0..40 {
        started = all_args().lines().any(|l| l.trim() == "sleep 308");
        if started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the escaped process never ran");
    assert!(a.terminate().is_some_and(|s| s.success()));
    assert!(
        !still_running("sleep 308").await,
        "left running after shutdown"
    );
}
