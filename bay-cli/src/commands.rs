//! One function per command: call the backend, print the answer. Each returns the exit code
//! (0, or `bay exec`'s command's own code) or a [`Failure`].

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use bay_api_types::{CreateShipRequest, SpecBody};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::backend::Backend;
use crate::cli::{
    Command, CpArgs, ExecArgs, FsCommand, Global, Output, PythonArgs, SessionCommand, ShipCommand,
};
use crate::failure::{Failure, Kind, Result};
use crate::output;

/// The session of this invocation: `--session`, `BAY_SESSION`, or the per-user default.
pub fn session_id(global: &Global) -> String {
    if let Some(s) = global.session.as_deref().filter(|s| !s.is_empty()) {
        return s.to_owned();
    }
    default_session()
}

/// `bay-cli-<user>@<host>`: the same between runs of one user on one machine, stored nowhere.
pub fn default_session() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let id: String = format!("bay-cli-{user}@{host}")
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .take(128)
        .collect();
    id
}

/// Runs one command.
pub async fn run(backend: &Backend, global: &Global, command: Command) -> Result<u8> {
    let json = global.output == Output::Json;
    let session = session_id(global);
    match command {
        Command::Ship(c) => ship(backend, json, &session, c).await,
        Command::Exec(a) => exec(backend, json, &session, a).await,
        Command::Python(a) => python(backend, json, &session, a).await,
        Command::Cp(a) => cp(backend, json, &session, a).await,
        Command::Fs(c) => fs(backend, json, &session, c).await,
        Command::Term(a) => crate::term::run(backend, &session, &a.ship).await,
        Command::Session(c) => sessions(backend, json, &session, c).await,
        Command::Stat => stat(backend, json).await,
        Command::Completions { .. } => Ok(0),
    }
}

async fn ship(backend: &Backend, json: bool, session: &str, c: ShipCommand) -> Result<u8> {
    let one = |ship: bay_api_types::ShipResponse| {
        if json {
            output::print_json(&ship);
        } else {
            output::ships(std::slice::from_ref(&ship));
        }
    };
    match c {
        ShipCommand::Create(a) => {
            let req = CreateShipRequest {
                ttl: a.ttl,
                spec: SpecBody {
                    cpus: a.cpus,
                    memory: a.memory,
                    disk: a.disk,
                }
                .into_option(),
                max_session_num: a.max_sessions,
                force_create: a.force.then_some(true),
            };
            let ship = output::spinning("creating the ship", backend.create_ship(session, &req))
                .await
                .map_err(|f| f.context("ship create"))?;
            one(ship);
        }
        ShipCommand::List => {
            let list = backend
                .list_ships()
                .await
                .map_err(|f| f.context("ship list"))?;
            if json {
                output::print_json(&list);
            } else {
                output::ships(&list);
            }
        }
        ShipCommand::Get { ship } => one(backend
            .get_ship(&ship)
            .await
            .map_err(|f| f.context(format!("ship get {ship}")))?),
        ShipCommand::Delete { ship, permanent } => {
            backend
                .delete_ship(&ship, permanent)
                .await
                .map_err(|f| f.context(format!("ship delete {ship}")))?;
            if json {
                output::print_json(&json!({"id": ship, "deleted": true, "permanent": permanent}));
            } else if permanent {
                println!("ship {ship} and its data removed");
            } else {
                println!("ship {ship} stopped (data kept; `bay ship start {ship}` restores it)");
            }
        }
        ShipCommand::Start { ship, ttl } => one(output::spinning(
            "starting the ship",
            backend.start_ship(&ship, session, ttl),
        )
        .await
        .map_err(|f| f.context(format!("ship start {ship}")))?),
        ShipCommand::ExtendTtl { ship, ttl } => one(backend
            .extend_ship_ttl(&ship, ttl)
            .await
            .map_err(|f| f.context(format!("ship extend-ttl {ship}")))?),
        ShipCommand::Logs { ship, tail } => {
            let logs = backend
                .logs(&ship, tail)
                .await
                .map_err(|f| f.context(format!("ship logs {ship}")))?;
            if json {
                output::print_json(&logs);
            } else {
                print!("{}", logs.logs);
            }
        }
        ShipCommand::Sessions { ship } => {
            let list = backend
                .ship_sessions(&ship)
                .await
                .map_err(|f| f.context(format!("ship sessions {ship}")))?;
            if json {
                output::print_json(&list);
            } else {
                output::sessions(&list.sessions);
            }
        }
    }
    Ok(0)
}

