//! What the Podman driver is configured with, taken from Bay's [`Config`], and how it finds
//! Podman's API socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bay_core::config::{Config, DriverKind, PodmanApi};
use bay_core::driver::DriverError;
use bay_core::engine::{DataLayout, PIDS_LIMIT};

/// The rootful Podman socket (`podman system service` as root, or `podman.socket`).
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// How Bay reaches a ship's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `CONTAINER_DRIVER=podman`: the container's IP on `DOCKER_NETWORK`, nothing published.
    Network,
    /// `CONTAINER_DRIVER=podman-host`: the agent port published on `127.0.0.1` with an
    /// engine-chosen host port; addresses are `127.0.0.1:<port>`.
    Host,
}

/// A resource limit set on every ship container (`soft`, `hard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    /// The soft limit.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// Everything the driver needs. Build it with [`PodmanSettings::from_config`]; tests may adjust
/// the public fields (for example add labels that mark what they create).
///
/// ```
/// use bay_core::config::Config;
/// use bay_driver_podman::{Mode, PodmanSettings};
/// let config = Config::from_pairs([
///     ("CONTAINER_DRIVER", "podman-host"),
///     ("PODMAN_SOCKET", "/tmp/podman.sock"),
/// ]).unwrap();
/// let settings = PodmanSettings::from_config(&config).unwrap();
/// assert_eq!(settings.mode, Mode::Host);
/// assert_eq!(settings.socket_candidates, [std::path::PathBuf::from("/tmp/podman.sock")]);
/// ```
#[derive(Debug, Clone)]
pub struct PodmanSettings {
    /// Network or host mode.
    pub mode: Mode,
    /// Which API to speak (`PODMAN_API`): decided from Podman's version (`auto`) or forced.
    pub api: PodmanApi,
    /// The ship image (`DOCKER_IMAGE`); `ship:latest` and `localhost/ship:latest` both work.
    pub image: String,
    /// The network ships are attached to (`DOCKER_NETWORK`); `None` = Podman's default
    /// network (`podman`).
    pub network: Option<String>,
    /// The agent's port inside the container (`SHIP_CONTAINER_PORT`).
    pub container_port: u16,
    /// Volumes or host directories.
    pub data: DataLayout,
    /// Grace period of a stop before Podman kills the agent.
    pub stop_timeout: Duration,
    /// `pids_limit` of every ship container.
    pub pids_limit: i64,
    /// `nofile` of every ship container (rootful Podman's default cannot always be set).
    pub nofile: Ulimit,
    /// `nproc` of every ship container.
    pub nproc: Ulimit,
    /// Timeout of one request to the engine.
    pub request_timeout: Duration,
    /// The sockets tried, in order; the first that exists is used ([`PodmanSettings::from_config`]).
    pub socket_candidates: Vec<PathBuf>,
    /// Extra labels put on everything the driver creates (containers, volumes, networks,
    /// helper containers), besides `bay.managed` and `bay.ship-id`.
    pub extra_labels: BTreeMap<String, String>,
}

impl PodmanSettings {
    /// The settings of `config`; fails unless `CONTAINER_DRIVER` is `podman` or `podman-host`.
    ///
    /// Sockets, in order: `PODMAN_SOCKET` alone when set; else the rootful
    /// `/run/podman/podman.sock`, then the rootless `$XDG_RUNTIME_DIR/podman/podman.sock`.
    pub fn from_config(config: &Config) -> Result<Self, DriverError> {
        let mode = match config.container_driver {
            DriverKind::Podman => Mode::Network,
            DriverKind::PodmanHost => Mode::Host,
            other => {
                return Err(DriverError::NotSupported(format!(
                    "the podman driver cannot run CONTAINER_DRIVER={}",
                    other.as_str()
                )));
            }
        };
        let socket_candidates = match &config.podman_socket {
            Some(s) => vec![PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))],
            None => {
                let mut c = vec![PathBuf::from(ROOTFUL_SOCKET)];
                if let Some(xdg) = &config.xdg_runtime_dir {
                    c.push(xdg.join("podman").join("podman.sock"));
                }
                c
            }
        };
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
        let (nofile, nproc) = ship_ulimits(&limits, &pid_max);
        Ok(Self {
            mode,
            api: config.podman_api,
            image: config.docker_image.clone(),
            network: config.docker_network.clone(),
            container_port: config.ship_container_port,
            data: DataLayout::from_config(config),
            stop_timeout: Duration::from_secs(5),
            pids_limit: PIDS_LIMIT,
            nofile: Ulimit {
                soft: nofile,
                hard: nofile,
            },
            nproc: Ulimit {
                soft: nproc,
                hard: nproc,
            },
            request_timeout: Duration::from_secs(120),
            socket_candidates,
            extra_labels: BTreeMap::new(),
        })
    }

    /// The first socket candidate that exists, or an error naming every path tried.
    pub fn socket(&self) -> Result<&Path, DriverError> {
        self.socket_candidates
            .iter()
            .find(|p| p.exists())
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                let tried: Vec<String> = self
                    .socket_candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                DriverError::Unavailable(format!(
                    "no podman socket found (tried {}): start `podman system service` or set PODMAN_SOCKET",
                    tried.join(", ")
                ))
            })
    }
}

