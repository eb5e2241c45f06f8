//! Session isolation (§9) and path resolution (§4.2): every route, traversal and symlinks.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use ship_image_tests::{Ship, multipart};

const SECRET: &str = "top-secret-of-a";

#[tokio::test]
async fn sessions_cannot_reach_each_others_files() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let (a, b) = ("iso-a", "iso-b");
    let r = ship
        .post(
            "/fs/create_file",
            a,
            json!({"path": "secret.txt", "content": SECRET}),
        )
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let a_file = r.json()["path"].as_str().unwrap_or_default().to_owned();
    let a_w = a_file.trim_end_matches("/secret.txt").to_owned();
    let a_home = a_w.trim_end_matches("/workspace").to_owned();
    let b_w = ship.workspace(b).await?;
    assert_ne!(a_w, b_w);
    let rel = format!("../..{}", a_file.trim_start_matches("/home"));
    let denied = format!("Access denied: path must be within workspace {b_w}");

    // File API: absolute and relative paths into A's workspace are refused.
    for path in [a_file.as_str(), rel.as_str()] {
        for (route, body) in [
            ("/fs/read_file", json!({"path": path})),
            ("/fs/write_file", json!({"path": path, "content": "pwned"})),
            ("/fs/create_file", json!({"path": path, "content": "pwned"})),
            (
                "/fs/edit_file",
                json!({"path": path, "old_string": "top", "new_string": "pwned"}),
            ),
            ("/fs/delete_file", json!({"path": path})),
            ("/fs/list_dir", json!({"path": a_w})),
        ] {
            let r = ship.post(route, b, body).await?;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{route} {path}: {}",
                r.text()
            );
            assert_eq!(r.detail(), denied, "{route} {path}");
        }
        let r = ship
            .get(&format!("/download?file_path={path}"), Some(b))
            .await?;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "download {path}: {}",
            r.text()
        );
        let (ct, body) = multipart(path, b"pwned");
        let req = ship
            .raw(Method::POST, "/upload")
            .header("X-SESSION-ID", b)
            .header("content-type", ct)
            .body(body);
        let r = ship.send(req).await?;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "upload {path}: {}",
            r.text()
        );
    }

    // Shell: the kernel refuses (homes are 0700), both reading and writing.
    let v = ship.sh(b, &format!("cat {a_file}")).await?;
    assert_eq!(v["success"], false, "{v}");
    assert!(!v["stdout"].as_str().unwrap_or_default().contains(SECRET));
    let v = ship
        .sh(b, &format!("echo pwned > {a_file}; ls {a_home}"))
        .await?;
    assert_eq!(v["success"], false, "{v}");
    let v = ship
        .post("/shell/exec", b, json!({"command": "ls", "cwd": a_w}))
        .await?
        .json();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Access denied")),
        "{v}"
    );
    // ... nor the metadata, nor root's things.
    let v = ship.sh(b, "cat /app/metadata/session_users.json").await?;
    assert_eq!(v["success"], false, "{v}");
    let v = ship.sh(b, "cat /etc/shadow").await?;
    assert_eq!(v["success"], false, "{v}");

    // Python
    let v = ship
        .py(b, &format!("print(open({a_file:?}).read())"))
        .await?;
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("PermissionError")),
        "{v}"
    );
    let v = ship
        .py(b, &format!("open({a_file:?}, 'w').write('pwned')"))
        .await?;
    assert_eq!(v["success"], false, "{v}");

    // Terminal
    let mut term = ship.terminal(&format!("session_id={b}"), true).await?;
    term.send(&format!(
        "cat {a_file}; echo pwned > {a_file}; echo END-$((40+2))\r"
    ))
    .await?;
    term.expect("END-42", Duration::from_secs(20)).await?;
    assert!(!term.output.contains(SECRET), "{}", term.output);
    assert!(term.output.contains("Permission denied"), "{}", term.output);

    // A's file is intact and A still reads it.
    let r = ship
        .post("/fs/read_file", a, json!({"path": "secret.txt"}))
        .await?;
    assert_eq!(r.json()["content"], SECRET);
    Ok(())
}

