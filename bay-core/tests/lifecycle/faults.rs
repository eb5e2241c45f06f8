//! Fault injection (issue 8): engine faults on every driver call, callers that go away at every
//! driver call and after any delay, crashes and panics in the middle of an operation,
//! concurrent deletes. After each scenario the service settles (operations in flight end, the
//! status checker runs once) and [`check_invariants`] holds:
//!
//! * the slots held are exactly the ships RUNNING, or CREATING with an owner;
//! * no record is CREATING without an owner;
//! * every container and every piece of data (the FakeDriver's state) belongs to a record, a
//!   RUNNING ship's container exists and no other ship has one;
//! * nobody waits in the admission queue;
//! * warm-pool ships (counted with the others above) are never listed, never STOPPED, have no
//!   session, and there are at most `WARM_POOL_SIZE` of them.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use bay_core::Error;
use bay_core::driver::DriverError;
use bay_core::model::ShipStatus;
use bay_core::service::CreateShip;
use bay_core::testing::Op;
use serde_json::json;

use crate::harness::{Harness, eventually};

fn req(ttl: i64) -> CreateShip {
    CreateShip::with_ttl(ttl)
}

/// Lets every lifecycle operation in flight end (they run without their callers), runs the
/// status checker once, then checks the invariants.
pub async fn settle_and_check(h: &Harness, scenario: &str) {
    let idle = eventually(Duration::from_secs(15), || async {
        h.service.diagnostics().operations == 0
    })
    .await;
    assert!(
        idle,
        "{scenario}: operations still in flight: {:?}",
        h.service.diagnostics()
    );
    h.service.check_containers().await;
    check_invariants(h, scenario).await;
}

pub async fn check_invariants(h: &Harness, scenario: &str) {
    let d = h.service.diagnostics();
    let mut ships = h.service.list_ships().await.unwrap();
    let warm = h.service.list_warm_ships().await.unwrap();
    // Warm-pool ships: never listed, never a session's, at most WARM_POOL_SIZE of them.
    let pool_size = usize::try_from(h.service.config().warm_pool_size).unwrap();
    assert!(
        warm.len() <= pool_size,
        "{scenario}: {} warm ships for a pool of {pool_size}",
        warm.len()
    );
    for w in &warm {
        assert!(
            !ships.iter().any(|s| s.id == w.id),
            "{scenario}: warm ship {} is listed",
            w.id
        );
        assert!(
            w.status != ShipStatus::Stopped,
            "{scenario}: warm ship {} is STOPPED",
            w.id
        );
        let sessions = h.service.list_sessions().await.unwrap();
        assert!(
            !sessions.iter().any(|r| r.ship_id == w.id),
            "{scenario}: warm ship {} has a session",
            w.id
        );
    }
    ships.extend(warm);
    let owned: BTreeSet<&str> = d.owned.iter().map(String::as_str).collect();
    let ids: BTreeSet<&str> = ships.iter().map(|s| s.id.as_str()).collect();
    let expected: BTreeSet<&str> = ships
        .iter()
        .filter(|s| {
            s.status == ShipStatus::Running
                || (s.status == ShipStatus::Creating && owned.contains(s.id.as_str()))
        })
        .map(|s| s.id.as_str())
        .collect();
    let slots: BTreeSet<&str> = d.slots.iter().map(String::as_str).collect();
    assert_eq!(
        slots, expected,
        "{scenario}: slots held must be the RUNNING and owned CREATING ships; ships {ships:#?}"
    );
    for s in &ships {
        assert!(
            s.status != ShipStatus::Creating || owned.contains(s.id.as_str()),
            "{scenario}: ship {} is CREATING without an owner",
            s.id
        );
    }
    let containers = h.driver.containers();
    for c in &containers {
        assert!(
            ids.contains(c.ship_id.as_str()),
            "{scenario}: container {} of ship {} has no record",
            c.container_id,
            c.ship_id
        );
        let ship = ships.iter().find(|s| s.id == c.ship_id).unwrap();
        assert!(
            ship.status != ShipStatus::Stopped,
            "{scenario}: stopped ship {} still has container {}",
            ship.id,
            c.container_id
        );
    }
    for s in ships.iter().filter(|s| s.status == ShipStatus::Running) {
        let cid = s.container_id.as_deref().unwrap();
        assert!(
            containers.iter().any(|c| c.container_id == cid),
            "{scenario}: running ship {} lost its container",
            s.id
        );
    }
    for data in h.driver.data() {
        assert!(
            ids.contains(data.as_str()),
            "{scenario}: data of ship {data} has no record"
        );
    }
    assert_eq!(d.waiting, 0, "{scenario}: requests left in the slot queue");
}

