//! The spare Python interpreter (issue 13): `POST /warmup` starts it as root before any session
//! exists; the first session that needs an interpreter adopts it, and it must then be exactly
//! what a normal start as that session's user gives. End to end, as root (skipped otherwise).

#[expect(
    dead_code,
    reason = "the shared harness: this test binary uses only part of it"
)]
mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Agent, process_alive, start};

/// Interpreter from `SHIP_TEST_IPYTHON_PYTHON` (IPython engine) when set, else `python3`.
fn python_env() -> Vec<(&'static str, String)> {
    match std::env::var("SHIP_TEST_IPYTHON_PYTHON") {
        Ok(p) if !p.is_empty() => vec![("SHIP_PYTHON", p)],
        _ => Vec::new(),
    }
}

async fn start_agent(extra: &[(&'static str, &str)]) -> Option<Agent> {
    let py = python_env();
    let mut env: Vec<(&str, &str)> = py.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    start(&env).await
}

/// `/proc/<pid>/status` field `name` (first value).
fn status_field(pid: i64, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    })
}

/// The spare interpreters of the agent: its live children running as root with the driver's
/// command line (`<python> -u -c <bootstrap>`).
fn spares(a: &Agent) -> Vec<i64> {
    let agent = i64::from(a.child.id());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: i64 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_driver = args.get(1) == Some(&&b"-u"[..]) && args.get(2) == Some(&&b"-c"[..]);
            (is_driver
                && status_field(pid, "PPid")?.parse::<i64>().ok()? == agent
                && status_field(pid, "Uid")?.as_str() == "0"
                && process_alive(pid))
            .then_some(pid)
        })
        .collect()
}

async fn warmup(a: &Agent) {
    let (s, v) = a.post("", "/warmup", Value::Null).await;
    assert_eq!((s, &v), (200, &json!({"status": "ok"})));
}

/// Everything about the interpreter that a normal start fixes, as JSON.
const FINGERPRINT: &str = r#"
import json as _j, os as _o, sys as _s, resource as _r, site as _site, tempfile as _t
def _fp():
    st = {l.split(':')[0]: l.split(':', 1)[1].split() for l in open('/proc/self/status')}
    fds = sorted(int(f) for f in _o.listdir('/proc/self/fd'))
    kinds = []
    for f in fds:
        try:
            link = _o.readlink('/proc/self/fd/%d' % f)
        except OSError:
            continue
        # IPython's history database comes and goes with its writer thread.
        if '/.ipython/' not in link + '/':
            kinds.append((f, link.split(':')[0]))
    spare_globals = [m for m, mod in list(_s.modules.items())
                     for v in list(getattr(mod, '__dict__', {}).values())
                     if isinstance(v, str) and 'ship' + '-spare' in v]
    return {
        'pid': _o.getpid(), 'sid': _o.getsid(0), 'pgid': _o.getpgid(0),
        'ids': [_o.getresuid(), _o.getresgid(), _o.getgroups()],
        'status': {k: st.get(k) for k in ('Uid', 'Gid', 'Groups', 'CapPrm', 'CapEff', 'CapAmb',
                                         'CapInh', 'CapBnd', 'NoNewPrivs', 'Seccomp', 'Umask',
                                         'SigBlk', 'SigIgn')},
        'cwd': _o.getcwd(), 'env': dict(_o.environ), 'tmp': _t.gettempdir(),
        'oom': open('/proc/self/oom_score_adj').read().strip(),
        'dumpable': __import__('ctypes').CDLL(None).prctl(3, 0, 0, 0, 0),
        'rlimits': {n: _r.getrlimit(getattr(_r, n)) for n in dir(_r) if n.startswith('RLIMIT_')},
        'path': _s.path, 'user_site': _site.getusersitepackages(),
        'enable_user_site': _site.ENABLE_USER_SITE,
        'flags': list(_s.flags), 'bytecode': _s.dont_write_bytecode,
        'fds': kinds, 'spare_globals': spare_globals,
        'engine': type(get_ipython()).__name__ if callable(globals().get('get_ipython')) else None,
    }
