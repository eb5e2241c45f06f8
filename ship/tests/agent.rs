//! End-to-end tests of the ship agent binary (as root, on a loopback port, with a temporary
//! home root, metadata directory and user database).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::{process_alive, start};

#[tokio::test]
async fn misc_routes_and_error_shapes() {
    let Some(a) = start(&[]).await else { return };
    let (s, v) = a.get("x", "/").await;
    assert_eq!((s, v), (200, json!({"message": "Ship API is running"})));
    let (s, v) = a.get("x", "/health").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "ship");
    let (_, v) = a.get("x", "/stat").await;
    assert_eq!(v["author"], "AstrBot Team");
    assert_ne!(v["version"], "unknown");
    let (_, v) = a.get("x", "/meta").await;
    assert_eq!(v["workspace"]["mount_path"], "/home");
    assert_eq!(v["built_in_skills"], json!([]));
    let (s, v) = a.get("x", "/nope").await;
    assert_eq!((s, v), (404, json!({"detail": "Not Found"})));
    let r = a.client.put(a.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("allow").is_some());
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Method Not Allowed"})
    );
    // Missing session header.
    let r = a
        .client
        .post(a.url("/fs/read_file"))
        .json(&json!({"path": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["detail"][0]["loc"], json!(["header", "X-SESSION-ID"]));
    assert_eq!(v["detail"][0]["type"], "missing");
    // Invalid session id.
    let (s, v) = a.post("a\tb", "/fs/read_file", json!({"path": "a"})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "value_error");
    // Validation with lax coercion.
    let (s, v) = a
        .post(
            "v",
            "/fs/create_file",
            json!({"path": "m.txt", "mode": "0o644"}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "int_parsing");
    assert_eq!(v["detail"][0]["loc"], json!(["body", "mode"]));
    let (s, _) = a
        .post(
            "v",
            "/fs/create_file",
            json!({"path": "m.txt", "mode": "384"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = a
        .post("v", "/fs/list_dir", json!({"show_hidden": "maybe"}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "bool_parsing");
    let r = a
        .client
        .post(a.url("/fs/read_file"))
        .header("X-SESSION-ID", "v")
        .header("content-type", "application/json")
        .body("{\"path\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["detail"][0]["type"],
        "json_invalid"
    );
}

#[tokio::test]
async fn auth_token_is_required_when_set() {
    let Some(a) = start(&[("SHIP_AUTH_TOKEN", "s3cret")]).await else {
        return;
    };
    let c = &a.client;
    assert_eq!(c.get(a.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(a.url("/health")).send().await.unwrap().status(), 200);
    let r = c.get(a.url("/stat")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid ship token"})
    );
    let r = c
        .get(a.url("/stat"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(a.url("/shell/exec"))
        .header("X-SESSION-ID", "s")
        .json(&json!({"command": "echo hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The harness sends the token.
    assert_eq!(a.sh("s", "echo hi").await["stdout"], "hi");
    // Terminal: token in the query.
    let url = format!(
        "ws://127.0.0.1:{}/term/ws?session_id=s&token=s3cret",
        a.port
    );
    assert!(tokio_tungstenite::connect_async(&url).await.is_ok());
    let url = format!("ws://127.0.0.1:{}/term/ws?session_id=s&token=bad", a.port);
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
}

#[tokio::test]
async fn shell_exec_runs_as_the_session_user() {
    let Some(a) = start(&[]).await else { return };
    let v = a
        .sh("s1", "id -u; id -G; pwd; echo $HOME; echo err >&2; exit 3")
        .await;
    assert_eq!(v["success"], false);
    assert_eq!(v["return_code"], 3);
    let out: Vec<&str> = v["stdout"].as_str().unwrap().lines().collect();
    let uid: u32 = out[0].parse().unwrap();
    assert!(uid >= 10000);
    assert_eq!(out[1], uid.to_string(), "only the user's own group");
    assert!(out[2].ends_with("/workspace"));
    assert_eq!(v["stderr"], "err");
    assert!(v["pid"].as_i64().unwrap() > 0);
    assert_eq!(v["process_id"], Value::Null);
    // env, cwd and shell:false
    a.sh("s1", "mkdir -p sub/dir").await;
    let (_, v) = a
        .post(
            "s1",
            "/shell/exec",
            json!({"command": "echo $FOO; pwd", "env": {"FOO": "bar"}, "cwd": "sub/dir"}),
        )
        .await;
    assert_eq!(v["success"], true, "{v}");
    assert!(
        v["stdout"].as_str().unwrap().starts_with("bar\n")
            && v["stdout"].as_str().unwrap().ends_with("sub/dir")
    );
    let (_, v) = a
        .post(
            "s1",
            "/shell/exec",
            json!({"command": "printf '%s|' 'a b' c", "shell": false}),
        )
        .await;
    assert_eq!(v["stdout"], "a b|c|");
    let (_, v) = a
        .post(
            "s1",
            "/shell/exec",
            json!({"command": "no-such-program-x", "shell": false}),
        )
        .await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to start command"),
        "{v}"
    );
    let (_, v) = a
        .post("s1", "/shell/exec", json!({"command": "ls", "cwd": "/"}))
        .await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Access denied: path must be within user workspace: "),
        "{v}"
    );
    let (_, v) = a
        .post(
            "s1",
            "/shell/exec",
            json!({"command": "ls", "cwd": "missing"}),
        )
        .await;
    assert_eq!(v["error"], "Working directory does not exist: missing");
    let (_, v) = a
        .post(
            "s1",
            "/shell/exec",
            json!({"command": "ls", "env": {"A-B": "x"}}),
        )
        .await;
    assert_eq!(v["error"], "Invalid environment variable name: A-B");
    // stdin is /dev/null
    let v = a.sh("s1", "cat; echo done").await;
    assert_eq!(v["stdout"], "done");
}

#[tokio::test]
async fn shell_timeout_kills_the_whole_group_promptly() {
    let Some(a) = start(&[]).await else { return };
    let t0 = Instant::now();
    let (_, v) = a
        .post(
            "t",
            "/shell/exec",
            json!({"command": "sleep 30 & echo $!; echo partial; sleep 30", "timeout": 1}),
        )
        .await;
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    assert_eq!(v["success"], false);
    assert_eq!(v["return_code"], -1);
    assert_eq!(v["error"], "Command timed out");
    let out = v["stdout"].as_str().unwrap();
    assert!(out.ends_with("partial"), "{v}");
    let grandchild: i64 = out.lines().next().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!process_alive(grandchild), "the background sleep survived");
}

#[tokio::test]
async fn response_does_not_wait_for_escaped_pipe_holders() {
    let Some(a) = start(&[]).await else { return };
    let t0 = Instant::now();
    // setsid puts the sleep outside the command's group; it still holds stdout.
    let v = a.sh("p", "setsid sleep 5 & echo started").await;
    let elapsed = t0.elapsed();
    assert_eq!(v["stdout"], "started");
    assert_eq!(v["success"], true);
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
}

#[tokio::test]
async fn output_is_capped_with_middle_elision() {
    let Some(a) = start(&[("SHIP_MAX_OUTPUT_BYTES", "100")]).await else {
        return;
    };
    let v = a
        .sh("o", "for i in $(seq 1 1000); do printf x; done; printf END")
        .await;
    let out = v["stdout"].as_str().unwrap();
    assert_eq!(v["stdout_truncated"], true);
    assert!(out.contains("\n[... 903 bytes omitted ...]\n"), "{out}");
    assert!(out.ends_with("END"));
    assert_eq!(v["stderr_truncated"], false);
}

#[tokio::test]
async fn background_processes_are_registered() {
    let Some(a) = start(&[]).await else { return };
    let (_, v) = a
        .post(
            "b",
            "/shell/exec",
            json!({"command": "echo hi; sleep 0.3; echo bye; exit 2", "background": true}),
        )
        .await;
    assert_eq!(v["success"], true);
    let id = v["process_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 8);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let mut last = Value::Null;
    for _ in 0..100 {
        let (s, p) = a.get("b", &format!("/shell/process/{id}")).await;
        assert_eq!(s, 200);
        last = p;
        if last["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(last["return_code"], 2);
    assert_eq!(last["stdout"], "hi\nbye");
    // A long one, killed.
    let (_, v) = a
        .post(
            "b",
            "/shell/exec",
            json!({"command": "sleep 30", "background": true}),
        )
        .await;
    let id2 = v["process_id"].as_str().unwrap().to_owned();
    let pid = v["pid"].as_i64().unwrap();
    let (_, list) = a.get("b", "/shell/processes").await;
    assert_eq!(list["processes"].as_array().unwrap().len(), 2);
    assert_eq!(list["processes"][1]["status"], "running");
    let (s, v) = a.delete("b", &format!("/shell/process/{id2}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["message"], format!("Process {id2} killed"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!process_alive(pid));
    let (_, v) = a.delete("b", &format!("/shell/process/{id2}")).await;
    assert_eq!(v["message"], format!("Process {id2} is not running"));
    // Other sessions do not see them.
    let (s, v) = a.get("other", &format!("/shell/process/{id}")).await;
    assert_eq!(s, 404);
    assert_eq!(v["detail"], format!("Process not found: {id}"));
    let (_, v) = a.get("never-seen", "/shell/processes").await;
    assert_eq!(v, json!({"processes": []}));
}

#[tokio::test]
async fn python_state_persists_and_errors_are_plain_tracebacks() {
    let Some(a) = start(&[]).await else { return };
    let v = a.py("py", "x = 40\nprint('hello')\nx + 2").await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["output"]["text"], "hello\n42");
    assert_eq!(v["execution_count"], 1);
    assert_eq!(v["kernel_id"], "py");
    assert_eq!(v["output_truncated"], false);
    let v = a
        .py(
            "py",
            "import os\nprint(os.getuid() >= 10000, os.getcwd().endswith('/workspace'))\nx",
        )
        .await;
    assert_eq!(v["output"]["text"], "True True\n40");
    assert_eq!(v["execution_count"], 2);
    let v = a
        .py("py", "def f():\n    return 1 / 0\nprint('before')\nf()")
        .await;
    assert_eq!(v["success"], false);
    assert_eq!(v["output"]["text"], "before");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.starts_with("Traceback (most recent call last):"),
        "{err}"
    );
    assert!(
        err.ends_with("ZeroDivisionError: division by zero"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'));
    let v = a.py("py", "input('name? ')").await;
    assert_eq!(v["success"], false);
    let (_, v) = a
        .post(
            "py",
            "/ipython/exec",
            json!({"code": "y = 5", "silent": true}),
        )
        .await;
    assert_eq!(v["execution_count"], Value::Null);
    let v = a
        .py(
            "py",
            "import subprocess; subprocess.run(['echo', 'from child'])\ny",
        )
        .await;
    assert_eq!(v["output"]["text"], "from child\n5");
    let (s, v) = a.get("py", "/ipython/kernel/status").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "alive");
    let (_, v) = a.get("py", "/ipython/kernels").await;
    assert_eq!(v["kernels"][0]["kernel_id"], "py");
    let (_, v) = a.get("someone-else", "/ipython/kernels").await;
    assert_eq!(v, json!({"kernels": []}));
}

#[tokio::test]
async fn python_timeout_interrupts_then_restarts() {
    let Some(a) = start(&[]).await else { return };
    a.py("pt", "keep = 1").await;
    let t0 = Instant::now();
    let (_, v) = a
        .post(
            "pt",
            "/ipython/exec",
            json!({"code": "import time\nprint('start')\ntime.sleep(30)", "timeout": 1}),
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(v["error"], "Code execution timed out after 1 seconds");
    assert_eq!(v["output"]["text"], "start");
    // Interrupted, not restarted: state kept.
    assert_eq!(a.py("pt", "keep").await["output"]["text"], "1");
    // Ignoring SIGINT forces a restart after the 5 s grace.
    let (_, v) = a
        .post(
            "pt",
            "/ipython/exec",
            json!({"code": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", "timeout": 1}),
        )
        .await;
    assert_eq!(
        v["error"],
        "Code execution timed out after 1 seconds (the Python session was restarted; its state was lost)"
    );
    let v = a.py("pt", "keep").await;
    assert!(v["error"].as_str().unwrap().contains("NameError"), "{v}");
    // Interpreter death.
    let v = a.py("pt", "import os; os._exit(7)").await;
    assert_eq!(
        v["error"],
        "Python interpreter exited unexpectedly (exit status 7); its state was lost"
    );
    assert_eq!(a.py("pt", "1 + 1").await["output"]["text"], "2");
    let (s, _) = a.delete("pt", "/ipython/kernel").await;
    assert_eq!(s, 200);
    let (s, v) = a.get("pt", "/ipython/kernel/status").await;
    assert_eq!(s, 404);
    assert_eq!(v["detail"], "Kernel for session pt not found");
}

#[tokio::test]
async fn file_api_routes_and_errors() {
    let Some(a) = start(&[]).await else { return };
    let sid = "files";
    let (s, v) = a
        .post(
            sid,
            "/fs/create_file",
            json!({"path": "d/a.txt", "content": "one\r\ntwo\nthree\n"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "File created: d/a.txt");
    let abs = v["path"].as_str().unwrap().to_owned();
    assert!(abs.ends_with("/workspace/d/a.txt"));
    // Owned by the session user.
    let uid: u32 = a.sh(sid, "id -u").await["stdout"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let m = std::fs::metadata(&abs).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, uid, 0o644));
    let m = std::fs::metadata(std::path::Path::new(&abs).parent().unwrap()).unwrap();
    assert_eq!(m.uid(), uid);
    let (_, v) = a
        .post(
            sid,
            "/fs/read_file",
            json!({"path": "d/a.txt", "offset": 2, "limit": 1}),
        )
        .await;
    assert_eq!(v["content"], "two\n");
    assert_eq!(v["size"], 15);
    let (_, v) = a
        .post(
            sid,
            "/fs/read_file",
            json!({"path": "d/a.txt", "offset": "1", "limit": -1}),
        )
        .await;
    assert_eq!(v["content"], "one\ntwo\n");
    let (s, v) = a
        .post(sid, "/fs/read_file", json!({"path": "nope.txt"}))
        .await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (404, "File not found: nope.txt")
    );
    let (s, v) = a.post(sid, "/fs/read_file", json!({"path": "d"})).await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (400, "Path is not a file: d")
    );
    let (s, v) = a
        .post(
            sid,
            "/fs/read_file",
            json!({"path": "d/a.txt", "encoding": "klingon"}),
        )
        .await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (400, "Unknown encoding: klingon")
    );
    let (_, v) = a
        .post(
            sid,
            "/fs/write_file",
            json!({"path": "d/a.txt", "content": "four\n", "mode": "a"}),
        )
        .await;
    assert_eq!(v["size"], 20);
    let (_, v) = a
        .post(
            sid,
            "/fs/write_file",
            json!({"path": "w.txt", "content": "x x x"}),
        )
        .await;
    assert_eq!(v["message"], "File written: w.txt");
    let (s, v) = a
        .post(
            sid,
            "/fs/edit_file",
            json!({"path": "w.txt", "old_string": "x", "new_string": "y"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["detail"],
        "'old_string' appears 3 times in file; set replace_all=true to replace all occurrences"
    );
    let (_, v) = a
        .post(
            sid,
            "/fs/edit_file",
            json!({"path": "w.txt", "old_string": "x", "new_string": "yy", "replace_all": "yes"}),
        )
        .await;
    assert_eq!(v["replacements"], 3);
    assert_eq!(v["size"], 8);
    let (s, v) = a
        .post(
            sid,
            "/fs/edit_file",
            json!({"path": "w.txt", "old_string": "q", "new_string": "z"}),
        )
        .await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (400, "'old_string' not found in file")
    );
    let (s, _) = a
        .post(
            sid,
            "/fs/edit_file",
            json!({"path": "w.txt", "old_string": "q", "new_string": "q"}),
        )
        .await;
    assert_eq!(s, 400);
    let (_, v) = a.post(sid, "/fs/list_dir", json!({})).await;
    let names: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d", "w.txt"]);
    assert_eq!(v["files"][0]["size"], Value::Null);
    assert_eq!(v["files"][1]["size"], 8);
    let (s, _) = a.post(sid, "/fs/list_dir", json!({"path": "w.txt"})).await;
    assert_eq!(s, 400);
    let (s, v) = a.post(sid, "/fs/list_dir", json!({"path": "zz"})).await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (404, "Directory not found: zz")
    );
    let (s, v) = a.post(sid, "/fs/delete_file", json!({"path": "."})).await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (400, "Cannot delete the workspace root")
    );
    let (_, v) = a.post(sid, "/fs/delete_file", json!({"path": "d"})).await;
    assert_eq!(v["message"], "Directory deleted: d");
    let (_, v) = a
        .post(sid, "/fs/delete_file", json!({"path": "w.txt"}))
        .await;
    assert_eq!(v["message"], "File deleted: w.txt");
    let (s, v) = a
        .post(sid, "/fs/delete_file", json!({"path": "w.txt"}))
        .await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (404, "Path not found: w.txt")
    );
    let (s, v) = a
        .post(sid, "/fs/create_file", json!({"path": "a\u{0}b"}))
        .await;
    assert_eq!(
        (s, v["detail"].as_str().unwrap()),
        (400, "Invalid path: contains a NUL character")
    );
}

#[tokio::test]
async fn traversal_and_symlink_escapes_are_refused() {
    let Some(a) = start(&[]).await else { return };
    let sid = "esc";
    a.sh(sid, "ln -s /etc etc_link && ln -s .. up && echo secret > inside.txt && ln -s inside.txt ok_link").await;
    let (_, v) = a.post(sid, "/fs/list_dir", json!({})).await;
    let w = v["current_path"].as_str().unwrap().to_owned();
    let denied = format!("Access denied: path must be within workspace {w}");
    for path in [
        "../x",
        "/etc/passwd",
        "etc_link/passwd",
        "up/.bashrc",
        "etc_link",
        "sub/../../x",
    ] {
        let (s, v) = a.post(sid, "/fs/read_file", json!({"path": path})).await;
        assert_eq!(
            (s, v["detail"].as_str().unwrap()),
            (403, denied.as_str()),
            "{path}"
        );
    }
    let (s, _) = a
        .post(
            sid,
            "/fs/create_file",
            json!({"path": "etc_link/evil", "content": "x"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = a
        .post(
            sid,
            "/fs/write_file",
            json!({"path": "../evil", "content": "x"}),
        )
        .await;
    assert_eq!(s, 403);
    let r = a
        .client
        .get(a.url("/download?file_path=etc_link%2Fpasswd"))
        .header("X-SESSION-ID", sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, v) = a
        .post(sid, "/fs/read_file", json!({"path": "ok_link"}))
        .await;
    assert_eq!(v["content"], "secret\n");
    // Deleting a link removes the link, never the target.
    let (s, v) = a
        .post(sid, "/fs/delete_file", json!({"path": "etc_link"}))
        .await;
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (200, "File deleted: etc_link")
    );
    assert!(std::path::Path::new("/etc/passwd").exists());
    // A workspace replaced by a symlink is replaced by a fresh directory.
    let home = std::path::Path::new(&w).parent().unwrap().to_owned();
    a.sh(sid, "cd ~ && mv workspace old && ln -s /etc workspace")
        .await;
    let (s, v) = a.post(sid, "/fs/list_dir", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["files"], json!([]));
    assert!(
        std::fs::symlink_metadata(home.join("workspace"))
            .unwrap()
            .is_dir()
    );
}

#[tokio::test]
async fn sessions_cannot_read_each_other() {
    let Some(a) = start(&[]).await else { return };
    let (_, v) = a
        .post(
            "alice",
            "/fs/create_file",
            json!({"path": "secret.txt", "content": "alice only"}),
        )
        .await;
    let alice_file = v["path"].as_str().unwrap().to_owned();
    a.sh("bob", "true").await;
    let v = a.sh("bob", &format!("cat {alice_file}")).await;
    assert_eq!(v["success"], false);
    assert!(
        v["stderr"].as_str().unwrap().contains("Permission denied"),
        "{v}"
    );
    let (s, _) = a
        .post("bob", "/fs/read_file", json!({"path": alice_file}))
        .await;
    assert_eq!(s, 403);
    let v = a.py("bob", &format!("open({alice_file:?}).read()")).await;
    assert!(
        v["error"].as_str().unwrap().contains("PermissionError"),
        "{v}"
    );
    // Distinct users, private homes.
    let ua = a.sh("alice", "id -u").await["stdout"].clone();
    let ub = a.sh("bob", "id -u").await["stdout"].clone();
    assert_ne!(ua, ub);
    for entry in std::fs::read_dir(a.home_root()).unwrap() {
        let m = entry.unwrap().metadata().unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
    }
    // Mapping persisted.
    let map: Value = serde_json::from_slice(
        &std::fs::read(a.dir.path().join("metadata/session_users.json")).unwrap(),
    )
    .unwrap();
    assert!(map["alice"].as_str().unwrap().starts_with("ship_"));
    assert_eq!(map["alice"].as_str().unwrap().len(), 21);
    let passwd = std::fs::read_to_string(a.dir.path().join("passwd")).unwrap();
    assert!(passwd.contains(map["bob"].as_str().unwrap()));
}

#[tokio::test]
async fn upload_and_download_stream_files() {
    let Some(a) = start(&[]).await else { return };
    let sid = "up";
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for (order, path) in [("path-first", "in/big.bin"), ("file-first", "in/big2.bin")] {
        let part = reqwest::multipart::Part::bytes(data.clone()).file_name("ignored.bin");
        let form = if order == "path-first" {
            reqwest::multipart::Form::new()
                .text("file_path", path)
                .part("file", part)
        } else {
            reqwest::multipart::Form::new()
                .part("file", part)
                .text("file_path", path)
        };
        let r = a
            .client
            .post(a.url("/upload"))
            .header("X-SESSION-ID", sid)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["size"], 3_000_000);
        assert!(v["file_path"].as_str().unwrap().ends_with(path));
    }
    let uid: u32 = a.sh(sid, "id -u").await["stdout"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let v = a.sh(sid, "ls -A in").await;
    assert_eq!(v["stdout"], "big.bin\nbig2.bin", "no temporary files left");
    let r = a
        .client
        .get(a.url("/download?file_path=in/big.bin"))
        .header("X-SESSION-ID", sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["content-length"], "3000000");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"big.bin\"")
    );
    assert!(r.headers().contains_key("etag"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    let (_, v) = a.post(sid, "/fs/list_dir", json!({"path": "in"})).await;
    let abs = v["files"][0]["path"].as_str().unwrap().to_owned();
    assert_eq!(std::fs::metadata(abs).unwrap().uid(), uid);
    // Range
    let r = a
        .client
        .get(a.url("/fs/download?file_path=in/big.bin"))
        .header("X-SESSION-ID", sid)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/3000000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    // Errors
    let r = a
        .client
        .get(a.url("/download?file_path=none"))
        .header("X-SESSION-ID", sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "File not found"})
    );
    let r = a
        .client
        .get(a.url("/download?file_path=in"))
        .header("X-SESSION-ID", sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = a
        .client
        .get(a.url("/download"))
        .header("X-SESSION-ID", sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let form = reqwest::multipart::Form::new().text("file_path", "x");
    let r = a
        .client
        .post(a.url("/upload"))
        .header("X-SESSION-ID", sid)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["detail"][0]["loc"],
        json!(["body", "file"])
    );
    let form = reqwest::multipart::Form::new()
        .text("file_path", "../../evil")
        .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let r = a
        .client
        .post(a.url("/upload"))
        .header("X-SESSION-ID", sid)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let form = reqwest::multipart::Form::new()
        .text("file_path", "in")
        .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let r = a
        .client
        .post(a.url("/upload"))
        .header("X-SESSION-ID", sid)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["success"], false,
        "uploading onto a directory is a soft failure"
    );
    assert_eq!(v["message"], "File upload failed");
}

async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
}

#[tokio::test]
async fn terminal_runs_a_login_shell() {
    let Some(a) = start(&[]).await else { return };
    let url = format!(
        "ws://127.0.0.1:{}/term/ws?session_id=term&cols=100&rows=30",
        a.port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(
        r#"{"type":"resize","cols":120,"rows":40}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text("echo $((6*7)) $(id -u); stty size\r".into()))
        .await
        .unwrap();
    let mut seen = String::new();
    while !(seen.contains("42 1") && seen.contains("40 120")) {
        match next_text(&mut ws).await {
            Some(Message::Text(t)) => seen.push_str(t.as_str()),
            Some(_) => {}
            None => panic!("terminal output missing: {seen:?}"),
        }
    }
    ws.send(Message::Binary(b"exit\r".to_vec().into()))
        .await
        .unwrap();
    loop {
        match next_text(&mut ws).await {
            Some(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1000);
                assert_eq!(f.reason.as_str(), "Shell exited");
                break;
            }
            Some(_) => {}
            None => panic!("no close frame"),
        }
    }
    // Bad parameters: accepted, then closed with 1008.
    let url = format!("ws://127.0.0.1:{}/term/ws?session_id=term&cols=0", a.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    match next_text(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}

#[tokio::test]
async fn orphans_are_reaped_and_sigterm_shuts_down() {
    let Some(mut a) = start(&[]).await else {
        return;
    };
    let agent_pid = a.child.id();
    // Double fork: the sleep is re-parented to the agent (sub-reaper) and exits there.
    a.sh("r", "(sleep 0.2 &) ; true").await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let s = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            let rest = &s[s.rfind(')')? + 1..];
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next()?, f.next()?);
            (state == "Z" && ppid == agent_pid.to_string()).then_some(s)
        })
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    // SIGTERM: background work is killed, the agent exits 0 promptly.
    let (_, v) = a
        .post(
            "r",
            "/shell/exec",
            json!({"command": "sleep 60", "background": true}),
        )
        .await;
    let pid = v["pid"].as_i64().unwrap();
    a.py("r", "1").await;
    let t0 = Instant::now();
    let status = a.terminate().expect("the agent exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!process_alive(pid));
}

/// IPython engine and matplotlib figures: runs only when `SHIP_TEST_IPYTHON_PYTHON` names an
/// interpreter with IPython and matplotlib that session users can execute (e.g. a venv made
/// with `/usr/bin/python3 -m venv`).
#[tokio::test]
async fn ipython_engine_and_figures() {
    let Ok(python) = std::env::var("SHIP_TEST_IPYTHON_PYTHON") else {
        eprintln!("skipping: SHIP_TEST_IPYTHON_PYTHON is not set");
        return;
    };
    let Some(a) = start(&[("SHIP_PYTHON", &python)]).await else {
        return;
    };
    let v = a.py("ip", "x = 2\n!echo shell\nx * 21").await;
    assert_eq!(v["success"], true, "{v}");
    assert!(v["output"]["text"].as_str().unwrap().ends_with("42"), "{v}");
    assert_eq!(v["execution_count"], 1);
    let v = a.py("ip", "%pwd").await;
    assert!(
        v["output"]["text"]
            .as_str()
            .unwrap()
            .ends_with("/workspace'"),
        "{v}"
    );
    let v = a.py("ip", "1/0").await;
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("ZeroDivisionError") && !err.contains('\u{1b}'),
        "{err}"
    );
    let v = a
        .py("ip", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nplt.figure()\nplt.plot([2, 1])\nprint(len(plt.get_fignums()))")
        .await;
    assert_eq!(v["success"], true, "{v}");
    let images = v["output"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "one from show(), one left open");
    assert!(
        images[0]["image/png"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo")
    );
    assert_eq!(v["output"]["text"], "1");
    let v = a
        .py(
            "ip",
            "import matplotlib.pyplot as plt\nlen(plt.get_fignums())",
        )
        .await;
    assert_eq!(
        v["output"]["text"], "0",
        "figures are closed after the cell"
    );
}

// ---- conformance regressions found by walking ship-api.md section by section ----

/// §7.2: "Finished entries are kept, at most 100 per session; the oldest finished entry is
/// dropped first" — also when the entry that goes over the limit finishes after it was added.
#[tokio::test]
async fn finished_background_entries_never_exceed_100() {
    let Some(a) = start(&[]).await else { return };
    let mut ids = Vec::new();
    for _ in 0..100 {
        let (_, v) = a
            .post(
                "bg",
                "/shell/exec",
                json!({"command": "true", "background": true}),
            )
            .await;
        ids.push(v["process_id"].as_str().unwrap().to_owned());
    }
    let all_finished = |v: &serde_json::Value| {
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] != "running")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = a.get("bg", "/shell/processes").await;
        if all_finished(&v) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background entries still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The 101st is still running when it is added, and finishes afterwards.
    let (_, v) = a
        .post(
            "bg",
            "/shell/exec",
            json!({"command": "sleep 0.3", "background": true}),
        )
        .await;
    let last = v["process_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let (_, v) = a.get("bg", "/shell/processes").await;
        if all_finished(&v) {
            break v;
        }
        assert!(Instant::now() < deadline, "the last entry did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed: Vec<&str> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["process_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 100, "at most 100 finished entries");
    assert_eq!(listed[99], last);
    assert!(!listed.contains(&ids[0].as_str()), "the oldest is dropped");
    let (s, _) = a.get("bg", &format!("/shell/process/{}", ids[0])).await;
    assert_eq!(s, 404);
}

/// §6.1: `timeout` is any int (values < 1 count as 1); a huge one is simply no practical limit.
#[tokio::test]
async fn python_accepts_a_huge_timeout() {
    let Some(a) = start(&[]).await else { return };
    let (s, v) = a
        .post(
            "pyt",
            "/ipython/exec",
            json!({"code": "6 * 7", "timeout": i64::MAX}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["output"]["text"], "42");
    // And again with the interpreter already running.
    let (_, v) = a
        .post(
            "pyt",
            "/ipython/exec",
            json!({"code": "print('ok')", "timeout": "9223372036854775807"}),
        )
        .await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["output"]["text"], "ok");
}

/// Pids of live processes whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i64> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: i64 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read(e.path().join("cmdline")).ok()? == want && process_alive(pid))
                .then_some(pid)
        })
        .collect()
}

/// §8: on client disconnect, "SIGHUP to the terminal's session, SIGKILL 1 second later to any
/// process still in it" — including jobs in process groups of their own that ignore SIGHUP.
#[tokio::test]
async fn terminal_disconnect_kills_every_process_of_its_session() {
    let Some(a) = start(&[]).await else { return };
    let url = format!("ws://127.0.0.1:{}/term/ws?session_id=term-kill", a.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // A background job (its own process group under job control) that ignores SIGHUP.
    ws.send(Message::Text(
        "bash -c \"trap '' HUP; exec sleep 4242.5\" & echo STAR''TED\r".into(),
    ))
    .await
    .unwrap();
    let mut seen = String::new();
    while !seen.contains("STARTED") {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seen.push_str(t.as_str()),
            Ok(Some(Ok(_))) => {}
            other => panic!("terminal output missing ({other:?}): {seen:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids_running(&["sleep", "4242.5"]).is_empty() {
        assert!(Instant::now() < deadline, "the job did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left = pids_running(&["sleep", "4242.5"]);
    for &pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(left.is_empty(), "still running after disconnect: {left:?}");
}
