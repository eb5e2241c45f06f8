//! End to end with Podman: the real `bay-server` binary with `CONTAINER_DRIVER=podman-host`
//! against the Podman API service `cargo xtask test` starts (`BAY_TEST_PODMAN_SOCKET`, else
//! the rootful `/run/podman/podman.sock`), running shell and Python in a ship, restoring it
//! with its files and deleting it permanently. Fails (never skips) when Podman is missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{Api, Bay, Engine};

pub(crate) fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the podman CLI runs (cargo xtask test installs it)")
}

/// A `bay-server` with `podman-host` on the socket `cargo xtask test` prepares.
fn start_podman_bay() -> Bay {
    let socket = std::env::var_os("BAY_TEST_PODMAN_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock"));
    assert!(
        socket.exists(),
        "the podman socket {} is missing: run this test with `cargo xtask test` (or `cargo \
         xtask with-podman -- cargo nextest run …`)",
        socket.display()
    );
    // The small image: this test runs shell and plain Python, and `cargo xtask test` loads
    // only `ship:slim` into Podman's store.
    let image = std::env::var("BAY_SHIP_SLIM_IMAGE").unwrap_or_else(|_| "ship:slim".to_owned());
    let socket = socket.to_str().expect("a UTF-8 socket path");
    Bay::start_with(
        Engine::Podman,
        "e2e-podman",
        &image,
        &[
            ("CONTAINER_DRIVER", "podman-host"),
            ("PODMAN_SOCKET", socket),
            ("MAX_SHIP_NUM", "2"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_host_runs_shell_and_python_in_a_ship() {
    let bay = start_podman_bay();
    let api = Api::new(&bay.url);

    let ship = api.create_small_ship("alice").await;
    let id = ship["id"].as_str().unwrap().to_owned();
    let cid = ship["container_id"].as_str().unwrap().to_owned();
    assert!(
        podman(&["container", "exists", &cid]).status.success(),
        "the ship runs in podman, not docker"
    );

    api.shell_and_python(&id, "alice").await;

    // Soft delete, restore with the files, permanent delete.
    api.delete(&format!("/ship/{id}")).await;
    assert!(!podman(&["container", "exists", &cid]).status.success());
    api.start(&id, "alice").await;
    api.note_survived(&id, "alice").await;
    api.delete(&format!("/ship/{id}/permanent")).await;
    for v in bay_core::engine::volume_names(&id) {
        assert!(
            !podman(&["volume", "exists", &v]).status.success(),
            "{v} removed"
        );
    }
}