/// The exit code of a shell command's result: its own code, 128+n for signal n, 124 for a
/// timeout, 1 for any other failure to run it.
fn exit_code_of(data: &Value) -> (u8, Option<String>) {
    let rc = data.get("return_code").and_then(Value::as_i64);
    let error = data.get("error").and_then(Value::as_str).map(str::to_owned);
    match (rc, error) {
        (Some(rc), None) if rc >= 0 => (u8::try_from(rc & 0xff).unwrap_or(1), None),
        (Some(rc), None) => (u8::try_from((128 - rc).min(255)).unwrap_or(1), None),
        (_, Some(e)) if e.contains("timed out") => (124, Some(e)),
        (_, e) => (
            1,
            Some(e.unwrap_or_else(|| "the command did not run".to_owned())),
        ),
    }
}

async fn exec(backend: &Backend, json: bool, session: &str, a: ExecArgs) -> Result<u8> {
    let mut payload = json!({"command": a.command.join(" ")});
    if let Some(t) = a.timeout {
        payload["timeout"] = json!(t);
    }
    if let Some(cwd) = &a.cwd {
        payload["cwd"] = json!(cwd);
    }
    if !a.env.is_empty() {
        payload["env"] = a
            .env
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let data = backend
        .exec(&a.ship, session, "shell/exec", payload)
        .await
        .map_err(|f| f.context(format!("exec in {}", a.ship)))?;
    let (code, error) = exit_code_of(&data);
    if json {
        output::print_json(&data);
        return Ok(code);
    }
    // The agent strips trailing white space (ship-api.md, shell exec); a non-empty output gets its
    // final newline back, as the command printed it in a terminal.
    let text = |k: &str| {
        let t = data.get(k).and_then(Value::as_str).unwrap_or_default();
        if t.is_empty() || t.ends_with('\n') {
            t.to_owned()
        } else {
            format!("{t}\n")
        }
    };
    let mut out = std::io::stdout();
    out.write_all(text("stdout").as_bytes())?;
    out.flush()?;
    let mut err = std::io::stderr();
    err.write_all(text("stderr").as_bytes())?;
    if let Some(e) = error {
        writeln!(err, "bay: exec in {}: {e}", a.ship)?;
    }
    Ok(code)
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Failure::usage(format!("reading standard input: {e}")))?;
    Ok(s)
}

async fn python(backend: &Backend, json: bool, session: &str, a: PythonArgs) -> Result<u8> {
    let code = match (&a.code, &a.file) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) if f.as_os_str() != "-" => std::fs::read_to_string(f)
            .map_err(|e| Failure::usage(format!("reading {}: {e}", f.display())))?,
        _ => read_stdin()?,
    };
    let mut payload = json!({"code": code});
    if let Some(t) = a.timeout {
        payload["timeout"] = json!(t);
    }
    let data = backend
        .exec(&a.ship, session, "ipython/exec", payload)
        .await
        .map_err(|f| f.context(format!("python in {}", a.ship)))?;
    let mut saved = Vec::new();
    if let Some(dir) = &a.save_figures {
        saved = save_figures(dir, &data)?;
    }
    if json {
        output::print_json(&data);
    } else {
        let text = data
            .pointer("/output/text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
        for path in &saved {
            eprintln!("figure saved to {}", path.display());
        }
    }
    match data.get("error").and_then(Value::as_str) {
        Some(e) => {
            if !json {
                eprintln!("{e}");
            }
            Ok(1)
        }
        None => Ok(0),
    }
}

fn save_figures(dir: &Path, data: &Value) -> Result<Vec<PathBuf>> {
    let images = data
        .pointer("/output/images")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::server(format!("creating {}: {e}", dir.display())))?;
    let mut saved = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let Some(b64) = image.get("image/png").and_then(Value::as_str) else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| Failure::server(format!("figure {}: invalid base64: {e}", i + 1)))?;
        let path = dir.join(format!("figure-{}.png", i + 1));
        std::fs::write(&path, bytes)
            .map_err(|e| Failure::server(format!("writing {}: {e}", path.display())))?;
        saved.push(path);
    }
    Ok(saved)
}

