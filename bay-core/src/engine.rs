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

use crate::driver::{DriverError, DriverResult, ShipContainerRequest};

/// Label on every ship container, ship volume and network a driver creates.
pub const LABEL_MANAGED: &str = "bay.managed";
/// Label carrying the ship id.
pub const LABEL_SHIP_ID: &str = "bay.ship-id";
/// Label on the short-lived helper containers that remove host directories.
pub const LABEL_HELPER: &str = "bay.helper";
/// The value of [`LABEL_HELPER`] on the helper that empties a ship's host data directories.
pub const HELPER_RM_SHIP_DATA: &str = "rm-ship-data";
/// Where that helper mounts the ship's host data root (`<dir>/<id>`).
pub const HELPER_DATA_MOUNT: &str = "/data";

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

/// The label filter that lists everything Bay manages (`bay.managed=true`).
pub fn managed_filter() -> String {
    format!("{LABEL_MANAGED}=true")
}

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

/// The variable that carries a ship's bearer token (a Kubernetes driver takes it from a
/// Secret instead of a plain value).
pub const AUTH_TOKEN_ENV: &str = "SHIP_AUTH_TOKEN";

/// The agent's environment (`KEY=value`) for a ship listening on `port`.
pub fn agent_env(req: &ShipContainerRequest, port: u16) -> Vec<String> {
    vec![
        format!("{AUTH_TOKEN_ENV}={}", req.auth_token),
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

/// The labels of a network a driver creates: `extra` plus `bay.managed=true`.
pub fn network_labels(extra: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut labels = self::labels(extra, None);
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    labels
}

/// The labels of the helper container that empties the host data of `ship_id`: those of the
/// ship (so that everything Bay creates is found by `bay.managed`) plus
/// `bay.helper=rm-ship-data` (so that it is not mistaken for a ship, see [`ship_id_of`]).
pub fn helper_labels(extra: &BTreeMap<String, String>, ship_id: &str) -> HashMap<String, String> {
    let mut labels = self::labels(extra, Some(ship_id));
    labels.insert(LABEL_HELPER.to_owned(), HELPER_RM_SHIP_DATA.to_owned());
    labels
}

/// The helper's entrypoint and arguments: empty the mounted `home` and `metadata` as root
/// (the directories themselves, owned by Bay, are removed after).
pub fn helper_command() -> (Vec<String>, Vec<String>) {
    let data = HELPER_DATA_MOUNT;
    (
        vec!["rm".to_owned()],
        vec![
            "-rf".to_owned(),
            "--".to_owned(),
            format!("{data}/home"),
            format!("{data}/metadata"),
        ],
    )
}

/// The ship id of a container with these labels, `None` when it is no ship (no
/// [`LABEL_SHIP_ID`], or a helper: helpers carry the ship id too).
pub fn ship_id_of(labels: &HashMap<String, String>) -> Option<&str> {
    if labels.contains_key(LABEL_HELPER) {
        return None;
    }
    labels.get(LABEL_SHIP_ID).map(String::as_str)
}

/// The bind mounts (source as the engine sees it, target) of a ship whose host data root is
/// `host_root` (`<SHIP_DATA_HOST_DIR>/<id>`).
pub fn host_dir_mounts(host_root: &Path) -> [(String, &'static str); 2] {
    [
        (host_root.join("home").display().to_string(), HOME_MOUNT),
        (
            host_root.join("metadata").display().to_string(),
            METADATA_MOUNT,
        ),
    ]
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

/// Upper bound of the bytes a driver's `get_container_logs` returns (the end is kept).
pub const MAX_LOG_BYTES: usize = 16 << 20;

/// The number of lines a driver asks its engine for: `tail` within 1 ‥ 100000.
pub fn log_tail_lines(tail: u32) -> u32 {
    tail.clamp(1, 100_000)
}

/// The end of a container's output, collected chunk by chunk in bounded memory: at most
/// [`MAX_LOG_BYTES`] are kept (twice that while collecting).
#[derive(Debug, Default)]
pub struct LogTail {
    bytes: Vec<u8>,
}

impl LogTail {
    /// Appends a chunk of output.
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * MAX_LOG_BYTES {
            self.bytes.drain(..self.bytes.len() - MAX_LOG_BYTES);
        }
    }

    /// The last [`MAX_LOG_BYTES`] at most, as text (invalid UTF-8 replaced).
    pub fn into_string(mut self) -> String {
        if self.bytes.len() > MAX_LOG_BYTES {
            self.bytes.drain(..self.bytes.len() - MAX_LOG_BYTES);
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Creates a ship's host data directories `<local>/<ship_id>` ([`create_ship_dirs`]) off the
/// async runtime; the error names the directory.
pub async fn prepare_ship_dirs(local: &Path, ship_id: &str) -> DriverResult<()> {
    let root = local.join(ship_id);
    let r = root.clone();
    tokio::task::spawn_blocking(move || create_ship_dirs(&r))
        .await
        .map_err(std::io::Error::other)
        .and_then(|created| created)
        .map_err(|e| {
            DriverError::Engine(format!(
                "cannot create ship data directory {}: {e}",
                root.display()
            ))
        })
}

/// Whether a ship's host data directory `<local>/<ship_id>` exists.
pub async fn ship_dirs_exist(local: &Path, ship_id: &str) -> DriverResult<bool> {
    let dir = local.join(ship_id);
    tokio::fs::try_exists(&dir)
        .await
        .map_err(|e| DriverError::Engine(format!("cannot check {}: {e}", dir.display())))
}

/// Removes a ship's host data directory `<local>/<ship_id>`; a missing one is fine. When Bay
/// cannot remove it itself (files of session users), `helper` empties it (the driver's root
/// helper container) and Bay removes what is left.
pub async fn remove_ship_dirs<F, Fut>(local: &Path, ship_id: &str, helper: F) -> DriverResult<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = DriverResult<()>>,
{
    let dir = local.join(ship_id);
    let remove = || {
        let d = dir.clone();
        async move {
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d))
                .await
                .map_err(|e| DriverError::Engine(e.to_string()))
        }
    };
    match remove().await? {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            tracing::info!(ship.id = %ship_id, dir = %dir.display(), error = %e,
                "cannot remove the ship data directory myself; using a helper container");
            helper().await?;
            match remove().await? {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(DriverError::Engine(format!(
                        "cannot remove {}: {e}",
                        dir.display()
                    )));
                }
                _ => {}
            }
        }
    }
    tracing::info!(ship.id = %ship_id, dir = %dir.display(), "ship data directory removed");
    Ok(())
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
        assert_eq!(network_labels(&extra)[LABEL_MANAGED], "true");
        assert_eq!(network_labels(&extra).len(), 2);
        assert_eq!(ship_id_of(&l), Some("abc"));
        let h = helper_labels(&extra, "abc");
        assert_eq!(h[LABEL_MANAGED], "true");
        assert_eq!(h[LABEL_SHIP_ID], "abc");
        assert_eq!(h[LABEL_HELPER], HELPER_RM_SHIP_DATA);
        assert_eq!(ship_id_of(&h), None);
        assert_eq!(ship_id_of(&labels(&extra, None)), None);
        assert_eq!(managed_filter(), "bay.managed=true");
    }

    #[test]
    fn helper_and_host_dirs() {
        let (entrypoint, cmd) = helper_command();
        assert_eq!(entrypoint, ["rm"]);
        assert_eq!(cmd, ["-rf", "--", "/data/home", "/data/metadata"]);
        assert_eq!(
            host_dir_mounts(Path::new("/srv/ships/abc")),
            [
                ("/srv/ships/abc/home".to_owned(), "/home"),
                ("/srv/ships/abc/metadata".to_owned(), "/app/metadata"),
            ]
        );
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

    #[test]
    fn log_tails_keep_the_end_within_the_bound() {
        let mut t = LogTail::default();
        t.push(b"first\n");
        t.push(&[b'x'; MAX_LOG_BYTES]);
        t.push(b"\nlast\n");
        let text = t.into_string();
        assert_eq!(text.len(), MAX_LOG_BYTES);
        assert!(text.ends_with("x\nlast\n") && !text.contains("first"));
        let mut t = LogTail::default();
        t.push(b"a\xffb");
        assert_eq!(t.into_string(), "a\u{fffd}b");
        assert_eq!(log_tail_lines(0), 1);
        assert_eq!(log_tail_lines(u32::MAX), 100_000);
    }
}
