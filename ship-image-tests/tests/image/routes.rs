//! Misc routes, routing errors, session header and body validation (§1–§3).

use reqwest::{Method, StatusCode};
use serde_json::json;
use ship_image_tests::Ship;

#[tokio::test]
async fn misc_routes_answer_the_contract() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;

    let r = ship.get("/", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"message": "Ship API is running"}));

    let r = ship.get("/health", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "ship");
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    let r = ship.get("/stat", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["service"], "ship");
    assert_eq!(v["status"], "running");
    assert_eq!(v["author"], "AstrBot Team");
    assert!(
        v["version"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != "unknown"),
        "{v}"
    );

    // `/meta` is an optional extra: when offered it has the Neo shape.
    let r = ship.get("/meta", None).await?;
    if r.status != StatusCode::NOT_FOUND {
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["runtime"]["name"], "ship");
        assert_eq!(v["workspace"]["mount_path"], "/home");
        assert_eq!(
            v["capabilities"]["shell"]["endpoints"]["exec"],
            "/shell/exec"
        );
        assert!(v["built_in_skills"].is_array(), "{v}");
    }
    Ok(())
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_json_errors() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;

    let r = ship.get("/no/such/route", Some("s")).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"detail": "Not Found"}));

    let r = ship.get("/fs/create_file", Some("s")).await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json(), json!({"detail": "Method Not Allowed"}));
    let allow = r
        .headers
        .get("allow")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert!(allow.is_some_and(|a| a.contains("POST")), "{:?}", r.headers);

    let r = ship
        .request(Method::DELETE, "/shell/exec", Some("s"), None)
        .await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    Ok(())
}

#[tokio::test]
async fn session_header_is_required_and_validated() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let body = json!({"path": "a.txt", "content": "x"});

    // Every route that needs a session refuses a request without one.
    for (method, path) in [
        (Method::POST, "/fs/create_file"),
        (Method::POST, "/fs/read_file"),
        (Method::POST, "/fs/write_file"),
        (Method::POST, "/fs/edit_file"),
        (Method::POST, "/fs/delete_file"),
        (Method::POST, "/fs/list_dir"),
        (Method::POST, "/ipython/exec"),
        (Method::POST, "/ipython/create_kernel"),
        (Method::DELETE, "/ipython/kernel"),
        (Method::GET, "/ipython/kernel/status"),
        (Method::POST, "/shell/exec"),
        (Method::GET, "/shell/processes"),
        (Method::GET, "/shell/process/abcdef01"),
        (Method::GET, "/download?file_path=a.txt"),
    ] {
        let r = ship
            .request(method.clone(), path, None, Some(body.clone()))
            .await?;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {}",
            r.text()
        );
        let d = &r.json()["detail"][0];
        assert_eq!(d["type"], "missing", "{method} {path}: {}", r.text());
        assert_eq!(
            d["loc"],
            json!(["header", "X-SESSION-ID"]),
            "{method} {path}"
        );
    }

    // (Surrounding white space cannot be sent in a header: HTTP strips it. The terminal's
    // `session_id` query parameter covers it.)
    let too_long = "x".repeat(129).into_bytes();
    let bad: [&[u8]; 4] = [b"tab\there", b"", b"bad-utf8-\xff", &too_long];
    for bad in bad {
        let value = reqwest::header::HeaderValue::from_bytes(bad)?;
        let r = ship
            .raw(Method::POST, "/fs/create_file")
            .header("X-SESSION-ID", value)
            .json(&body);
        let r = ship.send(r).await?;
        let shown = String::from_utf8_lossy(bad);
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{shown:?}: {}",
            r.text()
        );
        let d = &r.json()["detail"][0];
        assert_eq!(d["type"], "value_error", "{shown:?}: {}", r.text());
        assert!(
            d["loc"].to_string().contains("X-SESSION-ID"),
            "{shown:?}: {}",
            r.text()
        );
    }
    // Inner spaces and non-ASCII letters are fine (percent-encoded by nobody: raw UTF-8).
    let value = reqwest::header::HeaderValue::from_bytes("aiocqhttp:Group 12 é".as_bytes())?;
    let r = ship
        .raw(Method::POST, "/fs/create_file")
        .header("X-SESSION-ID", value)
        .json(&body);
    let r = ship.send(r).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // `GET /ipython/kernels` works without a session and lists nothing.
    let r = ship.get("/ipython/kernels", None).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"kernels": []}));
    Ok(())
}

#[tokio::test]
async fn bodies_are_validated() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;

    let r = ship
        .raw(Method::POST, "/fs/create_file")
        .header("X-SESSION-ID", "s")
        .header("content-type", "application/json")
        .body("{\"path\": ");
    let r = ship.send(r).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json()["detail"][0]["type"],
        "json_invalid",
        "{}",
        r.text()
    );

    let r = ship
        .raw(Method::POST, "/fs/create_file")
        .header("X-SESSION-ID", "s")
        .header("content-type", "text/plain")
        .body("{\"path\": \"a\"}");
    let r = ship.send(r).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json()["detail"][0]["type"],
        "model_attributes_type",
        "{}",
        r.text()
    );

    // Required field missing.
    let r = ship.post("/fs/read_file", "s", json!({})).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["detail"][0]["type"], "missing", "{}", r.text());
    assert_eq!(r.json()["detail"][0]["loc"], json!(["body", "path"]));

    // Lax coercion: an integer string is an int, "0o644" is not; unknown fields are ignored.
    let r = ship
        .post(
            "/fs/create_file",
            "s",
            json!({"path": "m.txt", "content": "x", "mode": "384", "zzz": 1}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(ship.sh_ok("s", "stat -c %a m.txt").await?, "600");
    let r = ship
        .post(
            "/fs/create_file",
            "s",
            json!({"path": "m.txt", "mode": "0o644"}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = ship.post("/shell/exec", "s", json!({"command": 5})).await?;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    Ok(())
}
