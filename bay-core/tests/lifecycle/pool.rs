//! The warm pool (`WARM_POOL_SIZE`, issue 13): claiming, refilling, no double hand-out under
//! concurrency or across a restart, yielding to demand at the limit in both modes, counting
//! against the limit, no expiry while idle, non-default specs, engine faults while refilling.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bay_core::Error;
use bay_core::driver::DriverError;
use bay_core::model::{ShipStatus, SpecRequest};
use bay_core::service::{CreateShip, Ship};
use bay_core::testing::{FakeDriver, FakeShip, Op};

use crate::faults::{check_invariants, settle_and_check};
use crate::harness::{Harness, eventually};

fn req(ttl: i64) -> CreateShip {
    CreateShip::with_ttl(ttl)
}

/// A request whose spec is not the default one.
fn big(ttl: i64) -> CreateShip {
    CreateShip {
        spec: SpecRequest {
            cpus: Some(2.0),
            ..SpecRequest::default()
        },
        ..CreateShip::with_ttl(ttl)
    }
}

/// Waits until the pool has `n` ready ships (and none starting); returns their ids.
async fn warm_ready(h: &Harness, n: usize) -> BTreeSet<String> {
    let ok = eventually(Duration::from_secs(20), || async {
        let o = h.service.overview().await.unwrap();
        o.ships.warm == n && o.ships.warming == 0
    })
    .await;
    let warm = h.service.list_warm_ships().await.unwrap();
    assert!(ok, "the pool never reached {n} ready ships: {warm:#?}");
    warm.into_iter().map(|s| s.id).collect()
}

