//! What the Docker driver is configured with, taken from Bay's [`Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use bay_core::config::{Config, DriverKind};
use bay_core::driver::DriverError;
use bay_core::engine::{DataLayout, PIDS_LIMIT};

/// How Bay reaches a ship's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `CONTAINER_DRIVER=docker`: the container's IP on `DOCKER_NETWORK`, nothing published.
    Network,
    /// `CONTAINER_DRIVER=docker-host`: the agent port published on `127.0.0.1` with an
    /// engine-chosen host port; addresses are `127.0.0.1:<port>`.
    Host,
}

/// Everything the driver needs. Build it with [`DockerSettings::from_config`]; tests may adjust
/// the public fields (for example add labels that mark what they create).
///
/// ```
/// use bay_core::config::Config;
/// use bay_core::engine::DataLayout;
/// use bay_driver_docker::{DockerSettings, Mode};
/// let config = Config::from_pairs([("CONTAINER_DRIVER", "docker"), ("DOCKER_NETWORK", "ships")]).unwrap();
/// let settings = DockerSettings::from_config(&config).unwrap();
/// assert_eq!(settings.mode, Mode::Network);
/// assert_eq!(settings.network.as_deref(), Some("ships"));
/// assert_eq!(settings.data, DataLayout::Volumes);
/// ```
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Network or host mode.
    pub mode: Mode,
    /// The ship image (`DOCKER_IMAGE`).
    pub image: String,
    /// The network ships are attached to (`DOCKER_NETWORK`); `None` = the engine's default
    /// bridge.
    pub network: Option<String>,
    /// The agent's port inside the container (`SHIP_CONTAINER_PORT`).
    pub container_port: u16,
    /// Volumes or host directories.
    pub data: DataLayout,
    /// Grace period of `docker stop` before the engine kills the agent.
    pub stop_timeout: Duration,
    /// `pids_limit` of every ship container.
    pub pids_limit: i64,
    /// Timeout of one request to the engine.
    pub request_timeout: Duration,
    /// The engine endpoint (`unix:///…`, `tcp://…`); `None` = bollard's defaults, which honour
    /// `DOCKER_HOST` and fall back to `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Extra labels put on everything the driver creates (containers, volumes, networks,
    /// helper containers), besides `bay.managed` and `bay.ship-id`.
    pub extra_labels: BTreeMap<String, String>,
}

impl DockerSettings {
    /// The settings of `config`; fails unless `CONTAINER_DRIVER` is `docker` or `docker-host`.
    pub fn from_config(config: &Config) -> Result<Self, DriverError> {
        let mode = match config.container_driver {
            DriverKind::Docker => Mode::Network,
            DriverKind::DockerHost => Mode::Host,
            other => {
                return Err(DriverError::NotSupported(format!(
                    "the docker driver cannot run CONTAINER_DRIVER={}",
                    other.as_str()
                )));
            }
        };
        Ok(Self {
            mode,
            image: config.docker_image.clone(),
            network: config.docker_network.clone(),
            container_port: config.ship_container_port,
            data: DataLayout::from_config(config),
            stop_timeout: Duration::from_secs(5),
            pids_limit: PIDS_LIMIT,
            request_timeout: Duration::from_secs(120),
            docker_host: None,
            extra_labels: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mode_and_host_dirs_follow_the_config() {
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "docker-host"),
            ("SHIP_DATA_DIR", "/srv/ships"),
            ("SHIP_DATA_HOST_DIR", "/data/ships"),
            ("DOCKER_NETWORK", ""),
            ("DOCKER_IMAGE", "ship:full"),
            ("SHIP_CONTAINER_PORT", "9000"),
        ])
        .unwrap();
        let s = DockerSettings::from_config(&config).unwrap();
        assert_eq!(s.mode, Mode::Host);
        assert_eq!(s.network, None);
        assert_eq!(s.image, "ship:full");
        assert_eq!(s.container_port, 9000);
        assert_eq!(
            s.data,
            DataLayout::HostDirs {
                local: "/srv/ships".into(),
                host: "/data/ships".into()
            }
        );
    }

    #[test]
    fn host_dir_defaults_to_the_data_dir() {
        let config = Config::from_pairs([("SHIP_DATA_DIR", "/srv/ships")]).unwrap();
        let s = DockerSettings::from_config(&config).unwrap();
        assert_eq!(
            s.data,
            DataLayout::HostDirs {
                local: "/srv/ships".into(),
                host: "/srv/ships".into()
            }
        );
    }

    #[test]
    fn other_drivers_are_refused() {
        let config = Config::from_pairs([("CONTAINER_DRIVER", "podman")]).unwrap();
        let err = DockerSettings::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("podman"), "{err}");
    }
}