/// `SHIP:PATH` → (ship, path); local paths (no colon, or a slash before it) → None.
fn remote_spec(arg: &str) -> Option<(&str, &str)> {
    let (ship, path) = arg.split_once(':')?;
    (!ship.is_empty() && !ship.contains('/')).then_some((ship, path))
}

async fn cp(backend: &Backend, json: bool, session: &str, a: CpArgs) -> Result<u8> {
    match (remote_spec(&a.from), remote_spec(&a.to)) {
        (None, Some((ship, path))) => {
            let file = tokio::fs::File::open(&a.from).await.map_err(|e| {
                Failure::new(Kind::NotFound, format!("cp: opening {}: {e}", a.from))
            })?;
            let length = file.metadata().await?.len();
            let bar = output::progress(Some(length));
            let counted = bar.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(
                move |chunk| {
                    if let Ok(c) = chunk {
                        counted.inc(c.len() as u64);
                    }
                },
            );
            let resolved = backend
                .upload(ship, session, path, Box::pin(stream), length)
                .await
                .map_err(|f| f.context(format!("cp to {ship}:{path}")))?;
            bar.finish_and_clear();
            if json {
                output::print_json(&json!({"file_path": resolved, "size": length}));
            } else if std::io::stdout().is_terminal() {
                println!("{} → {ship}:{resolved} ({length} bytes)", a.from);
            }
            Ok(0)
        }
        (Some((ship, path)), None) => {
            let mut target = PathBuf::from(&a.to);
            if target.is_dir() {
                let name = path
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Failure::usage(format!("cp: {path:?} names no file to put in {}", a.to))
                    })?;
                target.push(name);
            }
            let download = backend
                .download(ship, session, path)
                .await
                .map_err(|f| f.context(format!("cp from {ship}:{path}")))?;
            let bar = output::progress(download.content_length);
            let mut partial = target.clone().into_os_string();
            partial.push(".bay-part");
            let partial = PathBuf::from(partial);
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| Failure::server(format!("cp: creating {}: {e}", partial.display())))?;
            let mut stream = download.stream;
            let mut total = 0u64;
            let copied: Result<()> = async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        Failure::server(format!("cp from {ship}:{path}: transfer interrupted: {e}"))
                    })?;
                    file.write_all(&chunk).await?;
                    total += chunk.len() as u64;
                    bar.inc(chunk.len() as u64);
                }
                file.flush().await?;
                Ok(())
            }
            .await;
            if let Err(f) = copied {
                let _ = std::fs::remove_file(&partial);
                return Err(f);
            }
            drop(file);
            std::fs::rename(&partial, &target)
                .map_err(|e| Failure::server(format!("cp: writing {}: {e}", target.display())))?;
            bar.finish_and_clear();
            if json {
                output::print_json(&json!({"file_path": target, "size": total}));
            } else if std::io::stdout().is_terminal() {
                println!("{ship}:{path} → {} ({total} bytes)", target.display());
            }
            Ok(0)
        }
        _ => Err(Failure::usage(
            "cp: exactly one side must be SHIP:PATH (bay cp LOCAL SHIP:PATH, or bay cp SHIP:PATH LOCAL)",
        )),
    }
}

