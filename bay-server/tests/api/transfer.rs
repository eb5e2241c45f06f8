//! Upload and download (§4.16, §4.17).

use serde_json::json;

use std::time::{Duration, Instant};

use crate::harness::TestApp;

const BOUNDARY: &str = "XyZbOuNdArY";

pub(crate) fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if *name == "file" {
            body.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub(crate) const CT: &str = "multipart/form-data; boundary=XyZbOuNdArY";

#[tokio::test]
async fn upload_then_download() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = app
        .post(&format!("/ship/{id}/upload"))
        .session("s1")
        .header("content-type", CT)
        .body(multipart(&[
            ("other", b"ignored"),
            ("file", &data),
            ("file_path", "dir/ré\"s.bin".as_bytes()),
        ]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"success": true, "message": "File uploaded successfully", "file_path": "/home/u/workspace/dir/ré\"s.bin", "error": null})
    );
    assert_eq!(app.ship.file("dir/ré\"s.bin").unwrap().as_ref(), &data[..]);

    let r = app
        .get(&format!(
            "/ship/{id}/download?file_path=dir%2Fr%C3%A9%22s.bin"
        ))
        .session("s1")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), Some("200000"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"r__s.bin\"; filename*=UTF-8''r%C3%A9%22s.bin")
    );
}

#[tokio::test]
async fn upload_validation_and_limits() {
    let app = TestApp::with(&[("MAX_UPLOAD_SIZE", "1000")]).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/ship/{id}/upload");
    let up = |session: Option<&str>, body: Vec<u8>| {
        let mut r = app.post(&path).header("content-type", CT).body(body);
        if let Some(s) = session {
            r = r.session(s);
        }
        r.send()
    };
    let r = up(None, multipart(&[("file", b"x"), ("file_path", b"a")])).await;
    assert_eq!(r.violations()[0]["loc"], json!(["header", "X-SESSION-ID"]));
    let r = up(Some("s1"), multipart(&[("other", b"x")])).await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"missing","loc":["body","file"],"msg":"Field required","input":null}),
            json!({"type":"missing","loc":["body","file_path"],"msg":"Field required","input":null}),
        ]
    );
    let r = up(Some("s1"), multipart(&[("file", b"x"), ("file_path", b"")])).await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"string_too_short","loc":["body","file_path"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}})
        ]
    );
    let long = "a".repeat(4097);
    let r = up(
        Some("s1"),
        multipart(&[("file", b"x"), ("file_path", long.as_bytes())]),
    )
    .await;
    assert_eq!(r.violations()[0]["ctx"], json!({"max_length": 4096}));
    let r = up(
        Some("s1"),
        multipart(&[("file", b"x"), ("file_path", b"a\0b")]),
    )
    .await;
    assert_eq!(
        r.violations()[0]["msg"],
        "Value error, file_path must not contain NUL characters"
    );

    let too_big = vec![b'x'; 1001];
    up(
        Some("s1"),
        multipart(&[("file", &too_big), ("file_path", b"a")]),
    )
    .await
    .assert_detail(413, "File size exceeds maximum allowed size (1000 bytes)");
    let exact = vec![b'x'; 1000];
    assert_eq!(
        up(
            Some("s1"),
            multipart(&[("file", &exact), ("file_path", b"a")])
        )
        .await
        .status,
        200
    );
    // A declared Content-Length above the limit is refused before reading.
    app.post(&path)
        .session("s1")
        .header("content-type", CT)
        .header("content-length", "2000000")
        .send()
        .await
        .assert_detail(413, "File size exceeds maximum allowed size (1000 bytes)");
}

