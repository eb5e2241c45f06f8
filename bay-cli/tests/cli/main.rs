//! The `bay` binary end to end: every command against a running `bay-server` (the real binary)
//! and in local mode, both with the real Docker Engine and ship image; exit codes, exec's
//! exit-code propagation, a 3 MB binary round trip, the terminal through a pseudo-terminal, the
//! database lock, and a ship made in local mode used by a server started afterwards.

mod harness;

use std::process::Command;

use bay_api_types::{
    OverviewResponse, SessionListResponse, SessionResponse, ShipResponse, ShipSessionsResponse,
};
use bay_core::model::ShipStatus;

use harness::{Env, run};

fn ship_of(r: &harness::Run) -> ShipResponse {
    serde_json::from_value(r.json()).expect("a ShipResponse")
}

/// Every command, through `bay` made by `bay()` (remote or local), checking output and exit
/// codes.
fn exercise(env: &Env, bay: &dyn Fn() -> Command) {
    let go = |args: &[&str]| run(bay(), args, None);
    let feed = |args: &[&str], input: &[u8]| run(bay(), args, Some(input));

    // ship create / list / get (table and JSON)
    let created = go(&[
        "ship",
        "create",
        "--ttl",
        "600",
        "--max-sessions",
        "1",
        "-o",
        "json",
    ]);
    let ship = ship_of(created.ok());
    assert_eq!(ship.status, ShipStatus::Running);
    let id = ship.id.as_str();
    let table = go(&["ship", "list"]);
    table.ok();
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains(id) && table.stdout.contains("running"));
    assert!(!table.stdout.contains('\x1b'), "no colours off a terminal");
    let list: Vec<ShipResponse> =
        serde_json::from_value(go(&["ship", "list", "-o", "json"]).json()).unwrap();
    assert!(list.iter().any(|s| s.id == id));
    assert_eq!(ship_of(go(&["ship", "get", id, "-o", "json"]).ok()).id, id);
    go(&["ship", "get", "no-such-ship"]).code(3);

    // exec: streams apart, exit code propagated, options
    let r = go(&["exec", id, "--", "echo out; echo err >&2; exit 7"]);
    r.code(7);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.starts_with("err\n"), "{}", r.stderr);
    go(&["exec", id, "--", "mkdir -p sub"]).ok();
    let r = go(&[
        "exec",
        "--env",
        "GREETING=hello",
        "--cwd",
        "sub",
        id,
        "--",
        "echo",
        "$GREETING",
        "$(basename $(pwd))",
    ]);
    r.code(0);
    assert_eq!(r.stdout, "hello sub\n");
    let r = go(&["exec", "--cwd", "/etc", id, "--", "true"]);
    r.code(1);
    assert!(r.stderr.contains("Access denied"), "{}", r.stderr);
    let r = go(&["exec", "--timeout", "1", id, "--", "sleep 5"]);
    r.code(124);
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
    go(&["exec", "no-such-ship", "--", "true"]).code(3);

    // fs
    go(&["fs", "write", id, "notes/a.txt", "hello bay"]).ok();
    feed(&["fs", "write", id, "notes/b.txt"], b"from stdin").ok();
    assert_eq!(
        go(&["fs", "cat", id, "notes/a.txt"]).ok().stdout,
        "hello bay"
    );
    assert_eq!(
        go(&["fs", "cat", id, "notes/b.txt"]).ok().stdout,
        "from stdin"
    );
    let ls = go(&["fs", "ls", id, "notes"]);
    ls.ok();
    assert!(
        ls.stdout.contains("a.txt") && ls.stdout.contains("b.txt"),
        "{}",
        ls.stdout
    );
    let ls = go(&["fs", "ls", id, "-o", "json"]);
    assert!(
        ls.json()["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "notes")
    );
    go(&["fs", "rm", id, "notes/b.txt"]).ok();
    assert_ne!(go(&["fs", "cat", id, "notes/b.txt"]).code, 0);

    // python: -c, a file, stdin
    assert_eq!(
        go(&["python", id, "-c", "print(6 * 7)"]).ok().stdout,
        "42\n"
    );
    std::fs::write(env.path("script.py"), "x = 40\nprint(x + 2)\n").unwrap();
    let script = env.path("script.py");
    assert_eq!(
        go(&["python", id, script.to_str().unwrap()]).ok().stdout,
        "42\n"
    );
    assert_eq!(
        feed(&["python", id], b"print('piped')").ok().stdout,
        "piped\n"
    );
    let r = go(&["python", id, "-c", "raise ValueError('boom')"]);
    r.code(1);
    assert!(r.stderr.contains("boom"), "{}", r.stderr);

    // cp: a 3 MB binary file, byte for byte, both ways; a missing file is "not found"
    let data = harness::binary_file(&env.path("big.bin"));
    let big = env.path("big.bin");
    go(&["cp", big.to_str().unwrap(), &format!("{id}:data/big.bin")]).ok();
    let size = go(&["exec", id, "--", "stat -c %s data/big.bin"]);
    assert_eq!(size.ok().stdout.trim(), data.len().to_string());
    let back = env.path("back.bin");
    go(&["cp", &format!("{id}:data/big.bin"), back.to_str().unwrap()]).ok();
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the round trip changed the bytes"
    );
    go(&["cp", &format!("{id}:nothing-here"), back.to_str().unwrap()]).code(3);
    go(&["cp", big.to_str().unwrap(), back.to_str().unwrap()]).code(2);

    // logs, sessions of the ship
    go(&["ship", "logs", id, "--tail", "5"]).ok();
    let logs = go(&["ship", "logs", id, "-o", "json"]).json();
    assert!(logs["logs"].is_string());
    let sessions: ShipSessionsResponse =
        serde_json::from_value(go(&["ship", "sessions", id, "-o", "json"]).json()).unwrap();
    assert_eq!(sessions.total, 1);

    // extend-ttl, start (refused for a second session: one slot), stat
    let extended = ship_of(go(&["ship", "extend-ttl", id, "600", "-o", "json"]).ok());
    assert!(extended.ttl > 600, "{}", extended.ttl);
    go(&["--session", "someone-else", "ship", "start", id]).code(4);
    go(&["ship", "start", id]).ok();
    let stat: OverviewResponse =
        serde_json::from_value(go(&["stat", "-o", "json"]).json()).unwrap();
    assert_eq!(stat.ships.running, 1);
    assert!(go(&["stat"]).ok().stdout.contains("RUNNING"));

    // sessions
    let all: SessionListResponse =
        serde_json::from_value(go(&["session", "list", "-o", "json"]).json()).unwrap();
    assert!(all.sessions.iter().any(|s| s.session_id == "cli-test"));
    let mine: SessionResponse =
        serde_json::from_value(go(&["session", "get", "-o", "json"]).json()).unwrap();
    assert_eq!(mine.ship_id, id);
    go(&["session", "extend-ttl", "900"]).ok();
    go(&["session", "extend-ttl", "99999999"]).code(2);
    go(&["session", "get", "nobody"]).code(3);

    // stop, restore with the data kept, delete for good
    go(&["ship", "delete", id]).ok();
    assert_eq!(
        ship_of(go(&["ship", "get", id, "-o", "json"]).ok()).status,
        ShipStatus::Stopped
    );
    go(&["exec", id, "--", "true"]).code(3);
    go(&["ship", "delete", id]).code(3);
    go(&["ship", "start", id, "--ttl", "300"]).ok();
    assert_eq!(
        go(&["fs", "cat", id, "notes/a.txt"]).ok().stdout,
        "hello bay"
    );
    go(&["session", "delete"]).ok();
    go(&["session", "delete"]).code(3);
    go(&["ship", "delete", "--permanent", id]).ok();
    go(&["ship", "get", id]).code(3);
    harness::remove_volumes(id);

    // usage errors
    go(&["ship", "create", "--ttl", "0"]).code(2);
    go(&["ship", "create", "--memory", "lots"]).code(2);
}

