//! 422 shapes (§2.5), content types (§2.1), the session header (§2.7) and the body limit.

use serde_json::{Value, json};

use crate::harness::TestApp;

fn entry<'a>(entries: &'a [Value], loc: &Value) -> &'a Value {
    entries
        .iter()
        .find(|e| &e["loc"] == loc)
        .unwrap_or_else(|| panic!("no entry at {loc} in {entries:?}"))
}

#[tokio::test]
async fn header_and_body_violations_are_reported_together() {
    let app = TestApp::new().await;
    let r = app.post("/ship").json(&json!({})).send().await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"missing","loc":["header","X-SESSION-ID"],"msg":"Field required","input":null}),
            json!({"type":"missing","loc":["body","ttl"],"msg":"Field required","input":null}),
        ]
    );
}

#[tokio::test]
async fn session_header_rule() {
    let app = TestApp::new().await;
    let rule = "X-SESSION-ID must be 1 to 128 characters without control characters or leading/trailing spaces";
    for bad in [" lead", "trail ", &"a".repeat(129)] {
        let r = app
            .post("/ship")
            .session(bad)
            .json(&json!({"ttl": 60}))
            .send()
            .await;
        assert_eq!(
            r.violations(),
            vec![json!({"type":"value_error","loc":["header","X-SESSION-ID"],
                "msg": format!("Value error, {rule}"),"input":bad,"ctx":{"error":rule}})]
        );
    }
    let r = app
        .post("/ship")
        .header_bytes("x-session-id", b"\xff\xfe")
        .json(&json!({"ttl": 60}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["type"], "value_error");
    // Inner spaces and non-ASCII letters are fine.
    let r = app
        .post("/ship")
        .session("aiocqhttp:Group Message:ü")
        .json(&json!({"ttl": 60}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn lax_coercion_of_ints_floats_and_bools() {
    let app = TestApp::new().await;
    let r = app
        .post("/ship")
        .session("lax")
        .json(&json!({"ttl": " 60 ", "max_session_num": 2.0, "force_create": "Yes", "spec": {"cpus": "0.5", "memory": "256m"}}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["max_session_num"], 2);

    let cases = [
        (
            json!({"ttl": 60.5}),
            "int_from_float",
            json!(["body", "ttl"]),
            "Input should be a valid integer, got a number with a fractional part",
        ),
        (
            json!({"ttl": "abc"}),
            "int_parsing",
            json!(["body", "ttl"]),
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            json!({"ttl": true}),
            "int_type",
            json!(["body", "ttl"]),
            "Input should be a valid integer",
        ),
        (
            json!({"ttl": null}),
            "int_type",
            json!(["body", "ttl"]),
            "Input should be a valid integer",
        ),
        (
            json!({"ttl": 60, "force_create": "maybe"}),
            "bool_parsing",
            json!(["body", "force_create"]),
            "Input should be a valid boolean, unable to interpret input",
        ),
        (
            json!({"ttl": 60, "force_create": []}),
            "bool_type",
            json!(["body", "force_create"]),
            "Input should be a valid boolean",
        ),
        (
            json!({"ttl": 60, "spec": {"cpus": "many"}}),
            "float_parsing",
            json!(["body", "spec", "cpus"]),
            "Input should be a valid number, unable to parse string as a number",
        ),
        (
            json!({"ttl": 60, "spec": {"cpus": false}}),
            "float_type",
            json!(["body", "spec", "cpus"]),
            "Input should be a valid number",
        ),
        (
            json!({"ttl": 60, "spec": {"memory": 512}}),
            "string_type",
            json!(["body", "spec", "memory"]),
            "Input should be a valid string",
        ),
        (
            json!({"ttl": 60, "spec": "big"}),
            "dict_type",
            json!(["body", "spec"]),
            "Input should be a valid dictionary",
        ),
        (
            json!({"ttl": 60, "gpu": 1}),
            "extra_forbidden",
            json!(["body", "gpu"]),
            "Extra inputs are not permitted",
        ),
        (
            json!({"ttl": 60, "spec": {"gpu": 1}}),
            "extra_forbidden",
            json!(["body", "spec", "gpu"]),
            "Extra inputs are not permitted",
        ),
    ];
    for (body, kind, loc, msg) in cases {
        let r = app.post("/ship").session("s").json(&body).send().await;
        let entries = r.violations();
        assert_eq!(entries.len(), 1, "{body}: {entries:?}");
        let e = entry(&entries, &loc);
        assert_eq!(e["type"], kind, "{body}");
        assert_eq!(e["msg"], msg, "{body}");
        assert!(e.get("input").is_some());
    }
}

#[tokio::test]
async fn bounds_carry_ctx() {
    let app = TestApp::new().await;
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 0}))
        .send()
        .await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"greater_than","loc":["body","ttl"],"msg":"Input should be greater than 0","input":0,"ctx":{"gt":0}})
        ]
    );
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 2_592_001}))
        .send()
        .await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"less_than_equal","loc":["body","ttl"],"msg":"Input should be less than or equal to 2592000","input":2_592_001,"ctx":{"le":2_592_000}})
        ]
    );
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 60, "max_session_num": 101, "spec": {"cpus": 0}}))
        .send()
        .await;
    let e = r.violations();
    assert_eq!(
        entry(&e, &json!(["body", "max_session_num"]))["ctx"],
        json!({"le": 100})
    );
    assert_eq!(
        entry(&e, &json!(["body", "spec", "cpus"]))["ctx"],
        json!({"gt": 0})
    );
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 60, "spec": {"cpus": 257}}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["ctx"], json!({"le": 256}));
}

