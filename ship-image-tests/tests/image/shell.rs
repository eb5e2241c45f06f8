//! Shell execution, background processes and PID 1 duties (§7, §11.2).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use ship_image_tests::Ship;

#[tokio::test]
async fn foreground_commands() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "shell-1";

    let v = ship
        .sh(sid, "echo out; echo err >&2; pwd; id -un; echo $HOME $LANG")
        .await?;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["return_code"], 0);
    assert_eq!(v["stderr"], "err");
    let out = v["stdout"].as_str().unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "out");
    assert!(
        lines[1].starts_with("/home/ship_") && lines[1].ends_with("/workspace"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ship_") && lines[2] != "root",
        "session code never runs as root: {out}"
    );
    assert_eq!(lines[3], format!("/home/{} C.UTF-8", lines[2]));
    assert!(v["pid"].as_u64().is_some(), "{v}");
    assert!(v["process_id"].is_null());
    assert!(v["error"].is_null());
    assert_eq!(v["stdout_truncated"], false);

    // C.UTF-8 is a real UTF-8 locale, served from the locale archive (one mmap per process
    // instead of a file per category; images/ship/Dockerfile).
    let v = ship
        .sh(
            sid,
            "x='héllo'; echo ${#x}; localedef --list-archive | grep -x C.utf8",
        )
        .await?;
    assert_eq!(v["stdout"], "5\nC.utf8", "{v}");

    let v = ship.sh(sid, "exit 3").await?;
    assert_eq!(v["success"], false);
    assert_eq!(v["return_code"], 3);
    let v = ship.sh(sid, "kill -9 $$").await?;
    assert_eq!(v["return_code"], -9, "{v}");

    // stdin is /dev/null: `cat` ends at once.
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "cat; echo done", "timeout": 5}),
        )
        .await?
        .json();
    assert_eq!(v["stdout"], "done", "{v}");

    // env and cwd
    ship.sh_ok(sid, "mkdir -p sub/dir").await?;
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "echo $FOO; pwd", "env": {"FOO": "bar baz"}, "cwd": "sub/dir"}),
        )
        .await?
        .json();
    assert_eq!(v["success"], true, "{v}");
    assert!(
        v["stdout"]
            .as_str()
            .is_some_and(|s| s.starts_with("bar baz\n/home/") && s.ends_with("/workspace/sub/dir")),
        "{v}"
    );
    let v = ship
        .post("/shell/exec", sid, json!({"command": "pwd", "cwd": "nope"}))
        .await?
        .json();
    assert_eq!(v["success"], false);
    assert_eq!(v["return_code"], -1);
    assert_eq!(v["error"], "Working directory does not exist: nope");
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "pwd", "env": {"BAD-NAME": "x"}}),
        )
        .await?
        .json();
    assert_eq!(v["error"], "Invalid environment variable name: BAD-NAME");
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "pwd", "env": {"A": "x\u{0}y"}}),
        )
        .await?
        .json();
    assert_eq!(v["error"], "Invalid environment variable value for A");

    // shell: false
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "printf '%s|' 'a b' c", "shell": false}),
        )
        .await?
        .json();
    assert_eq!(v["stdout"], "a b|c|", "{v}");
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "no-such-program-xyz", "shell": false}),
        )
        .await?
        .json();
    assert_eq!(v["success"], false);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Failed to start command: ")),
        "{v}"
    );
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "echo 'unterminated", "shell": false}),
        )
        .await?
        .json();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Invalid command: ")),
        "{v}"
    );

    // Invalid UTF-8 is replaced, not an error; big output is capped in the middle.
    let v = ship.sh(sid, "printf 'a\\377b'").await?;
    assert_eq!(v["stdout"], "a\u{fffd}b");
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "head -c 3000000 /dev/zero | tr '\\0' x"}),
        )
        .await?
        .json();
    assert_eq!(
        v["stdout_truncated"], true,
        "3 MB of output is over the 1 MiB cap"
    );
    let s = v["stdout"].as_str().unwrap_or_default();
    assert!(
        s.len() < 2_200_000 && s.contains("bytes omitted ..."),
        "{}",
        s.len()
    );
    Ok(())
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group_promptly() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "shell-2";
    // A command whose children and grandchildren (one re-parented to PID 1) outlive its timeout.
    let cmd = "echo started; (sleep 317 &); bash -c 'sleep 318 & sleep 319 & wait' & sleep 320";
    let t0 = Instant::now();
    let v = ship
        .post("/shell/exec", sid, json!({"command": cmd, "timeout": 2}))
        .await?
        .json();
    let took = t0.elapsed();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["return_code"], -1);
    assert_eq!(v["error"], "Command timed out");
    assert_eq!(v["stdout"], "started", "partial output is returned: {v}");
    assert!(v["pid"].as_u64().is_some());
    assert!(
        took < Duration::from_millis(3500),
        "answered {took:?} after a 2 s timeout (must be within a second)"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = ship.exec(&["ps", "-eo", "stat,args"])?;
    let ps = String::from_utf8_lossy(&out.stdout);
    for n in 317..=320 {
        assert!(
            !ps.contains(&format!("sleep {n}")),
            "sleep {n} survived the timeout:\n{ps}"
        );
    }
    assert!(
        !ps.lines().any(|l| l.starts_with('Z')),
        "zombies left:\n{ps}"
    );
    Ok(())
}

