//! The Kubernetes objects of a ship, built as plain values (pure: unit-tested).
//!
//! Per ship: a PersistentVolumeClaim `ship-<id>` holding the agent's session data (`/home` and
//! `/app/metadata` are two subPaths of it), a Secret `ship-<id>` holding `SHIP_AUTH_TOKEN`, and
//! a Pod `ship-<id>`. All three carry `bay.managed=true` and `bay.ship-id=<id>`.

use std::collections::BTreeMap;

use bay_core::driver::ShipContainerRequest;
use bay_core::engine::{self, CAPABILITIES, HOME_MOUNT, METADATA_MOUNT};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::KubeSettings;
use crate::quantity::{QuantityError, bytes_quantity, cpu_quantity};

/// The key of the auth token in a ship's Secret (and the variable the agent reads).
pub const TOKEN_KEY: &str = engine::AUTH_TOKEN_ENV;
/// The name of the ship container inside the Pod.
pub const CONTAINER_NAME: &str = "ship";
/// The name of the data volume inside the Pod.
pub const DATA_VOLUME: &str = "data";

/// The quantities of a ship, checked before any object is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipQuantities {
    /// CPU limit (`500m`), when limited.
    pub cpu: Option<String>,
    /// Memory limit (`256Mi`), when limited.
    pub memory: Option<String>,
    /// PVC size (`1Gi`).
    pub disk: String,
}

impl ShipQuantities {
    /// The quantities of `req`, the disk from the spec or the settings' default.
    pub fn of(settings: &KubeSettings, req: &ShipContainerRequest) -> Result<Self, QuantityError> {
        Ok(Self {
            cpu: req
                .spec
                .cpus
                .map(|c| cpu_quantity("spec.cpus", c))
                .transpose()?,
            memory: req
                .spec
                .memory_bytes
                .map(|m| bytes_quantity("spec.memory", m))
                .transpose()?,
            disk: match req.spec.disk_bytes {
                Some(d) => bytes_quantity("spec.disk", d)?,
                None => bytes_quantity("DEFAULT_SHIP_DISK", settings.default_disk_bytes)?,
            },
        })
    }
}

fn meta(settings: &KubeSettings, ship_id: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(engine::container_name(ship_id)),
        labels: Some(
            engine::labels(&settings.extra_labels, Some(ship_id))
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    }
}

/// The PVC of a ship's data.
pub fn pvc(settings: &KubeSettings, ship_id: &str, disk: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(settings, ship_id),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(disk.to_owned()),
                )])),
                ..Default::default()
            }),
            storage_class_name: settings.storage_class.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Secret that holds a ship's auth token.
pub fn secret(settings: &KubeSettings, req: &ShipContainerRequest) -> Secret {
    Secret {
        metadata: meta(settings, &req.ship_id),
        string_data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            req.auth_token.clone(),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
}

/// The Pod of a ship.
pub fn pod(settings: &KubeSettings, req: &ShipContainerRequest, q: &ShipQuantities) -> Pod {
    let name = engine::container_name(&req.ship_id);
    let mut env: Vec<EnvVar> = engine::agent_env(req, settings.container_port)
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k != TOKEN_KEY).then(|| EnvVar {
                name: k.to_owned(),
                value: Some(v.to_owned()),
                ..Default::default()
            })
        })
        .collect();
    env.insert(
        0,
        EnvVar {
            name: TOKEN_KEY.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.clone(),
                    key: TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &q.cpu {
        limits.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &q.memory {
        limits.insert("memory".to_owned(), Quantity(memory.clone()));
    }
    // Requests equal to the limits: the scheduler places a ship only where it fits.
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..Default::default()
    });
    let port = i32::from(settings.container_port);
    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: port,
            name: Some("agent".to_owned()),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".to_owned()),
                port: IntOrString::Int(port),
                scheme: Some("HTTP".to_owned()),
                ..Default::default()
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            success_threshold: Some(1),
            ..Default::default()
        }),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: HOME_MOUNT.to_owned(),
                sub_path: Some("home".to_owned()),
                ..Default::default()
            },
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: METADATA_MOUNT.to_owned(),
                sub_path: Some("metadata".to_owned()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Pod {
        metadata: meta(settings, &req.ship_id),
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: i64::try_from(settings.stop_grace.as_secs()).ok(),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(vec![Volume {
                name: DATA_VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name,
                    read_only: Some(false),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a Pod is ready: Running, not being deleted, condition `Ready` true, with an IP.
pub fn ready_ip(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    ready.then(|| {
        if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        }
    })
}

/// Why a Pod will never become ready, when that is already known: it ended, or its container
/// waits for something that will not come (an image that cannot be pulled, a bad config).
pub fn never_ready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        let why = status.message.clone().or_else(|| status.reason.clone());
        return Some(match why {
            Some(m) => format!("pod ended ({phase}): {m}"),
            None => format!("pod ended ({phase})"),
        });
    }
    for cs in status.container_statuses.iter().flatten() {
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(
                reason,
                "ErrImageNeverPull"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                let msg = w.message.as_deref().unwrap_or_default();
                return Some(format!("container {reason}: {msg}"));
            }
        }
        if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            return Some(format!(
                "container exited with code {} ({})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("no reason")
            ));
        }
    }
    None
}

/// Whether a Pod's reason for never becoming ready is its image.
pub fn is_image_problem(reason: &str) -> bool {
    [
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

/// Whether a Pod is running (phase Running, not being deleted).
pub fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}
