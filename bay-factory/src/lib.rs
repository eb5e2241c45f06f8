//! bay-factory: turns `CONTAINER_DRIVER` into an `Arc<dyn ContainerDriver>`.
//!
//! Both binaries compose bay-core with a driver through [`build_driver`]: `bay-server` and the
//! `bay` CLI in local mode. This crate pulls in no HTTP server code, so the CLI does not compile
//! one to reach it.
//!
//! Each driver sits behind an additive cargo feature (`docker`, `podman`, `kube`, all on by
//! default; bay-server and bay-cli forward features of the same names). A driver left out of the
//! build gives a clear error, never a panic or a silent fallback.
//!
//! [`db_lock`] is the other thing both binaries share: the advisory lock that keeps two
//! processes from running bay-core's background work on one database.

pub mod db_lock;

use std::sync::Arc;

use bay_core::config::{Config, DriverKind};
use bay_core::driver::ContainerDriver;

/// Why no driver could be built.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// The driver's feature was not compiled in.
    #[error("bay was built without the {0} driver (enable the cargo feature `{1}`)")]
    NotBuilt(&'static str, &'static str),
    /// The driver could not be constructed.
    #[error("cannot set up the {driver} driver: {reason}")]
    Setup {
        /// the driver
        driver: &'static str,
        /// why
        reason: String,
    },
}

/// Builds the driver that `config.container_driver` names.
pub fn build_driver(config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    match config.container_driver {
        DriverKind::Docker | DriverKind::DockerHost => docker(config),
        DriverKind::Podman | DriverKind::PodmanHost => podman(config),
        DriverKind::Kubernetes => kube(config),
    }
}

#[cfg(feature = "docker")]
fn docker(config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    let driver =
        bay_driver_docker::DockerDriver::from_config(config).map_err(|e| FactoryError::Setup {
            driver: config.container_driver.as_str(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(driver))
}

#[cfg(not(feature = "docker"))]
fn docker(_config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    Err(FactoryError::NotBuilt("docker", "docker"))
}

#[cfg(feature = "podman")]
fn podman(config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    let driver =
        bay_driver_podman::PodmanDriver::from_config(config).map_err(|e| FactoryError::Setup {
            driver: config.container_driver.as_str(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(driver))
}

#[cfg(not(feature = "podman"))]
fn podman(_config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    Err(FactoryError::NotBuilt("podman", "podman"))
}

#[cfg(feature = "kube")]
fn kube(config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    let driver =
        bay_driver_kube::KubeDriver::from_config(config).map_err(|e| FactoryError::Setup {
            driver: config.container_driver.as_str(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(driver))
}

#[cfg(not(feature = "kube"))]
fn kube(_config: &Config) -> Result<Arc<dyn ContainerDriver>, FactoryError> {
    Err(FactoryError::NotBuilt("kubernetes", "kube"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "kube")]
    #[test]
    fn kubernetes_builds_the_kube_driver() {
        let config = Config::from_pairs([("CONTAINER_DRIVER", "kubernetes")]).unwrap();
        let driver = build_driver(&config).unwrap();
        assert!(format!("{driver:?}").contains("KubeDriver"), "{driver:?}");
        let bad = Config::from_pairs([
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_IMAGE_PULL_POLICY", "sometimes"),
        ])
        .unwrap();
        let err = build_driver(&bad).unwrap_err().to_string();
        assert!(err.contains("KUBE_IMAGE_PULL_POLICY"), "{err}");
    }

    #[cfg(not(feature = "kube"))]
    #[test]
    fn a_driver_left_out_says_so() {
        let config = Config::from_pairs([("CONTAINER_DRIVER", "kubernetes")]).unwrap();
        let err = build_driver(&config).unwrap_err().to_string();
        assert!(
            err.contains("kubernetes") && err.contains("`kube`"),
            "{err}"
        );
    }

    #[cfg(feature = "podman")]
    #[test]
    fn podman_modes_build_the_podman_driver() {
        for mode in ["podman", "podman-host"] {
            let config = Config::from_pairs([("CONTAINER_DRIVER", mode)]).unwrap();
            let driver = build_driver(&config).unwrap();
            assert!(format!("{driver:?}").contains("PodmanDriver"), "{driver:?}");
        }
    }
}
