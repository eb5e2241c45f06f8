//! `ContainerDriver` for Podman, modes `podman` (ships reached by container IP on
//! `DOCKER_NETWORK`) and `podman-host` (the agent port published on `127.0.0.1`).
//!
//! Two API paths, chosen at initialisation from Podman's version (read through the
//! Docker-compatible API, which every version answers): the libpod API with `podman-api` on
//! Podman 4, the Docker-compatible API with bollard on Podman 5 and later (whose libpod answers
//! `podman-api` cannot read). `PODMAN_API=libpod|compat` forces a path;
//! [`PodmanDriver::api_path`] tells which one is in use. The
//! socket is `PODMAN_SOCKET`, else the rootful `/run/podman/podman.sock`, else the rootless
//! `$XDG_RUNTIME_DIR/podman/podman.sock`. Ships look exactly as with the Docker driver (the
//! engine contract of [`bay_core::engine`]): container `ship-<id>` labelled `bay.managed=true`
//! and `bay.ship-id=<id>`, data in two named volumes or in `SHIP_DATA_DIR`, every capability
//! dropped but [`bay_core::engine::CAPABILITIES`], `no-new-privileges`, a pids limit, the
//! spec's CPU and memory limits — plus explicit `nofile`/`nproc` limits, which rootful
//! Podman's defaults need on machines that cannot raise them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bay_core::config::Config;
//! use bay_core::driver::ContainerDriver;
//! use bay_driver_podman::PodmanDriver;
//!
//! let config = Config::from_pairs([("CONTAINER_DRIVER", "podman-host")])?;
//! let driver: Arc<dyn ContainerDriver> = Arc::new(PodmanDriver::from_config(&config)?);
//! driver.initialize().await?;
//! # Ok(()) }
//! ```

mod common;
mod compat;
mod driver;
mod errors;
mod libpod;
mod raw;
mod settings;

pub use common::image_missing;
pub use driver::{FIRST_COMPAT_ONLY_MAJOR, PodmanDriver, choose_api};
pub use settings::{Mode, PodmanSettings, ROOTFUL_SOCKET, Ulimit};

impl PodmanDriver {
    /// The driver for `config` (`CONTAINER_DRIVER=podman` or `podman-host`).
    pub fn from_config(
        config: &bay_core::config::Config,
    ) -> Result<Self, bay_core::driver::DriverError> {
        Ok(Self::new(PodmanSettings::from_config(config)?))
    }
}
