//! The wire shape, pinned: every response and error body and `/openapi.json` are snapshots
//! (`tests/api/snapshots`, insta), and every body reads back into the shared type of
//! `bay-api-types` and writes out byte for byte the same JSON, so the server, the `bay` CLI
//! (which reads with those types) and the OpenAPI document cannot drift apart.
//!
//! Values that change between runs (ids, timestamps, the fake ship's address, remaining
//! seconds) are replaced by placeholders before the snapshot; their presence and type stay
//! pinned.

use bay_api_types::{
    ErrorBody, ExecResponse, LogsResponse, OverviewResponse, SessionListResponse, SessionResponse,
    ShipResponse, ShipSessionsResponse, StatResponse, StatusMessage, UploadResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::harness::{Resp, TestApp};
use crate::transfer::{CT, multipart};

/// Replaces run-dependent values by placeholders, keeping the keys and the JSON types.
fn stable(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("ttl", Value::Number(_)) => json!(0),
                        ("ip_address" | "container_id", Value::String(_)) => json!("[address]"),
                        _ => stable(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(stable).collect()),
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => json!("[uuid]"),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            assert!(
                s.ends_with('Z') && s.len() == "2026-11-30T03:31:16.036341Z".len(),
                "timestamp {s} is not in the §2.2 form"
            );
            json!("[timestamp]")
        }
        other => other.clone(),
    }
}

/// Checks that the body reads into `T` and writes back as the same JSON (key order
/// included), then returns its stable form for a snapshot.
#[track_caller]
fn shape<T: Serialize + DeserializeOwned>(r: &Resp) -> Value {
    let text = r.text();
    let typed: T = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{text} does not read as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let written = serde_json::to_string(&typed).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_string(&original).unwrap(),
        written,
        "{} writes a different shape",
        std::any::type_name::<T>()
    );
    stable(&original)
}

/// A status and its body, for the snapshot.
#[track_caller]
fn answer<T: Serialize + DeserializeOwned>(r: &Resp) -> Value {
    json!({"status": r.status.as_u16(), "body": shape::<T>(r)})
}