#[test]
fn every_command_against_a_running_server() {
    let mut env = Env::new();
    env.start_server();
    exercise(&env, &|| env.remote());
    // A wrong token is refused with the server's detail.
    let mut c = env.remote();
    c.env("BAY_TOKEN", "wrong");
    let r = run(c, &["ship", "list"], None);
    r.code(4);
    assert!(r.stderr.contains("Invalid access token"), "{}", r.stderr);
}

#[test]
fn every_command_in_local_mode() {
    let env = Env::new();
    exercise(&env, &|| env.local());
}

#[test]
fn local_mode_refuses_a_database_a_server_holds_and_the_server_uses_its_ships() {
    let mut env = Env::new();
    // Made in local mode…
    let ship = ship_of(run(env.local(), &["ship", "create", "-o", "json"], None).ok());
    run(
        env.local(),
        &["fs", "write", &ship.id, "made-locally.txt", "local"],
        None,
    )
    .ok();
    // …seen and used by a server started afterwards on the same database.
    env.start_server();
    let r = run(env.local(), &["ship", "list"], None);
    r.code(4);
    assert!(r.stderr.contains("local mode refused"), "{}", r.stderr);
    assert!(r.stderr.contains("bay-server"), "{}", r.stderr);
    let list: Vec<ShipResponse> =
        serde_json::from_value(run(env.remote(), &["ship", "list", "-o", "json"], None).json())
            .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, ship.id);
    assert_eq!(list[0].status, ShipStatus::Running);
    let r = run(
        env.remote(),
        &["exec", &ship.id, "--", "cat made-locally.txt"],
        None,
    );
    assert_eq!(r.ok().stdout, "local\n");
    // --local still means local, and is refused too.
    let r = run(env.remote(), &["--local", "stat"], None);
    r.code(4);
    env.stop_server();
    // Once the server is gone, local mode works again on what the server left.
    let r = run(env.local(), &["ship", "get", &ship.id, "-o", "json"], None);
    assert_eq!(ship_of(r.ok()).id, ship.id);
    run(
        env.local(),
        &["ship", "delete", "--permanent", &ship.id],
        None,
    )
    .ok();
    harness::remove_volumes(&ship.id);
}