#[tokio::test]
async fn response_does_not_wait_for_background_children() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "shell-3";
    // The started bash exits at once; a child keeps the pipes open for 30 s.
    let t0 = Instant::now();
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "sleep 331 & echo quick", "timeout": 60}),
        )
        .await?
        .json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["stdout"], "quick");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn background_processes() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "shell-4";

    let r = ship.get("/shell/processes", Some("never-seen")).await?;
    assert_eq!(r.json(), json!({"processes": []}));

    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "echo bg-out; echo bg-err >&2; exit 4", "background": true}),
        )
        .await?
        .json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["return_code"], 0);
    let done_id = v["process_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        done_id.len() == 8
            && done_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{v}"
    );

    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "echo tick; sleep 341", "background": true}),
        )
        .await?
        .json();
    let long_id = v["process_id"].as_str().unwrap_or_default().to_owned();
    let long_pid = v["pid"].as_u64().unwrap_or_default();

    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = ship
        .get(&format!("/shell/process/{done_id}"), Some(sid))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let p = r.json();
    assert_eq!(p["status"], "failed");
    assert_eq!(p["return_code"], 4);
    assert_eq!(p["stdout"], "bg-out");
    assert_eq!(p["stderr"], "bg-err");

    let r = ship.get("/shell/processes", Some(sid)).await?;
    let list = r.json();
    let ids: Vec<&str> = list["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["process_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        [done_id.as_str(), long_id.as_str()],
        "start order: {list}"
    );
    assert_eq!(list["processes"][1]["status"], "running");
    assert!(list["processes"][1]["return_code"].is_null());
    assert_eq!(list["processes"][1]["pid"], long_pid);

    // Another session sees neither.
    let r = ship
        .get(&format!("/shell/process/{long_id}"), Some("someone-else"))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), format!("Process not found: {long_id}"));
    let r = ship
        .request(
            Method::DELETE,
            &format!("/shell/process/{long_id}"),
            Some("someone-else"),
            None,
        )
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = ship
        .request(
            Method::DELETE,
            &format!("/shell/process/{long_id}"),
            Some(sid),
            None,
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"success": true, "message": format!("Process {long_id} killed")})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ps = String::from_utf8_lossy(&ship.exec(&["ps", "-eo", "args"])?.stdout).into_owned();
    assert!(!ps.contains("sleep 341"), "{ps}");
    let r = ship
        .get(&format!("/shell/process/{long_id}"), Some(sid))
        .await?;
    assert_eq!(r.json()["status"], "failed");
    assert_eq!(r.json()["return_code"], -9);
    let r = ship
        .request(
            Method::DELETE,
            &format!("/shell/process/{done_id}"),
            Some(sid),
            None,
        )
        .await?;
    assert_eq!(
        r.json()["message"],
        format!("Process {done_id} is not running")
    );
    let r = ship.get("/shell/process/ffffffff", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn orphans_are_reaped_by_pid_1() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    for _ in 0..5 {
        ship.sh_ok("shell-5", "(sleep 0.2 &) ; (true &) ; exit 0")
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ps =
        String::from_utf8_lossy(&ship.exec(&["ps", "-eo", "pid,stat,args"])?.stdout).into_owned();
    assert!(
        !ps.lines().any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('Z'))),
        "zombies:\n{ps}"
    );
    let comm = String::from_utf8_lossy(&ship.exec(&["cat", "/proc/1/comm"])?.stdout)
        .trim()
        .to_owned();
    assert_eq!(comm, "ship", "the agent is PID 1");
    Ok(())
}
