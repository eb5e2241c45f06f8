//! Python execution (§6): persistent per-session interpreters, errors, timeouts, kernels, figures.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use ship_image_tests::{Ship, ShipOptions, full_image};

#[tokio::test]
async fn state_persists_across_calls() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "py-1";

    let v = ship.py(sid, "x = 41\nimport os").await?;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["kernel_id"], sid);
    assert_eq!(v["output_truncated"], false);
    let first = v["execution_count"].as_i64().unwrap_or(-1);
    assert_eq!(first, 1, "first cell of a fresh interpreter: {v}");

    let v = ship
        .py(sid, "def f(y):\n    return x + y\nprint('hello')\nf(1)")
        .await?;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["output"]["text"], "hello\n42", "{v}");
    assert_eq!(v["output"]["images"], json!([]));
    assert_eq!(v["execution_count"], 2);

    // Runs as the session user, in W.
    let v = ship
        .py(
            sid,
            "import getpass; print(os.getcwd()); print(os.getuid() != 0, os.environ['USER'])",
        )
        .await?;
    let text = v["output"]["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.starts_with("/home/ship_") && text.contains("/workspace\nTrue ship_"),
        "{v}"
    );

    // Another session does not see the variables.
    let v = ship.py("py-other", "print(x)").await?;
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("NameError")),
        "{v}"
    );

    // silent: no execution count
    let v = ship
        .post(
            "/ipython/exec",
            sid,
            json!({"code": "x = 1", "silent": true}),
        )
        .await?
        .json();
    assert!(v["execution_count"].is_null(), "{v}");
    Ok(())
}

#[tokio::test]
async fn errors_timeouts_and_stdin() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "py-2";

    let v = ship.py(sid, "print('before')\n1/0").await?;
    assert_eq!(v["success"], false);
    assert_eq!(v["output"]["text"], "before");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.trim_end()
            .ends_with("ZeroDivisionError: division by zero"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "no ANSI colour codes: {err:?}");

    let v = ship.py(sid, "input('name? ')").await?;
    assert_eq!(v["success"], false, "input() must fail at once: {v}");

    ship.py(sid, "kept = 'yes'").await?;
    let v = ship.post("/ipython/exec", sid, json!({"code": "import time\nprint('partial', flush=True)\ntime.sleep(30)", "timeout": 1})).await?.json();
    assert_eq!(v["success"], false);
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("Code execution timed out after 1 seconds"),
        "{v}"
    );
    assert_eq!(v["output"]["text"], "partial", "{v}");
    // Interrupted (not killed): the state survives.
    if !err.contains("restarted") {
        let v = ship.py(sid, "print(kept)").await?;
        assert_eq!(v["output"]["text"], "yes", "{v}");
    }

    let v = ship.py(sid, "import os; os._exit(3)").await?;
    assert_eq!(v["success"], false);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Python interpreter exited unexpectedly")),
        "{v}"
    );
    let v = ship.py(sid, "print(kept)").await?;
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("NameError")),
        "state is lost: {v}"
    );
    Ok(())
}

#[tokio::test]
async fn kernel_routes() -> anyhow::Result<()> {
    let ship = Ship::start_default().await?;
    let sid = "py-3";

    let r = ship.get("/ipython/kernel/status", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), format!("Kernel for session {sid} not found"));
    let r = ship
        .request(Method::DELETE, "/ipython/kernel", Some(sid), None)
        .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = ship.post("/ipython/create_kernel", sid, json!({})).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["kernel_id"], sid);
    let w = v["workspace"].as_str().unwrap_or_default().to_owned();
    assert!(
        w.starts_with("/home/ship_") && w.ends_with("/workspace"),
        "{v}"
    );
    assert_eq!(
        v["message"],
        format!("Kernel for session {sid} created successfully")
    );

    let r = ship.get("/ipython/kernel/status", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"session_id": sid, "kernel_id": sid, "status": "alive", "workspace": w, "has_kernel": true})
    );

    let r = ship.get("/ipython/kernels", Some(sid)).await?;
    assert_eq!(
        r.json(),
        json!({"kernels": [{"kernel_id": sid, "status": "alive", "connections": 1}]})
    );
    let r = ship.get("/ipython/kernels", Some("other")).await?;
    assert_eq!(
        r.json(),
        json!({"kernels": []}),
        "only the caller's kernel is listed"
    );

    ship.py(sid, "z = 5").await?;
    let r = ship.post("/ipython/kernel/restart", sid, json!({})).await?;
    if r.status != StatusCode::NOT_FOUND {
        assert_eq!(
            r.json(),
            json!({"success": true, "message": "Kernel restarted successfully"})
        );
        let v = ship.py(sid, "z").await?;
        assert_eq!(v["success"], false, "restart loses state: {v}");
    }

    let r = ship
        .request(Method::DELETE, "/ipython/kernel", Some(sid), None)
        .await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        format!("Kernel for session {sid} shutdown successfully")
    );
    let r = ship.get("/ipython/kernel/status", Some(sid)).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = String::from_utf8_lossy(&ship.exec(&["ps", "-eo", "user,args"])?.stdout).into_owned();
    assert!(
        !ps.lines().any(|l| l.contains("python")),
        "the interpreter is gone:\n{ps}"
    );
    Ok(())
}

/// Needs the `full` flavour (matplotlib, IPython): [`full_image`].
#[tokio::test]
async fn matplotlib_figure_is_returned_as_png() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "py-4";
    let code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title('中文 title')\nplt.show()";
    let v = ship.py(sid, code).await?;
    assert_eq!(v["success"], true, "{v}");
    let images = v["output"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(images.len(), 1, "{v}");
    let b64 = images[0]["image/png"].as_str().unwrap_or_default();
    // "iVBORw0KGgo" is the base64 of the PNG signature.
    assert!(
        b64.starts_with("iVBORw0KGgo") && b64.len() > 1000,
        "not a PNG: {}",
        &b64[..b64.len().min(40)]
    );
    assert!(!b64.contains('\n'));

    // IPython cell syntax and a figure left open at the end of a cell.
    let v = ship
        .py(
            sid,
            "!echo from-shell\nfig = plt.figure(); _ = plt.bar([1], [2])",
        )
        .await?;
    assert_eq!(v["success"], true, "{v}");
    assert!(
        v["output"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("from-shell")),
        "{v}"
    );
    assert_eq!(
        v["output"]["images"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    Ok(())
}
