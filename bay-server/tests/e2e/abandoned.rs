//! Issue 8 end to end: creates abandoned by their clients, against the real `bay-server`
//! binary, the real Docker Engine and the real ship image. With `MAX_SHIP_NUM=2` in reject
//! mode, two clients give up on `POST /ship` after 0.1 s: Bay finishes (or, on a permanent
//! delete, aborts) those creates itself, a create from another session gets the slot a delete
//! gave back, and after permanent deletes no container or volume of the run's ships is left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Bay, Engine, TOKEN, docker, image};

/// A `bay-server` with `MAX_SHIP_NUM=2` in reject mode, and the ids of the ships it listed; on
/// drop every container and volume labelled with one of them is removed too (a ship whose
/// container is gone keeps its volumes).
struct AbandonBay {
    bay: Bay,
    ships: BTreeSet<String>,
}

impl AbandonBay {
    fn start() -> Self {
        let bay = Bay::start_with(
            Engine::Docker,
            "e2e-abandoned",
            &image(),
            &[("MAX_SHIP_NUM", "2"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")],
        );
        Self {
            bay,
            ships: BTreeSet::new(),
        }
    }

    fn request(&self, method: Method, path: &str, timeout: Duration) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.bay.url))
            .bearer_auth(TOKEN)
            .timeout(timeout)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.request(method, path, Duration::from_secs(180));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, session: &str, timeout: Duration) -> reqwest::Result<reqwest::Response> {
        self.request(Method::POST, "/ship", timeout)
            .header("X-SESSION-ID", session)
            .json(&json!({"ttl": 600}))
            .send()
            .await
    }

    /// Every ship Bay lists now; their ids are remembered for the clean-up checks.
    async fn ships(&mut self) -> Vec<Value> {
        let (s, list) = self.call(Method::GET, "/ships", None).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let list = list.as_array().cloned().unwrap_or_default();
        for ship in &list {
            self.ships
                .insert(ship["id"].as_str().unwrap_or_default().to_owned());
        }
        list
    }

    /// Containers and volumes labelled with one of the run's ship ids.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for id in &self.ships {
            let label = format!("label=bay.ship-id={id}");
            let c = docker(&["ps", "-aq", "--filter", &label]);
            let v = docker(&["volume", "ls", "-q", "--filter", &label]);
            for (kind, out) in [("container", c), ("volume", v)] {
                for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    left.push(format!("{kind} {name} of ship {id}"));
                }
            }
        }
        left
    }
}

impl Drop for AbandonBay {
    fn drop(&mut self) {
        for id in &self.ships {
            let label = format!("label=bay.ship-id={id}");
            let c = docker(&["ps", "-aq", "--filter", &label]);
            for cid in String::from_utf8_lossy(&c.stdout).split_whitespace() {
                let _ = docker(&["rm", "-f", "-v", cid]);
            }
            let v = docker(&["volume", "ls", "-q", "--filter", &label]);
            for vol in String::from_utf8_lossy(&v.stdout).split_whitespace() {
                let _ = docker(&["volume", "rm", "-f", vol]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_abandoned_by_their_clients_leak_nothing() {
    let mut bay = AbandonBay::start();

    // Two clients give up on their creates after 0.1 s (a real ship takes longer).
    for session in ["gone-1", "gone-2"] {
        let r = bay.create(session, Duration::from_millis(100)).await;
        assert!(
            r.as_ref().is_err_and(reqwest::Error::is_timeout),
            "{session}: the client gives up first: {r:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let ships = loop {
        let ships = bay.ships().await;
        if ships.len() == 2 {
            break ships;
        }
        assert!(
            Instant::now() < deadline,
            "the two creates registered: {ships:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = ships[0]["id"].as_str().unwrap().to_owned();
    let second = ships[1]["id"].as_str().unwrap().to_owned();

    // An unknown id is not found, even right after the abandoned creates.
    let (s, body) = bay
        .call(Method::DELETE, "/ship/no-such-ship/permanent", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");

    // A permanent delete of an abandoned ship works whatever its state (it aborts the start if
    // it is still starting) and gives its slot back at once.
    let (s, body) = bay
        .call(Method::DELETE, &format!("/ship/{first}/permanent"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let r = bay
        .create("other", Duration::from_secs(180))
        .await
        .expect("the create from another session is answered");
    let status = r.status();
    let other: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another session gets the freed slot: {other}"
    );
    assert_eq!(other["status"], 1);
    bay.ships().await;

    // The other abandoned create is finished by Bay without its client.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, ship) = bay
            .call(Method::GET, &format!("/ship/{second}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{ship}");
        if ship["status"] == 1 {
            break;
        }
        assert_eq!(ship["status"], 2, "still starting, not failed: {ship}");
        assert!(
            Instant::now() < deadline,
            "the abandoned create never finished: {ship}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both slots are now held by running ships: the limit holds, nothing beyond it.
    let r = bay
        .create("third", Duration::from_secs(60))
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Permanent deletes leave no container and no volume of the run's ships.
    for ship in bay.ships().await {
        let id = ship["id"].as_str().unwrap();
        let (s, body) = bay
            .call(Method::DELETE, &format!("/ship/{id}/permanent"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{id}: {body}");
    }
    assert!(bay.ships().await.is_empty());
    assert_eq!(bay.ships.len(), 3, "ships seen: {:?}", bay.ships);
    let left = bay.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