print(_j.dumps(_fp()))
"#;

async fn fingerprint(a: &Agent, sid: &str) -> Value {
    let v = a.py(sid, FINGERPRINT).await;
    assert_eq!(v["success"], true, "{v}");
    serde_json::from_str(v["output"]["text"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn adopted_spare_is_exactly_a_normal_interpreter_of_the_session() {
    let Some(a) = start_agent(&[("SHIP_AUTH_TOKEN", "tok")]).await else {
        return;
    };
    // /warmup needs the token like every route.
    let r = a.client.post(a.url("/warmup")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(spares(&a).is_empty(), "no spare without a valid token");

    // Twice: one spare. Its process exists when /warmup answers.
    warmup(&a).await;
    warmup(&a).await;
    let spare = spares(&a);
    assert_eq!(spare.len(), 1, "{spare:?}");
    let spare = spare[0];

    // Another session with a private file; shell only, so the spare stays.
    let v = a
        .sh(
            "spare-other",
            "echo secret > ~/private.txt && chmod 600 ~/private.txt && echo ~/private.txt",
        )
        .await;
    let private = v["stdout"].as_str().unwrap().trim().to_owned();
    assert_eq!(spares(&a), vec![spare]);
    // The root spare is out of every session's reach: no signals, environment or descriptors.
    let probe =
        format!("kill -0 {spare}; cat /proc/{spare}/environ; ls /proc/{spare}/fd; echo done");
    let v = a.sh("spare-other", &probe).await;
    let (out, err) = (v["stdout"].as_str().unwrap(), v["stderr"].as_str().unwrap());
    assert_eq!(out.trim(), "done", "{v}");
    assert_eq!(err.matches("not permitted").count(), 1, "{v}");
    assert_eq!(err.matches("Permission denied").count(), 2, "{v}");

    // A session with a user site holding a .pth file: both starts must put it (and the .pth's
    // directory) on sys.path the same way, and what it prints at start is not a cell's output.
    let v = a
        .sh(
            "spare-a",
            "d=$(python3 -c 'import site; print(site.getusersitepackages())') && mkdir -p \"$d\" \
             ~/extra && echo ~/extra > \"$d/spare.pth\" && \
             echo 'import sys; print(\"pth-noise\")' >> \"$d/spare.pth\" && id -u",
        )
        .await;
    let uid: u64 = v["stdout"].as_str().unwrap().trim().parse().unwrap();

    let adopted = fingerprint(&a, "spare-a").await;
    assert_eq!(
        adopted["pid"], spare,
        "the first call used the spare: {adopted}"
    );
    assert!(spares(&a).is_empty(), "no new spare after an adoption");
    let home = adopted["env"]["HOME"].as_str().unwrap().to_owned();
    assert!(
        home.starts_with(a.home_root().to_str().unwrap()),
        "{adopted}"
    );
    assert_eq!(
        adopted["ids"],
        json!([[uid, uid, uid], [uid, uid, uid], []])
    );
    assert_eq!(adopted["cwd"], format!("{home}/workspace"));
    assert_eq!(adopted["env"]["TMPDIR"], format!("{home}/tmp"));
    assert_eq!(adopted["tmp"], format!("{home}/tmp"));
    assert_eq!(adopted["oom"], "800");
    assert_eq!(adopted["status"]["Umask"], json!(["0077"]));
    assert_eq!(adopted["status"]["CapEff"], json!(["0000000000000000"]));
    assert_eq!(adopted["sid"], spare, "a session (kill unit) of its own");
    assert_eq!(
        adopted["dumpable"], 1,
        "dumpable for its own user, as after exec"
    );
    assert_eq!(adopted["spare_globals"], json!([]));
    // (A virtual environment without system site packages has no user site.)
    if adopted["enable_user_site"] == true {
        let path: Vec<String> = serde_json::from_value(adopted["path"].clone()).unwrap();
        let user_site = adopted["user_site"].as_str().unwrap();
        let at = path
            .iter()
            .position(|p| p == user_site)
            .expect("user site on sys.path");
        assert_eq!(path[at + 1], format!("{home}/extra"), "{path:?}");
    }

    // Adopted, it is the session's: still out of the other session's reach.
    let v = a.sh("spare-other", &probe).await;
    let (out, err) = (v["stdout"].as_str().unwrap(), v["stderr"].as_str().unwrap());
    assert_eq!(out.trim(), "done", "{v}");
    assert_eq!(err.matches("not permitted").count(), 1, "{v}");
    assert_eq!(err.matches("Permission denied").count(), 2, "{v}");

    // Another session's 0700 home and 0600 file stay closed; state persists.
    let v = a
        .py("spare-a", &format!("x = 41\nopen({private:?}).read()"))
        .await;
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("PermissionError"),
        "{v}"
    );
    let v = a.py("spare-a", "x + 1").await;
    assert_eq!(v["output"]["text"], "42", "{v}");

    // A normal start of the same session (no spare left) gives the same interpreter.
    let (s, v) = a.delete("spare-a", "/ipython/kernel").await;
    assert_eq!(s, 200, "{v}");
    let normal = fingerprint(&a, "spare-a").await;
    assert_ne!(normal["pid"], spare);
    let strip = |mut v: Value| {
        for k in ["pid", "sid", "pgid"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(strip(adopted), strip(normal));
}

#[tokio::test]
async fn adopted_spare_is_killed_like_a_normal_interpreter() {
    let Some(a) = start_agent(&[]).await else {
        return;
    };
    warmup(&a).await;
    let spare = spares(&a)[0];
    let v = a
        .py(
            "spare-kill",
            "import os, subprocess\n\
             p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n\
             print(os.getpid(), p.pid)",
        )
        .await;
    let text = v["output"]["text"].as_str().unwrap().to_owned();
    let pids: Vec<i64> = text.split(' ').map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids[0], spare, "{v}");
    assert!(process_alive(pids[1]));
    // Deaf to the interrupt: killed after the grace period, with what it started elsewhere.
    let (s, v) = a
        .post(
            "spare-kill",
            "/ipython/exec",
            json!({"code": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", "timeout": 1}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("state was lost")),
        "{v}"
    );
    for pid in &pids {
        let mut n = 0;
        while process_alive(*pid) && n < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n += 1;
        }
        assert!(!process_alive(*pid), "process {pid} survived the kill");
    }
    let v = a.py("spare-kill", "import os\nos.getpid()").await;
    assert_eq!(v["success"], true, "{v}");
    assert_ne!(v["output"]["text"], spare.to_string());
}

#[tokio::test]
async fn two_sessions_only_one_adopts_the_spare() {
    let Some(a) = start_agent(&[]).await else {
        return;
    };
    warmup(&a).await;
    let spare = spares(&a)[0];
    let code = "import os\nprint(os.getpid(), os.getuid())";
    let (x, y) = tokio::join!(a.py("spare-x", code), a.py("spare-y", code));
    let mut adopted = 0;
    for (sid, v) in [("spare-x", x), ("spare-y", y)] {
        assert_eq!(v["success"], true, "{v}");
        let text = v["output"]["text"].as_str().unwrap().to_owned();
        let (pid, uid) = text.split_once(' ').unwrap();
        let id = a.sh(sid, "id -u").await;
        assert_eq!(uid, id["stdout"].as_str().unwrap().trim(), "{sid}");
        if pid == spare.to_string() {
            adopted += 1;
        }
    }
    assert_eq!(adopted, 1);
    assert!(spares(&a).is_empty());
    // /warmup again: a new spare.
    warmup(&a).await;
    let again = spares(&a);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], spare);
}

#[tokio::test]
async fn a_dead_spare_falls_back_to_a_normal_start() {
    let Some(a) = start_agent(&[]).await else {
        return;
    };
    warmup(&a).await;
    let spare = spares(&a)[0];
    let status = std::process::Command::new("kill")
        .args(["-KILL", &spare.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let v = a
        .py("spare-dead", "import os\nprint(os.getpid(), os.getuid())")
        .await;
    assert_eq!(v["success"], true, "{v}");
    let text = v["output"]["text"].as_str().unwrap().to_owned();
    let (pid, uid) = text.split_once(' ').unwrap();
    assert_ne!(pid, spare.to_string());
    let id = a.sh("spare-dead", "id -u").await;
    assert_eq!(uid, id["stdout"].as_str().unwrap().trim());
}

/// Runs `driver.py` in spare mode directly (a small Python harness plays the agent) and sends
/// adoption requests that cannot be carried out completely: the driver must answer
/// `adopt_failed` and exit, and never read the cell sent after the request.
#[test]
fn the_driver_fails_closed_when_the_drop_is_incomplete() {
    if !common::is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let harness = r#"
import json, os, shutil, subprocess, sys
src = '_SHIP_SPARE_HOME = "/proc/ship-spare/home"\n' + open(sys.argv[1]).read()
boot = ("import sys;f=open(3,'rb',buffering=0,closefd=False);n=int(f.readline());src=b''\n"
        "while len(src)<n:\n b=f.read(n-len(src))\n if not b:sys.exit(1)\n src+=b\n"
        "del f,n\nexec(compile(src,'<ship-driver>','exec'))")
marker = '/tmp/ship-spare-test-%d' % os.getpid()
# The interpreter the agent runs by default (the harness's own may be private to root).
python = shutil.which('python3', path='/usr/local/bin:/usr/bin:/bin')
def attempt(req, user=None):
    cr, cw = os.pipe(); er, ew = os.pipe()
    def setup():
        a, b = os.dup(cr), os.dup(ew)  # above 4: no target clobbers a source
        os.dup2(a, 3); os.dup2(b, 4); os.setsid()
    p = subprocess.Popen([python, '-u', '-c', boot], preexec_fn=setup, close_fds=False,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd='/', user=user,
                         env={'HOME': '/proc/ship-spare/home', 'PATH': '/usr/bin:/bin'})
    os.close(cr); os.close(ew)
    w = os.fdopen(cw, 'wb', buffering=0); r = os.fdopen(er, 'rb')
    data = src.encode()
    w.write(b'%d\n' % len(data) + data)
    assert json.loads(r.readline())['t'] == 'spare'
    w.write((json.dumps({'adopt': req}) + '\n').encode())
    try:
        w.write((json.dumps({'code': 'open(%r, "w").write("ran")' % marker}) + '\n').encode())
    except BrokenPipeError:
        pass
    ev = json.loads(r.readline() or 'null')
    rc = p.wait(30)
    return ev, rc
env = {'HOME': '/tmp', 'PATH': '/usr/bin:/bin'}
ok = {'uid': 4242420, 'gid': 4242420, 'cwd': '/', 'env': env}
for req, user in [(dict(ok, uid=0), None), (dict(ok, gid=0), None),
                  (dict(ok, cwd='/proc/ship-spare/home'), None), (ok, 65534)]:
    ev, rc = attempt(req, user)
    print(json.dumps([ev and ev.get('t'), rc, os.path.exists(marker)]))
"#;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/src/driver.py");
    let out = std::process::Command::new("python3")
        .args(["-c", harness, driver])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // uid 0, gid 0, a directory the user cannot enter, a spare that is not root (setgroups
    // refused): each refused, the process gone, the cell never run.
    assert_eq!(lines, vec![r#"["adopt_failed", 1, false]"#; 4], "{stdout}");
}
