//! [`PodmanDriver`]: reads Podman's version on the first connection and drives it through the
//! libpod API (Podman 4, [`crate::libpod`]) or the Docker-compatible API (Podman 5 and later,
//! [`crate::compat`]), unless `PODMAN_API` forces a path.

use async_trait::async_trait;
use bay_core::config::PodmanApi;
use bay_core::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};
use tracing::info;

use crate::compat::CompatDriver;
use crate::libpod::LibpodDriver;
use crate::settings::PodmanSettings;

/// The first Podman major version whose libpod answers `podman-api` cannot read.
pub const FIRST_COMPAT_ONLY_MAJOR: u64 = 5;

/// The Podman driver (`CONTAINER_DRIVER=podman` or `podman-host`).
///
/// Connects lazily over the socket [`PodmanSettings::socket`] finds (and eagerly in
/// [`ContainerDriver::initialize`]); the first connection reads Podman's version through the
/// Docker-compatible API and chooses the API path with [`choose_api`].
#[derive(Debug)]
pub struct PodmanDriver {
    settings: PodmanSettings,
    compat: CompatDriver,
    chosen: tokio::sync::OnceCell<Chosen>,
}

#[derive(Debug)]
enum Chosen {
    Compat,
    Libpod(Box<LibpodDriver>),
}

/// The API path for Podman `version` when `PODMAN_API` is `wanted`: libpod below Podman 5,
/// the compatible API from 5 on (`auto`); a forced `compat` always works; a forced `libpod`
/// against Podman 5 or later (or a version that cannot be read) is refused.
pub fn choose_api(wanted: PodmanApi, version: &str) -> DriverResult<PodmanApi> {
    let major = version
        .trim()
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .next()
        .and_then(|m| m.parse::<u64>().ok());
    match (wanted, major) {
        (PodmanApi::Compat, _) => Ok(PodmanApi::Compat),
        (PodmanApi::Auto, Some(m)) if m < FIRST_COMPAT_ONLY_MAJOR => Ok(PodmanApi::Libpod),
        (PodmanApi::Auto, _) => Ok(PodmanApi::Compat),
        (PodmanApi::Libpod, Some(m)) if m < FIRST_COMPAT_ONLY_MAJOR => Ok(PodmanApi::Libpod),
        (PodmanApi::Libpod, _) => Err(DriverError::NotSupported(format!(
            "PODMAN_API=libpod cannot drive Podman {version}: the libpod client (podman-api) \
             reads Podman 4's libpod API only; use PODMAN_API=compat or auto"
        ))),
    }
}

impl PodmanDriver {
    /// A driver with these settings; nothing is contacted until the first call.
    pub fn new(settings: PodmanSettings) -> Self {
        Self {
            compat: CompatDriver::new(settings.clone()),
            settings,
            chosen: tokio::sync::OnceCell::new(),
        }
    }

    /// The settings the driver runs with.
    pub fn settings(&self) -> &PodmanSettings {
        &self.settings
    }

    /// Podman's version, once connected (`4.3.1`).
    pub fn podman_version(&self) -> Option<&str> {
        self.compat.podman_version()
    }

    /// The API path in use (`Libpod` or `Compat`), once chosen (by [`ContainerDriver::initialize`]
    /// or the first call); `None` before.
    pub fn api_path(&self) -> Option<PodmanApi> {
        self.chosen.get().map(|c| match c {
            Chosen::Compat => PodmanApi::Compat,
            Chosen::Libpod(_) => PodmanApi::Libpod,
        })
    }

    /// The driver of the chosen path (connecting and choosing on first use).
    async fn path(&self) -> DriverResult<&dyn ContainerDriver> {
        let chosen = self
            .chosen
            .get_or_try_init(|| async {
                // The compatible API answers on every version: read the version there.
                self.compat.client().await?;
                let version = self.compat.podman_version().unwrap_or_default().to_owned();
                let api = choose_api(self.settings.api, &version)?;
                info!(
                    podman.version = %version,
                    podman.api = api.as_str(),
                    setting = %format!("PODMAN_API={}", self.settings.api.as_str()),
                    "podman API path chosen"
                );
                Ok::<_, DriverError>(match api {
                    PodmanApi::Libpod => {
                        Chosen::Libpod(Box::new(LibpodDriver::connect(self.settings.clone())?))
                    }
                    _ => Chosen::Compat,
                })
            })
            .await?;
        Ok(match chosen {
            Chosen::Compat => &self.compat,
            Chosen::Libpod(l) => l.as_ref(),
        })
    }
}

#[async_trait]
impl ContainerDriver for PodmanDriver {
    async fn initialize(&self) -> DriverResult<()> {
        self.path().await?.initialize().await
    }

    async fn close(&self) -> DriverResult<()> {
        if let Some(Chosen::Libpod(l)) = self.chosen.get() {
            l.close().await?;
        }
        self.compat.close().await
    }

    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo> {
        self.path().await?.create_ship_container(req).await
    }

    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()> {
        self.path().await?.stop_ship_container(container_id).await
    }

    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool> {
        self.path().await?.ship_data_exists(ship_id).await
    }

    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String> {
        self.path()
            .await?
            .get_container_logs(container_id, tail)
            .await
    }

    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool> {
        self.path().await?.is_container_running(container_id).await
    }

    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()> {
        self.path().await?.delete_ship_data(ship_id).await
    }

    async fn list_managed(&self) -> DriverResult<Vec<ManagedContainer>> {
        self.path().await?.list_managed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_4_gets_libpod_and_podman_5_the_compatible_api() {
        assert_eq!(
            choose_api(PodmanApi::Auto, "4.3.1").unwrap(),
            PodmanApi::Libpod
        );
        assert_eq!(
            choose_api(PodmanApi::Auto, "5.0.0").unwrap(),
            PodmanApi::Compat
        );
        assert_eq!(
            choose_api(PodmanApi::Auto, "5.2.0-dev").unwrap(),
            PodmanApi::Compat
        );
        assert_eq!(
            choose_api(PodmanApi::Auto, "garbage").unwrap(),
            PodmanApi::Compat
        );
        assert_eq!(
            choose_api(PodmanApi::Compat, "4.3.1").unwrap(),
            PodmanApi::Compat
        );
        assert_eq!(
            choose_api(PodmanApi::Libpod, "4.9.3").unwrap(),
            PodmanApi::Libpod
        );
    }

    #[test]
    fn forcing_libpod_against_podman_5_is_refused() {
        for v in ["5.0.0", "6.1.2", "?"] {
            let e = choose_api(PodmanApi::Libpod, v).unwrap_err();
            assert!(matches!(e, DriverError::NotSupported(_)), "{e:?}");
            assert!(!e.is_transient());
            let text = e.to_string();
            assert!(
                text.contains("PODMAN_API=libpod") && text.contains(v),
                "{text}"
            );
        }
    }
}
