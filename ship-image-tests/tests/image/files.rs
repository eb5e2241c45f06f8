//! File API, upload and download (§4, §5).

use reqwest::{Method, StatusCode};
use serde_json::json;
use ship_image_tests::{Ship, multipart};

#[tokio::test]
async fn create_read_write_edit_round_trip() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "files-1";

    let r = ship
        .post(
            "/fs/create_file",
            sid,
            json!({"path": "a/b.txt", "content": "one\r\ntwo\rthree\nfour\n"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["message"], "File created: a/b.txt");
    let abs = v["path"].as_str().unwrap_or_default().to_owned();
    assert!(
        abs.starts_with("/home/ship_") && abs.ends_with("/workspace/a/b.txt"),
        "{abs}"
    );
    let user = abs
        .trim_start_matches("/home/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // spec §9.1: ship_ + 16 lowercase hex digits of SHA-256(session id).
    assert_eq!(user.len(), 5 + 16, "{user}");

    // Owned by the session user (§4.3), mode 0644 by default; homes 0700.
    assert_eq!(
        ship.sh_ok(sid, "stat -c '%U %a' a/b.txt a").await?,
        format!("{user} 644\n{user} 755")
    );
    assert_eq!(
        ship.sh_ok(sid, "stat -c %a ~ ~/workspace").await?,
        "700\n700"
    );

    let r = ship
        .post("/fs/read_file", sid, json!({"path": "a/b.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["content"], "one\ntwo\nthree\nfour\n");
    assert_eq!(r.json()["path"], abs.as_str());
    assert_eq!(r.json()["size"], 20);
    // Windows: offset 2, limit 2 → lines 2..3; limit 0 → ""; limit -1 → all but last.
    let r = ship
        .post(
            "/fs/read_file",
            sid,
            json!({"path": "a/b.txt", "offset": 2, "limit": 2}),
        )
        .await?;
    assert_eq!(r.json()["content"], "two\nthree\n");
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "a/b.txt", "limit": 0}))
        .await?;
    assert_eq!(r.json()["content"], "");
    let r = ship
        .post(
            "/fs/read_file",
            sid,
            json!({"path": "a/b.txt", "offset": 1, "limit": -1}),
        )
        .await?;
    assert_eq!(r.json()["content"], "one\ntwo\nthree\n");

    let r = ship
        .post(
            "/fs/write_file",
            sid,
            json!({"path": "a/b.txt", "content": "new"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["message"], "File written: a/b.txt");
    assert_eq!(r.json()["size"], 3);
    let r = ship
        .post(
            "/fs/write_file",
            sid,
            json!({"path": "a/b.txt", "content": "+more", "mode": "a"}),
        )
        .await?;
    assert_eq!(r.json()["size"], 8);
    assert_eq!(ship.sh_ok(sid, "cat a/b.txt").await?, "new+more");

    let r = ship
        .post(
            "/fs/write_file",
            sid,
            json!({"path": "l.txt", "content": "caf\u{e9}", "encoding": "latin-1"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["size"], 4);
    let r = ship
        .post(
            "/fs/read_file",
            sid,
            json!({"path": "l.txt", "encoding": "ISO-8859-1"}),
        )
        .await?;
    assert_eq!(r.json()["content"], "caf\u{e9}");
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "l.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    let r = ship
        .post(
            "/fs/read_file",
            sid,
            json!({"path": "l.txt", "encoding": "klingon"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.detail(), "Unknown encoding: klingon");

    // edit_file and its checks, in order.
    ship.post(
        "/fs/write_file",
        sid,
        json!({"path": "e.txt", "content": "x y x"}),
    )
    .await?;
    let r = ship
        .post(
            "/fs/edit_file",
            sid,
            json!({"path": "e.txt", "old_string": "x", "new_string": "z"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.detail(),
        "'old_string' appears 2 times in file; set replace_all=true to replace all occurrences"
    );
    let r = ship
        .post(
            "/fs/edit_file",
            sid,
            json!({"path": "e.txt", "old_string": "q", "new_string": "z"}),
        )
        .await?;
    assert_eq!(r.detail(), "'old_string' not found in file");
    let r = ship
        .post(
            "/fs/edit_file",
            sid,
            json!({"path": "e.txt", "old_string": "x", "new_string": "x"}),
        )
        .await?;
    assert_eq!(r.detail(), "'old_string' and 'new_string' must differ");
    let r = ship
        .post(
            "/fs/edit_file",
            sid,
            json!({"path": "nope.txt", "old_string": "x", "new_string": "y"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "File not found: nope.txt");
    let r = ship
        .post(
            "/fs/edit_file",
            sid,
            json!({"path": "e.txt", "old_string": "x", "new_string": "z", "replace_all": "yes"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["replacements"], 2);
    assert_eq!(ship.sh_ok(sid, "cat e.txt").await?, "z y z");

    // read errors
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "missing.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "File not found: missing.txt");
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "a"}))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.detail(), "Path is not a file: a");
    let r = ship
        .post("/fs/create_file", sid, json!({"path": "a", "content": "x"}))
        .await?;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.detail().starts_with("Failed to create file: "),
        "{}",
        r.text()
    );
    Ok(())
}

#[tokio::test]
async fn list_and_delete() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "files-2";
    ship.sh_ok(sid, "mkdir -p Zdir adir && echo hi > b.txt && echo h > .hidden && ln -s /nowhere dangling && printf 12345 > Cfile").await?;

    let r = ship.post("/fs/list_dir", sid, json!({})).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let names: Vec<&str> = v["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["adir", "Zdir", "b.txt", "Cfile"], "{v}");
    let c = &v["files"][3];
    assert_eq!(c["is_file"], true);
    assert_eq!(c["is_dir"], false);
    assert_eq!(c["size"], 5);
    assert!(
        c["modified_time"].is_f64() || c["modified_time"].is_u64(),
        "{c}"
    );
    assert!(v["files"][0]["size"].is_null());
    let r = ship
        .post(
            "/fs/list_dir",
            sid,
            json!({"path": ".", "show_hidden": true}),
        )
        .await?;
    assert!(r.text().contains("\".hidden\""), "{}", r.text());
    let r = ship
        .post("/fs/list_dir", sid, json!({"path": "nodir"}))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Directory not found: nodir");
    let r = ship
        .post("/fs/list_dir", sid, json!({"path": "b.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.detail(), "Path is not a directory: b.txt");

    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "b.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["message"], "File deleted: b.txt");
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "dangling"}))
        .await?;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a dangling link is deleted: {}",
        r.text()
    );
    ship.sh_ok(sid, "mkdir -p adir/x/y && touch adir/x/y/f")
        .await?;
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "adir"}))
        .await?;
    assert_eq!(r.json()["message"], "Directory deleted: adir");
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "b.txt"}))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Path not found: b.txt");
    for root in ["", ".", "Zdir/.."] {
        let r = ship
            .post("/fs/delete_file", sid, json!({"path": root}))
            .await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{root:?}: {}", r.text());
        assert_eq!(r.detail(), "Cannot delete the workspace root");
    }
    ship.sh_ok(sid, "mkfifo fifo").await?;
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "fifo"}))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.detail(), "Unknown path type: fifo");
    assert_eq!(ship.sh_ok(sid, "ls").await?, "Cfile\nZdir\nfifo");
    Ok(())
}

