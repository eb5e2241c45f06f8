//! The engine contract: what every container-engine driver (Docker, Podman) puts on a ship,
//! defined once — names, labels, the agent's environment, the kept capabilities, the limits
//! and the layout of a ship's data.
//!
//! ```
//! use bay_core::engine;
//! assert_eq!(engine::container_name("abc"), "ship-abc");
//! assert_eq!(engine::volume_names("abc"), ["ship-abc-home", "ship-abc-metadata"]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::driver::ShipContainerRequest;

/// Label on every ship container, ship volume and network a driver creates.
pub const LABEL_MANAGED: &str = "bay.managed";
/// Label carrying the ship id.
pub const LABEL_SHIP_ID: &str = "bay.ship-id";
/// Label on the short-lived helper containers that remove host directories.
pub const LABEL_HELPER: &str = "bay.helper";

/// The capabilities a ship keeps (every other one is dropped). The agent runs as root and
/// creates one OS user per session, then runs that session's processes as that user:
///
/// | capability | why the agent needs it (without it, the first call of a session fails) |
/// |---|---|
/// | `CHOWN` | give new files to their owner: the `/etc/shadow` rewrite, homes, workspaces |
/// | `DAC_OVERRIDE` | work inside the 0700 homes of session users |
/// | `FOWNER` | `chmod` directories root does not own (a user's home) |
/// | `SETUID`, `SETGID` | switch to a session user (`setresuid`, `setresgid`, `setgroups`) |
/// | `KILL` | signal session process groups owned by other uids (else timeouts never fire) |
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// The `no-new-privileges` security option, as the Docker-compatible API spells it.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";

/// The default pids limit of a ship container.
pub const PIDS_LIMIT: i64 = 512;

/// Where a ship's home volume or directory is mounted.
pub const HOME_MOUNT: &str = "/home";
/// Where a ship's metadata volume or directory is mounted.
pub const METADATA_MOUNT: &str = "/app/metadata";

/// The container name of a ship.
pub fn container_name(ship_id: &str) -> String {
    format!("ship-{ship_id}")
}

/// The names of a ship's two volumes (home, metadata).
pub fn volume_names(ship_id: &str) -> [String; 2] {
    [
        format!("ship-{ship_id}-home"),
        format!("ship-{ship_id}-metadata"),
    ]
}

/// The agent's environment (`KEY=value`) for a ship listening on `port`.
pub fn agent_env(req: &ShipContainerRequest, port: u16) -> Vec<String> {
    vec![
        format!("SHIP_AUTH_TOKEN={}", req.auth_token),
        format!("SHIP_ID={}", req.ship_id),
        format!("TTL={}", req.ttl),
        format!("SHIP_PORT={port}"),
    ]
}

/// The labels of something a driver creates: `extra`, plus `bay.managed=true` and
/// `bay.ship-id=<id>` when it belongs to a ship.
pub fn labels(extra: &BTreeMap<String, String>, ship_id: Option<&str>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(id) = ship_id {
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_SHIP_ID.to_owned(), id.to_owned());
    }
    labels
}

/// Where a ship's `/home` and `/app/metadata` live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataLayout {
    /// Two named volumes per ship: `ship-<id>-home` and `ship-<id>-metadata` (the default).
    Volumes,
    /// Host directories `<dir>/<id>/home` and `<dir>/<id>/metadata` (`SHIP_DATA_DIR`).
    HostDirs {
        /// The root as Bay sees it (`SHIP_DATA_DIR`): Bay creates and removes directories here.
        local: PathBuf,
        /// The same root as the engine sees it (`SHIP_DATA_HOST_DIR`): used in bind mounts.
        host: PathBuf,
    },
}

impl DataLayout {
    /// The layout `config` asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        match &config.ship_data_dir {
            None => Self::Volumes,
            Some(local) => Self::HostDirs {
                local: local.clone(),
                host: config
                    .ship_data_host_dir
                    .clone()
                    .unwrap_or_else(|| local.clone()),
            },
        }
    }
}

/// Creates `<root>/home` (0755: session users must traverse `/home` to reach their own 0700
/// home) and `<root>/metadata` (0700) under `<root>` (0700). Blocking.
pub fn create_ship_dirs(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let make = |dir: &Path, mode: u32| -> std::io::Result<()> {
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    };
    if let Some(parent) = root.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    make(root, 0o700)?;
    make(&root.join("home"), 0o755)?;
    make(&root.join("metadata"), 0o700)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EffectiveSpec;

    #[test]
    fn env_and_labels() {
        let req = ShipContainerRequest {
            ship_id: "abc".into(),
            spec: EffectiveSpec::default(),
            auth_token: "tok".into(),
            ttl: 60,
        };
        assert_eq!(
            agent_env(&req, 8123),
            [
                "SHIP_AUTH_TOKEN=tok",
                "SHIP_ID=abc",
                "TTL=60",
                "SHIP_PORT=8123"
            ]
        );
        let extra = BTreeMap::from([("bay.test".to_owned(), "x".to_owned())]);
        let l = labels(&extra, Some("abc"));
        assert_eq!(l[LABEL_MANAGED], "true");
        assert_eq!(l[LABEL_SHIP_ID], "abc");
        assert_eq!(l["bay.test"], "x");
        assert_eq!(labels(&extra, None).len(), 1);
    }

    #[test]
    fn ship_dirs_have_their_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ships").join("abc");
        create_ship_dirs(&root).unwrap();
        create_ship_dirs(&root).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("home")), 0o755);
        assert_eq!(mode(&root.join("metadata")), 0o700);
    }
}
