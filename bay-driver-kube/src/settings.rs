//! What the Kubernetes driver is configured with, taken from Bay's [`Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bay_core::config::{Config, DriverKind};
use bay_core::driver::DriverError;

use crate::quantity::bytes_quantity;

/// The image pull policies Kubernetes knows.
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// Everything the driver needs. Build it with [`KubeSettings::from_config`]; tests may adjust
/// the public fields (for example add labels that mark what they create).
///
/// ```
/// use bay_core::config::Config;
/// use bay_driver_kube::KubeSettings;
/// let config = Config::from_pairs([
///     ("CONTAINER_DRIVER", "kubernetes"),
///     ("KUBE_NAMESPACE", "ships"),
///     ("KUBE_IMAGE_PULL_POLICY", "never"),
/// ]).unwrap();
/// let settings = KubeSettings::from_config(&config).unwrap();
/// assert_eq!(settings.namespace.as_deref(), Some("ships"));
/// assert_eq!(settings.image_pull_policy, "Never");
/// ```
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// `KUBE_NAMESPACE` when set; otherwise the service account's namespace in a cluster,
    /// else `default`.
    pub namespace: Option<String>,
    /// `KUBE_CONFIG_PATH`: the kubeconfig used when not running in a cluster.
    pub config_path: Option<PathBuf>,
    /// The ship image (`DOCKER_IMAGE`).
    pub image: String,
    /// `KUBE_IMAGE_PULL_POLICY` (`Always`, `IfNotPresent` or `Never`).
    pub image_pull_policy: String,
    /// `KUBE_STORAGE_CLASS`; `None` = the cluster's default class.
    pub storage_class: Option<String>,
    /// The PVC size when a spec has no disk (`DEFAULT_SHIP_DISK` / `KUBE_PVC_SIZE`), in bytes.
    pub default_disk_bytes: u64,
    /// The agent's port (`SHIP_CONTAINER_PORT`).
    pub container_port: u16,
    /// How long a new Pod may take to become ready (`SHIP_HEALTH_CHECK_TIMEOUT`).
    pub ready_timeout: Duration,
    /// Timeout of one request to the API server.
    pub request_timeout: Duration,
    /// Grace period of a Pod deletion before the kubelet kills the agent.
    pub stop_grace: Duration,
    /// Upper bound of the bytes one log request returns.
    pub log_limit_bytes: i64,
    /// Extra labels put on everything the driver creates (Pods, PVCs, Secrets), besides
    /// `bay.managed` and `bay.ship-id`.
    pub extra_labels: BTreeMap<String, String>,
}

impl KubeSettings {
    /// The settings of `config`; fails unless `CONTAINER_DRIVER` is `kubernetes`, or when a
    /// setting cannot be used (the error names the variable and the value).
    pub fn from_config(config: &Config) -> Result<Self, DriverError> {
        if config.container_driver != DriverKind::Kubernetes {
            return Err(DriverError::NotSupported(format!(
                "the kubernetes driver cannot run CONTAINER_DRIVER={}",
                config.container_driver.as_str()
            )));
        }
        let raw = config.kube_image_pull_policy.trim();
        let image_pull_policy = PULL_POLICIES
            .iter()
            .find(|p| p.eq_ignore_ascii_case(raw))
            .ok_or_else(|| {
                DriverError::NotSupported(format!(
                    "invalid KUBE_IMAGE_PULL_POLICY {raw:?}: expected Always, IfNotPresent or Never"
                ))
            })?;
        bytes_quantity("DEFAULT_SHIP_DISK", config.default_ship_disk)
            .map_err(|e| DriverError::NotSupported(e.to_string()))?;
        Ok(Self {
            namespace: config
                .kube_namespace
                .as_ref()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            config_path: config
                .kube_config_path
                .as_ref()
                .filter(|s| !s.trim().is_empty())
                .map(PathBuf::from),
            image: config.docker_image.clone(),
            image_pull_policy: (*image_pull_policy).to_owned(),
            storage_class: config
                .kube_storage_class
                .as_ref()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            default_disk_bytes: config.default_ship_disk,
            container_port: config.ship_container_port,
            ready_timeout: config.ship_health_check_timeout,
            request_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
            log_limit_bytes: 1 << 20,
            extra_labels: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_config() {
        let config = Config::from_pairs([
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_PVC_SIZE", "5g"),
            ("KUBE_STORAGE_CLASS", "fast"),
            ("KUBE_CONFIG_PATH", "/tmp/kc"),
        ])
        .unwrap();
        let s = KubeSettings::from_config(&config).unwrap();
        assert_eq!(s.default_disk_bytes, 5 << 30);
        assert_eq!(s.storage_class.as_deref(), Some("fast"));
        assert_eq!(s.config_path, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(s.namespace, None);
        assert_eq!(s.image_pull_policy, "IfNotPresent");

        let bad = Config::from_pairs([
            ("CONTAINER_DRIVER", "kubernetes"),
            ("KUBE_IMAGE_PULL_POLICY", "sometimes"),
        ])
        .unwrap();
        let err = KubeSettings::from_config(&bad).unwrap_err().to_string();
        assert!(
            err.contains("KUBE_IMAGE_PULL_POLICY") && err.contains("\"sometimes\""),
            "{err}"
        );

        let docker = Config::from_pairs([("CONTAINER_DRIVER", "docker")]).unwrap();
        assert!(KubeSettings::from_config(&docker).is_err());
    }
}