#[tokio::test]
async fn upload_and_download_bytes() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "files-3";
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();

    let (ct, body) = multipart("up/data.bin", &data);
    let req = ship
        .raw(Method::POST, "/upload")
        .header("X-SESSION-ID", sid)
        .header("content-type", ct)
        .body(body);
    let r = ship.send(req).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["message"], "File uploaded successfully");
    assert_eq!(v["size"], 300_000);
    assert!(
        v["file_path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/workspace/up/data.bin")),
        "{v}"
    );
    assert!(
        ship.sh_ok(sid, "stat -c '%U %a' up/data.bin")
            .await?
            .ends_with(" 644")
    );

    let r = ship
        .get("/download?file_path=up/data.bin", Some(sid))
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == data, "downloaded bytes differ");
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(h("content-type"), "application/octet-stream");
    assert_eq!(h("content-length"), "300000");
    assert!(
        h("content-disposition").contains("filename=\"data.bin\""),
        "{}",
        h("content-disposition")
    );

    // The alias routes.
    let r = ship
        .get("/fs/download?file_path=up/data.bin", Some(sid))
        .await?;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND);
    if r.status == StatusCode::OK {
        assert!(r.body == data);
    }

    let r = ship
        .get("/download?file_path=nothing.bin", Some(sid))
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "File not found");
    let r = ship.get("/download?file_path=up", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.detail(), "Path is not a file");
    let r = ship.get("/download", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["detail"][0]["loc"], json!(["query", "file_path"]));

    // Missing part → 422.
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file_path\"\r\n\r\nx.bin\r\n--{boundary}--\r\n"
    );
    let req = ship
        .raw(Method::POST, "/upload")
        .header("X-SESSION-ID", sid)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    let r = ship.send(req).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["detail"][0]["loc"], json!(["body", "file"]));
    Ok(())
}
