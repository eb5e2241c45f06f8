//! ShipService driven with the FakeDriver and an in-process fake ship agent.

mod faults;
mod harness;
mod pool;

use std::collections::HashSet;
use std::time::Duration;

use bay_core::Error;
use bay_core::driver::DriverError;
use bay_core::model::{ShipStatus, SpecRequest};
use bay_core::service::CreateShip;
use bay_core::testing::Op;
use harness::{Harness, eventually};
use serde_json::json;

fn req(ttl: i64) -> CreateShip {
    CreateShip::with_ttl(ttl)
}

fn shared(ttl: i64, max: i32) -> CreateShip {
    CreateShip {
        max_session_num: max,
        ..CreateShip::with_ttl(ttl)
    }
}

// ---------------------------------------------------------------------------------------------
// The create decision order (bay-api.md §5.4)

#[tokio::test(flavor = "multi_thread")]
async fn new_ship_is_running_with_the_callers_relation_and_a_token() {
    let h = Harness::new(&[]).await;
    let ship = h.service.create_ship("s1", req(600)).await.unwrap();
    assert_eq!(ship.status, ShipStatus::Running);
    assert_eq!(ship.current_session_num, 1);
    assert!(ship.expires_at.is_some());
    assert!((599..=600).contains(&ship.ttl), "ttl {}", ship.ttl);
    let cid = ship.container_id.clone().unwrap();
    let token = h.driver.token_of(&cid).unwrap();
    assert!(
        token.len() >= 32,
        "a random per-ship token is given to the container"
    );
    let session = h.service.get_session("s1", None).await.unwrap();
    assert_eq!(session.ship_id, ship.id);
    assert!(session.is_active);
    assert_eq!(session.initial_ttl, 600);
    // Defaults applied to the effective spec.
    let spec = h.service.effective_spec(&SpecRequest::default());
    assert_eq!(spec.cpus, Some(1.0));
    assert_eq!(spec.memory_bytes, Some(512 << 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn step1_the_session_gets_its_running_ship_back() {
    let h = Harness::new(&[]).await;
    let first = h.service.create_ship("s1", req(60)).await.unwrap();
    let again = h
        .service
        .create_ship(
            "s1",
            CreateShip {
                spec: SpecRequest {
                    cpus: Some(4.0),
                    ..Default::default()
                },
                max_session_num: 5,
                ..req(600)
            },
        )
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.max_session_num, 1,
        "request spec and slots are ignored on reuse"
    );
    assert!(again.ttl > 500, "grant(600) extends the relation");
    assert_eq!(h.driver.count(Op::Create), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn step1_a_vanished_container_stops_the_ship_then_step2_restores_it() {
    let h = Harness::new(&[]).await;
    let first = h.service.create_ship("s1", req(60)).await.unwrap();
    h.driver.vanish(first.container_id.as_deref().unwrap());
    let again = h.service.create_ship("s1", req(60)).await.unwrap();
    assert_eq!(again.id, first.id, "restored with its data");
    assert_ne!(again.container_id, first.container_id);
    assert_eq!(again.status, ShipStatus::Running);
    assert_eq!(h.driver.count(Op::Create), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn step1_an_engine_error_counts_as_running() {
    let h = Harness::new(&[]).await;
    let first = h.service.create_ship("s1", req(60)).await.unwrap();
    h.driver.fail(
        Op::IsRunning,
        DriverError::Unavailable("socket closed".into()),
        None,
    );
    let again = h.service.create_ship("s1", req(60)).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.container_id, first.container_id);
    assert_eq!(h.driver.count(Op::Stop), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn step2_restores_the_stopped_ship_with_its_stored_spec() {
    let h = Harness::new(&[]).await;
    let spec = SpecRequest {
        cpus: Some(2.0),
        memory_bytes: Some(1 << 30),
        disk_bytes: None,
    };
    let first = h
        .service
        .create_ship("s1", CreateShip { spec, ..req(60) })
        .await
        .unwrap();
    h.service.stop_ship(&first.id).await.unwrap();
    let stopped = h.service.get_ship(&first.id).await.unwrap();
    assert_eq!(stopped.status, ShipStatus::Stopped);
    assert_eq!(stopped.container_id, None);
    assert_eq!(stopped.ttl, 0);
    assert_eq!(stopped.current_session_num, 0);
    assert!(!h.service.get_session("s1", None).await.unwrap().is_active);

    let restored = h.service.create_ship("s1", req(120)).await.unwrap();
    assert_eq!(restored.id, first.id);
    assert_eq!(restored.status, ShipStatus::Running);
    let creates: Vec<_> = h
        .driver
        .calls()
        .into_iter()
        .filter(|c| c.op == Op::Create)
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(creates.iter().all(|c| c.arg == first.id));
}

#[tokio::test(flavor = "multi_thread")]
async fn step2_skips_ships_whose_data_is_gone() {
    let h = Harness::new(&[]).await;
    let first = h.service.create_ship("s1", req(60)).await.unwrap();
    h.service.stop_ship(&first.id).await.unwrap();
    h.driver.lose_data(&first.id);
    let next = h.service.create_ship("s1", req(60)).await.unwrap();
    assert_ne!(next.id, first.id);
    // The old relation stays.
    let sessions = h.service.ship_sessions(&first.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn step2_a_restore_failure_is_returned_not_hidden() {
    let h = Harness::new(&[]).await;
    let first = h.service.create_ship("s1", req(60)).await.unwrap();
    h.service.stop_ship(&first.id).await.unwrap();
    h.driver.fail(
        Op::Create,
        DriverError::Engine("no space left".into()),
        Some(1),
    );
    let err = h.service.create_ship("s1", req(60)).await.unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed(m) if m.contains("no space left")),
        "{err:?}"
    );
    assert_eq!(h.status(&first.id).await, ShipStatus::Stopped);
    assert_eq!(
        h.service.list_ships().await.unwrap().len(),
        1,
        "no fall-through to a new ship"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn step3_joins_a_running_ship_with_the_same_slots_and_spec() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", shared(60, 2)).await.unwrap();
    let b = h.service.create_ship("b", shared(120, 2)).await.unwrap();
    assert_eq!(b.id, a.id);
    assert_eq!(b.current_session_num, 2);
    // Full now: a third session gets a new ship.
    let c = h.service.create_ship("c", shared(60, 2)).await.unwrap();
    assert_ne!(c.id, a.id);
    // Another max_session_num or spec never joins.
    let d = h.service.create_ship("d", shared(60, 3)).await.unwrap();
    assert_ne!(d.id, c.id);
    let e = h
        .service
        .create_ship(
            "e",
            CreateShip {
                spec: SpecRequest {
                    cpus: Some(2.0),
                    ..Default::default()
                },
                ..shared(60, 2)
            },
        )
        .await
        .unwrap();
    assert_ne!(e.id, c.id);
    assert_eq!(h.driver.count(Op::Create), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn step3_skips_a_candidate_whose_container_is_gone() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", shared(60, 2)).await.unwrap();
    h.driver.vanish(a.container_id.as_deref().unwrap());
    let b = h.service.create_ship("b", shared(60, 2)).await.unwrap();
    assert_ne!(b.id, a.id);
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn force_create_makes_a_new_ship_and_keeps_other_relations() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("s", req(60)).await.unwrap();
    let b = h
        .service
        .create_ship(
            "s",
            CreateShip {
                force_create: true,
                ..req(60)
            },
        )
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    let all = h.service.list_sessions().await.unwrap();
    assert_eq!(all.iter().filter(|s| s.session_id == "s").count(), 2);
    assert!(
        h.service
            .get_session("s", Some(&a.id))
            .await
            .unwrap()
            .is_active
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn step4_failure_removes_container_data_and_record() {
    let h = Harness::new(&[]).await;
    h.ship.set_healthy(false);
    let err = h.service.create_ship("s", req(60)).await.unwrap_err();
    assert!(matches!(err, Error::NotReady { secs: 2 }), "{err:?}");
    assert!(
        h.ship.health_checks() > 3,
        "readiness is polled, not checked once"
    );
    assert!(h.driver.containers().is_empty());
    assert!(h.driver.data().is_empty());
    assert!(h.service.list_ships().await.unwrap().is_empty());
    h.ship.set_healthy(true);
    h.driver.fail(
        Op::Create,
        DriverError::ImageMissing("image ship:latest not found".into()),
        Some(1),
    );
    let err = h.service.create_ship("s", req(60)).await.unwrap_err();
    assert!(
        matches!(&err, Error::CreateFailed(m) if m.contains("ship:latest")),
        "{err:?}"
    );
    assert!(h.service.list_ships().await.unwrap().is_empty());
    // Slots were given back.
    let ok = h.service.create_ship("s", req(60)).await.unwrap();
    assert_eq!(ok.status, ShipStatus::Running);
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_of_one_session_are_serialised() {
    let h = Harness::new(&[]).await;
    h.driver.delay(Op::Create, Duration::from_millis(100));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let s = h.service.clone();
        tasks.push(tokio::spawn(
            async move { s.create_ship("one", req(60)).await },
        ));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 1, "one session, one ship");
    assert_eq!(h.driver.count(Op::Create), 1);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test(flavor = "multi_thread")]
async fn reject_at_the_limit_gives_a_retry_hint() {
    let h = Harness::new(&[("MAX_SHIP_NUM", "1"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    h.service.create_ship("a", req(100)).await.unwrap();
    let err = h.service.create_ship("b", req(60)).await.unwrap_err();
    match err {
        Error::ShipLimitReached { retry_after_secs } => {
            assert!((99..=100).contains(&retry_after_secs), "{retry_after_secs}")
        }
        other => panic!("expected the limit error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_at_the_limit_gets_the_next_free_slot_or_times_out() {
    let h = Harness::new(&[
        ("MAX_SHIP_NUM", "1"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "wait"),
        ("MAX_SHIP_WAIT_SECONDS", "10"),
    ])
    .await;
    let a = h.service.create_ship("a", req(100)).await.unwrap();
    let s = h.service.clone();
    let waiting = tokio::spawn(async move { s.create_ship("b", req(60)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "b waits for a slot");
    h.service.stop_ship(&a.id).await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("b gets the freed slot")
        .unwrap()
        .unwrap();
    assert_eq!(b.status, ShipStatus::Running);

    let h = Harness::new(&[("MAX_SHIP_NUM", "1"), ("MAX_SHIP_WAIT_SECONDS", "1")]).await;
    h.service.create_ship("a", req(100)).await.unwrap();
    let err = h.service.create_ship("b", req(60)).await.unwrap_err();
    assert!(matches!(err, Error::SlotWaitTimeout), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_never_exceed_ten_containers() {
    let h = Harness::new(&[
        ("MAX_SHIP_NUM", "10"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "reject"),
    ])
    .await;
    h.driver.delay(Op::Create, Duration::from_millis(30));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = h.service.clone();
        tasks.push(tokio::spawn(async move {
            s.create_ship(&format!("session-{i}"), req(600)).await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(ship) => {
                assert_eq!(ship.status, ShipStatus::Running);
                ok += 1;
            }
            Err(Error::ShipLimitReached { .. }) => limited += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(limited, 40);
    assert!(
        h.driver.peak_containers() <= 10,
        "peak {}",
        h.driver.peak_containers()
    );
    assert_eq!(h.driver.containers().len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_waiting_creates_all_get_ships_within_the_limit() {
    let h = Harness::new(&[
        ("MAX_SHIP_NUM", "10"),
        ("BEHAVIOR_AFTER_MAX_SHIP", "wait"),
        ("MAX_SHIP_WAIT_SECONDS", "60"),
    ])
    .await;
    h.driver.delay(Op::Create, Duration::from_millis(20));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = h.service.clone();
        tasks.push(tokio::spawn(async move {
            // ttl 1: every ship expires quickly and frees its slot for the queue.
            s.create_ship(&format!("w-{i}"), req(1)).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let ship = t
            .await
            .unwrap()
            .expect("every waiting request ends in a ship");
        ids.insert(ship.id);
    }
    assert_eq!(ids.len(), 50);
    assert!(
        h.driver.peak_containers() <= 10,
        "peak {}",
        h.driver.peak_containers()
    );
}

// ---------------------------------------------------------------------------------------------
// TTL and deadlines

#[tokio::test(flavor = "multi_thread")]
async fn rescheduled_ttl_stops_at_the_latest_deadline_not_an_earlier_one() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", shared(1, 3)).await.unwrap();
    // Many reschedules: a second session with a longer ttl, and repeated short grants of a.
    h.service.create_ship("b", shared(4, 3)).await.unwrap();
    for _ in 0..5 {
        h.service.create_ship("a", shared(1, 3)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mid = h.service.get_ship(&a.id).await.unwrap();
    assert_eq!(
        mid.status,
        ShipStatus::Running,
        "a's earlier deadline must not stop the ship"
    );
    assert_eq!(
        mid.current_session_num, 1,
        "a's relation expired, b's is active"
    );
    let stopped = eventually(Duration::from_secs(4), || async {
        h.status(&a.id).await == ShipStatus::Stopped
    })
    .await;
    assert!(stopped, "the ship stops at b's deadline");
    assert!(h.driver.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_ttl_moves_the_deadline() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(1)).await.unwrap();
    let extended = h.service.extend_ship_ttl(&a.id, 2).await.unwrap();
    assert!(extended.ttl >= 2, "{}", extended.ttl);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.status(&a.id).await, ShipStatus::Running);
    assert!(
        eventually(Duration::from_secs(3), || async {
            h.status(&a.id).await == ShipStatus::Stopped
        })
        .await
    );
    assert!(matches!(
        h.service.extend_ship_ttl(&a.id, 5).await,
        Err(Error::ShipNotFound)
    ));
    assert!(matches!(
        h.service.extend_ship_ttl(&a.id, 0).await,
        Err(Error::TtlNotPositive)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_frees_the_slot() {
    let h = Harness::new(&[("MAX_SHIP_NUM", "1"), ("BEHAVIOR_AFTER_MAX_SHIP", "reject")]).await;
    let a = h.service.create_ship("a", req(1)).await.unwrap();
    assert!(matches!(
        h.service.create_ship("b", req(1)).await,
        Err(Error::ShipLimitReached { .. })
    ));
    assert!(
        eventually(Duration::from_secs(3), || async {
            h.status(&a.id).await == ShipStatus::Stopped
        })
        .await
    );
    let b = h.service.create_ship("b", req(60)).await.unwrap();
    assert_eq!(b.status, ShipStatus::Running);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operation_in_flight_delays_expiry_until_it_ends() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(1)).await.unwrap();
    let s = h.service.clone();
    let id = a.id.clone();
    let exec = tokio::spawn(async move {
        s.exec(
            &id,
            "a",
            "shell/exec",
            Some(json!({"command": "slow", "sleep_ms": 1800})),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.status(&a.id).await,
        ShipStatus::Running,
        "not stopped under a running exec"
    );
    exec.await.unwrap().unwrap();
    // The exec's completion touched the relation: the ship lives initial_ttl longer.
    let ship = h.service.get_ship(&a.id).await.unwrap();
    assert_eq!(ship.status, ShipStatus::Running);
    assert!(
        eventually(Duration::from_secs(3), || async {
            h.status(&a.id).await == ShipStatus::Stopped
        })
        .await
    );
}

// ---------------------------------------------------------------------------------------------
// Restarts and reconciliation

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_and_state_survive_a_restart() {
    let mut h = Harness::new(&[]).await;
    let long = h.service.create_ship("long", req(600)).await.unwrap();
    let short = h.service.create_ship("short", req(2)).await.unwrap();
    let stopped = h.service.create_ship("stopped", req(600)).await.unwrap();
    h.service.stop_ship(&stopped.id).await.unwrap();
    h.restart().await;

    let after = h.service.get_ship(&long.id).await.unwrap();
    assert_eq!(after.status, ShipStatus::Running);
    assert_eq!(
        after.expires_at, long.expires_at,
        "deadline persisted exactly"
    );
    assert_eq!(after.container_id, long.container_id);
    assert_eq!(h.status(&stopped.id).await, ShipStatus::Stopped);
    // The short ship's deadline is re-armed after the restart and honoured.
    assert!(
        eventually(Duration::from_secs(4), || async {
            h.status(&short.id).await == ShipStatus::Stopped
        })
        .await
    );
    // Relations survived too.
    assert_eq!(
        h.service.get_session("long", None).await.unwrap().ship_id,
        long.id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overdue_ships_are_stopped_at_start_up() {
    let mut h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(1)).await.unwrap();
    h.service.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.restart().await;
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
    assert!(h.driver.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_leftovers_and_orphans_are_cleaned_at_start_up() {
    let mut h = Harness::new(&[]).await;
    // A ship that will be stopped, whose container someone re-creates behind Bay's back.
    let stopped = h.service.create_ship("s", req(600)).await.unwrap();
    h.service.stop_ship(&stopped.id).await.unwrap();
    let orphan = h.driver.plant(&stopped.id);
    // A container of a ship id Bay has no record of: never touched.
    let foreign = h.driver.plant("not-ours");
    // A new ship stuck in CREATING, as a crash leaves it.
    h.ship.set_healthy(false);
    let s1 = h.service.clone();
    let new_create = tokio::spawn(async move { s1.create_ship("crash-new", req(60)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let creating: Vec<_> = h
        .service
        .list_ships()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status == ShipStatus::Creating)
        .collect();
    assert_eq!(creating.len(), 1, "the create waits for readiness");
    let leftover = creating[0].id.clone();
    assert!(h.driver.containers().iter().any(|c| c.ship_id == leftover));
    h.crash_and_restart().await;
    let _ = new_create.await;
    h.ship.set_healthy(true);
    let ships = h.service.list_ships().await.unwrap();
    assert!(ships.iter().all(|s| s.status != ShipStatus::Creating));
    assert!(
        ships.iter().all(|s| s.id != leftover),
        "the never-ready ship is removed"
    );
    let containers = h.driver.containers();
    assert!(
        containers.iter().all(|c| c.container_id != orphan),
        "orphan removed"
    );
    assert!(
        containers.iter().all(|c| c.ship_id != leftover),
        "leftover container removed"
    );
    assert!(
        containers.iter().any(|c| c.container_id == foreign),
        "foreign container untouched"
    );
    assert!(!h.driver.data().contains(&leftover));
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_restore_becomes_stopped_at_start_up() {
    let mut h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.service.stop_ship(&a.id).await.unwrap();
    h.ship.set_healthy(false);
    let s = h.service.clone();
    let id = a.id.clone();
    let start = tokio::spawn(async move { s.start_ship(&id, "a", Some(60)).await });
    assert!(
        eventually(Duration::from_secs(2), || async {
            h.status(&a.id).await == ShipStatus::Creating
        })
        .await
    );
    h.crash_and_restart().await;
    let _ = start.await;
    h.ship.set_healthy(true);
    let ship = h.service.get_ship(&a.id).await.unwrap();
    assert_eq!(
        ship.status,
        ShipStatus::Stopped,
        "kept (with its data) for a later restore"
    );
    assert!(h.driver.data().contains(&a.id));
    assert!(h.driver.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_driver_error_never_stops_a_healthy_ship() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.driver.fail(
        Op::IsRunning,
        DriverError::Unavailable("timeout".into()),
        None,
    );
    h.driver.fail(
        Op::ListManaged,
        DriverError::Unavailable("timeout".into()),
        None,
    );
    for _ in 0..3 {
        h.service.check_containers().await;
    }
    assert_eq!(h.status(&a.id).await, ShipStatus::Running);
    assert_eq!(h.driver.count(Op::Stop), 0);
    // A real "not found" does stop it.
    h.driver.heal(Op::IsRunning);
    h.driver.vanish(a.container_id.as_deref().unwrap());
    h.service.check_containers().await;
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
}

// ---------------------------------------------------------------------------------------------
// Start, stop, permanent delete

#[tokio::test(flavor = "multi_thread")]
async fn start_attaches_the_caller_and_respects_slots() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    assert!(matches!(
        h.service.start_ship(&a.id, "stranger", None).await,
        Err(Error::NoFreeSlot)
    ));
    let same = h.service.start_ship(&a.id, "a", Some(30)).await.unwrap();
    assert_eq!(same.id, a.id);
    h.service.stop_ship(&a.id).await.unwrap();
    let started = h
        .service
        .start_ship(&a.id, "stranger", Some(300))
        .await
        .unwrap();
    assert_eq!(started.status, ShipStatus::Running);
    assert!(
        (299..=300).contains(&started.ttl),
        "deadline = now + ttl: {}",
        started.ttl
    );
    let rel = h
        .service
        .get_session("stranger", Some(&a.id))
        .await
        .unwrap();
    assert!(rel.is_active);
    assert!(matches!(
        h.service.start_ship("nope", "a", None).await,
        Err(Error::ShipNotFoundOrCreating)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_delete_rules() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let mut events = h.service.subscribe();
    h.service.stop_ship(&a.id).await.unwrap();
    assert!(matches!(
        h.service.stop_ship(&a.id).await,
        Err(Error::ShipNotFound)
    ));
    assert!(matches!(
        h.service.stop_ship("unknown").await,
        Err(Error::ShipNotFound)
    ));
    let ev = events
        .try_recv()
        .expect("terminals are told the ship stopped");
    assert_eq!(
        ev,
        bay_core::service::ShipEvent::Stopped {
            ship_id: a.id.clone()
        }
    );
    assert!(h.driver.data().contains(&a.id), "data kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_delete_removes_data_and_can_be_retried() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    h.driver.fail(
        Op::DeleteData,
        DriverError::Engine("volume in use".into()),
        Some(1),
    );
    let err = h.service.delete_ship(&a.id).await.unwrap_err();
    assert!(matches!(&err, Error::DataDeleteFailed(m) if m.contains("volume in use")));
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
    h.service.delete_ship(&a.id).await.unwrap();
    assert!(matches!(
        h.service.get_ship(&a.id).await,
        Err(Error::ShipNotFound)
    ));
    assert!(h.driver.data().is_empty());
    assert!(h.driver.containers().is_empty());
    assert!(h.service.list_sessions().await.unwrap().is_empty());
    assert!(matches!(
        h.service.delete_ship(&a.id).await,
        Err(Error::ShipNotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_delete_aborts_a_start_in_progress() {
    let h = Harness::new(&[("SHIP_HEALTH_CHECK_TIMEOUT", "10")]).await;
    h.ship.set_healthy(false);
    let s = h.service.clone();
    let create = tokio::spawn(async move { s.create_ship("a", req(60)).await });
    let id = loop {
        if let Some(s) = h.service.list_ships().await.unwrap().first() {
            break s.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(matches!(
        h.service.stop_ship(&id).await,
        Err(Error::ShipCreating)
    ));
    assert!(matches!(
        h.service.extend_ship_ttl(&id, 60).await,
        Err(Error::ShipCreating)
    ));
    h.service.delete_ship(&id).await.unwrap();
    let err = create.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::DeletedWhileStarting), "{err:?}");
    assert!(h.service.list_ships().await.unwrap().is_empty());
    assert!(h.driver.containers().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Access and sessions

#[tokio::test(flavor = "multi_thread")]
async fn exec_is_forwarded_with_token_session_and_checks() {
    let h = Harness::new(&[("SHIP_EXEC_TIMEOUT", "1"), ("SHIP_EXEC_TIMEOUT_GRACE", "0")]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let out = h
        .service
        .exec(
            &a.id,
            "a",
            "/shell/exec",
            Some(json!({"command": "echo hi"})),
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], "echo hi");
    let seen = h.ship.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/shell/exec");
    assert_eq!(last.session.as_deref(), Some("a"));
    let token = h
        .driver
        .token_of(a.container_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );

    let out = h
        .service
        .exec(&a.id, "a", "shell/processes", None)
        .await
        .unwrap();
    assert_eq!(out["method"], "GET");
    assert!(matches!(
        h.service.exec(&a.id, "a", "admin/secret", None).await,
        Err(Error::UnsupportedExecType(t)) if t == "admin/secret"
    ));
    assert!(matches!(
        h.service.exec(&a.id, "b", "shell/exec", None).await,
        Err(Error::NoAccess)
    ));
    assert!(matches!(
        h.service.exec("missing", "a", "shell/exec", None).await,
        Err(Error::ShipNotRunning)
    ));
    let err = h
        .service
        .exec(
            &a.id,
            "a",
            "fs/read_file",
            Some(json!({"fail_status": 500})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShipStatus { status: 500, body } if body.contains("boom")),
        "{err:?}"
    );
    // A large error answer is quoted, cut at 4096 bytes, not refused as too large.
    let err = h
        .service
        .exec(
            &a.id,
            "a",
            "fs/read_file",
            Some(json!({"huge_bytes": 70 << 20, "huge_status": 500})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShipStatus { status: 500, body } if body.len() == 4096),
        "{err:?}"
    );
    // The HTTP timeout follows the payload's timeout (here 1 s, no grace).
    let err = h
        .service
        .exec(
            &a.id,
            "a",
            "shell/exec",
            Some(json!({"command": "x", "timeout": 1, "sleep_ms": 2500})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ShipTimeout), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_relation_is_reactivated_by_use() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", shared(1, 2)).await.unwrap();
    h.service.create_ship("b", shared(60, 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!h.service.get_session("a", None).await.unwrap().is_active);
    h.service
        .exec(&a.id, "a", "fs/list_dir", Some(json!({"path": "."})))
        .await
        .unwrap();
    assert!(h.service.get_session("a", None).await.unwrap().is_active);
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_and_download_stream_through() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let out = h
        .service
        .upload(
            &a.id,
            "a",
            "dir/f.bin",
            futures::stream::iter(chunks),
            Some(data.len() as u64),
            true,
        )
        .await
        .unwrap();
    assert_eq!(out["file_path"], "/home/u/workspace/dir/f.bin");
    assert_eq!(h.ship.file("dir/f.bin").unwrap().len(), data.len());

    let dl = h.service.download(&a.id, "a", "dir/f.bin").await.unwrap();
    assert_eq!(dl.content_length, Some(data.len() as u64));
    use futures::TryStreamExt;
    let got: Vec<u8> = dl
        .stream
        .try_fold(Vec::new(), |mut acc, c| async move {
            acc.extend_from_slice(&c);
            Ok(acc)
        })
        .await
        .unwrap();
    assert_eq!(got, data);

    let err = h.service.download(&a.id, "a", "missing").await.unwrap_err();
    assert!(
        matches!(&err, Error::ShipStatus { status: 404, body } if body.contains("File not found"))
    );
    let err = h
        .service
        .upload(
            &a.id,
            "a",
            "/etc/passwd",
            futures::stream::empty(),
            Some(0),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ShipStatus { status: 403, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_last_session_stops_the_ship() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", shared(600, 2)).await.unwrap();
    h.service.create_ship("b", shared(600, 2)).await.unwrap();
    h.service.delete_session("a", None).await.unwrap();
    assert_eq!(h.status(&a.id).await, ShipStatus::Running);
    h.service.delete_session("b", Some(&a.id)).await.unwrap();
    assert_eq!(h.status(&a.id).await, ShipStatus::Stopped);
    assert!(matches!(
        h.service.delete_session("b", None).await,
        Err(Error::SessionNotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_extend_ttl_resets_and_moves_the_deadline() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    let r = h.service.extend_session_ttl("a", 2, None).await.unwrap();
    assert_eq!(r.ship_id, a.id);
    let ship = h.service.get_ship(&a.id).await.unwrap();
    assert!(ship.ttl <= 2, "an absolute reset may shorten: {}", ship.ttl);
    assert!(
        eventually(Duration::from_secs(4), || async {
            h.status(&a.id).await == ShipStatus::Stopped
        })
        .await
    );
    assert!(matches!(
        h.service.extend_session_ttl("a", 5, None).await,
        Err(Error::SessionShipNotRunning)
    ));
    assert!(matches!(
        h.service.extend_session_ttl("nobody", 5, None).await,
        Err(Error::SessionNotFound)
    ));
    assert!(matches!(
        h.service.extend_session_ttl("a", 10_000_000, None).await,
        Err(Error::TtlTooLarge { max: 2_592_000 })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_primary_relation_prefers_running_ships() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("s", req(600)).await.unwrap();
    let b = h
        .service
        .create_ship(
            "s",
            CreateShip {
                force_create: true,
                ..req(600)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        h.service.get_session("s", None).await.unwrap().ship_id,
        b.id
    );
    h.service.stop_ship(&b.id).await.unwrap();
    assert_eq!(
        h.service.get_session("s", None).await.unwrap().ship_id,
        a.id
    );
    let overview = h.service.overview().await.unwrap();
    assert_eq!(overview.ships.total, 2);
    assert_eq!(overview.ships.running, 1);
    assert_eq!(overview.ships.stopped, 1);
    assert_eq!(overview.sessions.total, 2);
    assert_eq!(overview.sessions.active, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_tailed_and_empty_without_a_container() {
    let h = Harness::new(&[]).await;
    let a = h.service.create_ship("a", req(600)).await.unwrap();
    assert_eq!(
        h.service.ship_logs(&a.id, 2).await.unwrap(),
        "log line 2\nlog line 3"
    );
    assert_eq!(h.service.ship_logs("unknown", 10).await.unwrap(), "");
    h.service.stop_ship(&a.id).await.unwrap();
    assert_eq!(h.service.ship_logs(&a.id, 10).await.unwrap(), "");
}
