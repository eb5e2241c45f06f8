//! The spare Python interpreter (issue 13) in the complete image: after `POST /warmup` the
//! first Python call of a session is served by the interpreter started before it, which runs
//! exactly as a normally started one of that session (IPython, user site, CJK fonts).

use reqwest::StatusCode;
use serde_json::{Value, json};
use ship_image_tests::{Ship, ShipOptions, docker, full_image};

/// Pids of the agent's children that run the Python driver as root: the spare.
fn spares(ship: &Ship) -> anyhow::Result<Vec<String>> {
    let out = docker(&[
        "exec",
        &ship.id,
        "python3",
        "-c",
        "import os\n\
         for p in filter(str.isdigit, os.listdir('/proc')):\n    \
             try:\n        \
                 st = open('/proc/%s/status' % p).read()\n        \
                 cl = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\\0')\n    \
             except OSError:\n        \
                 continue\n    \
             f = {l.split(':')[0]: l.split()[1:] for l in st.splitlines() if ':' in l}\n    \
             if f.get('PPid') == ['1'] and f.get('Uid', [''])[0] == '0' and cl[1:3] == [b'-u', b'-c']:\n        \
                 print(p)",
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}

const PROBE: &str = "import os, sys, site, json, tempfile, ctypes, matplotlib\n\
print(json.dumps({'pid': os.getpid(), 'ids': [os.getresuid(), os.getresgid(), os.getgroups()],\n\
 'cwd': os.getcwd(), 'env': dict(os.environ), 'tmp': tempfile.gettempdir(),\n\
 'umask': os.umask(0o077), 'oom': open('/proc/self/oom_score_adj').read().strip(),\n\
 'dumpable': ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), 'path': sys.path,\n\
 'user_site': [site.getusersitepackages(), os.path.isdir(site.getusersitepackages())],\n\
 'engine': type(get_ipython()).__name__, 'font': matplotlib.rcParams['font.sans-serif'][0]}))";

#[tokio::test]
async fn first_python_call_uses_the_spare_as_the_session_user() -> anyhow::Result<()> {
    let mut opts = ShipOptions::new(full_image());
    opts.token = Some("spare-token".into());
    let ship = Ship::start(opts).await?;
    let r = reqwest::Client::new()
        .post(ship.url("/warmup"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let r = ship
            .request(reqwest::Method::POST, "/warmup", None, None)
            .await?;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json(), json!({"status": "ok"}));
    }
    let spare = spares(&ship)?;
    assert_eq!(spare.len(), 1, "one spare: {spare:?}");

    let sid = "spare-img";
    let uid = ship.sh(sid, "id -u").await?["stdout"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .parse::<u64>()?;
    let v = ship.py(sid, PROBE).await?;
    assert_eq!(v["success"], true, "{v}");
    let adopted: Value = serde_json::from_str(v["output"]["text"].as_str().unwrap_or("null"))?;
    assert_eq!(
        adopted["pid"].to_string(),
        spare[0],
        "the spare served it: {adopted}"
    );
    assert!(spares(&ship)?.is_empty(), "no new spare after the adoption");
    let home = adopted["env"]["HOME"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(home.starts_with("/home/ship_"), "{adopted}");
    assert_eq!(
        adopted["ids"],
        json!([[uid, uid, uid], [uid, uid, uid], []])
    );
    assert_eq!(adopted["cwd"], format!("{home}/workspace"));
    assert_eq!(adopted["tmp"], format!("{home}/tmp"));
    assert_eq!(adopted["umask"], 0o77);
    assert_eq!(adopted["oom"], "800");
    assert_eq!(adopted["dumpable"], 1);
    assert_eq!(adopted["engine"], "InteractiveShell");
    assert_eq!(adopted["font"], "Noto Sans CJK SC");
    // The image's sitecustomize made the user site and put it on sys.path, as for a normal start.
    let user_site = adopted["user_site"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(adopted["user_site"][1], true, "{adopted}");
    assert!(
        adopted["path"]
            .as_array()
            .is_some_and(|p| p.contains(&json!(user_site))),
        "{adopted}"
    );

    // A normal start of the same session gives the same interpreter.
    let r = ship
        .request(reqwest::Method::DELETE, "/ipython/kernel", Some(sid), None)
        .await?;
    assert_eq!(r.status, StatusCode::OK);
    let v = ship.py(sid, PROBE).await?;
    let mut normal: Value = serde_json::from_str(v["output"]["text"].as_str().unwrap_or("null"))?;
    assert_ne!(normal["pid"], adopted["pid"]);
    let mut adopted = adopted;
    for v in [&mut normal, &mut adopted] {
        if let Some(o) = v.as_object_mut() {
            o.remove("pid");
        }
    }
    assert_eq!(adopted, normal);
    Ok(())
}