/// The `nofile` and `nproc` limits of every ship, from Bay's own `/proc/self/limits` and
/// `/proc/sys/kernel/pid_max` (pure: unit-tested). Bay's own hard limits are ones the engine can
/// set (it runs under the same kernel, and the engine's runtime cannot raise a limit without
/// `CAP_SYS_RESOURCE`): `nofile` is Bay's hard `Max open files` (capped at 1048576; 1024 when
/// unknown), `nproc` the smaller of Bay's hard `Max processes` and `pid_max` (32768 when both
/// are unknown). `pid_max` alone is not enough: in a container of a recent kernel it is the
/// container's own (4194304 by default) while the engine's limit is the host's.
pub(crate) fn ship_ulimits(limits: &str, pid_max: &str) -> (i64, i64) {
    let nofile = parse_hard(limits, "Max open files").unwrap_or(1024);
    let pid_max = pid_max.trim().parse::<i64>().ok();
    let nproc = match (parse_hard(limits, "Max processes"), pid_max) {
        (Some(a), Some(b)) => a.min(b),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => 32768,
    };
    (nofile, nproc)
}

/// The hard limit of the line `name` of a `/proc/<pid>/limits` text (capped at 1048576; `None`
/// = unlimited or missing).
fn parse_hard(text: &str, name: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let hard = line.trim_start_matches(name).split_whitespace().nth(1)?;
    hard.parse::<i64>().ok().map(|n| n.min(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_tried_in_the_documented_order() {
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "podman"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ])
        .unwrap();
        let s = PodmanSettings::from_config(&config).unwrap();
        assert_eq!(s.mode, Mode::Network);
        assert_eq!(
            s.socket_candidates,
            [
                PathBuf::from("/run/podman/podman.sock"),
                PathBuf::from("/run/user/1000/podman/podman.sock")
            ]
        );
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "podman-host"),
            ("PODMAN_SOCKET", "unix:///tmp/p.sock"),
        ])
        .unwrap();
        let s = PodmanSettings::from_config(&config).unwrap();
        assert_eq!(s.socket_candidates, [PathBuf::from("/tmp/p.sock")]);
        assert_eq!(s.api, PodmanApi::Auto);
        let config =
            Config::from_pairs([("CONTAINER_DRIVER", "podman"), ("PODMAN_API", "libpod")]).unwrap();
        assert_eq!(
            PodmanSettings::from_config(&config).unwrap().api,
            PodmanApi::Libpod
        );
    }

    #[test]
    fn a_missing_socket_names_every_path_tried() {
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "podman"),
            ("XDG_RUNTIME_DIR", "/nonexistent/xdg"),
        ])
        .unwrap();
        let mut s = PodmanSettings::from_config(&config).unwrap();
        s.socket_candidates[0] = PathBuf::from("/nonexistent/rootful.sock");
        let e = s.socket().unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/rootful.sock")
                && text.contains("/nonexistent/xdg/podman/podman.sock")
                && text.contains("PODMAN_SOCKET"),
            "{text}"
        );
    }

    #[test]
    fn other_drivers_are_refused() {
        let config = Config::from_pairs([("CONTAINER_DRIVER", "docker")]).unwrap();
        let err = PodmanSettings::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("docker"), "{err}");
    }

    #[test]
    fn ship_ulimits_are_bays_own_hard_limits_bounded_by_pid_max() {
        let host = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             96362                96362                processes \n\
                    Max open files            1024                 20000                files     \n";
        // On the host: pid_max is the smaller.
        assert_eq!(ship_ulimits(host, "32768\n"), (20000, 32768));
        // In a container (measured: Bay in Podman on kernel 6.18): pid_max is the
        // container's own 4194304, Bay's hard limit is the engine's default (32768).
        let container = "Max processes             32768                32768                processes \n\
                         Max open files            20000                20000                files     \n";
        assert_eq!(ship_ulimits(container, "4194304\n"), (20000, 32768));
        let unlimited = "Max processes  unlimited unlimited processes\n\
                         Max open files  1024 99999999 files\n";
        assert_eq!(ship_ulimits(unlimited, "4194304"), (1 << 20, 4194304));
        assert_eq!(ship_ulimits(unlimited, ""), (1 << 20, 32768));
        assert_eq!(ship_ulimits("", ""), (1024, 32768));
    }
}
