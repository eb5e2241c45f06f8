//! Ships cannot reach each other (issue 9, item 6): two ships of two sessions on the network
//! `bay-server` creates in `docker-host` mode; from ship A, ship B's agent port is closed by
//! container IP and through the network's gateway and B's published port, and so is Bay's API
//! on the gateway, while Bay still reaches both ships.

use reqwest::Method as M;
use reqwest::StatusCode;
use serde_json::json;

use super::{Api, Bay, docker};

/// `docker inspect -f <format> <target>`, trimmed.
fn inspect(format: &str, target: &str) -> String {
    let out = docker(&["inspect", "-f", format, target]);
    assert!(
        out.status.success(),
        "docker inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A Python probe that prints `<host> <port> open|closed` for each target, waiting at most 3 s
/// for each connection.
fn probe(targets: &[(&str, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(host, port)| format!("('{host}', {port})"))
        .collect();
    format!(
        "python3 - <<'PY'\n\
         import socket\n\
         for host, port in [{}]:\n\
         \x20   s = socket.socket()\n\
         \x20   s.settimeout(3)\n\
         \x20   try:\n\
         \x20       s.connect((host, port))\n\
         \x20       print(host, port, 'open')\n\
         \x20   except OSError as e:\n\
         \x20       print(host, port, 'closed', e)\n\
         PY",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ships_cannot_reach_each_other_but_bay_reaches_both() {
    let bay = Bay::start();
    let api = Api::new(&bay.url);

    let mut ships = Vec::new();
    for session in ["iso-a", "iso-b"] {
        let (s, ship) = api
            .json(M::POST, "/ship", Some(session), Some(json!({"ttl": 600})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ship}");
        ships.push((session, ship));
    }
    let (a, ship_a) = &ships[0];
    let (b, ship_b) = &ships[1];
    assert_ne!(ship_a["id"], ship_b["id"], "two sessions, two ships");
    let id_a = ship_a["id"].as_str().unwrap();
    let id_b = ship_b["id"].as_str().unwrap();

    // The network Bay created turns inter-container traffic off.
    assert_eq!(
        inspect(
            "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
            &bay.network
        ),
        "false"
    );

    // Control: Bay reaches both ships.
    for (session, ship) in &ships {
        let out = api
            .exec(
                ship["id"].as_str().unwrap(),
                session,
                "shell/exec",
                json!({"command": "echo reached"}),
            )
            .await;
        assert_eq!(out["stdout"].as_str().map(str::trim), Some("reached"));
    }

    let container_b = ship_b["container_id"].as_str().unwrap();
    let on_network = format!("{{{{(index .NetworkSettings.Networks \"{}\")", bay.network);
    let ip_b = inspect(&format!("{on_network}.IPAddress}}}}"), container_b);
    let gateway = inspect(&format!("{on_network}.Gateway}}}}"), container_b);
    let port_b: u16 = ship_b["ip_address"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("host mode address 127.0.0.1:<port>");
    let bay_port: u16 = bay
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("Bay's port");

    // From A: its own agent answers (the probe can see an open port); B's agent does not, by
    // container IP or through the gateway and B's published port; nor does Bay's API.
    let targets = [
        ("127.0.0.1", 8123),
        (ip_b.as_str(), 8123),
        (gateway.as_str(), port_b),
        (gateway.as_str(), bay_port),
    ];
    let out = api
        .exec(
            id_a,
            a,
            "shell/exec",
            json!({"command": probe(&targets), "timeout": 60}),
        )
        .await;
    let text = out["stdout"].as_str().unwrap_or_default().to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), targets.len(), "{out}");
    assert!(lines[0].ends_with("open"), "A's own agent: {text}");
    for (line, what) in lines[1..].iter().zip([
        "B's agent by container IP",
        "B's published port through the gateway",
        "Bay's API through the gateway",
    ]) {
        assert!(
            line.contains("closed"),
            "{what} is reachable from A: {text}"
        );
    }

    // And B cannot reach A either (the same rule, the other way).
    let ip_a = inspect(
        &format!("{on_network}.IPAddress}}}}"),
        ship_a["container_id"].as_str().unwrap(),
    );
    let out = api
        .exec(
            id_b,
            b,
            "shell/exec",
            json!({"command": probe(&[(ip_a.as_str(), 8123)]), "timeout": 30}),
        )
        .await;
    let text = out["stdout"].as_str().unwrap_or_default();
    assert!(
        text.contains("closed"),
        "A's agent is reachable from B: {text}"
    );
}