#[tokio::test]
async fn memory_and_disk_are_parsed_at_request_time() {
    let app = TestApp::new().await;
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 60, "spec": {"memory": "abc", "disk": "99Ti"}}))
        .send()
        .await;
    let msg = "Invalid memory format: 'abc'. Supported formats: 512Mi, 1Gi, 512m, 1g, 512mb, 1gb, or plain bytes.";
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"value_error","loc":["body","spec","memory"],"msg":format!("Value error, {msg}"),"input":"abc","ctx":{"error":msg}}),
            json!({"type":"value_error","loc":["body","spec","disk"],"msg":"Value error, Invalid disk format: '99Ti'. Supported formats: 512Mi, 1Gi, 512m, 1g, 512mb, 1gb, or plain bytes.","input":"99Ti","ctx":{"error":"Invalid disk format: '99Ti'. Supported formats: 512Mi, 1Gi, 512m, 1g, 512mb, 1gb, or plain bytes."}}),
        ]
    );
    let r = app
        .post("/ship")
        .session("s")
        .json(&json!({"ttl": 60, "spec": {"memory": "2048g"}}))
        .send()
        .await;
    assert_eq!(
        r.violations()[0]["msg"],
        "Value error, memory must not exceed 1Ti"
    );
}

#[tokio::test]
async fn bodies_that_are_not_objects() {
    let app = TestApp::new().await;
    let r = app
        .post("/ship")
        .session("s")
        .header("content-type", "application/json")
        .body("{bad")
        .send()
        .await;
    let e = &r.violations()[0];
    assert_eq!(e["type"], "json_invalid");
    assert_eq!(e["loc"], json!(["body", 1]));
    assert_eq!(e["msg"], "JSON decode error");
    assert_eq!(e["input"], json!({}));
    assert!(e["ctx"]["error"].is_string());

    let r = app.post("/ship").session("s").json(&json!([])).send().await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":[]})
        ]
    );
    let r = app
        .post("/ship")
        .session("s")
        .header("content-type", "text/plain")
        .body("ttl=5")
        .send()
        .await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":"ttl=5"})
        ]
    );
    let r = app.post("/ship").session("s").send().await;
    assert_eq!(
        r.violations(),
        vec![json!({"type":"missing","loc":["body"],"msg":"Field required","input":null})]
    );
    // +json suffixes and charset parameters are JSON; an absent content type too.
    let r = app
        .post("/ship")
        .session("s")
        .header("content-type", "application/vnd.bay+json; charset=utf-8")
        .body(r#"{"ttl": 60}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app
        .post("/ship")
        .session("s2")
        .body(r#"{"ttl": 60}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn validation_comes_before_lookups() {
    let app = TestApp::new().await;
    let r = app
        .post("/ship/nope/extend-ttl")
        .json(&json!({"ttl": "x"}))
        .send()
        .await;
    assert_eq!(r.violations()[0]["type"], "int_parsing");
    let r = app
        .post("/ship/nope/exec")
        .session("s")
        .json(&json!({"type": "shell/exec", "payload": [1]}))
        .send()
        .await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"dict_type","loc":["body","payload"],"msg":"Input should be a valid dictionary","input":[1]})
        ]
    );
}

#[tokio::test]
async fn json_bodies_above_the_limit_are_refused() {
    let app = TestApp::with(&[("MAX_REQUEST_BODY", "64")]).await;
    let big = json!({"ttl": 60, "pad": "x".repeat(100)});
    app.post("/ship")
        .session("s")
        .json(&big)
        .send()
        .await
        .assert_detail(413, "Request body too large");
    // Without a Content-Length (streamed body) the limit applies while reading.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(
        big.to_string(),
    ))]);
    app.post("/ship")
        .session("s")
        .body(axum::body::Body::from_stream(stream))
        .send()
        .await
        .assert_detail(413, "Request body too large");
}
