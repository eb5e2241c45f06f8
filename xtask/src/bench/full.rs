//! `cargo xtask bench`: bay-server side by side with the engine alone and the agent alone, in
//! one run (issue 13, item 2), against the budgets of item 3 (printed, never asserted).
//!
//! It builds bay-server in release mode (and the ship image when missing), starts it with the
//! `docker-host` driver on a temporary database, a loopback port and a network of its own, and
//! measures:
//!
//! 1. sequential creates (`POST /ship` until 201) and permanent deletes, each one interleaved
//!    with the engine alone doing the same: create and start a container configured as Bay
//!    configures a ship, poll its agent's `/health` every 5 ms until it answers; stop, remove
//!    the container and its volumes (Engine API over its socket, no CLI in the timings);
//! 2. exec round trips (shell `echo 1`, Python `print(1)`) through Bay and straight to the
//!    same ship's agent, interleaved; the first Python call on fresh ships; per-ship memory;
//! 3. concurrent creates from as many sessions, against the engine's own parallel
//!    create+start; failures; containers and volumes left after the permanent deletes;
//! 4. Bay's RSS idle and after all that;
//! 5. a second server with `WARM_POOL_SIZE` set: warm creates and the first Python call on a
//!    warm ship.
//!
//! Everything it creates is labelled (`bay.bench=<run>` for the baselines) or on a network of
//! its own (Bay's ships), and is removed at the end, on failure and on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use super::docker::Engine;
use super::http::Http;
use super::server::{self, BayServer};
use super::{Args, Budget, Row, Stats, mb, ms, print_table, stats};
use crate::cmd;
use crate::ship_image;

/// The label of every container and volume the engine baselines create.
const LABEL: &str = "bay.bench";

/// Ships on which the first Python call is timed (it takes about a second on a fresh ship).
const FIRST_CALLS: usize = 3;

/// The pause of a client between a warm create and its first Python call, in the second set
/// of warm first calls.
const CLIENT_PAUSE: Duration = Duration::from_secs(1);

const SHELL: &str = r#"{"command":"echo 1"}"#;
const PYTHON: &str = r#"{"code":"print(1)"}"#;