/// Checks a body against a schema of `/openapi.json`: every key it has is documented, every
/// documented key (the `required` ones, or all when none are listed) is there, recursively
/// through `$ref`s, objects and arrays.
#[track_caller]
fn conforms(doc: &Value, schema: &Value, body: &Value, at: &str) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(
            doc,
            &doc["components"]["schemas"][name],
            body,
            &format!("{at}<{name}>"),
        );
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        body.as_object(),
    ) {
        for key in obj.keys() {
            assert!(
                props.contains_key(key),
                "{at}.{key} is not in /openapi.json"
            );
        }
        let required: Vec<&str> = match schema.get("required").and_then(Value::as_array) {
            Some(r) => r.iter().filter_map(Value::as_str).collect(),
            None => props.keys().map(String::as_str).collect(),
        };
        for key in required {
            assert!(
                obj.contains_key(key),
                "{at}.{key} is documented but missing"
            );
        }
        for (key, value) in obj {
            conforms(doc, &props[key], value, &format!("{at}.{key}"));
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), body.as_array()) {
        for (i, item) in list.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

/// The documented schema of each success body of [`success_bodies`].
const SCHEMAS: &[(&str, &str)] = &[
    ("GET /", "Status"),
    ("GET /health", "Status"),
    ("GET /stat", "Stat"),
    ("POST /ship", "ShipResponse"),
    ("GET /ship/{id}", "ShipResponse"),
    ("POST /ship/{id}/extend-ttl", "ShipResponse"),
    ("POST /ship/{id}/start", "ShipResponse"),
    ("GET /ship/logs/{id}", "Logs"),
    ("GET /ship/{id}/sessions", "ShipSessions"),
    ("POST /ship/{id}/exec", "ExecResponse"),
    ("POST /ship/{id}/upload", "UploadResponse"),
    ("GET /sessions", "SessionList"),
    ("GET /sessions/{sid}", "SessionResponse"),
    ("POST /sessions/{sid}/extend-ttl", "SessionResponse"),
    ("GET /stat/overview", "Overview"),
];

#[tokio::test]
async fn success_bodies() {
    let app = TestApp::new().await;
    let mut all = serde_json::Map::new();
    let mut put = |name: &str, v: Value| {
        all.insert(name.to_owned(), v);
    };
    put(
        "GET /",
        answer::<StatusMessage>(&app.get("/").no_auth().send().await),
    );
    put(
        "GET /health",
        answer::<StatusMessage>(&app.get("/health").no_auth().send().await),
    );
    let stat = app.get("/stat").no_auth().send().await;
    assert_eq!(stat.json()["version"], bay_server::VERSION);
    let mut stat = answer::<StatResponse>(&stat);
    stat["body"]["version"] = json!("[version]");
    put("GET /stat", stat);
    let created = app
        .post("/ship")
        .session("s1")
        .json(&json!({"ttl": 600, "spec": {"cpus": 0.5, "memory": "256m"}, "max_session_num": 2}))
        .send()
        .await;
    put("POST /ship", answer::<ShipResponse>(&created));
    let id = created.json()["id"].as_str().unwrap().to_owned();
    put(
        "GET /ship/{id}",
        answer::<ShipResponse>(&app.get(&format!("/ship/{id}")).send().await),
    );
    put(
        "GET /ships",
        answer::<Vec<ShipResponse>>(&app.get("/ships").send().await),
    );
    put(
        "POST /ship/{id}/extend-ttl",
        answer::<ShipResponse>(
            &app.post(&format!("/ship/{id}/extend-ttl"))
                .json(&json!({"ttl": 60}))
                .send()
                .await,
        ),
    );
    put(
        "POST /ship/{id}/start",
        answer::<ShipResponse>(
            &app.post(&format!("/ship/{id}/start"))
                .session("s2")
                .send()
                .await,
        ),
    );
    put(
        "GET /ship/logs/{id}",
        answer::<LogsResponse>(&app.get(&format!("/ship/logs/{id}?tail=5")).send().await),
    );
    put(
        "GET /ship/{id}/sessions",
        answer::<ShipSessionsResponse>(&app.get(&format!("/ship/{id}/sessions")).send().await),
    );
    put(
        "POST /ship/{id}/exec",
        answer::<ExecResponse>(
            &app.post(&format!("/ship/{id}/exec"))
                .session("s1")
                .json(&json!({"type": "shell/exec", "payload": {"command": "echo hi"}}))
                .send()
                .await,
        ),
    );
    put(
        "POST /ship/{id}/upload",
        answer::<UploadResponse>(
            &app.post(&format!("/ship/{id}/upload"))
                .session("s1")
                .header("content-type", CT)
                .body(multipart(&[("file", b"data"), ("file_path", b"a.txt")]))
                .send()
                .await,
        ),
    );
    put(
        "GET /sessions",
        answer::<SessionListResponse>(&app.get("/sessions").send().await),
    );
    put(
        "GET /sessions/{sid}",
        answer::<SessionResponse>(&app.get("/sessions/s1").send().await),
    );
    put(
        "POST /sessions/{sid}/extend-ttl",
        answer::<SessionResponse>(
            &app.post("/sessions/s1/extend-ttl")
                .json(&json!({"ttl": 120}))
                .send()
                .await,
        ),
    );
    let overview = app.get("/stat/overview").send().await;
    let mut o = answer::<OverviewResponse>(&overview);
    o["body"]["version"] = json!("[version]");
    put("GET /stat/overview", o);
    let doc = app.get("/openapi.json").no_auth().send().await.json();
    for (name, schema) in SCHEMAS {
        let body = &all[*name]["body"];
        conforms(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            body,
            name,
        );
    }
    let ships = &all["GET /ships"]["body"];
    conforms(
        &doc,
        &json!({"type": "array", "items": {"$ref": "#/components/schemas/ShipResponse"}}),
        ships,
        "GET /ships",
    );
    assert_eq!(
        all.len(),
        SCHEMAS.len() + 1,
        "every body is checked against /openapi.json"
    );
    insta::assert_json_snapshot!("success_bodies", Value::Object(all));
}

#[tokio::test]
async fn error_bodies() {
    let app = TestApp::with(&[("MAX_SHIP_NUM", "1"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut all = serde_json::Map::new();
    let mut put = |name: &str, r: &Resp| {
        let mut v = answer::<ErrorBody>(r);
        for h in ["www-authenticate", "retry-after", "allow"] {
            if let Some(value) = r.header(h) {
                v[h] = json!(if h == "retry-after" {
                    "[seconds]"
                } else {
                    value
                });
            }
        }
        all.insert(name.to_owned(), v);
    };
    put("unknown path", &app.get("/nope").send().await);
    put(
        "wrong method",
        &app.req(http::Method::PUT, "/ships").send().await,
    );
    put("no token", &app.get("/ships").no_auth().send().await);
    put(
        "wrong scheme",
        &app.get("/ships").auth("Basic x").send().await,
    );
    put(
        "wrong token",
        &app.get("/ships").auth("Bearer nope").send().await,
    );
    put(
        "validation",
        &app.post("/ship")
            .json(&json!({"ttl": 0, "spec": {"memory": "abc", "gpu": 1}, "extra": true}))
            .send()
            .await,
    );
    put(
        "json invalid",
        &app.post("/ship").session("s").body("{").send().await,
    );
    put("ship not found", &app.get("/ship/nope").send().await);
    put("session not found", &app.get("/sessions/nope").send().await);
    put(
        "no free slot",
        &app.post(&format!("/ship/{id}/start"))
            .session("s9")
            .send()
            .await,
    );
    put(
        "ship limit",
        &app.post("/ship")
            .session("s2")
            .json(&json!({"ttl": 60}))
            .send()
            .await,
    );
    put(
        "unsupported exec type",
        &app.post(&format!("/ship/{id}/exec"))
            .session("s1")
            .json(&json!({"type": "../admin"}))
            .send()
            .await,
    );
    put(
        "no access",
        &app.post(&format!("/ship/{id}/exec"))
            .session("stranger")
            .json(&json!({"type": "shell/exec"}))
            .send()
            .await,
    );
    put(
        "session ttl bound",
        &app.post("/sessions/s1/extend-ttl")
            .json(&json!({"ttl": 0}))
            .send()
            .await,
    );
    put(
        "body too large",
        &app.post("/ship")
            .session("s1")
            .body(vec![b' '; 17 * 1024 * 1024])
            .send()
            .await,
    );
    let doc = app.get("/openapi.json").no_auth().send().await.json();
    for (name, answer) in &all {
        let schema = if answer["status"] == 422 {
            "HTTPValidationError"
        } else {
            "HTTPError"
        };
        conforms(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            &answer["body"],
            name,
        );
    }
    insta::assert_json_snapshot!("error_bodies", Value::Object(all));
}

#[tokio::test]
async fn openapi_document() {
    let app = TestApp::new().await;
    let r = app.get("/openapi.json").no_auth().send().await;
    assert_eq!(r.status, 200);
    let mut doc = r.json();
    doc["info"]["version"] = json!("[version]");
    insta::assert_json_snapshot!("openapi", doc);
}
