//! `ContainerDriver` for Kubernetes: a Pod, a PersistentVolumeClaim and a Secret per ship
//! (kube, k8s-openapi), ships reached by Pod IP on `SHIP_CONTAINER_PORT`.
//!
//! Per ship, in one namespace (`KUBE_NAMESPACE`, else the service account's namespace in a
//! cluster, else `default`): a PVC `ship-<id>` sized from `spec.disk` or `DEFAULT_SHIP_DISK` /
//! `KUBE_PVC_SIZE` (`KUBE_STORAGE_CLASS` when set) holding `/home` and `/app/metadata` as two
//! subPaths; a Secret `ship-<id>` holding `SHIP_AUTH_TOKEN`; a Pod `ship-<id>` with the ship
//! image (`KUBE_IMAGE_PULL_POLICY`), requests and limits from the spec, a readiness probe on
//! the agent's `/health`, every capability dropped but [`bay_core::engine::CAPABILITIES`], no
//! privilege escalation, the runtime's default seccomp profile and no service-account token.
//! Everything is labelled `bay.managed=true` and `bay.ship-id=<id>`. Readiness is awaited
//! with a watch, bounded by `SHIP_HEALTH_CHECK_TIMEOUT`. Sizes are normalised to exact
//! Kubernetes quantities first ([`quantity`]), so nothing is created for a bad spec. A stop
//! removes the Pod and the Secret; only `delete_ship_data` removes the PVC; a create first
//! removes a leftover Pod of the same name (failed, succeeded, terminating), never the PVC.
//!
//! Configuration, in this order: in-cluster (service account), then `KUBE_CONFIG_PATH`, then
//! the default kubeconfig. Only namespace-scoped permissions are used (see `deploy/k8s/`).
//!
//! Supported clusters: the driver uses only core/v1 Pods, PVCs, Secrets, logs, list and
//! watch, through kube 5 and k8s-openapi 0.29 (feature `earliest`), so it targets Kubernetes
//! v1.20 and later; so far it is tested against a simulated API server only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bay_core::config::Config;
//! use bay_core::driver::ContainerDriver;
//! use bay_driver_kube::KubeDriver;
//!
//! let config = Config::from_pairs([("CONTAINER_DRIVER", "kubernetes")])?;
//! let driver: Arc<dyn ContainerDriver> = Arc::new(KubeDriver::from_config(&config)?);
//! driver.initialize().await?;
//! # Ok(()) }
//! ```

mod driver;
mod errors;
pub mod objects;
pub mod quantity;
mod settings;

pub use driver::{DEFAULT_NAMESPACE, KubeDriver};
pub use settings::{KubeSettings, PULL_POLICIES};

impl KubeDriver {
    /// The driver for `config` (`CONTAINER_DRIVER=kubernetes`); connects on first use.
    pub fn from_config(
        config: &bay_core::config::Config,
    ) -> Result<Self, bay_core::driver::DriverError> {
        Ok(Self::new(KubeSettings::from_config(config)?))
    }
}
