//! The terminal WebSocket (§8).

use std::time::Duration;

use ship_image_tests::Ship;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn terminal_runs_a_login_shell_as_the_session_user() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let mut t = ship
        .terminal("session_id=term-1&cols=100&rows=30", true)
        .await?;
    t.send("echo U=$(id -un) T=$TERM S=$(stty size) P=$(pwd) R=$((6*7))\r")
        .await?;
    t.expect("R=42", WAIT).await?;
    let line = t
        .output
        .lines()
        .rev()
        .find(|l| l.contains("R=42") && l.contains("U="))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("U=ship_"), "{line}");
    assert!(line.contains("T=xterm-256color"), "{line}");
    assert!(line.contains("S=30 100"), "{line}");
    assert!(line.contains("/workspace"), "{line}");

    // resize message is not written to the terminal
    t.send(r#"{"type":"resize","cols":120,"rows":40}"#).await?;
    t.send("echo SIZE=$(stty size)\r").await?;
    t.expect("SIZE=40 120", WAIT).await?;
    assert!(!t.output.contains("\"resize\""), "{}", t.output);

    // UTF-8 passes through whole
    t.send("printf 'Z\\xe4\\xb8\\xad\\xe6\\x96\\x87Z\\n'\r")
        .await?;
    t.expect("Z中文Z", WAIT).await?;

    t.send("exit\r").await?;
    let closed = t.closed(WAIT).await?;
    assert_eq!(closed.code, Some(1000), "{closed:?}");
    assert_eq!(closed.reason, "Shell exited");
    Ok(())
}

#[tokio::test]
async fn invalid_terminal_parameters_close_with_1008() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    for query in [
        "session_id=t&cols=0",
        "session_id=t&rows=1001",
        "session_id=t&cols=abc",
        "cols=80",
        "session_id=%20lead",
        "session_id=trail%20",
    ] {
        let mut t = ship.terminal(query, true).await?;
        let closed = t.closed(WAIT).await?;
        assert_eq!(closed.code, Some(1008), "{query}: {closed:?}");
    }
    Ok(())
}

#[tokio::test]
async fn terminal_disconnect_kills_its_processes() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let mut t = ship.terminal("session_id=term-3", true).await?;
    t.send("sleep 353 & echo STARTED\r").await?;
    t.expect("STARTED", WAIT).await?;
    drop(t);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ps = String::from_utf8_lossy(&ship.exec(&["ps", "-eo", "stat,args"])?.stdout).into_owned();
    assert!(!ps.contains("sleep 353"), "{ps}");
    assert!(!ps.contains("bash -l"), "{ps}");
    Ok(())
}