/// Removes every ship permanently and checks that nothing is left in the engine.
async fn delete_everything(h: &Harness, scenario: &str) {
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
    assert!(
        h.driver.containers().is_empty(),
        "{scenario}: containers left"
    );
    assert!(h.driver.data().is_empty(), "{scenario}: data left");
    assert!(
        h.service.diagnostics().slots.is_empty(),
        "{scenario}: slots left"
    );
}

/// Awaits `fut` for at most `limit`, then drops it (a client that gives up).
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

#[derive(Debug, Clone)]
enum Fault {
    Fails(DriverError),
    Hangs,
}

// ---------------------------------------------------------------------------------------------
// Engine faults on every driver call

#[tokio::test(flavor = "multi_thread")]
async fn every_engine_fault_on_every_driver_call_leaves_nothing_unaccounted() {
    let faults = [
        Fault::Fails(DriverError::Engine("engine answered 500".into())),
        Fault::Fails(DriverError::Unavailable("engine timed out".into())),
        Fault::Fails(DriverError::NotFound("thing".into())),
        Fault::Hangs,
    ];
    let ops = [
        Op::Create,
        Op::Stop,
        Op::DataExists,
        Op::IsRunning,
        Op::DeleteData,
        Op::ListManaged,
        Op::Logs,
    ];
    for op in ops {
        for fault in &faults {
            let scenario = format!("{op:?} {fault:?}");
            let h =
                Harness::new(&[("MAX_SHIP_NUM", "3"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
            let a = h.service.create_ship("a", req(600)).await.unwrap();
            let b = h.service.create_ship("b", req(600)).await.unwrap();
            h.service.stop_ship(&b.id).await.unwrap();
            match fault {
                Fault::Fails(e) => h.driver.fail(op, e.clone(), None),
                Fault::Hangs => h.driver.gate(op),
            }
            // Every operation once, each by a client that gives up after 150 ms.
            let t = Duration::from_millis(150);
            let _ = within(t, h.service.create_ship("c", req(600))).await;
            let _ = within(t, h.service.create_ship("b", req(600))).await;
            let _ = within(t, h.service.create_ship("a", req(600))).await;
            let _ = within(t, h.service.ship_logs(&a.id, 10)).await;
            let _ = within(t, h.service.stop_ship(&a.id)).await;
            let _ = within(t, h.service.start_ship(&a.id, "a", Some(600))).await;
            let _ = within(t, h.service.delete_ship(&b.id)).await;
            let _ = within(t, h.service.check_containers()).await;
            h.driver.heal(op);
            settle_and_check(&h, &scenario).await;
            delete_everything(&h, &scenario).await;
            h.service.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Callers that go away

/// An operation whose caller is dropped while the operation waits in `gate`.
struct Cut {
    name: &'static str,
    gate: Op,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_dropped_at_every_driver_call_does_not_stop_the_operation() {
    let cuts = [
        Cut {
            name: "create new",
            gate: Op::Create,
        },
        Cut {
            name: "create reuse",
            gate: Op::IsRunning,
        },
        Cut {
            name: "create restore",
            gate: Op::DataExists,
        },
        Cut {
            name: "create restore",
            gate: Op::Create,
        },
        Cut {
            name: "start",
            gate: Op::Create,
        },
        Cut {
            name: "stop",
            gate: Op::Stop,
        },
        Cut {
            name: "delete",
            gate: Op::ListManaged,
        },
        Cut {
            name: "delete",
            gate: Op::Stop,
        },
        Cut {
            name: "delete",
            gate: Op::DeleteData,
        },
    ];
    for cut in cuts {
        let scenario = format!("{} cut at {:?}", cut.name, cut.gate);
        let h = Harness::new(&[]).await;
        let ship = h.service.create_ship("s", req(600)).await.unwrap();
        if matches!(cut.name, "create restore" | "start") {
            h.service.stop_ship(&ship.id).await.unwrap();
        }
        h.driver.gate(cut.gate);
        let service = h.service.clone();
        let id = ship.id.clone();
        let name = cut.name;
        let caller = tokio::spawn(async move {
            match name {
                "create new" => service
                    .create_ship(
                        "s",
                        CreateShip {
                            force_create: true,
                            ..req(600)
                        },
                    )
                    .await
                    .map(drop),
                "create reuse" | "create restore" => {
                    service.create_ship("s", req(900)).await.map(drop)
                }
                "start" => service.start_ship(&id, "s", Some(900)).await.map(drop),
                "stop" => service.stop_ship(&id).await,
                "delete" => service.delete_ship(&id).await,
                _ => unreachable!(),
            }
        });
        h.driver.wait_at_gate(cut.gate, 1).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled(), "{scenario}");
        h.driver.open(cut.gate);
        settle_and_check(&h, &scenario).await;
        // The operation finished without its caller.
        let ships = h.service.list_ships().await.unwrap();
        match cut.name {
            "create new" => {
                assert_eq!(ships.len(), 2, "{scenario}: the new ship exists");
                assert!(
                    ships.iter().all(|s| s.status == ShipStatus::Running),
                    "{scenario}"
                );
            }
            "create reuse" => {
                assert!(
                    h.service.get_ship(&ship.id).await.unwrap().ttl > 600,
                    "{scenario}: the grant happened"
                );
            }
            "create restore" | "start" => {
                assert_eq!(
                    h.status(&ship.id).await,
                    ShipStatus::Running,
                    "{scenario}: the restore finished"
                );
                assert!(
                    h.service
                        .get_session("s", Some(&ship.id))
                        .await
                        .unwrap()
                        .is_active,
                    "{scenario}"
                );
            }
            "stop" => assert_eq!(h.status(&ship.id).await, ShipStatus::Stopped),
            "delete" => assert!(ships.is_empty(), "{scenario}: the delete finished"),
            _ => unreachable!(),
        }
        delete_everything(&h, &scenario).await;
        h.service.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_that_give_up_after_any_delay_leave_nothing_unaccounted() {
    let h = Harness::new(&[]).await;
    for op in [Op::Create, Op::Stop, Op::DeleteData, Op::ListManaged] {
        h.driver.delay(op, Duration::from_millis(3));
    }
    for (i, ms) in [0u64, 1, 2, 3, 5, 8, 13, 21, 34].into_iter().enumerate() {
        let limit = Duration::from_millis(ms);
        let session = format!("s{i}");
        let _ = within(limit, h.service.create_ship(&session, req(600))).await;
        assert!(
            eventually(Duration::from_secs(5), || async {
                h.service.diagnostics().operations == 0
            })
            .await
        );
        let ship = h
            .service
            .get_session(&session, None)
            .await
            .expect("the create finished without its caller");
        let _ = within(limit, h.service.stop_ship(&ship.ship_id)).await;
        let _ = within(limit, h.service.create_ship(&session, req(600))).await;
        let _ = within(limit, h.service.start_ship(&ship.ship_id, &session, None)).await;
        let _ = within(limit, h.service.delete_ship(&ship.ship_id)).await;
        settle_and_check(&h, &format!("gave up after {ms} ms")).await;
    }
    // Dropped after a number of polls rather than a delay: the first poll already hands the
    // work to the service.
    for polls in 0..4 {
        let session = format!("p{polls}");
        {
            let mut fut = std::pin::pin!(h.service.create_ship(&session, req(600)));
            for _ in 0..polls {
                let _ = futures::poll!(fut.as_mut());
                tokio::task::yield_now().await;
            }
        }
        settle_and_check(&h, &format!("dropped after {polls} polls")).await;
        let got = h.service.get_session(&session, None).await;
        assert_eq!(got.is_ok(), polls > 0, "polled {polls} times: {got:?}");
    }
    delete_everything(&h, "delays").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_creates_finish_and_their_slots_come_back_with_a_delete() {
    // The scenario: MAX_SHIP_NUM=2, reject, two clients that give up after 50 ms.
    let h = Harness::new(&[("MAX_SHIP_NUM", "2"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    h.driver.delay(Op::Create, Duration::from_millis(200));
    for s in ["gone-1", "gone-2"] {
        assert!(
            within(
                Duration::from_millis(50),
                h.service.create_ship(s, req(600))
            )
            .await
            .is_none()
        );
    }
    settle_and_check(&h, "abandoned creates").await;
    let ships = h.service.list_ships().await.unwrap();
    assert_eq!(ships.len(), 2);
    assert!(
        ships.iter().all(|s| s.status == ShipStatus::Running),
        "abandoned creates are finished by the service, not left CREATING: {ships:?}"
    );
    // Both slots are legitimately taken by running ships...
    assert!(matches!(
        h.service.create_ship("other", req(60)).await,
        Err(Error::ShipLimitReached { .. })
    ));
    // ...and a permanent delete gives one back at once.
    h.service.delete_ship(&ships[0].id).await.unwrap();
    let other = h.service.create_ship("other", req(60)).await.unwrap();
    assert_eq!(other.status, ShipStatus::Running);
    settle_and_check(&h, "after the delete").await;
    delete_everything(&h, "abandoned creates").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_leaves_the_slot_queue_takes_nothing_with_it() {
    let h = Harness::new(&[
        ("MAX_SHIP_NUM", "1"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "wait"),
        ("MAX_SHIP_WAIT_SECONDS", "30"),
    ])
    .await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let b = h.service.create_ship("b", req(600));
    assert!(within(Duration::from_millis(200), b).await.is_none());
    assert!(
        eventually(Duration::from_secs(2), || async {
            h.service.diagnostics().waiting == 0
        })
        .await,
        "the queue is left"
    );
    h.service.stop_ship(&a.id).await.unwrap();
    settle_and_check(&h, "left the queue").await;
    assert!(
        h.service.get_session("b", None).await.is_err(),
        "a request that left the queue makes no ship"
    );
    assert_eq!(h.service.diagnostics().slots, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Crashes, panics and shutdown in the middle of an operation

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_driver_call_is_reconciled_at_start_up() {
    for (name, gate) in [
        ("create new", Op::Create),
        ("restore", Op::Create),
        ("stop", Op::Stop),
        ("delete", Op::Stop),
        ("delete", Op::DeleteData),
    ] {
        let scenario = format!("crash during {name} at {gate:?}");
        let mut h = Harness::new(&[]).await;
        let ship = h.service.create_ship("s", req(600)).await.unwrap();
        if name == "restore" {
            h.service.stop_ship(&ship.id).await.unwrap();
        }
        h.driver.gate(gate);
        let service = h.service.clone();
        let id = ship.id.clone();
        let op = tokio::spawn(async move {
            match name {
                "create new" => service
                    .create_ship(
                        "s",
                        CreateShip {
                            force_create: true,
                            ..req(600)
                        },
                    )
                    .await
                    .map(drop),
                "restore" => service.start_ship(&id, "s", None).await.map(drop),
                "stop" => service.stop_ship(&id).await,
                "delete" => service.delete_ship(&id).await,
                _ => unreachable!(),
            }
        });
        h.driver.wait_at_gate(gate, 1).await;
        h.service.crash().await;
        assert!(op.await.unwrap().is_err(), "{scenario}: cut short");
        h.driver.open(gate);
        h.start_again().await;
        check_invariants(&h, &scenario).await;
        match name {
            "create new" => assert_eq!(
                h.service.list_ships().await.unwrap().len(),
                1,
                "{scenario}: the never-ready ship is removed"
            ),
            "restore" => assert_eq!(
                h.status(&ship.id).await,
                ShipStatus::Stopped,
                "{scenario}: an interrupted restore becomes STOPPED"
            ),
            // The crash came before the engine removed the container: the ship still runs.
            "stop" => assert_eq!(h.status(&ship.id).await, ShipStatus::Running, "{scenario}"),
            _ => {}
        }
        delete_everything(&h, &scenario).await;
        h.service.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_that_panics_is_reconciled_by_the_periodic_checker() {
    let h = Harness::new(&[("STATUS_CHECK_INTERVAL", "1")]).await;
    let old = h.service.create_ship("old", req(600)).await.unwrap();
    h.service.stop_ship(&old.id).await.unwrap();
    h.driver.panic_on(Op::Create);
    let s = h.service.clone();
    let new = tokio::spawn(async move { s.create_ship("new", req(60)).await });
    assert!(
        new.await.unwrap_err().is_panic(),
        "the panic reaches the caller"
    );
    let s = h.service.clone();
    let id = old.id.clone();
    let restore = tokio::spawn(async move { s.start_ship(&id, "old", None).await });
    assert!(restore.await.unwrap_err().is_panic());
    let creating = h
        .service
        .list_ships()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status == ShipStatus::Creating)
        .count();
    assert_eq!(
        creating, 2,
        "both starts are left CREATING, without an owner"
    );
    assert!(h.service.diagnostics().owned.is_empty());
    h.driver.heal(Op::Create);
    // No restart: the periodic status check finds them.
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.service
                .list_ships()
                .await
                .unwrap()
                .iter()
                .all(|s| s.status != ShipStatus::Creating)
        })
        .await
    );
    check_invariants(&h, "after a panic").await;
    assert_eq!(h.status(&old.id).await, ShipStatus::Stopped);
    assert_eq!(h.service.list_ships().await.unwrap().len(), 1);
    delete_everything(&h, "panic").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_aborts_starts_in_progress_cleanly() {
    let mut h = Harness::new(&[]).await;
    let old = h.service.create_ship("old", req(600)).await.unwrap();
    h.service.stop_ship(&old.id).await.unwrap();
    h.driver.gate(Op::Create);
    let s = h.service.clone();
    let new = tokio::spawn(async move { s.create_ship("new", req(60)).await });
    let s = h.service.clone();
    let id = old.id.clone();
    let restore = tokio::spawn(async move { s.start_ship(&id, "old", None).await });
    h.driver.wait_at_gate(Op::Create, 2).await;
    let started = Instant::now();
    h.service.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting out the grace"
    );
    assert!(new.await.unwrap().is_err());
    assert!(restore.await.unwrap().is_err());
    h.driver.open(Op::Create);
    // Nothing was left for the next start to reconcile.
    let ships = h.service.list_ships().await.unwrap();
    assert_eq!(ships.len(), 1, "the new ship was removed: {ships:?}");
    assert_eq!(ships[0].status, ShipStatus::Stopped);
    assert!(h.driver.containers().is_empty());
    h.start_again().await;
    check_invariants(&h, "after shutdown").await;
}

// ---------------------------------------------------------------------------------------------
// Cleanup that the engine refuses

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ship_whose_cleanup_fails_keeps_its_record_until_the_checker_finishes() {
    for op in [Op::ListManaged, Op::Stop, Op::DeleteData] {
        let scenario = format!("cleanup with {op:?} failing");
        let h = Harness::new(&[("SHIP_HEALTH_CHECK_TIMEOUT", "1")]).await;
        h.ship.set_healthy(false);
        h.driver
            .fail(op, DriverError::Engine("engine answered 500".into()), None);
        let err = h.service.create_ship("s", req(60)).await.unwrap_err();
        assert!(matches!(err, Error::NotReady { .. }), "{scenario}: {err:?}");
        let ships = h.service.list_ships().await.unwrap();
        assert_eq!(ships.len(), 1, "{scenario}: the record stays");
        assert_eq!(ships[0].status, ShipStatus::Creating, "{scenario}");
        assert!(
            !h.service.diagnostics().owned.contains(&ships[0].id),
            "{scenario}"
        );
        assert_eq!(
            h.service.diagnostics().slots,
            vec![ships[0].id.clone()],
            "{scenario}: the slot stays with the record while its container may live"
        );
        // While the engine still refuses, the checker keeps the record.
        h.service.check_containers().await;
        assert_eq!(h.service.list_ships().await.unwrap().len(), 1, "{scenario}");
        h.driver.heal(op);
        h.ship.set_healthy(true);
        settle_and_check(&h, &scenario).await;
        assert!(
            h.service.list_ships().await.unwrap().is_empty(),
            "{scenario}"
        );
        assert!(h.driver.containers().is_empty(), "{scenario}");
        assert!(h.driver.data().is_empty(), "{scenario}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_cannot_be_removed_keeps_its_slot() {
    let h = Harness::new(&[("MAX_SHIP_NUM", "1"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.driver
        .fail(Op::Stop, DriverError::Engine("device busy".into()), None);
    h.service.stop_ship(&a.id).await.unwrap();
    let stopped = h.service.get_ship(&a.id).await.unwrap();
    assert_eq!(stopped.status, ShipStatus::Stopped);
    assert_eq!(stopped.container_id, None, "the view follows §5.8");
    assert_eq!(h.driver.containers().len(), 1, "the container still lives");
    assert!(
        matches!(
            h.service.create_ship("b", req(60)).await,
            Err(Error::ShipLimitReached { .. })
        ),
        "a live container keeps its slot"
    );
    h.service.check_containers().await;
    assert_eq!(h.driver.containers().len(), 1, "still refused");
    h.driver.heal(Op::Stop);
    h.service.check_containers().await;
    assert!(h.driver.containers().is_empty());
    check_invariants(&h, "after the retry").await;
    h.service.create_ship("b", req(60)).await.unwrap();
    // A restore of a ship whose container removal is pending removes it first.
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.driver
        .fail(Op::Stop, DriverError::Engine("device busy".into()), Some(1));
    h.service.stop_ship(&a.id).await.unwrap();
    let restored = h.service.start_ship(&a.id, "a", None).await.unwrap();
    assert_eq!(restored.status, ShipStatus::Running);
    assert_eq!(h.driver.containers().len(), 1);
    assert_eq!(
        h.driver.containers()[0].container_id,
        restored.container_id.unwrap()
    );
    settle_and_check(&h, "restore after a failed removal").await;
}

// ---------------------------------------------------------------------------------------------
// Engine errors that are not "gone"

#[tokio::test(flavor = "multi_thread")]
async fn only_not_found_or_not_running_stops_a_ship() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    for e in [
        DriverError::Engine("inspect answered 500".into()),
        DriverError::Unavailable("socket closed".into()),
        DriverError::NotSupported("?".into()),
    ] {
        h.driver.fail(Op::IsRunning, e.clone(), None);
        h.service.check_containers().await;
        let again = h.service.create_ship("a", req(600)).await.unwrap();
        assert_eq!(again.id, a.id, "{e:?}: reuse counts it as running");
        assert_eq!(h.status(&a.id).await, ShipStatus::Running, "{e:?}");
        assert_eq!(h.driver.count(Op::Stop), 0, "{e:?}");
    }
    h.driver.heal(Op::IsRunning);
    // Not running: stopped.
    h.driver.exit(a.container_id.as_deref().unwrap());
    h.service.check_containers().await;
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
    // Not found: stopped.
    let b = h.service.create_ship("b", req(600)).await.unwrap();
    h.driver.fail(
        Op::IsRunning,
        DriverError::NotFound("container".into()),
        None,
    );
    h.service.check_containers().await;
    assert_eq!(h.status(&b.id).await, ShipStatus::Stopped);
    h.driver.heal(Op::IsRunning);
    settle_and_check(&h, "container checks").await;
}

// ---------------------------------------------------------------------------------------------
// The reaper

#[tokio::test(flavor = "multi_thread")]
async fn the_reaper_sleeps_while_an_overdue_ship_is_busy() {
    let h = Harness::new(&[("SHIP_EXEC_TIMEOUT", "30")]).await;
    let a = h.service.create_ship("a", req(1)).await.unwrap();
    let s = h.service.clone();
    let id = a.id.clone();
    let exec = tokio::spawn(async move {
        s.exec(
            &id,
            "a",
            "shell/exec",
            Some(json!({"command": "long", "sleep_ms": 2600})),
        )
        .await
    });
    // Overdue (ttl 1 s) while the exec runs.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let before = h.service.diagnostics().reaper_passes;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let passes = h.service.diagnostics().reaper_passes - before;
    assert!(
        passes <= 2,
        "the reaper woke {passes} times in 1 s with nothing it could act on"
    );
    assert_eq!(
        h.status(&a.id).await,
        ShipStatus::Running,
        "busy: not reaped"
    );
    exec.await.unwrap().unwrap();
    // The exec's completion touched the relation (deadline = now + 1 s); then it expires.
    assert!(
        eventually(Duration::from_secs(4), || async {
            h.status(&a.id).await == ShipStatus::Stopped
        })
        .await
    );
    settle_and_check(&h, "reaper").await;
}

// ---------------------------------------------------------------------------------------------
// Permanent delete against starts and against itself

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_delete_aborts_a_restore_queued_for_a_slot() {
    for via_create in [false, true] {
        let scenario = if via_create {
            "restore by create"
        } else {
            "restore by start"
        };
        let h = Harness::new(&[
            ("MAX_SHIP_NUM", "1"),
            ("BEHAVIOR_AFTER_MAX_SHIP", "wait"),
            ("MAX_SHIP_WAIT_SECONDS", "60"),
        ])
        .await;
        let a = h.service.create_ship("a", req(600)).await.unwrap();
        h.service.stop_ship(&a.id).await.unwrap();
        h.service.create_ship("b", req(600)).await.unwrap();
        let s = h.service.clone();
        let id = a.id.clone();
        let restore = tokio::spawn(async move {
            if via_create {
                s.create_ship("a", req(600)).await.map(drop)
            } else {
                s.start_ship(&id, "a", None).await.map(drop)
            }
        });
        assert!(
            eventually(Duration::from_secs(2), || async {
                h.service.diagnostics().waiting == 1
            })
            .await,
            "{scenario}: queued"
        );
        let started = Instant::now();
        h.service.delete_ship(&a.id).await.unwrap();
        let err = restore.await.unwrap().unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{scenario}: prompt, not after MAX_SHIP_WAIT_SECONDS"
        );
        assert!(
            matches!(err, Error::DeletedWhileStarting),
            "{scenario}: {err:?}"
        );
        assert!(matches!(
            h.service.get_ship(&a.id).await,
            Err(Error::ShipNotFound)
        ));
        settle_and_check(&h, scenario).await;
        assert!(!h.driver.data().contains(&a.id), "{scenario}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_delete_aborts_a_restore_bringing_its_container_up() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.service.stop_ship(&a.id).await.unwrap();
    h.driver.gate(Op::Create);
    let s = h.service.clone();
    let id = a.id.clone();
    let restore = tokio::spawn(async move { s.start_ship(&id, "a", None).await });
    h.driver.wait_at_gate(Op::Create, 1).await;
    h.service.delete_ship(&a.id).await.unwrap();
    let err = restore.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::DeletedWhileStarting), "{err:?}");
    h.driver.open(Op::Create);
    settle_and_check(&h, "delete during a restore").await;
    assert!(h.service.list_ships().await.unwrap().is_empty());
    assert!(h.driver.containers().is_empty(), "the late container too");
    assert!(h.driver.data().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_unknown_id_after_a_cancelled_create_is_not_found() {
    let h = Harness::new(&[]).await;
    h.driver.gate(Op::Create);
    let s = h.service.clone();
    let create = tokio::spawn(async move { s.create_ship("s", req(60)).await });
    h.driver.wait_at_gate(Op::Create, 1).await;
    create.abort();
    let _ = create.await;
    assert!(matches!(
        h.service.delete_ship("no-such-ship").await,
        Err(Error::ShipNotFound)
    ));
    let id = h.service.list_ships().await.unwrap()[0].id.clone();
    // The create its caller left is still the service's: deleting it aborts it. The engine's
    // late answer (within the grace) names the container, which goes with the ship.
    let (s, del) = (h.service.clone(), id.clone());
    let delete = tokio::spawn(async move { s.delete_ship(&del).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.driver.open(Op::Create);
    delete.await.unwrap().unwrap();
    assert!(h.driver.containers().is_empty());
    assert!(h.driver.data().is_empty());
    assert!(matches!(
        h.service.delete_ship(&id).await,
        Err(Error::ShipNotFound)
    ));
    settle_and_check(&h, "unknown id").await;
    assert!(h.driver.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_permanent_deletes_remove_a_ship_once() {
    let h = Harness::new(&[]).await;
    // A running ship.
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.driver.delay(Op::Stop, Duration::from_millis(20));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, id) = (h.service.clone(), a.id.clone());
        tasks.push(tokio::spawn(async move { s.delete_ship(&id).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::ShipNotFound) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    settle_and_check(&h, "concurrent deletes of a running ship").await;
    // A ship being created.
    h.driver.gate(Op::Create);
    let s = h.service.clone();
    let create = tokio::spawn(async move { s.create_ship("b", req(600)).await });
    h.driver.wait_at_gate(Op::Create, 1).await;
    let id = h.service.list_ships().await.unwrap()[0].id.clone();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, id) = (h.service.clone(), id.clone());
        tasks.push(tokio::spawn(async move { s.delete_ship(&id).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::ShipNotFound) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(ok >= 1);
    assert!(matches!(
        create.await.unwrap(),
        Err(Error::DeletedWhileStarting)
    ));
    h.driver.open(Op::Create);
    settle_and_check(&h, "concurrent deletes of a starting ship").await;
    assert!(h.service.list_ships().await.unwrap().is_empty());
    assert!(h.driver.containers().is_empty());
    assert!(h.driver.data().is_empty());
}