#[tokio::test]
async fn traversal_and_symlink_escapes_are_refused() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "paths";
    let w = ship.workspace(sid).await?;
    let denied = format!("Access denied: path must be within workspace {w}");
    ship.sh_ok(sid, "ln -s /etc etc_link && ln -s /etc/passwd pw && ln -s .. up && mkdir -p d && ln -s ../../.. d/root").await?;

    let home = w.trim_end_matches("/workspace");
    let escapes = [
        "..".to_owned(),
        "../".to_owned(),
        "../.bashrc".to_owned(),
        "../../etc/passwd".to_owned(),
        "a/../../x".to_owned(),
        "d/../../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        "/".to_owned(),
        "/home".to_owned(),
        format!("{home}/.bashrc"),
        format!("{w}/../.bashrc"),
        format!("{w}/d/../../x"),
        "etc_link/passwd".to_owned(),
        "etc_link".to_owned(),
        "pw".to_owned(),
        "up/.bashrc".to_owned(),
        "d/root/etc/passwd".to_owned(),
        "etc_link/new-file".to_owned(),
        "./etc_link/../etc_link/hostname".to_owned(),
    ];
    for p in &escapes {
        for (route, body) in [
            ("/fs/read_file", json!({"path": p})),
            (
                "/fs/write_file",
                json!({"path": p, "content": "pwned", "mode": "a"}),
            ),
            (
                "/fs/create_file",
                json!({"path": format!("{p}/f"), "content": "pwned"}),
            ),
            ("/fs/list_dir", json!({"path": p})),
            (
                "/fs/edit_file",
                json!({"path": p, "old_string": "root", "new_string": "toor"}),
            ),
        ] {
            let r = ship.post(route, sid, body).await?;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{route} {p:?}: {}",
                r.text()
            );
            assert_eq!(r.detail(), denied, "{route} {p:?}");
        }
        let r = ship
            .get(&format!("/download?file_path={}", urlencode(p)), Some(sid))
            .await?;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "download {p:?}: {}",
            r.text()
        );
        let (ct, body) = multipart(&format!("{p}/up.bin"), b"pwned");
        let req = ship
            .raw(Method::POST, "/upload")
            .header("X-SESSION-ID", sid)
            .header("content-type", ct)
            .body(body);
        let r = ship.send(req).await?;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "upload {p:?}: {}",
            r.text()
        );
        let v = ship
            .post("/shell/exec", sid, json!({"command": "pwd", "cwd": p}))
            .await?
            .json();
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("Access denied")),
            "cwd {p:?}: {v}"
        );
    }

    let r = ship
        .post("/fs/read_file", sid, json!({"path": "a\u{0}b"}))
        .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.detail(), "Invalid path: contains a NUL character");

    // delete_file on a link deletes the link, never its target.
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "pw"}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = ship
        .post("/fs/delete_file", sid, json!({"path": "etc_link"}))
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let check = ship.exec(&[
        "sh",
        "-c",
        "test -s /etc/passwd && test -d /etc && ! grep -q pwned /etc/passwd /etc/hostname",
    ])?;
    assert!(check.status.success(), "/etc was modified");

    // A workspace replaced by a symlink is not followed (§4.2 step 1).
    ship.sh_ok(sid, "cd ~ && mv workspace old && ln -s /etc workspace")
        .await?;
    let r = ship
        .post("/fs/read_file", sid, json!({"path": "passwd"}))
        .await?;
    assert_ne!(
        r.status,
        StatusCode::OK,
        "read /etc/passwd through a planted workspace link: {}",
        r.text()
    );
    assert!(!r.text().contains("root:x:0:0"));
    let r = ship.post("/fs/list_dir", sid, json!({})).await?;
    assert!(
        !r.text().contains("\"passwd\""),
        "listed /etc through a planted link: {}",
        r.text()
    );
    assert_eq!(
        ship.exec(&["test", "-L", "/etc"])?.status.code(),
        Some(1),
        "the link target /etc is untouched"
    );
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
