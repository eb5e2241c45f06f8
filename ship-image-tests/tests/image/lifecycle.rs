//! Lifecycle: the busybox image, persistence across re-creation, authentication, SIGTERM.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use ship_image_tests::{Ship, ShipOptions, Volume, busybox_image, docker, image};

#[tokio::test]
async fn agent_is_pid_1_in_a_busybox_only_image() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(busybox_image())).await?;
    let sid = "bb";
    // The image has no python3, no libc, no bash: only busybox and the agent.
    assert!(
        !ship
            .exec(&["test", "-e", "/usr/bin/python3"])?
            .status
            .success()
    );
    assert!(
        !ship
            .exec(&[
                "sh",
                "-c",
                "ls /lib*/ld-linux* /lib/x86_64-linux-gnu 2>/dev/null"
            ])?
            .status
            .success()
    );

    let r = ship.get("/health", None).await?;
    assert_eq!(r.json()["status"], "healthy");
    let v = ship
        .sh(sid, "cat /proc/1/comm; id -u; echo hi > f.txt; cat f.txt")
        .await?;
    assert_eq!(v["success"], true, "{v}");
    let out = v["stdout"].as_str().unwrap_or_default().to_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"ship"), "{out}");
    assert!(
        lines
            .get(1)
            .and_then(|u| u.parse::<u32>().ok())
            .is_some_and(|u| u >= 10000),
        "{out}"
    );
    assert_eq!(lines.get(2), Some(&"hi"));

    let r = ship
        .post(
            "/fs/create_file",
            sid,
            json!({"path": "d/a.txt", "content": "abc"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "d/a.txt"}))
        .await?;
    assert_eq!(r.json()["content"], "abc");
    let r = ship.post("/fs/list_dir", sid, json!({"path": "."})).await?;
    assert!(r.text().contains("\"f.txt\""), "{}", r.text());
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "/etc/passwd"}))
        .await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = ship.get("/download?file_path=d/a.txt", Some(sid)).await?;
    assert_eq!(r.body, b"abc");
    let v = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": "sleep 363", "timeout": 1}),
        )
        .await?
        .json();
    assert_eq!(v["error"], "Command timed out", "{v}");
    Ok(())
}

#[tokio::test]
async fn files_and_users_survive_recreating_the_container() -> anyhow::Result<()> {
    let home = Volume::create()?;
    let meta = Volume::create()?;
    let mut opts = ShipOptions::new(image());
    opts.volumes = Some((home.name.clone(), meta.name.clone()));
    let sid = "persist";

    let (uid, path) = {
        let ship = Ship::start(opts.clone()).await?;
        let r = ship
            .post(
                "/fs/create_file",
                sid,
                json!({"path": "keep/me.txt", "content": "still here"}),
            )
            .await?;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        ship.post(
            "/fs/create_file",
            "persist-2",
            json!({"path": "x", "content": "y"}),
        )
        .await?;
        let uid = ship.sh_ok(sid, "id -u").await?;
        (
            uid,
            r.json()["path"].as_str().unwrap_or_default().to_owned(),
        )
    };

    let ship = Ship::start(opts).await?;
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "keep/me.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["content"], "still here");
    assert_eq!(r.json()["path"], path.as_str());
    assert_eq!(
        ship.sh_ok(sid, "id -u").await?,
        uid,
        "same uid after re-creation"
    );
    let user = path
        .trim_start_matches("/home/")
        .split('/')
        .next()
        .unwrap_or_default();
    assert_eq!(ship.sh_ok(sid, "stat -c %U keep/me.txt").await?, user);
    // The second session's user keeps its own uid too (no collision).
    let uid2 = ship.sh_ok("persist-2", "id -u").await?;
    assert_ne!(uid2, uid);
    // A new session gets a fresh uid.
    let uid3 = ship.sh_ok("persist-3", "id -u").await?;
    assert!(uid3 != uid && uid3 != uid2, "{uid} {uid2} {uid3}");
    Ok(())
}

#[tokio::test]
async fn auth_token_is_enforced() -> anyhow::Result<()> {
    let mut opts = ShipOptions::new(image());
    opts.token = Some("s3cret-token".to_owned());
    let ship = Ship::start(opts).await?;
    let no_token = reqwest::Client::new();
    let get = |path: &str| no_token.get(ship.url(path)).header("X-SESSION-ID", "auth");

    for open in ["/", "/health"] {
        assert_eq!(get(open).send().await?.status(), StatusCode::OK, "{open}");
    }
    for path in [
        "/stat",
        "/shell/processes",
        "/ipython/kernels",
        "/download?file_path=x",
    ] {
        let r = get(path).send().await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            r.json::<serde_json::Value>().await?,
            json!({"detail": "Invalid ship token"})
        );
        let r = get(path).bearer_auth("wrong").send().await?;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
    }
    let r = no_token
        .post(ship.url("/shell/exec"))
        .header("X-SESSION-ID", "auth")
        .json(&json!({"command": "touch /tmp/pwned"}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !ship.exec(&["test", "-e", "/tmp/pwned"])?.status.success(),
        "the command ran"
    );

    // With the token (the harness sends it) everything works.
    assert_eq!(ship.get("/stat", None).await?.status, StatusCode::OK);
    assert_eq!(ship.sh_ok("auth", "echo ok").await?, "ok");

    // Terminal: refused without a token, accepted with the header or the query parameter.
    let url = format!("ws://{}/term/ws?session_id=auth", ship.addr);
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "terminal opened without a token"
    );
    let mut t = ship.terminal("session_id=auth", true).await?;
    t.send("echo A=$((1+1))\r").await?;
    t.expect("A=2", Duration::from_secs(20)).await?;
    let mut t = ship
        .terminal("session_id=auth&token=s3cret-token", false)
        .await?;
    t.send("echo B=$((2+2))\r").await?;
    t.expect("B=4", Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly_and_quickly() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    ship.post(
        "/shell/exec",
        "stop",
        json!({"command": "sleep 373", "background": true}),
    )
    .await?;
    ship.py("stop", "x = 1").await?;
    let t0 = Instant::now();
    docker(&["stop", "-t", "20", &ship.id])?;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "docker stop took {took:?} (the agent must exit within 5 s of SIGTERM)"
    );
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &ship.id])?;
    assert_eq!(code, "0");
    Ok(())
}