/// Set by SIGINT/SIGTERM: the run stops at the next step and cleans up.
fn interrupted(flag: &AtomicBool) -> anyhow::Result<()> {
    if flag.load(Ordering::Relaxed) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

/// The engine baselines' containers and volumes, removed on drop.
struct Baselines {
    run: String,
}

impl Baselines {
    fn label(&self) -> (&str, &str) {
        (LABEL, &self.run)
    }

    fn filters(&self) -> Value {
        json!({"label": [format!("{LABEL}={}", self.run)]})
    }
}

impl Drop for Baselines {
    fn drop(&mut self) {
        let Ok(mut engine) = Engine::connect() else {
            return;
        };
        for (id, _) in engine.containers(&self.filters()).unwrap_or_default() {
            let _ = engine.remove_container(&id);
        }
        for v in engine.volumes(&self.filters()).unwrap_or_default() {
            let _ = engine.remove_volume(&v);
        }
    }
}

/// A ship made through Bay.
struct Ship {
    id: String,
    container: String,
    address: String,
}

/// `POST /ship` for `session`; the ship is tracked for clean-up.
fn create(bay: &mut BayServer, http: &mut Http, session: &str) -> anyhow::Result<Ship> {
    let a = http.request("POST", "/ship", Some(session), Some(r#"{"ttl":600}"#))?;
    let v = a.json();
    if let Some(id) = v["id"].as_str() {
        bay.track(id);
    }
    ensure!(
        a.status == 201,
        "POST /ship answered {}: {}",
        a.status,
        a.body
    );
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST /ship answered no {k}: {}", a.body))
    };
    Ok(Ship {
        id: field("id")?,
        container: field("container_id")?,
        address: field("ip_address")?,
    })
}

/// `DELETE /ship/{id}/permanent`.
fn delete(bay: &mut BayServer, http: &mut Http, id: &str) -> anyhow::Result<()> {
    let a = http.request("DELETE", &format!("/ship/{id}/permanent"), None, None)?;
    ensure!(
        a.status < 300,
        "DELETE /ship/{id}/permanent answered {}: {}",
        a.status,
        a.body
    );
    bay.untrack(id);
    Ok(())
}

/// An exec through Bay that must succeed.
fn exec(
    http: &mut Http,
    ship: &str,
    session: &str,
    kind: &str,
    payload: &str,
) -> anyhow::Result<()> {
    http.post_ok(
        &format!("/ship/{ship}/exec"),
        session,
        &format!(r#"{{"type":"{kind}","payload":{payload}}}"#),
    )
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn median(times: Vec<Duration>) -> Duration {
    stats(times).median
}

/// The measurements of a run.
#[derive(Debug, Default)]
struct Figures {
    engine_create: Vec<Duration>,
    engine_delete: Vec<Duration>,
    cold_create: Vec<Duration>,
    delete: Vec<Duration>,
    warm_create: Vec<Duration>,
    first_python_cold: Vec<Duration>,
    first_python_warm: Vec<Duration>,
    first_python_warm_later: Vec<Duration>,
    shell_bay: Vec<Duration>,
    shell_direct: Vec<Duration>,
    python_bay: Vec<Duration>,
    python_direct: Vec<Duration>,
    ship_memory_idle: u64,
    ship_memory_python: u64,
    concurrent: Concurrent,
    engine_concurrent: Concurrent,
    rss_idle: u64,
    rss_after: u64,
    rss_warm_idle: u64,
    pool_active: bool,
}

#[derive(Debug, Default)]
struct Concurrent {
    wall: Duration,
    failures: usize,
    containers_left: usize,
    volumes_left: usize,
}

pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.creates > 0 && args.runs > 0 && args.concurrent > 0,
        "--creates, --runs and --concurrent must be at least 1"
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("could not install the Ctrl-C handler")?;
    }
    ship_image::ensure(&args.image)?;
    let binary = server::build()?;
    let baselines = Baselines {
        run: std::process::id().to_string(),
    };
    let mut f = Figures::default();
    let started = Instant::now();

    eprintln!("==> bay-server without a warm pool");
    let mut cold = BayServer::start(
        &binary,
        "cold",
        &args.image,
        &[("MAX_SHIP_NUM", "0".into())],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    f.rss_idle = cold.rss();
    sequential(args, &stop, &baselines, &mut cold, &mut f)?;
    exec_phase(args, &stop, &mut cold, &mut f)?;
    concurrency(args, &stop, &baselines, &mut cold, &mut f)?;
    std::thread::sleep(Duration::from_secs(1));
    f.rss_after = cold.rss();
    let left = cold.stop();
    ensure!(
        left == 0,
        "{left} container(s) were left on the network of the server without a pool"
    );

    warm_phase(args, &stop, &binary, &mut f)?;
    drop(baselines);

    let rows = rows(args, &f);
    print_table(
        &format!(
            "bay-server side by side with the engine alone (image {}, docker-host, {:.0} s)",
            args.image,
            started.elapsed().as_secs_f64()
        ),
        &rows,
    );
    if !f.pool_active {
        println!(
            "note: no warm pool appeared with WARM_POOL_SIZE={}: the warm figures are cold creates",
            args.pool_size
        );
    }
    let path = write_json(args, &f, &rows)?;
    println!("written to {}", path.display());
    Ok(())
}

/// Sequential creates and permanent deletes, each beside the engine alone doing the same.
fn sequential(
    args: &Args,
    stop: &AtomicBool,
    baselines: &Baselines,
    bay: &mut BayServer,
    f: &mut Figures,
) -> anyhow::Result<()> {
    eprintln!(
        "==> {} creates and permanent deletes, through Bay and with the engine alone",
        args.creates
    );
    let mut engine = Engine::connect()?;
    let mut http = bay.http()?;
    for i in 0..args.creates {
        interrupted(stop)?;
        let name = format!("bay-bench-{}-seq-{i}", baselines.run);
        bay.note_container(&name);
        let mut id = String::new();
        f.engine_create.push(timed(|| {
            id = engine
                .start_ship(&args.image, &bay.network, baselines.label(), &name)?
                .0;
            Ok(())
        })?);
        let mut ship = None;
        f.cold_create.push(timed(|| {
            ship = Some(create(bay, &mut http, &format!("bench-seq-{i}"))?);
            Ok(())
        })?);
        f.engine_delete
            .push(timed(|| engine.delete_ship(&id, &name))?);
        let ship = ship.context("no ship")?;
        f.delete.push(timed(|| delete(bay, &mut http, &ship.id))?);
    }
    Ok(())
}

/// Exec round trips through Bay and straight to the agent; first Python calls; memory.
fn exec_phase(
    args: &Args,
    stop: &AtomicBool,
    bay: &mut BayServer,
    f: &mut Figures,
) -> anyhow::Result<()> {
    eprintln!(
        "==> exec: first Python calls on {FIRST_CALLS} fresh ships, then {} round trips each \
         through Bay and straight to the agent",
        args.runs
    );
    let mut http = bay.http()?;
    let mut engine = Engine::connect()?;
    let mut ships = Vec::new();
    for j in 0..FIRST_CALLS {
        interrupted(stop)?;
        let session = format!("bench-exec-{j}");
        let ship = create(bay, &mut http, &session)?;
        ships.push((session, ship));
    }
    std::thread::sleep(Duration::from_millis(500));
    f.ship_memory_idle = engine.memory(&ships[FIRST_CALLS - 1].1.container)?;
    for (session, ship) in &ships {
        f.first_python_cold.push(timed(|| {
            exec(&mut http, &ship.id, session, "ipython/exec", PYTHON)
        })?);
    }

    let (session, ship) = &ships[0];
    let token = engine
        .env(&ship.container)?
        .into_iter()
        .find_map(|e| e.strip_prefix("SHIP_AUTH_TOKEN=").map(str::to_owned))
        .context("the ship has no SHIP_AUTH_TOKEN")?;
    let mut direct = Http::connect(&ship.address)?.with_bearer(&token);
    let through =
        |http: &mut Http, kind: &str, payload: &str| exec(http, &ship.id, session, kind, payload);
    // One of each first: connections and the session's shell are set up.
    through(&mut http, "shell/exec", SHELL)?;
    direct.post_ok("/shell/exec", session, SHELL)?;
    direct.post_ok("/ipython/exec", session, PYTHON)?;
    for _ in 0..args.runs {
        interrupted(stop)?;
        f.shell_bay
            .push(timed(|| through(&mut http, "shell/exec", SHELL))?);
        f.shell_direct
            .push(timed(|| direct.post_ok("/shell/exec", session, SHELL))?);
    }
    for _ in 0..args.runs {
        interrupted(stop)?;
        f.python_bay
            .push(timed(|| through(&mut http, "ipython/exec", PYTHON))?);
        f.python_direct
            .push(timed(|| direct.post_ok("/ipython/exec", session, PYTHON))?);
    }
    f.ship_memory_python = engine.memory(&ship.container)?;
    for (_, ship) in &ships {
        delete(bay, &mut http, &ship.id)?;
    }
    Ok(())
}

/// Concurrent creates from as many sessions through Bay, and the engine's own parallel
/// create+start; then everything deleted in parallel and what is left counted.
fn concurrency(
    args: &Args,
    stop: &AtomicBool,
    baselines: &Baselines,
    bay: &mut BayServer,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let n = args.concurrent;
    interrupted(stop)?;
    eprintln!("==> {n} parallel create+start with the engine alone");
    let names: Vec<String> = (0..n)
        .map(|i| format!("bay-bench-{}-par-{i}", baselines.run))
        .collect();
    for name in &names {
        bay.note_container(name);
    }
    let (wall, results) = parallel(n, |i| {
        let mut engine = Engine::connect()?;
        Ok(Some(
            engine
                .start_ship(&args.image, &bay.network, baselines.label(), &names[i])?
                .0,
        ))
    });
    f.engine_concurrent.wall = wall;
    f.engine_concurrent.failures = results.iter().filter(|r| r.is_err()).count();
    let ids: Vec<Option<String>> = results.into_iter().map(|r| r.ok().flatten()).collect();
    let (_, removed) = parallel(n, |i| {
        let mut engine = Engine::connect()?;
        if let Some(id) = &ids[i] {
            engine.delete_ship(id, &names[i])?;
        }
        Ok(())
    });
    ensure!(
        removed.iter().all(Result::is_ok),
        "removing the baseline containers failed: {:?}",
        removed.iter().find(|r| r.is_err())
    );

    interrupted(stop)?;
    eprintln!("==> {n} concurrent creates through Bay, one session each");
    let addr = bay.addr.clone();
    let (wall, results) = parallel(n, |i| {
        let mut http = Http::connect(&addr)?.with_bearer(server::TOKEN);
        let a = http.request(
            "POST",
            "/ship",
            Some(&format!("bench-par-{i}")),
            Some(r#"{"ttl":600}"#),
        )?;
        let id = a.json()["id"].as_str().map(str::to_owned);
        ensure!(
            a.status == 201,
            "POST /ship answered {}: {}",
            a.status,
            a.body
        );
        Ok(id)
    });
    f.concurrent.wall = wall;
    f.concurrent.failures = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("    first failure: {e:#}");
    }
    let ids: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .collect();
    for id in &ids {
        bay.track(id);
    }
    eprintln!("==> deleting them permanently, concurrently");
    let (_, deleted) = parallel(ids.len(), |i| {
        let mut http = Http::connect(&addr)?.with_bearer(server::TOKEN);
        let a = http.request("DELETE", &format!("/ship/{}/permanent", ids[i]), None, None)?;
        ensure!(a.status < 300, "DELETE answered {}: {}", a.status, a.body);
        Ok(())
    });
    for (id, r) in ids.iter().zip(&deleted) {
        if r.is_ok() {
            bay.untrack(id);
        }
    }
    let mut engine = Engine::connect()?;
    for id in &ids {
        let filters = json!({"label": [format!("bay.ship-id={id}")]});
        f.concurrent.containers_left += engine.containers(&filters)?.len();
        f.concurrent.volumes_left += engine.volumes(&filters)?.len();
    }
    Ok(())
}

/// Runs `job(0..n)` on `n` threads released together; returns the wall time until the last
/// one finished and each result.
fn parallel<T: Send>(
    n: usize,
    job: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> (Duration, Vec<anyhow::Result<T>>) {
    let barrier = Barrier::new(n + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, job) = (&barrier, &job);
                s.spawn(move || {
                    barrier.wait();
                    job(i)
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect();
        (t.elapsed(), results)
    })
}

/// The number of warm ships the server reports, when `/stat/overview` has such a figure.
fn reported_warm(http: &mut Http) -> Option<u64> {
    warm_figure(&http.get("/stat/overview").ok()?.json())
}

/// The first numeric field of an overview whose path names `warm` (e.g. `ships.warm` or
/// `warm_pool.ready`; `ready`, `idle` or `available` preferred inside a `warm` object).
fn warm_figure(v: &Value) -> Option<u64> {
    fn find(v: &Value, warm: bool) -> Option<u64> {
        match v {
            Value::Number(n) if warm => n.as_u64(),
            Value::Object(m) => {
                let preferred = ["ready", "idle", "available"];
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by_key(|k| !preferred.contains(&k.as_str()));
                keys.into_iter()
                    .find_map(|k| find(&m[k], warm || k.to_ascii_lowercase().contains("warm")))
            }
            _ => None,
        }
    }
    find(v, false)
}

/// Waits until the pool holds `size` ships: that many running containers on the server's
/// network and, when the server reports a warm figure, that figure.
fn wait_pool(bay: &BayServer, http: &mut Http, size: usize, timeout: Duration) -> bool {
    let Ok(mut engine) = Engine::connect() else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    let filters = json!({"network": [bay.network.clone()]});
    if !engine.wait_running(&filters, size, timeout) {
        return false;
    }
    loop {
        match reported_warm(http) {
            Some(n) if n >= size as u64 => return true,
            None => return true,
            Some(_) if Instant::now() > deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A second server with `WARM_POOL_SIZE`: warm creates and first Python calls on warm ships.
fn warm_phase(
    args: &Args,
    stop: &AtomicBool,
    binary: &std::path::PathBuf,
    f: &mut Figures,
) -> anyhow::Result<()> {
    interrupted(stop)?;
    let size = args.pool_size.max(1);
    eprintln!("==> bay-server with WARM_POOL_SIZE={size}");
    let mut warm = BayServer::start(
        binary,
        "warm",
        &args.image,
        &[
            ("MAX_SHIP_NUM", "0".into()),
            ("WARM_POOL_SIZE", size.to_string()),
        ],
    )?;
    let mut http = warm.http()?;
    f.pool_active = wait_pool(&warm, &mut http, size, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    f.rss_warm_idle = warm.rss();
    eprintln!(
        "==> {} warm creates{}",
        args.creates,
        if f.pool_active {
            ""
        } else {
            " (no warm pool appeared: these are cold creates)"
        }
    );
    for i in 0..args.creates {
        interrupted(stop)?;
        if f.pool_active {
            wait_pool(&warm, &mut http, size, Duration::from_secs(60));
        }
        let session = format!("bench-warm-{i}");
        let mut ship = None;
        f.warm_create.push(timed(|| {
            ship = Some(create(&mut warm, &mut http, &session)?);
            Ok(())
        })?);
        let ship = ship.context("no ship")?;
        if i < FIRST_CALLS {
            f.first_python_warm.push(timed(|| {
                exec(&mut http, &ship.id, &session, "ipython/exec", PYTHON)
            })?);
        } else if i < 2 * FIRST_CALLS {
            // A client that takes a moment after its create, as an agent deciding what to run
            // does: the claim has had the agent start the session's interpreter meanwhile.
            std::thread::sleep(CLIENT_PAUSE);
            f.first_python_warm_later.push(timed(|| {
                exec(&mut http, &ship.id, &session, "ipython/exec", PYTHON)
            })?);
        }
        delete(&mut warm, &mut http, &ship.id)?;
    }
    warm.stop();
    Ok(())
}

fn rows(args: &Args, f: &Figures) -> Vec<Row> {
    let engine = stats(f.engine_create.clone());
    let cold = stats(f.cold_create.clone());
    let warm = stats(f.warm_create.clone());
    let del = stats(f.delete.clone());
    let engine_del = stats(f.engine_delete.clone());
    let n = args.creates;
    let what = "engine alone: create+start, agent /health";
    let mut rows = vec![
        Row::new(
            format!("cold create, median of {n}"),
            ms(cold.median),
            "ms",
            ms(engine.median),
            what,
            None,
        )
        .budget(Budget::Ratio(1.1)),
        Row::new(
            format!("cold create, p95 of {n}"),
            ms(cold.p95),
            "ms",
            ms(engine.p95),
            what,
            None,
        ),
        Row::new(
            format!("warm create, median of {n}"),
            ms(warm.median),
            "ms",
            ms(engine.median),
            what,
            None,
        )
        .budget(Budget::Max(10.0)),
        Row::new(
            format!("warm create, p95 of {n}"),
            ms(warm.p95),
            "ms",
            ms(engine.p95),
            what,
            None,
        ),
        Row::new(
            "permanent delete, median",
            ms(del.median),
            "ms",
            ms(engine_del.median),
            "engine alone: stop, rm container and volumes",
            None,
        ),
        Row::new(
            "permanent delete, p95",
            ms(del.p95),
            "ms",
            ms(engine_del.p95),
            "engine alone: stop, rm container and volumes",
            None,
        ),
    ];
    for (what, bay, direct) in [
        ("shell `echo 1`", &f.shell_bay, &f.shell_direct),
        ("python `print(1)`", &f.python_bay, &f.python_direct),
    ] {
        let (b, d): (Stats, Stats) = (stats(bay.clone()), stats(direct.clone()));
        rows.push(Row::new(
            format!("exec {what} via Bay, median"),
            ms(b.median),
            "ms",
            ms(d.median),
            "straight to the agent",
            None,
        ));
        rows.push(Row::new(
            format!("exec {what} via Bay, p99"),
            ms(b.p99),
            "ms",
            ms(d.p99),
            "straight to the agent",
            None,
        ));
        rows.push(
            Row::alone(
                "  Bay's added latency, median",
                ms(b.median) - ms(d.median),
                "ms",
            )
            .budget(Budget::Max(1.0)),
        );
        rows.push(Row::alone(
            "  Bay's added latency, p99",
            ms(b.p99) - ms(d.p99),
            "ms",
        ));
    }
    let python = ms(median(f.python_bay.clone()));
    rows.push(Row::new(
        format!("first python call, fresh ship (median of {FIRST_CALLS})"),
        ms(median(f.first_python_cold.clone())),
        "ms",
        python,
        "later python calls via Bay",
        None,
    ));
    rows.push(
        Row::new(
            format!("first python call, warm ship (median of {FIRST_CALLS})"),
            ms(median(f.first_python_warm.clone())),
            "ms",
            python,
            "later python calls via Bay",
            None,
        )
        .budget(Budget::Max(20.0)),
    );
    if !f.first_python_warm_later.is_empty() {
        rows.push(Row::new(
            format!(
                "  the same, {} s after the create (median of {})",
                CLIENT_PAUSE.as_secs(),
                f.first_python_warm_later.len()
            ),
            ms(median(f.first_python_warm_later.clone())),
            "ms",
            python,
            "later python calls via Bay",
            None,
        ));
    }
    let c = args.concurrent;
    rows.push(
        Row::new(
            format!("{c} concurrent creates, wall"),
            ms(f.concurrent.wall),
            "ms",
            ms(f.engine_concurrent.wall),
            format!("engine alone: {c} parallel create+start"),
            None,
        )
        .budget(Budget::Ratio(1.5)),
    );
    rows.push(
        Row::new(
            format!("{c} concurrent creates, failures"),
            f.concurrent.failures as f64,
            "",
            f.engine_concurrent.failures as f64,
            "engine alone: failures",
            None,
        )
        .budget(Budget::Max(0.0)),
    );
    rows.push(
        Row::alone(
            "containers left after permanent deletes",
            f.concurrent.containers_left as f64,
            "",
        )
        .budget(Budget::Max(0.0)),
    );
    rows.push(
        Row::alone(
            "volumes left after permanent deletes",
            f.concurrent.volumes_left as f64,
            "",
        )
        .budget(Budget::Max(0.0)),
    );
    rows.push(Row::alone("Bay RSS idle", mb(f.rss_idle), "MB").budget(Budget::Max(20.0)));
    rows.push(Row::new(
        "Bay RSS after the run",
        mb(f.rss_after),
        "MB",
        mb(f.rss_idle),
        "Bay RSS idle",
        None,
    ));
    rows.push(Row::new(
        format!("Bay RSS idle, warm pool of {}", args.pool_size.max(1)),
        mb(f.rss_warm_idle),
        "MB",
        mb(f.rss_idle),
        "Bay RSS idle, no pool",
        None,
    ));
    rows.push(Row::alone(
        "per-ship memory, idle",
        mb(f.ship_memory_idle),
        "MB",
    ));
    rows.push(Row::new(
        "per-ship memory, 1 python session",
        mb(f.ship_memory_python),
        "MB",
        mb(f.ship_memory_idle),
        "per-ship memory, idle",
        None,
    ));
    rows
}

/// Writes the run as JSON to `target/bench/<UTC time>.json` and `target/bench/latest.json`.
fn write_json(args: &Args, f: &Figures, rows: &[Row]) -> anyhow::Result<std::path::PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let stamp = utc_stamp(now);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    let docker = Engine::connect()
        .ok()
        .and_then(|mut e| e.version().ok())
        .unwrap_or(Value::Null);
    let report = json!({
        "time": stamp,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':'])),
            "memory": meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).map(str::trim),
            "kernel": read("/proc/sys/kernel/osrelease").trim(),
            "docker": docker,
        },
        "image": args.image,
        "creates": args.creates,
        "runs": args.runs,
        "concurrent": args.concurrent,
        "pool_size": args.pool_size.max(1),
        "pool_active": f.pool_active,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let dir = cmd::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(&report)?;
    let path = dir.join(format!("{stamp}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    Ok(path)
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (civil date from days, proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_796_401_000), "20261204T161640Z");
    }

    #[test]
    fn warm_figures_are_found_in_the_overview() {
        let find = |body: &str| warm_figure(&serde_json::from_str(body).unwrap_or(Value::Null));
        assert_eq!(find(r#"{"ships":{"total":3,"warm":2}}"#), Some(2));
        assert_eq!(
            find(r#"{"warm_pool":{"size":3,"starting":1,"ready":2}}"#),
            Some(2)
        );
        assert_eq!(find(r#"{"ships":{"total":3}}"#), None);
    }
}