/// `bay term` in a pseudo-terminal (util-linux `script`): raw mode, a command and its output,
/// `exit` ends it with status 0 and the terminal settings are restored.
#[test]
fn term_runs_a_command_in_a_pseudo_terminal() {
    let mut env = Env::new();
    env.start_server();
    let ship = ship_of(run(env.remote(), &["ship", "create", "-o", "json"], None).ok());
    let bay = env!("CARGO_BIN_EXE_bay");
    // `script` gives bay a pseudo-terminal; `stty -g` before and after shows the restore.
    let inner = format!(
        "stty -g > before; {bay} term {}; echo \"rc=$?\"; stty -g > after; \
         echo MARK-C; {bay} ship list; echo MARK-P; NO_COLOR=1 {bay} ship list; echo MARK-E",
        ship.id
    );
    let c = env.remote();
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &inner, "/dev/null"]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    script.current_dir(env.dir.path());
    // The shell reads what we type after it started; `exit` ends the terminal.
    let mut child = script
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut stdin = child.stdin.take().unwrap();
    let typist = std::thread::spawn(move || {
        use std::io::Write;
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = stdin.write_all(b"echo term-$((6*7))\r");
        std::thread::sleep(std::time::Duration::from_secs(2));
        let _ = stdin.write_all(b"exit\r");
        std::thread::sleep(std::time::Duration::from_secs(5));
    });
    let out = child.wait_with_output().unwrap();
    typist.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("term-42"), "{text}");
    assert!(text.contains("rc=0"), "{text}");
    let before = std::fs::read_to_string(env.path("before")).unwrap();
    let after = std::fs::read_to_string(env.path("after")).unwrap();
    assert_eq!(before, after, "terminal settings restored");
    // On a terminal the table has colours, unless NO_COLOR is set.
    let between = |from: &str, to: &str| {
        let start = text.rfind(from).expect("start marker") + from.len();
        let end = text.rfind(to).expect("end marker");
        text[start..end].to_owned()
    };
    let coloured = between("MARK-C", "MARK-P");
    assert!(coloured.contains("\x1b[32mrunning"), "{coloured:?}");
    let plain = between("MARK-P", "MARK-E");
    assert!(
        plain.contains("running") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    run(
        env.remote(),
        &["ship", "delete", "--permanent", &ship.id],
        None,
    )
    .ok();
    harness::remove_volumes(&ship.id);
}

#[test]
fn help_documents_modes_and_exit_codes_and_usage_errors_exit_2() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_bay")), &["--help"], None);
    help.ok();
    for needle in [
        "Exit codes:",
        "3  not found",
        "4  refused",
        "BAY_URL",
        "--local",
    ] {
        assert!(
            help.stdout.contains(needle),
            "{needle} missing in\n{}",
            help.stdout
        );
    }
    run(
        Command::new(env!("CARGO_BIN_EXE_bay")),
        &["ship", "frobnicate"],
        None,
    )
    .code(2);
    run(
        Command::new(env!("CARGO_BIN_EXE_bay")),
        &["exec", "x"],
        None,
    )
    .code(2);
    let c = run(
        Command::new(env!("CARGO_BIN_EXE_bay")),
        &["completions", "bash"],
        None,
    );
    assert!(c.ok().stdout.contains("_bay"), "{}", c.stdout);
}

/// `bay python --save-figures` writes the cell's matplotlib figures as PNG files (the complete
/// runtime, `BAY_SHIP_FULL_IMAGE`, default `ship:latest`, has matplotlib).
#[test]
fn python_figures_are_saved_as_png_files() {
    let env = Env::with_image(
        std::env::var("BAY_SHIP_FULL_IMAGE").unwrap_or_else(|_| "ship:latest".to_owned()),
    );
    let ship = ship_of(run(env.local(), &["ship", "create", "-o", "json"], None).ok());
    let dir = env.path("figures");
    let code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nprint('drawn')";
    let r = run(
        env.local(),
        &[
            "python",
            &ship.id,
            "-c",
            code,
            "--save-figures",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.ok().stdout, "drawn\n");
    let png = std::fs::read(dir.join("figure-1.png")).expect("figure-1.png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(r.stderr.contains("figure saved to"), "{}", r.stderr);
    run(
        env.local(),
        &["ship", "delete", "--permanent", &ship.id],
        None,
    )
    .ok();
    harness::remove_volumes(&ship.id);
}
