//! `ContainerDriver` for Docker, modes `docker` (ships reached by container IP on
//! `DOCKER_NETWORK`) and `docker-host` (the agent port published on `127.0.0.1`), on bollard.
//!
//! Every ship is one container `ship-<id>` labelled `bay.managed=true` and `bay.ship-id=<id>`,
//! with its data in two named volumes (`ship-<id>-home`, `ship-<id>-metadata`) or in host
//! directories (`SHIP_DATA_DIR`). Containers are hardened: every capability dropped but the few
//! the agent needs to manage session users ([`bay_core::engine::CAPABILITIES`]),
//! `no-new-privileges`, a pids limit, and the CPU and memory limits of the ship's effective
//! spec. These names, labels, the agent's environment and the limits are the engine contract
//! of [`bay_core::engine`], shared with the Podman driver. See the crate's README
//! for modes, data layout, hardening and disk quotas.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bay_core::config::Config;
//! use bay_core::driver::ContainerDriver;
//! use bay_driver_docker::DockerDriver;
//!
//! let config = Config::from_pairs([("CONTAINER_DRIVER", "docker-host")])?;
//! let driver: Arc<dyn ContainerDriver> = Arc::new(DockerDriver::from_config(&config)?);
//! driver.initialize().await?;
//! # Ok(()) }
//! ```

mod driver;
mod errors;
mod settings;

pub use driver::{DockerDriver, ICC_OPTION, image_missing};
pub use settings::{DockerSettings, Mode};

impl DockerDriver {
    /// The driver for `config` (`CONTAINER_DRIVER=docker` or `docker-host`).
    pub fn from_config(
        config: &bay_core::config::Config,
    ) -> Result<Self, bay_core::driver::DriverError> {
        Ok(Self::new(DockerSettings::from_config(config)?))
    }
}