async fn fs(backend: &Backend, json: bool, session: &str, c: FsCommand) -> Result<u8> {
    let (ship, kind, payload, what) = match &c {
        FsCommand::Ls { ship, path, all } => (
            ship,
            "fs/list_dir",
            json!({"path": path, "show_hidden": all}),
            format!("fs ls {ship}:{path}"),
        ),
        FsCommand::Cat { ship, path } => (
            ship,
            "fs/read_file",
            json!({"path": path}),
            format!("fs cat {ship}:{path}"),
        ),
        FsCommand::Write {
            ship,
            path,
            content,
        } => {
            let content = match content {
                Some(c) => c.clone(),
                None => read_stdin()?,
            };
            (
                ship,
                "fs/write_file",
                json!({"path": path, "content": content}),
                format!("fs write {ship}:{path}"),
            )
        }
        FsCommand::Rm { ship, path } => (
            ship,
            "fs/delete_file",
            json!({"path": path}),
            format!("fs rm {ship}:{path}"),
        ),
    };
    let data = backend
        .exec(ship, session, kind, payload)
        .await
        .map_err(|f| f.context(&what))?;
    if let Some(e) = data
        .get("error")
        .and_then(Value::as_str)
        .filter(|_| data.get("success") == Some(&Value::Bool(false)))
    {
        return Err(Failure::new(Kind::Refused, format!("{what}: {e}")));
    }
    if json {
        output::print_json(&data);
        return Ok(0);
    }
    match c {
        FsCommand::Ls { .. } => {
            let now = bay_core::model::Timestamp::now();
            let rows: Vec<Vec<String>> = data
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| {
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    let dir = f.get("is_dir").and_then(Value::as_bool).unwrap_or(false);
                    let modified = f
                        .get("modified_time")
                        .and_then(Value::as_f64)
                        .map(|t| {
                            // Seconds with a fraction, as the agent sends them.
                            #[expect(clippy::cast_possible_truncation, reason = "µs fit in i64")]
                            let micros = (t * 1e6) as i64;
                            output::relative(bay_core::model::Timestamp::from_micros(micros), now)
                        })
                        .unwrap_or_default();
                    vec![
                        if dir {
                            format!("{name}/")
                        } else {
                            name.to_owned()
                        },
                        f.get("size")
                            .and_then(Value::as_u64)
                            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                        modified,
                    ]
                })
                .collect();
            output::table(&["NAME", "SIZE", "MODIFIED"], &rows);
        }
        FsCommand::Cat { .. } => {
            print!(
                "{}",
                data.get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
        }
        FsCommand::Write { .. } | FsCommand::Rm { .. } => {}
    }
    Ok(0)
}

async fn sessions(backend: &Backend, json: bool, session: &str, c: SessionCommand) -> Result<u8> {
    let one = |s: bay_api_types::SessionResponse| {
        if json {
            output::print_json(&s);
        } else {
            output::sessions(std::slice::from_ref(&s));
        }
    };
    match c {
        SessionCommand::List => {
            let list = backend
                .list_sessions()
                .await
                .map_err(|f| f.context("session list"))?;
            if json {
                output::print_json(&list);
            } else {
                output::sessions(&list.sessions);
            }
        }
        SessionCommand::Get { id, ship } => {
            let id = id.as_deref().unwrap_or(session);
            one(backend
                .get_session(id, ship.as_deref())
                .await
                .map_err(|f| f.context(format!("session get {id}")))?);
        }
        SessionCommand::ExtendTtl { ttl, id, ship } => {
            let id = id.as_deref().unwrap_or(session);
            one(backend
                .extend_session_ttl(id, ttl, ship.as_deref())
                .await
                .map_err(|f| f.context(format!("session extend-ttl {id}")))?);
        }
        SessionCommand::Delete { id, ship } => {
            let id = id.as_deref().unwrap_or(session);
            backend
                .delete_session(id, ship.as_deref())
                .await
                .map_err(|f| f.context(format!("session delete {id}")))?;
            if json {
                output::print_json(&json!({"session_id": id, "deleted": true}));
            } else {
                println!("session {id} deleted");
            }
        }
    }
    Ok(0)
}

async fn stat(backend: &Backend, json: bool) -> Result<u8> {
    let o = backend.overview().await.map_err(|f| f.context("stat"))?;
    if json {
        output::print_json(&o);
        return Ok(0);
    }
    output::table(
        &[
            "SHIPS", "RUNNING", "STOPPED", "CREATING", "SESSIONS", "ACTIVE", "VERSION",
        ],
        &[vec![
            o.ships.total.to_string(),
            o.ships.running.to_string(),
            o.ships.stopped.to_string(),
            o.ships.creating.to_string(),
            o.sessions.total.to_string(),
            o.sessions.active.to_string(),
            o.version,
        ]],
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_command() {
        assert_eq!(exit_code_of(&json!({"return_code": 3, "error": null})).0, 3);
        assert_eq!(
            exit_code_of(&json!({"return_code": -9, "error": null})).0,
            137
        );
        assert_eq!(
            exit_code_of(&json!({"return_code": -1, "error": "Command timed out"})).0,
            124
        );
        assert_eq!(
            exit_code_of(
                &json!({"return_code": -1, "error": "Working directory does not exist: x"})
            )
            .0,
            1
        );
    }

    #[test]
    fn remote_paths_look_like_scp() {
        assert_eq!(remote_spec("abc:/x"), Some(("abc", "/x")));
        assert_eq!(remote_spec("./a:b"), None);
        assert_eq!(remote_spec("plain"), None);
        assert_eq!(remote_spec(":x"), None);
    }
}