#[tokio::test]
async fn upload_and_download_status_mapping() {
    let app = TestApp::new().await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/ship/{id}/upload");
    let body = || multipart(&[("file", b"x"), ("file_path", b"/etc/passwd")]);
    let r = app
        .post(&path)
        .session("s1")
        .header("content-type", CT)
        .body(body())
        .send()
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ship returned 403: ")
            && r.text().contains("Access denied")
    );
    let ok_body = || multipart(&[("file", b"x"), ("file_path", b"a")]);
    app.post(&path)
        .session("s2")
        .header("content-type", CT)
        .body(ok_body())
        .send()
        .await
        .assert_detail(403, "Session does not have access to this ship");
    app.post("/ship/unknown/upload")
        .session("s1")
        .header("content-type", CT)
        .body(ok_body())
        .send()
        .await
        .assert_detail(404, "Ship not found or not running");

    let dl = |session: &str, q: &str| {
        app.get(&format!("/ship/{id}/download{q}"))
            .session(session)
            .send()
    };
    dl("s1", "?file_path=missing.txt")
        .await
        .assert_detail(404, r#"Ship returned 404: {"detail":"File not found"}"#);
    dl("s2", "?file_path=a")
        .await
        .assert_detail(403, "Session does not have access to this ship");
    let r = dl("s1", "").await;
    assert_eq!(
        r.violations(),
        vec![
            json!({"type":"missing","loc":["query","file_path"],"msg":"Field required","input":null})
        ]
    );
    let r = dl("s1", "?file_path=").await;
    assert_eq!(r.violations()[0]["type"], "string_too_short");
    app.get("/ship/unknown/download?file_path=a")
        .session("s1")
        .send()
        .await
        .assert_detail(404, "Ship not found or not running");
    app.delete(&format!("/ship/{id}")).send().await;
    dl("s1", "?file_path=a")
        .await
        .assert_detail(404, "Ship not found or not running");
}

async fn app_with_ship(extra: &[(&str, &str)]) -> (TestApp, String) {
    let app = TestApp::with(extra).await;
    let id = app.create_ship("s1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (app, id)
}

#[tokio::test]
async fn upload_answered_with_success_false_is_500() {
    let (app, id) = app_with_ship(&[]).await;
    app.post(&format!("/ship/{id}/upload"))
        .session("s1")
        .header("content-type", CT)
        .body(multipart(&[
            ("file", b"x"),
            ("file_path", b"soft-fail.txt"),
        ]))
        .send()
        .await
        .assert_detail(500, "File upload failed: disk quota exceeded");
}

#[tokio::test]
async fn stalled_transfers_time_out_with_504() {
    let (app, id) = app_with_ship(&[("SHIP_TRANSFER_TIMEOUT", "1")]).await;
    let started = Instant::now();
    app.post(&format!("/ship/{id}/upload"))
        .session("s1")
        .header("content-type", CT)
        .body(multipart(&[("file", b"x"), ("file_path", b"stall.txt")]))
        .send()
        .await
        .assert_detail(504, "File upload timeout");
    app.get(&format!("/ship/{id}/download?file_path=stall.txt"))
        .session("s1")
        .send()
        .await
        .assert_detail(504, "File download timeout");
    // Both gave up after about a second each, long before the agent's stall ends.
    assert!(
        started.elapsed() < bay_core::testing::STALL,
        "{:?}",
        started.elapsed()
    );
}

/// Reads a download over a real connection: the status, then the body or its error.
async fn download_over_tcp(
    addr: std::net::SocketAddr,
    id: &str,
    file_path: &str,
) -> (u16, Option<String>, Result<usize, String>) {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{addr}/ship/{id}/download?file_path={file_path}"
        ))
        .bearer_auth(crate::harness::TOKEN)
        .header("x-session-id", "s1")
        .send()
        .await
        .expect("headers arrive");
    let status = response.status().as_u16();
    let length = response
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = tokio::time::timeout(Duration::from_secs(20), response.bytes())
        .await
        .expect("the body ends");
    (
        status,
        length,
        body.map(|b| b.len()).map_err(|e| e.to_string()),
    )
}

#[tokio::test]
async fn a_download_failing_after_the_headers_aborts_the_response() {
    let (app, id) = app_with_ship(&[("SHIP_TRANSFER_TIMEOUT", "1")]).await;
    let addr = app.serve().await;
    // The agent fails the connection after 64 KiB of 1 MiB.
    let (status, length, body) = download_over_tcp(addr, &id, "broken.bin").await;
    assert_eq!((status, length.as_deref()), (200, Some("1048576")));
    assert!(
        body.is_err(),
        "a truncated body must not look complete: {body:?}"
    );
    // The agent stops sending after 64 KiB: the idle timeout ends the relay the same way.
    let (status, _, body) = download_over_tcp(addr, &id, "stall-mid.bin").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "{body:?}");
    // Bay still serves the ship afterwards.
    let r = app.get(&format!("/ship/{id}")).send().await;
    assert_eq!(r.json()["status"], 1);
}