/// Lets the pool settle at `n` ready ships, then checks the service's invariants.
async fn settled(h: &Harness, n: usize, scenario: &str) {
    warm_ready(h, n).await;
    settle_and_check(h, scenario).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_create_claims_a_warm_ship_and_the_pool_refills() {
    let h = Harness::new(&[("WARM_POOL_SIZE", "2")]).await;
    let warm = warm_ready(&h, 2).await;
    let creates_before = h.driver.count(Op::Create);
    assert_eq!(creates_before, 2);
    // Every warm ship's agent was asked to warm up, with the ship's own token.
    let warm_rows = h.service.list_warm_ships().await.unwrap();
    for w in &warm_rows {
        assert_eq!(w.status, ShipStatus::Running);
        assert_eq!(w.current_session_num, 0);
        assert_eq!(w.expires_at, None, "a warm ship has no deadline");
        let token = h
            .driver
            .token_of(w.container_id.as_deref().unwrap())
            .unwrap();
        assert!(
            h.ship.warmups().contains(&token),
            "warm ship {} was not warmed up",
            w.id
        );
    }
    // Hidden from the API until claimed.
    assert!(h.service.list_ships().await.unwrap().is_empty());
    let some = warm.iter().next().unwrap();
    assert!(matches!(
        h.service.get_ship(some).await,
        Err(Error::ShipNotFound)
    ));
    assert!(matches!(
        h.service.stop_ship(some).await,
        Err(Error::ShipNotFound)
    ));
    assert!(matches!(
        h.service.delete_ship(some).await,
        Err(Error::ShipNotFound)
    ));
    assert!(matches!(
        h.service.extend_ship_ttl(some, 600).await,
        Err(Error::ShipNotFound)
    ));
    assert!(h.service.start_ship(some, "intruder", None).await.is_err());
    assert!(h.service.ship_sessions(some).await.is_err());
    assert_eq!(h.service.ship_logs(some, 10).await.unwrap(), "");
    assert_eq!(warm_ready(&h, 2).await, warm, "the API left the pool alone");
    let o = h.service.overview().await.unwrap();
    assert_eq!((o.ships.total, o.ships.running, o.ships.warm), (0, 0, 2));

    let ship = h
        .service
        .create_ship(
            "s1",
            CreateShip {
                max_session_num: 3,
                ..req(600)
            },
        )
        .await
        .unwrap();
    assert!(warm.contains(&ship.id), "{} is not a warm ship", ship.id);
    let at_claim = warm_rows.iter().find(|w| w.id == ship.id).unwrap();
    assert_eq!(ship.container_id, at_claim.container_id);
    // The answer of a cold create: RUNNING, the caller's ttl, slots and relation.
    assert_eq!(ship.status, ShipStatus::Running);
    assert_eq!(ship.max_session_num, 3);
    assert_eq!(ship.current_session_num, 1);
    assert!((599..=600).contains(&ship.ttl), "ttl {}", ship.ttl);
    assert!(ship.expires_at.is_some());
    assert!(ship.created_at > at_claim.created_at);
    let session = h.service.get_session("s1", None).await.unwrap();
    assert_eq!(session.ship_id, ship.id);
    assert_eq!(session.initial_ttl, 600);
    assert_eq!(h.service.get_ship(&ship.id).await.unwrap().id, ship.id);
    assert_eq!(h.service.list_ships().await.unwrap().len(), 1);
    // The session's Python interpreter is started ahead, with the session and the ship's token.
    let token = h
        .driver
        .token_of(ship.container_id.as_deref().unwrap())
        .unwrap();
    let prepared = eventually(Duration::from_secs(10), || async {
        h.ship.seen().iter().any(|r| {
            r.method == "POST"
                && r.path == "/ipython/create_kernel"
                && r.session.as_deref() == Some("s1")
                && r.authorization.as_deref() == Some(&format!("Bearer {token}"))
        })
    })
    .await;
    assert!(
        prepared,
        "no interpreter start for s1: {:#?}",
        h.ship.seen()
    );

    // Refilled in the background, with a new ship.
    let refilled = warm_ready(&h, 2).await;
    assert!(!refilled.contains(&ship.id));
    assert_eq!(h.driver.count(Op::Create), 3);
    // The claimed ship is an ordinary one now: reused by its session, listed, exec-able.
    let again = h.service.create_ship("s1", req(60)).await.unwrap();
    assert_eq!(again.id, ship.id);
    settled(&h, 2, "after a claim").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_default_spec_gets_a_warm_ship() {
    let h = Harness::new(&[("WARM_POOL_SIZE", "1")]).await;
    let warm = warm_ready(&h, 1).await;
    let cold = h.service.create_ship("big", big(600)).await.unwrap();
    assert!(!warm.contains(&cold.id));
    assert_eq!(warm_ready(&h, 1).await, warm, "the pool was not touched");
    // A forced create with the default spec still takes a warm ship rather than a new container.
    let forced = h
        .service
        .create_ship(
            "big",
            CreateShip {
                force_create: true,
                ..req(600)
            },
        )
        .await
        .unwrap();
    assert!(warm.contains(&forced.id));
    // Spelling out the defaults is the default spec.
    let warm = warm_ready(&h, 1).await;
    let explicit = h
        .service
        .create_ship(
            "explicit",
            CreateShip {
                spec: SpecRequest {
                    cpus: Some(1.0),
                    memory_bytes: Some(512 << 20),
                    disk_bytes: None,
                },
                ..req(600)
            },
        )
        .await
        .unwrap();
    assert!(warm.contains(&explicit.id));
    settled(&h, 1, "specs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_get_fifty_different_ships() {
    let h = Harness::new(&[("WARM_POOL_SIZE", "8"), ("MAX_SHIP_NUM", "60")]).await;
    let warm = warm_ready(&h, 8).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let service = h.service.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("session-{i}");
            let ship = service.create_ship(&session, req(600)).await.unwrap();
            (session, ship)
        }));
    }
    let mut got: Vec<(String, Ship)> = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let ids: HashSet<&str> = got.iter().map(|(_, s)| s.id.as_str()).collect();
    assert_eq!(ids.len(), 50, "a ship was handed out twice");
    let from_pool = got.iter().filter(|(_, s)| warm.contains(&s.id)).count();
    assert!(from_pool >= 1, "no create was served from the pool");
    for (session, ship) in &got {
        let view = h.service.get_ship(&ship.id).await.unwrap();
        assert_eq!(view.current_session_num, 1, "ship {} is shared", ship.id);
        let rel = h.service.get_session(session, None).await.unwrap();
        assert_eq!(&rel.ship_id, &ship.id);
    }
    assert_eq!(h.service.list_ships().await.unwrap().len(), 50);
    // 50 ships plus a refilled pool of at most 10 (the limit is 60).
    warm_ready(&h, 8).await;
    assert!(h.driver.peak_containers() <= 60);
    settle_and_check(&h, "fifty concurrent creates").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_service_recognises_its_warm_ships_and_hands_each_out_once() {
    let mut h = Harness::new(&[("WARM_POOL_SIZE", "2")]).await;
    let warm = warm_ready(&h, 2).await;
    h.restart().await;
    assert_eq!(
        warm_ready(&h, 2).await,
        warm,
        "the same warm ships after a restart"
    );
    assert_eq!(h.driver.count(Op::Create), 2, "no ship was replaced");
    check_invariants(&h, "after a restart").await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let b = h.service.create_ship("b", req(600)).await.unwrap();
    assert_ne!(a.id, b.id);
    let got: BTreeSet<String> = [a.id.clone(), b.id.clone()].into();
    assert_eq!(got, warm, "the oldest warm ships are handed out first");

    // A crash after the claims: the claimed ships stay the sessions', the pool is refilled and
    // none of them is handed out again.
    warm_ready(&h, 2).await;
    h.crash_and_restart().await;
    let pool = warm_ready(&h, 2).await;
    assert!(!pool.contains(&a.id) && !pool.contains(&b.id));
    let c = h.service.create_ship("c", req(600)).await.unwrap();
    assert!(pool.contains(&c.id));
    assert_eq!(
        h.service.get_session("a", None).await.unwrap().ship_id,
        a.id
    );
    assert_eq!(
        h.service.get_ship(&a.id).await.unwrap().current_session_num,
        1
    );
    settled(&h, 2, "after a crash").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_cut_by_a_crash_and_a_vanished_warm_container_are_replaced() {
    let ship = FakeShip::start().await;
    let driver = FakeDriver::new(ship.address());
    driver.gate(Op::Create);
    let mut h = Harness::with(ship, driver, &[("WARM_POOL_SIZE", "1")]).await;
    h.driver.wait_at_gate(Op::Create, 1).await;
    h.crash_and_restart().await;
    h.driver.heal(Op::Create);
    let warm = warm_ready(&h, 1).await;
    settle_and_check(&h, "a fill cut by a crash").await;

    let gone = h.service.list_warm_ships().await.unwrap()[0].clone();
    h.driver.vanish(gone.container_id.as_deref().unwrap());
    h.service.check_containers().await;
    let replaced = warm_ready(&h, 1).await;
    assert_ne!(replaced, warm);
    // The same while Bay is down: found at start-up.
    h.service.shutdown().await;
    let w = h.service.list_warm_ships().await.unwrap()[0].clone();
    h.driver.vanish(w.container_id.as_deref().unwrap());
    h.start_again().await;
    let again = warm_ready(&h, 1).await;
    assert!(!again.contains(&w.id));
    // And a claim that finds a dead container takes the next one (or a cold ship).
    let w = h.service.list_warm_ships().await.unwrap()[0].clone();
    h.driver.exit(w.container_id.as_deref().unwrap());
    let got = h.service.create_ship("s", req(600)).await.unwrap();
    assert_ne!(got.id, w.id);
    settled(&h, 1, "replaced warm ships").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_ships_never_expire_while_idle() {
    let h = Harness::new(&[("WARM_POOL_SIZE", "1")]).await;
    let warm = warm_ready(&h, 1).await;
    // A ship with a one-second ttl expires; the warm ship, which has no deadline, does not.
    let short = h.service.create_ship("short", big(1)).await.unwrap();
    let expired = eventually(Duration::from_secs(10), || async {
        h.service.get_ship(&short.id).await.unwrap().status == ShipStatus::Stopped
    })
    .await;
    assert!(expired);
    let passes = h.service.diagnostics().reaper_passes;
    for _ in 0..3 {
        h.service.reap_once().await;
    }
    assert!(h.service.diagnostics().reaper_passes >= passes + 3);
    assert_eq!(warm_ready(&h, 1).await, warm);
    assert_eq!(
        h.driver.count(Op::Stop),
        1,
        "only the expired ship was stopped"
    );
    settled(&h, 1, "no expiry").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_counts_against_the_limit_and_yields_in_reject_mode() {
    let h = Harness::new(&[
        ("WARM_POOL_SIZE", "2"),
        ("MAX_SHIP_NUM", "3"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "reject"),
    ])
    .await;
    let warm = warm_ready(&h, 2).await;
    // One slot is free: a non-default create takes it; the pool cannot refill past the limit.
    let a = h.service.create_ship("a", big(600)).await.unwrap();
    assert!(!warm.contains(&a.id));
    assert_eq!(h.service.diagnostics().slots.len(), 3);
    // At the limit: each non-default create retires a warm ship instead of being refused.
    let b = h.service.create_ship("b", big(600)).await.unwrap();
    assert!(!warm.contains(&b.id));
    assert_eq!(h.service.list_warm_ships().await.unwrap().len(), 1);
    let c = h.service.create_ship("c", big(600)).await.unwrap();
    assert!(!warm.contains(&c.id));
    assert!(h.service.list_warm_ships().await.unwrap().is_empty());
    // No warm ship left: refused as before.
    assert!(matches!(
        h.service.create_ship("d", big(600)).await,
        Err(Error::ShipLimitReached { .. })
    ));
    assert!(
        h.driver.peak_containers() <= 3,
        "live containers exceeded MAX_SHIP_NUM"
    );
    // Room again: the pool refills up to the limit.
    h.service.delete_ship(&a.id).await.unwrap();
    warm_ready(&h, 1).await;
    assert!(h.driver.peak_containers() <= 3);
    settled(&h, 1, "reject mode").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_limit_a_fitting_create_claims_and_others_retire_in_wait_mode() {
    let h = Harness::new(&[
        ("WARM_POOL_SIZE", "2"),
        ("MAX_SHIP_NUM", "2"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "wait"),
        ("MAX_SHIP_WAIT_SECONDS", "2"),
    ])
    .await;
    let warm = warm_ready(&h, 2).await;
    // The pool fills the limit; a default create is served from it, not queued.
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    assert!(warm.contains(&a.id));
    // A non-default create would wait for a slot nobody frees; the last warm ship yields.
    let b = h.service.create_ship("b", big(600)).await.unwrap();
    assert!(!warm.contains(&b.id));
    assert!(h.service.list_warm_ships().await.unwrap().is_empty());
    assert_eq!(h.driver.count(Op::Create), 3);
    // Nothing left to yield: the wait runs out as before.
    assert!(matches!(
        h.service.create_ship("c", req(600)).await,
        Err(Error::SlotWaitTimeout)
    ));
    assert!(h.driver.peak_containers() <= 2);
    // A queued request gets the slot a stop frees: the pool does not take it from the queue.
    let service = h.service.clone();
    let queued = tokio::spawn(async move { service.create_ship("d", big(600)).await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.service.diagnostics().waiting == 1
        })
        .await
    );
    h.service.stop_ship(&b.id).await.unwrap();
    let d = queued.await.unwrap().unwrap();
    assert_eq!(d.status, ShipStatus::Running);
    assert!(h.service.list_warm_ships().await.unwrap().is_empty());
    settled(&h, 0, "wait mode").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_warmup_still_fills_the_pool() {
    let ship = FakeShip::start().await;
    ship.set_warmup_supported(false);
    let driver = FakeDriver::new(ship.address());
    let h = Harness::with(ship, driver, &[("WARM_POOL_SIZE", "2")]).await;
    let warm = warm_ready(&h, 2).await;
    assert!(h.ship.warmups().is_empty());
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    assert!(warm.contains(&a.id));
    settled(&h, 2, "old agent").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_faults_while_refilling_back_off_and_leak_nothing() {
    let faults = [
        Some(DriverError::Engine("engine answered 500".into())),
        Some(DriverError::Unavailable("engine timed out".into())),
        None, // hangs
    ];
    for op in [Op::Create, Op::Stop, Op::ListManaged, Op::DeleteData] {
        for fault in &faults {
            let scenario = format!("{op:?} {fault:?}");
            let ship = FakeShip::start().await;
            // Unhealthy agents: every fill gets a container, then fails and is cleaned up.
            ship.set_healthy(false);
            let driver = FakeDriver::new(ship.address());
            if let Some(e) = fault {
                driver.fail(op, e.clone(), None);
            }
            let h = Harness::with(
                ship,
                driver,
                &[("WARM_POOL_SIZE", "2"), ("SHIP_HEALTH_CHECK_TIMEOUT", "1")],
            )
            .await;
            // A hanging engine from the start would hang the start-up's own listing: the
            // gate closes once the service runs.
            if fault.is_none() {
                h.driver.gate(op);
            }
            match fault {
                Some(_) => {
                    assert!(
                        eventually(Duration::from_secs(10), || async {
                            h.driver.count(op) >= 2
                        })
                        .await,
                        "{scenario}: the pool did not retry"
                    );
                }
                None => assert!(
                    tokio::time::timeout(Duration::from_secs(20), h.driver.wait_at_gate(op, 1))
                        .await
                        .is_ok(),
                    "{scenario}: the pool never reached the hanging call"
                ),
            }
            // A failing engine is retried with a back-off, not in a loop.
            for o in [op, Op::Create] {
                let attempts = h.driver.count(o);
                assert!(
                    attempts <= 12,
                    "{scenario}: {attempts} calls of {o:?}: the pool spins"
                );
            }
            h.ship.set_healthy(true);
            h.driver.heal(op);
            let warm = eventually(Duration::from_secs(60), || async {
                let o = h.service.overview().await.unwrap();
                o.ships.warm == 2 && o.ships.warming == 0
            })
            .await;
            assert!(warm, "{scenario}: the pool did not refill after the fault");
            settle_and_check(&h, &scenario).await;
            h.service.shutdown().await;
            // Only the two warm ships' containers and data remain.
            assert_eq!(h.driver.containers().len(), 2, "{scenario}");
            assert_eq!(h.driver.data().len(), 2, "{scenario}");
        }
    }
}

/// Deletes every ship the API shows; the pool's ships stay.
async fn delete_listed(h: &Harness, scenario: &str) {
    for s in h.service.list_ships().await.unwrap() {
        match h.service.delete_ship(&s.id).await {
            Ok(()) | Err(Error::ShipNotFound) => {}
            Err(e) => panic!("{scenario}: deleting {} failed: {e:?}", s.id),
        }
    }
    assert!(
        h.service.list_ships().await.unwrap().is_empty(),
        "{scenario}"
    );
}

/// Every relation names a different ship (all requests here ask for one session per ship).
async fn no_ship_shared(h: &Harness, scenario: &str) {
    let sessions = h.service.list_sessions().await.unwrap();
    let ships: HashSet<&str> = sessions.iter().map(|r| r.ship_id.as_str()).collect();
    assert_eq!(
        ships.len(),
        sessions.len(),
        "{scenario}: a ship was handed to two sessions: {sessions:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_abandoned_at_any_point_leak_nothing_and_hand_out_nothing_twice() {
    for mode in ["reject", "wait"] {
        // The limit is tight, so that a non-default create retires a warm ship on its way.
        let h = Harness::new(&[
            ("WARM_POOL_SIZE", "2"),
            ("MAX_SHIP_NUM", "3"),
            ("BEHAVIOR_AFTER_MAX_SHIP", mode),
            ("MAX_SHIP_WAIT_SECONDS", "1"),
        ])
        .await;
        for op in [Op::Create, Op::Stop, Op::DeleteData, Op::ListManaged] {
            h.driver.delay(op, Duration::from_millis(3));
        }
        for ms in [0u64, 1, 2, 3, 5, 8, 13, 21, 34] {
            let scenario = format!("{mode}: callers gone after {ms} ms");
            let limit = Duration::from_millis(ms);
            warm_ready(&h, 2).await;
            // A claim, a cold create at the limit (it retires a warm ship), and both again
            // while the pool refills.
            let _ = tokio::time::timeout(limit, h.service.create_ship("claim", req(600))).await;
            let _ = tokio::time::timeout(limit, h.service.create_ship("cold", big(600))).await;
            let _ = tokio::time::timeout(limit, h.service.create_ship("claim2", req(600))).await;
            let _ = tokio::time::timeout(limit, h.service.create_ship("cold2", big(600))).await;
            settle_and_check(&h, &scenario).await;
            no_ship_shared(&h, &scenario).await;
            // A create its caller left before the first poll makes nothing; any other runs to
            // its end: the session has its ship, which is no pool ship.
            let warm: HashSet<String> = h
                .service
                .list_warm_ships()
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect();
            for s in h.service.list_sessions().await.unwrap() {
                assert!(!warm.contains(&s.ship_id), "{scenario}: {s:?}");
            }
            assert!(
                h.driver.peak_containers() <= 3,
                "{scenario}: over the limit"
            );
            delete_listed(&h, &scenario).await;
            settle_and_check(&h, &scenario).await;
        }
        // Dropped after a number of polls rather than a delay.
        for polls in 0..4 {
            let scenario = format!("{mode}: dropped after {polls} polls");
            warm_ready(&h, 2).await;
            for (session, r) in [("p-claim", req(600)), ("p-cold", big(600))] {
                let mut fut = std::pin::pin!(h.service.create_ship(session, r));
                for _ in 0..polls {
                    let _ = futures::poll!(fut.as_mut());
                    tokio::task::yield_now().await;
                }
            }
            settle_and_check(&h, &scenario).await;
            no_ship_shared(&h, &scenario).await;
            for session in ["p-claim", "p-cold"] {
                let got = h.service.get_session(session, None).await;
                assert_eq!(got.is_ok(), polls > 0, "{scenario}: {session}: {got:?}");
            }
            delete_listed(&h, &scenario).await;
        }
        settled(&h, 2, mode).await;
        h.service.shutdown().await;
        // Only the pool's containers and data remain.
        assert_eq!(h.driver.containers().len(), 2, "{mode}");
        assert_eq!(h.driver.data().len(), 2, "{mode}");
    }
}

/// Sets `WARM_POOL_SIZE` for the next start of the harness's service.
fn set_pool_size(h: &mut Harness, size: &str) {
    h.settings.retain(|(k, _)| k != "WARM_POOL_SIZE");
    h.settings.push(("WARM_POOL_SIZE".into(), size.into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_smaller_pool_or_none_gives_the_surplus_slots_back() {
    let mut h = Harness::new(&[
        ("WARM_POOL_SIZE", "3"),
        ("MAX_SHIP_NUM", "3"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "reject"),
    ])
    .await;
    warm_ready(&h, 3).await;
    // Newest first: the last one is the oldest.
    let oldest = h.service.list_warm_ships().await.unwrap().pop().unwrap().id;
    set_pool_size(&mut h, "1");
    h.restart().await;
    // The oldest stays; the two newest are removed at start-up, with their slots.
    let kept = warm_ready(&h, 1).await;
    assert_eq!(kept, BTreeSet::from([oldest]));
    assert_eq!(h.service.diagnostics().slots.len(), 1);
    assert_eq!(h.driver.containers().len(), 1);
    check_invariants(&h, "pool of 3 restarted as 1").await;
    // Pool off: the last warm ship goes too, and every slot is the requests'.
    set_pool_size(&mut h, "0");
    h.restart().await;
    assert!(h.service.list_warm_ships().await.unwrap().is_empty());
    assert!(h.service.diagnostics().slots.is_empty());
    for s in ["a", "b", "c"] {
        h.service.create_ship(s, big(600)).await.unwrap();
    }
    assert_eq!(
        h.driver.count(Op::Create),
        6,
        "three warm ships, then three new ones"
    );
    settle_and_check(&h, "pool turned off").await;
    assert_eq!(h.driver.containers().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_other_default_limits_replaces_the_warm_ships() {
    let mut h = Harness::new(&[("WARM_POOL_SIZE", "2"), ("DEFAULT_SHIP_MEMORY", "512m")]).await;
    let old = warm_ready(&h, 2).await;
    h.settings.retain(|(k, _)| k != "DEFAULT_SHIP_MEMORY");
    h.settings
        .push(("DEFAULT_SHIP_MEMORY".into(), "256m".into()));
    h.restart().await;
    // The ships made with 512m are removed at start-up; the pool refills with 256m ones.
    let new = warm_ready(&h, 2).await;
    assert!(
        new.is_disjoint(&old),
        "old warm ships kept: {old:?} {new:?}"
    );
    let ship = h.service.create_ship("s", req(600)).await.unwrap();
    assert!(new.contains(&ship.id));
    let spec = h
        .driver
        .spec_of(ship.container_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(spec.memory_bytes, Some(256 * 1024 * 1024));
    settled(&h, 2, "restart with other default limits").await;
    assert_eq!(h.driver.containers().len(), 3);
}
