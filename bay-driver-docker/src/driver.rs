//! [`DockerDriver`]: the [`ContainerDriver`] implementation on bollard.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bay_core::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};
use bay_core::engine::{
    self, CAPABILITIES, DataLayout, HELPER_DATA_MOUNT, HOME_MOUNT, LABEL_MANAGED, METADATA_MOUNT,
    NO_NEW_PRIVILEGES, container_name, volume_names,
};
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum,
    EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest, NetworkInspect,
    NetworkingConfig, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::errors;
use crate::settings::{DockerSettings, Mode};

/// The Docker driver (`CONTAINER_DRIVER=docker` or `docker-host`).
///
/// Connects lazily (honouring `DOCKER_HOST` through bollard's defaults) and negotiates the API
/// version with the engine; [`ContainerDriver::initialize`] connects eagerly and creates the
/// ships' network when it is missing.
#[derive(Debug)]
pub struct DockerDriver {
    settings: DockerSettings,
    client: tokio::sync::Mutex<Option<Docker>>,
    /// Whether the storage driver accepts `storage_opt size=` (known after `initialize`).
    disk_quota: OnceLock<bool>,
    /// Storage driver name, for the warning when a quota is dropped.
    storage_driver: Mutex<String>,
    /// Whether the volume driver refused a `size` option (no quota support).
    volume_quota_refused: AtomicBool,
}

impl DockerDriver {
    /// A driver with these settings; nothing is contacted until the first call.
    pub fn new(settings: DockerSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::Mutex::new(None),
            disk_quota: OnceLock::new(),
            storage_driver: Mutex::new(String::new()),
            volume_quota_refused: AtomicBool::new(false),
        }
    }

    /// The settings the driver runs with.
    pub fn settings(&self) -> &DockerSettings {
        &self.settings
    }

    /// The connected client (connecting and negotiating the API version on first use).
    pub async fn client(&self) -> DriverResult<Docker> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let connected = match self.settings.docker_host.as_deref() {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        };
        let docker = connected
            .map_err(|e| {
                DriverError::Unavailable(format!(
                    "cannot connect to docker: {}",
                    errors::describe(&e)
                ))
            })?
            .with_timeout(self.settings.request_timeout);
        let docker = docker.negotiate_version().await.map_err(|e| {
            DriverError::Unavailable(format!(
                "docker does not answer (version negotiation): {}",
                errors::describe(&e)
            ))
        })?;
        let v = docker.client_version();
        debug!(api.version = %format!("{}.{}", v.major_version, v.minor_version), "connected to docker");
        *guard = Some(docker.clone());
        Ok(docker)
    }

    fn labels(&self, ship_id: Option<&str>) -> HashMap<String, String> {
        engine::labels(&self.settings.extra_labels, ship_id)
    }

    // ----------------------------------------------------------------------------------------
    // Network and storage capabilities

    /// Creates the ships' network (bridge) unless it exists, and warns when the network the
    /// ships share lets them reach each other (see [`isolation_warning`]).
    async fn ensure_network(&self, docker: &Docker) -> DriverResult<()> {
        let Some(net) = self.settings.network.as_deref() else {
            // The engine's default bridge: its options come from the daemon (`--icc`).
            if let Ok(bridge) = docker.inspect_network("bridge", None).await
                && let Some(w) = isolation_warning(&self.settings, &bridge)
            {
                warn!(network = "bridge", "{w}");
            }
            return Ok(());
        };
        match docker.inspect_network(net, None).await {
            Ok(existing) => {
                let Some(w) = isolation_warning(&self.settings, &existing) else {
                    return Ok(());
                };
                if !replaceable(&self.settings, &existing) {
                    warn!(network = %net, "{w}");
                    return Ok(());
                }
                // Bay's own network from before isolation, unused: replace it. The engine
                // refuses if a container joined meanwhile; then it stays, with the warning.
                if let Err(e) = docker.remove_network(net).await {
                    warn!(network = %net, error = %errors::describe(&e), "{w}");
                    return Ok(());
                }
                info!(network = %net, "removed the unused ship network Bay had created without isolation");
            }
            Err(e) if errors::status(&e) == Some(404) => {}
            Err(e) => return Err(errors::map(&format!("network {net}"), e)),
        }
        let req = network_create_request(&self.settings, net);
        info!(network = %net, driver = "bridge", options = ?req.options, "docker network for ships is missing; creating it");
        if self.settings.mode == Mode::Network {
            warn!(network = %net, "{}", network_mode_exposure(net));
        }
        match docker.create_network(req).await {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else.
            Err(e) if errors::status(&e) == Some(409) => Ok(()),
            Err(e) => Err(errors::map(&format!("network {net}"), e)),
        }
    }

    /// Learns whether `storage_opt size=` works: only overlay2 on xfs (mounted with pquota).
    async fn probe_disk_quota(&self, docker: &Docker) -> bool {
        if let Some(v) = self.disk_quota.get() {
            return *v;
        }
        let supported = match docker.info().await {
            Ok(info) => {
                let driver = info.driver.unwrap_or_default();
                let backing = info
                    .driver_status
                    .unwrap_or_default()
                    .into_iter()
                    .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_default();
                *self
                    .storage_driver
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = if backing.is_empty() {
                    driver.clone()
                } else {
                    format!("{driver} on {backing}")
                };
                driver == "overlay2" && backing == "xfs"
            }
            Err(e) => {
                warn!(error = %errors::describe(&e), "cannot read docker info; assuming no disk quota support");
                return false;
            }
        };
        if !supported {
            info!(storage.driver = %self.storage_driver_name(), "docker storage driver does not support disk quotas; spec.disk will be ignored");
        }
        *self.disk_quota.get_or_init(|| supported)
    }

    fn storage_driver_name(&self) -> String {
        self.storage_driver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    // ----------------------------------------------------------------------------------------
    // Ship data

    /// Makes sure the ship's data exists and returns the mounts for it. `disk` (the ship's
    /// `spec.disk`) limits each volume where the engine can enforce it (see
    /// [`volume_create_request`]); otherwise the ship gets its data unlimited and a warning.
    async fn prepare_data(
        &self,
        docker: &Docker,
        ship_id: &str,
        disk: Option<u64>,
    ) -> DriverResult<Vec<Mount>> {
        match &self.settings.data {
            DataLayout::Volumes => {
                let [home, metadata] = volume_names(ship_id);
                for name in [&home, &metadata] {
                    self.create_volume(docker, ship_id, name, disk).await?;
                }
                Ok(vec![
                    mount(MountType::VOLUME, home, HOME_MOUNT),
                    mount(MountType::VOLUME, metadata, METADATA_MOUNT),
                ])
            }
            DataLayout::HostDirs { local, host } => {
                if let Some(disk) = disk {
                    warn!(ship.id = %ship_id, disk.bytes = disk,
                        "disk limit not enforced on the ship's data: SHIP_DATA_DIR host directories are bind-mounted without a quota");
                }
                engine::prepare_ship_dirs(local, ship_id).await?;
                Ok(engine::host_dir_mounts(&host.join(ship_id))
                    .into_iter()
                    .map(|(source, target)| mount(MountType::BIND, source, target))
                    .collect())
            }
        }
    }

    /// Creates one named volume of a ship (an existing one is returned unchanged, so data is
    /// reused), limited to `disk` bytes when the engine can enforce it. The local volume driver
    /// takes `size` only where its directory is on xfs mounted with `pquota`; elsewhere it
    /// answers "quota size requested but no quota support", and from then on the driver creates
    /// volumes without the option and warns for every ship that asked for a limit.
    async fn create_volume(
        &self,
        docker: &Docker,
        ship_id: &str,
        name: &str,
        disk: Option<u64>,
    ) -> DriverResult<()> {
        let labels = self.labels(Some(ship_id));
        let supported = !self.volume_quota_refused.load(Ordering::Relaxed);
        if supported && let Some(bytes) = disk {
            let req = volume_create_request(name, labels.clone(), Some(bytes));
            match docker.create_volume(req).await {
                Ok(_) => return Ok(()),
                Err(e) if errors::message(&e).contains("quota") => {
                    self.volume_quota_refused.store(true, Ordering::Relaxed);
                    info!(error = %errors::describe(&e), "the docker volume driver cannot limit volume sizes");
                }
                Err(e) => return Err(errors::map(&format!("volume {name}"), e)),
            }
        }
        if let Some(bytes) = disk {
            warn!(ship.id = %ship_id, volume = %name, disk.bytes = bytes,
                "disk limit not enforced on the ship's volume: the docker volume driver has no quota support (needs /var/lib/docker/volumes on xfs mounted with pquota)");
        }
        docker
            .create_volume(volume_create_request(name, labels, None))
            .await
            .map_err(|e| errors::map(&format!("volume {name}"), e))?;
        Ok(())
    }

    /// Empties a ship's host data directories (`<dir>/<id>/home` and `<dir>/<id>/metadata`)
    /// with a short-lived helper container that runs the ship image as root with the directory
    /// mounted. [`ContainerDriver::delete_ship_data`] falls back to it when Bay cannot remove
    /// files that session users own; it is public for operators and tests. Does nothing with
    /// named volumes.
    pub async fn remove_host_data_with_helper(&self, ship_id: &str) -> DriverResult<()> {
        let DataLayout::HostDirs { host, .. } = &self.settings.data else {
            return Ok(());
        };
        let docker = self.client().await?;
        let host_root = host.join(ship_id);
        let body = helper_body(&self.settings, ship_id, &host_root);
        let created = docker
            .create_container(None, body)
            .await
            .map_err(|e| self.create_error(e))?;
        let id = created.id;
        info!(ship.id = %ship_id, container.id = %id, "removing ship data with a helper container");
        let result = async {
            docker
                .start_container(&id, None)
                .await
                .map_err(|e| errors::map("helper container", e))?;
            // The container removes itself (auto_remove) when it exits: wait for that.
            let mut wait = docker.wait_container(
                &id,
                Some(
                    WaitContainerOptionsBuilder::new()
                        .condition("removed")
                        .build(),
                ),
            );
            match tokio::time::timeout(Duration::from_secs(120), wait.next()).await {
                Ok(Some(Ok(r))) if r.status_code == 0 => Ok(()),
                // Gone before the wait was registered: it ran to its end; whether it emptied
                // the directories is checked by the caller, which removes them next.
                Ok(Some(Err(e))) if errors::status(&e) == Some(404) => Ok(()),
                Ok(Some(Ok(r))) => Err(DriverError::Engine(format!(
                    "the helper container removing {} exited with {}",
                    host_root.display(),
                    r.status_code
                ))),
                Ok(Some(Err(BollardError::DockerContainerWaitError { code, error }))) => {
                    Err(DriverError::Engine(format!(
                        "the helper container removing {} exited with {code}: {error}",
                        host_root.display()
                    )))
                }
                Ok(Some(Err(e))) => Err(errors::map("helper container", e)),
                Ok(None) => Err(DriverError::Engine(
                    "the helper container vanished".to_owned(),
                )),
                Err(_) => Err(DriverError::Unavailable(
                    "the helper container did not finish within 120 s".to_owned(),
                )),
            }
        }
        .await;
        // Normally gone already (auto_remove); not when it never started or outlived the wait.
        if let Err(e) = self.remove(&docker, &id).await {
            warn!(ship.id = %ship_id, container.id = %id, error = %e, "cannot remove the helper container");
        }
        result
    }

    // ----------------------------------------------------------------------------------------
    // Containers

    /// The creation body of a ship's container.
    fn container_body(
        &self,
        req: &ShipContainerRequest,
        mounts: Vec<Mount>,
        disk_quota: bool,
    ) -> ContainerCreateBody {
        container_body(
            &self.settings,
            req,
            self.labels(Some(&req.ship_id)),
            mounts,
            disk_quota,
        )
    }

    /// Maps a container-create error, telling a missing image apart.
    fn create_error(&self, e: BollardError) -> DriverError {
        if errors::status(&e) == Some(404) && errors::message(&e).contains("image") {
            return image_missing(&self.settings.image);
        }
        errors::map("ship container", e)
    }

    /// Creates the container, removing a stale one of the same name and creating the network
    /// if it vanished. Returns the container id.
    async fn create_container(
        &self,
        docker: &Docker,
        req: &ShipContainerRequest,
        mounts: Vec<Mount>,
    ) -> DriverResult<String> {
        let name = container_name(&req.ship_id);
        let mut quota = req.spec.disk_bytes.is_some() && self.probe_disk_quota(docker).await;
        if let Some(disk) = req.spec.disk_bytes
            && !quota
        {
            warn!(ship.id = %req.ship_id, disk.bytes = disk, storage.driver = %self.storage_driver_name(),
                "disk quota ignored: the docker storage driver cannot limit a container's disk (needs overlay2 on xfs with pquota)");
        }
        let mut retried_conflict = false;
        let mut retried_network = false;
        loop {
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let body = self.container_body(req, mounts.clone(), quota);
            match docker.create_container(Some(options), body).await {
                Ok(created) => {
                    for w in created.warnings {
                        warn!(ship.id = %req.ship_id, warning = %w, "docker warning while creating the ship container");
                    }
                    return Ok(created.id);
                }
                Err(e) if errors::status(&e) == Some(409) && !retried_conflict => {
                    // A container of this ship survived (an interrupted stop): it must go.
                    retried_conflict = true;
                    warn!(ship.id = %req.ship_id, container.name = %name, "a stale container of the ship exists; removing it");
                    self.remove(docker, &name).await?;
                }
                Err(e)
                    if errors::status(&e) == Some(404)
                        && errors::message(&e).contains("network")
                        && !retried_network =>
                {
                    retried_network = true;
                    self.ensure_network(docker).await?;
                }
                Err(e)
                    if quota
                        && (errors::message(&e).contains("storage-opt")
                            || errors::message(&e).contains("quota")) =>
                {
                    quota = false;
                    warn!(ship.id = %req.ship_id, error = %errors::describe(&e),
                        "disk quota ignored: the docker engine refused storage_opt size (is the xfs backing file system mounted with pquota?)");
                }
                Err(e) => return Err(self.create_error(e)),
            }
        }
    }

    /// Force-removes a container; a missing one is fine.
    async fn remove(&self, docker: &Docker, container: &str) -> DriverResult<()> {
        // `v`: anonymous volumes (an image's VOLUMEs not covered by Bay's mounts) go too; the
        // ship's named volumes are never removed by this.
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if errors::status(&e) == Some(404) => Ok(()),
            // "removal of container … is already in progress"
            Err(e) if errors::status(&e) == Some(409) => {
                debug!(container.id = %container, error = %errors::describe(&e), "container removal already in progress");
                Ok(())
            }
            Err(e) => Err(errors::map(&format!("container {container}"), e)),
        }
    }

    /// The address of a started container: `IP` (network mode) or `127.0.0.1:port` (host mode).
    async fn address(&self, docker: &Docker, id: &str) -> DriverResult<String> {
        // The engine fills in published ports and IPs when the container starts; poll briefly
        // in case an inspect races with that.
        let mut last = None;
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let inspect = docker
                .inspect_container(id, None)
                .await
                .map_err(|e| errors::map(&format!("container {id}"), e))?;
            match address_of(&self.settings, &inspect) {
                Ok(a) => return Ok(a),
                Err(e) => last = Some(e),
            }
            if inspect.state.as_ref().and_then(|s| s.running) == Some(false) {
                break;
            }
        }
        Err(DriverError::Engine(last.unwrap_or_else(|| {
            "the ship container has no address".to_owned()
        })))
    }
}

/// The error of a missing ship image.
pub fn image_missing(image: &str) -> DriverError {
    DriverError::ImageMissing(format!(
        "ship image {image} is missing from the docker engine: build it with `cargo xtask ship-image`"
    ))
}

/// The creation body of the helper container that empties `host_root` (a ship's host data
/// directory) as root (pure: unit-tested). It carries `bay.managed` (so that everything Bay
/// creates is found by that label), `bay.helper` (so that [`ContainerDriver::list_managed`]
/// does not mistake it for a ship) and the ship id; the engine removes it when it exits
/// (`auto_remove`), even when Bay is gone by then. The image's `VOLUME`s are covered by tmpfs
/// mounts, so the helper has no anonymous volume to leave behind.
pub(crate) fn helper_body(
    settings: &DockerSettings,
    ship_id: &str,
    host_root: &Path,
) -> ContainerCreateBody {
    let (entrypoint, cmd) = engine::helper_command();
    ContainerCreateBody {
        image: Some(settings.image.clone()),
        user: Some("0:0".to_owned()),
        entrypoint: Some(entrypoint),
        cmd: Some(cmd),
        labels: Some(engine::helper_labels(&settings.extra_labels, ship_id)),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                mount(
                    MountType::BIND,
                    host_root.display().to_string(),
                    HELPER_DATA_MOUNT,
                ),
                // Over the image's `VOLUME`s: otherwise the engine makes an anonymous volume
                // for each, which the self-removal of Docker 20.10 leaves behind.
                tmpfs(HOME_MOUNT),
                tmpfs(METADATA_MOUNT),
            ]),
            network_mode: Some("none".to_owned()),
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request that creates a ship volume, limited to `disk` bytes with the local driver's
/// `size` option when given (pure: unit-tested).
pub(crate) fn volume_create_request(
    name: &str,
    labels: HashMap<String, String>,
    disk: Option<u64>,
) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(name.to_owned()),
        labels: Some(labels),
        driver_opts: disk.map(|d| HashMap::from([("size".to_owned(), d.to_string())])),
        ..Default::default()
    }
}

/// The bridge option that turns traffic between the containers of one network off.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The request that creates the ships' network `name` (pure: unit-tested).
///
/// In host mode (`docker-host`) Bay reaches ships through ports published on 127.0.0.1, never
/// through the network, so inter-container traffic is turned off ([`ICC_OPTION`]): a ship
/// cannot connect to another ship (nor to anything else attached to the network). In network
/// mode (`docker`) Bay's own container reaches ships by their IP on this network, which needs
/// inter-container traffic: the network is created with the engine's defaults (see
/// [`network_mode_exposure`]).
pub(crate) fn network_create_request(
    settings: &DockerSettings,
    name: &str,
) -> NetworkCreateRequest {
    let options = (settings.mode == Mode::Host)
        .then(|| HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())]));
    NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(engine::network_labels(&settings.extra_labels)),
        options,
        ..Default::default()
    }
}

/// What a ship can reach in network mode, logged when Bay creates the network.
fn network_mode_exposure(network: &str) -> String {
    format!(
        "CONTAINER_DRIVER=docker: ships on network {network} can reach each other (and Bay's \
         container) because Bay reaches them by container IP there; use CONTAINER_DRIVER=docker-host \
         to isolate ships from each other"
    )
}

/// Whether an existing network that lets ships talk may be replaced by an isolated one (pure:
/// unit-tested): host mode, a bridge network Bay created (`bay.managed=true`, as older Bays
/// created it with the engine's defaults), and no container attached.
pub(crate) fn replaceable(settings: &DockerSettings, network: &NetworkInspect) -> bool {
    settings.mode == Mode::Host
        && network.driver.as_deref() == Some("bridge")
        && network
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED))
            .is_some_and(|v| v == "true")
        && network.containers.as_ref().is_none_or(HashMap::is_empty)
}

/// A warning when an existing network lets the ships on it reach each other (pure:
/// unit-tested). Bay cannot change the options of an existing network (see [`replaceable`] for
/// the one it replaces). In network mode it always warns: inter-container traffic is what Bay
/// itself needs there.
pub(crate) fn isolation_warning(
    settings: &DockerSettings,
    network: &NetworkInspect,
) -> Option<String> {
    let name = network.name.as_deref().unwrap_or("?");
    if settings.mode == Mode::Network {
        return Some(network_mode_exposure(name));
    }
    if network.driver.as_deref() != Some("bridge") {
        return Some(format!(
            "network {name} uses driver {}: Bay cannot tell whether ships on it can reach each \
             other (a bridge network with {ICC_OPTION}=false isolates them)",
            network.driver.as_deref().unwrap_or("?")
        ));
    }
    let icc = network
        .options
        .as_ref()
        .and_then(|o| o.get(ICC_OPTION))
        .map(String::as_str);
    (icc != Some("false")).then(|| {
        format!(
            "ships on network {name} can reach each other: it exists without \
             {ICC_OPTION}=false, and Bay cannot change the options of an existing network; \
             Bay replaces its own network (label bay.managed=true) when no container uses \
             it; otherwise remove it while unused (`docker network rm {name}`) and Bay \
             recreates it isolated, or create it with `docker network create -o {ICC_OPTION}=false {name}`"
        )
    })
}

fn mount(typ: MountType, source: String, target: &str) -> Mount {
    Mount {
        typ: Some(typ),
        source: Some(source),
        target: Some(target.to_owned()),
        ..Default::default()
    }
}

/// An empty tmpfs at `target`.
fn tmpfs(target: &str) -> Mount {
    Mount {
        typ: Some(MountType::TMPFS),
        target: Some(target.to_owned()),
        ..Default::default()
    }
}

/// The creation body of a ship's container (pure: unit-tested).
pub(crate) fn container_body(
    settings: &DockerSettings,
    req: &ShipContainerRequest,
    labels: HashMap<String, String>,
    mounts: Vec<Mount>,
    disk_quota: bool,
) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", settings.container_port);
    let port_bindings = (settings.mode == Mode::Host).then(|| {
        HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                // empty: the engine picks a free port
                host_port: Some(String::new()),
            }]),
        )])
    });
    let memory = req
        .spec
        .memory_bytes
        .map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let nano_cpus = req.spec.cpus.map(|c| (c * 1e9).round() as i64);
    let storage_opt = req
        .spec
        .disk_bytes
        .filter(|_| disk_quota)
        .map(|d| HashMap::from([("size".to_owned(), d.to_string())]));
    let host_config = HostConfig {
        network_mode: settings.network.clone(),
        port_bindings,
        mounts: Some(mounts),
        nano_cpus,
        memory,
        // No swap beyond the memory limit.
        memory_swap: memory,
        pids_limit: Some(settings.pids_limit),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        storage_opt,
        ..Default::default()
    };
    let networking_config = settings.network.as_ref().map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(net.clone(), EndpointSettings::default())])),
    });
    ContainerCreateBody {
        image: Some(settings.image.clone()),
        env: Some(engine::agent_env(req, settings.container_port)),
        exposed_ports: Some(vec![port_key]),
        labels: Some(labels),
        stop_timeout: i64::try_from(settings.stop_timeout.as_secs()).ok(),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

/// The agent address of an inspected container (pure: unit-tested).
pub(crate) fn address_of(
    settings: &DockerSettings,
    inspect: &ContainerInspectResponse,
) -> Result<String, String> {
    let net = inspect.network_settings.as_ref();
    match settings.mode {
        Mode::Host => {
            let key = format!("{}/tcp", settings.container_port);
            let port = net
                .and_then(|n| n.ports.as_ref())
                .and_then(|p| p.get(&key))
                .and_then(Option::as_ref)
                .and_then(|bindings| {
                    bindings
                        .iter()
                        .filter(|b| b.host_ip.as_deref().is_none_or(|ip| ip == "127.0.0.1"))
                        .find_map(|b| b.host_port.clone().filter(|p| !p.is_empty()))
                })
                .ok_or_else(|| format!("port {key} of the ship container is not published"))?;
            Ok(format!("127.0.0.1:{port}"))
        }
        Mode::Network => {
            let name = settings.network.as_deref().unwrap_or("bridge");
            let endpoint = net
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(name))
                .ok_or_else(|| format!("the ship container is not attached to network {name}"))?;
            if let Some(ip) = endpoint.ip_address.as_deref().filter(|ip| !ip.is_empty()) {
                return Ok(ip.to_owned());
            }
            endpoint
                .global_ipv6_address
                .as_deref()
                .filter(|ip| !ip.is_empty())
                .map(|ip| format!("[{ip}]"))
                .ok_or_else(|| format!("the ship container has no IP address on network {name}"))
        }
    }
}

#[async_trait]
impl ContainerDriver for DockerDriver {
    async fn initialize(&self) -> DriverResult<()> {
        let docker = self.client().await?;
        self.ensure_network(&docker).await?;
        self.probe_disk_quota(&docker).await;
        match docker.inspect_image(&self.settings.image).await {
            Ok(_) => {}
            Err(e) if errors::status(&e) == Some(404) => {
                warn!(image = %self.settings.image, "{}", image_missing(&self.settings.image));
            }
            Err(e) => return Err(errors::map(&format!("image {}", self.settings.image), e)),
        }
        info!(
            mode = ?self.settings.mode,
            image = %self.settings.image,
            network = self.settings.network.as_deref().unwrap_or("(default bridge)"),
            "docker driver ready"
        );
        Ok(())
    }

    async fn close(&self) -> DriverResult<()> {
        self.client.lock().await.take();
        Ok(())
    }

    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo> {
        let docker = self.client().await?;
        let mounts = self
            .prepare_data(&docker, &req.ship_id, req.spec.disk_bytes)
            .await?;
        let id = self.create_container(&docker, req, mounts).await?;
        debug!(ship.id = %req.ship_id, container.id = %id, "ship container created");
        let started = match docker.start_container(&id, None).await {
            Ok(()) => self.address(&docker, &id).await,
            Err(e) => Err(errors::map(&format!("starting container {id}"), e)),
        };
        match started {
            Ok(ip_address) => {
                info!(ship.id = %req.ship_id, container.id = %id, address = %ip_address, "ship container started");
                Ok(ContainerInfo {
                    container_id: id,
                    ip_address,
                })
            }
            Err(e) => {
                warn!(ship.id = %req.ship_id, container.id = %id, error = %e, "ship container failed to start; removing it");
                if let Err(re) = self.remove(&docker, &id).await {
                    warn!(ship.id = %req.ship_id, container.id = %id, error = %re, "cannot remove the failed container");
                }
                Err(e)
            }
        }
    }

    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()> {
        let docker = self.client().await?;
        let t = i32::try_from(self.settings.stop_timeout.as_secs()).unwrap_or(5);
        match docker
            .stop_container(
                container_id,
                Some(StopContainerOptionsBuilder::new().t(t).build()),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if errors::status(&e) == Some(404) => {
                debug!(container.id = %container_id, "container already gone");
                return Ok(());
            }
            // 304: not running. Anything else: the force-remove below still applies.
            Err(e) if errors::is_unavailable(&e) => {
                return Err(errors::map(&format!("container {container_id}"), e));
            }
            Err(e) => {
                debug!(container.id = %container_id, error = %errors::describe(&e), "stop failed; removing anyway")
            }
        }
        self.remove(&docker, container_id).await?;
        debug!(container.id = %container_id, "ship container stopped and removed");
        Ok(())
    }

    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool> {
        match &self.settings.data {
            DataLayout::Volumes => {
                let docker = self.client().await?;
                for name in volume_names(ship_id) {
                    match docker.inspect_volume(&name).await {
                        Ok(_) => return Ok(true),
                        Err(e) if errors::status(&e) == Some(404) => {}
                        Err(e) => return Err(errors::map(&format!("volume {name}"), e)),
                    }
                }
                Ok(false)
            }
            DataLayout::HostDirs { local, .. } => engine::ship_dirs_exist(local, ship_id).await,
        }
    }

    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String> {
        let docker = self.client().await?;
        let tail = engine::log_tail_lines(tail).to_string();
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let mut stream = docker.logs(container_id, Some(options));
        let mut logs = engine::LogTail::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| errors::map(&format!("container {container_id}"), e))?;
            logs.push(chunk.as_ref());
        }
        Ok(logs.into_string())
    }

    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool> {
        let docker = self.client().await?;
        let inspect = docker
            .inspect_container(container_id, None)
            .await
            .map_err(|e| errors::map(&format!("container {container_id}"), e))?;
        Ok(inspect.state.and_then(|s| s.running).unwrap_or(false))
    }

    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()> {
        match &self.settings.data {
            DataLayout::Volumes => {
                let docker = self.client().await?;
                for name in volume_names(ship_id) {
                    let options = RemoveVolumeOptionsBuilder::new().force(false).build();
                    match docker.remove_volume(&name, Some(options)).await {
                        Ok(()) => info!(ship.id = %ship_id, volume = %name, "ship volume removed"),
                        Err(e) if errors::status(&e) == Some(404) => {}
                        Err(e) => return Err(errors::map(&format!("volume {name}"), e)),
                    }
                }
                Ok(())
            }
            DataLayout::HostDirs { local, .. } => {
                engine::remove_ship_dirs(local, ship_id, || {
                    self.remove_host_data_with_helper(ship_id)
                })
                .await
            }
        }
    }

    async fn list_managed(&self) -> DriverResult<Vec<ManagedContainer>> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label", vec![engine::managed_filter()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| errors::map("managed containers", e))?;
        Ok(list.into_iter().filter_map(managed_ship).collect())
    }
}

/// The ship container a listed container is, if it is one (pure: unit-tested): helper
/// containers carry `bay.managed` and the ship id too, but are not ships. Neither are the
/// containers a kubelet's dockershim created on the same engine: it copies a Pod's labels
/// (`bay.managed`, `bay.ship-id` of the Kubernetes driver's ships) onto them, next to its own
/// `io.kubernetes.*` labels; they belong to the Kubernetes driver, never to this one.
pub(crate) fn managed_ship(c: ContainerSummary) -> Option<ManagedContainer> {
    let labels = c.labels.as_ref()?;
    if labels.keys().any(|k| k.starts_with(KUBELET_LABEL_PREFIX)) {
        return None;
    }
    let ship_id = engine::ship_id_of(labels)?.to_owned();
    Some(ManagedContainer {
        container_id: c.id?,
        ship_id,
        running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
    })
}

/// The prefix of the labels a kubelet (dockershim) puts on the containers it creates.
const KUBELET_LABEL_PREFIX: &str = "io.kubernetes.";

#[cfg(test)]
mod tests {
    use super::*;
    use bay_core::engine::{HELPER_RM_SHIP_DATA, LABEL_HELPER, LABEL_SHIP_ID, PIDS_LIMIT};
    use bay_core::model::EffectiveSpec;
    use bollard::models::NetworkSettings;

    fn settings(mode: Mode, network: Option<&str>) -> DockerSettings {
        let config = bay_core::config::Config::from_pairs([(
            "CONTAINER_DRIVER",
            if mode == Mode::Host {
                "docker-host"
            } else {
                "docker"
            },
        )])
        .unwrap();
        let mut s = DockerSettings::from_config(&config).unwrap();
        s.network = network.map(str::to_owned);
        s
    }

    fn request(spec: EffectiveSpec) -> ShipContainerRequest {
        ShipContainerRequest {
            ship_id: "abc".into(),
            spec,
            auth_token: "tok".into(),
            ttl: 60,
        }
    }

    #[test]
    fn host_mode_publishes_on_loopback_only_with_limits_and_hardening() {
        let s = settings(Mode::Host, Some("shipyard"));
        let req = request(EffectiveSpec {
            cpus: Some(1.5),
            memory_bytes: Some(256 << 20),
            disk_bytes: Some(1 << 30),
        });
        let body = container_body(&s, &req, HashMap::new(), vec![], false);
        let hc = body.host_config.unwrap();
        let bindings = hc.port_bindings.unwrap();
        let b = bindings["8123/tcp"].as_ref().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.storage_opt, None, "no quota without driver support");
        assert_eq!(hc.security_opt, Some(vec![NO_NEW_PRIVILEGES.to_owned()]));
        assert_eq!(hc.network_mode.as_deref(), Some("shipyard"));
        assert_eq!(body.env.unwrap(), engine::agent_env(&req, 8123));
    }

    #[test]
    fn network_mode_publishes_nothing_and_unlimited_means_none() {
        let s = settings(Mode::Network, None);
        let body = container_body(
            &s,
            &request(EffectiveSpec::default()),
            HashMap::new(),
            vec![],
            true,
        );
        let hc = body.host_config.unwrap();
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.memory, None);
        assert_eq!(hc.storage_opt, None);
        assert_eq!(hc.network_mode, None);
        assert!(body.networking_config.is_none());
    }

    #[test]
    fn disk_quota_is_set_only_when_supported() {
        let s = settings(Mode::Network, Some("n"));
        let req = request(EffectiveSpec {
            disk_bytes: Some(1 << 30),
            ..Default::default()
        });
        let body = container_body(&s, &req, HashMap::new(), vec![], true);
        assert_eq!(
            body.host_config.unwrap().storage_opt.unwrap()["size"],
            (1u64 << 30).to_string()
        );
    }

    #[test]
    fn addresses_are_read_from_inspect() {
        let mut inspect = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([(
                    "8123/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some("49153".into()),
                    }]),
                )])),
                networks: Some(HashMap::from([(
                    "shipyard".to_owned(),
                    EndpointSettings {
                        ip_address: Some("172.30.0.5".into()),
                        ..Default::default()
                    },
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            address_of(&settings(Mode::Host, Some("shipyard")), &inspect).unwrap(),
            "127.0.0.1:49153"
        );
        assert_eq!(
            address_of(&settings(Mode::Network, Some("shipyard")), &inspect).unwrap(),
            "172.30.0.5"
        );
        assert!(address_of(&settings(Mode::Network, None), &inspect).is_err());
        if let Some(n) = inspect.network_settings.as_mut() {
            n.networks = Some(HashMap::from([(
                "shipyard".to_owned(),
                EndpointSettings {
                    ip_address: Some(String::new()),
                    global_ipv6_address: Some("fd00::5".into()),
                    ..Default::default()
                },
            )]));
        }
        assert_eq!(
            address_of(&settings(Mode::Network, Some("shipyard")), &inspect).unwrap(),
            "[fd00::5]"
        );
    }

    #[test]
    fn host_mode_creates_its_network_with_inter_container_traffic_off() {
        let mut s = settings(Mode::Host, Some("n"));
        s.extra_labels.insert("x".to_owned(), "y".to_owned());
        let host = network_create_request(&s, "n");
        assert_eq!(host.driver.as_deref(), Some("bridge"));
        assert_eq!(host.options.unwrap()[ICC_OPTION], "false");
        let labels = host.labels.unwrap();
        assert_eq!(
            (labels[LABEL_MANAGED].as_str(), labels["x"].as_str()),
            ("true", "y")
        );
        // Network mode: Bay's container reaches ships by IP on the network.
        let network = network_create_request(&settings(Mode::Network, Some("n")), "n");
        assert_eq!(network.options, None);
    }

    #[test]
    fn a_network_that_lets_ships_talk_is_reported() {
        let net = |driver: &str, icc: Option<&str>| NetworkInspect {
            name: Some("shipyard".into()),
            driver: Some(driver.into()),
            options: icc.map(|v| HashMap::from([(ICC_OPTION.to_owned(), v.to_owned())])),
            ..Default::default()
        };
        let host = settings(Mode::Host, Some("shipyard"));
        assert_eq!(
            isolation_warning(&host, &net("bridge", Some("false"))),
            None
        );
        for open in [
            net("bridge", Some("true")),
            net("bridge", None),
            net("macvlan", None),
        ] {
            let w = isolation_warning(&host, &open).expect("a warning");
            assert!(w.contains("shipyard"), "{w}");
        }
        // Bay's own network, unused, is replaced; anything else only warned about.
        let mut own = net("bridge", Some("true"));
        own.labels = Some(HashMap::from([(
            LABEL_MANAGED.to_owned(),
            "true".to_owned(),
        )]));
        assert!(replaceable(&host, &own));
        assert!(!replaceable(
            &settings(Mode::Network, Some("shipyard")),
            &own
        ));
        assert!(
            !replaceable(&host, &net("bridge", Some("true"))),
            "not Bay's"
        );
        own.containers = Some(HashMap::from([("c".to_owned(), Default::default())]));
        assert!(!replaceable(&host, &own), "in use");
        let w = isolation_warning(
            &settings(Mode::Network, Some("shipyard")),
            &net("bridge", Some("false")),
        )
        .expect("network mode always warns");
        assert!(w.contains("docker-host"), "{w}");
    }

    #[test]
    fn volumes_carry_the_disk_limit_when_asked() {
        let limited = volume_create_request("v", HashMap::new(), Some(1 << 30));
        assert_eq!(limited.name.as_deref(), Some("v"));
        assert_eq!(
            limited.driver_opts.unwrap()["size"],
            (1u64 << 30).to_string()
        );
        assert_eq!(
            volume_create_request("v", HashMap::new(), None).driver_opts,
            None
        );
    }

    #[test]
    fn the_helper_container_is_managed_labelled_and_removes_itself() {
        let mut s = settings(Mode::Host, Some("n"));
        s.extra_labels.insert("bay.test".to_owned(), "t".to_owned());
        let body = helper_body(&s, "abc", Path::new("/srv/ships/abc"));
        let labels = body.labels.clone().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_HELPER], HELPER_RM_SHIP_DATA);
        assert_eq!(labels[LABEL_SHIP_ID], "abc");
        assert_eq!(labels["bay.test"], "t");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.auto_remove, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/ships/abc"));
        // The image's VOLUMEs are covered: no anonymous volume is made for them.
        for target in [HOME_MOUNT, METADATA_MOUNT] {
            assert!(
                mounts
                    .iter()
                    .any(|m| m.typ == Some(MountType::TMPFS) && m.target.as_deref() == Some(target)),
                "{target} not covered: {mounts:?}"
            );
        }
        // ... and is never taken for a ship by list_managed.
        let summary = |labels: HashMap<String, String>| ContainerSummary {
            id: Some("c1".into()),
            labels: Some(labels),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            ..Default::default()
        };
        assert_eq!(managed_ship(summary(labels)), None);
        let ship = managed_ship(summary(HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SHIP_ID.to_owned(), "abc".to_owned()),
        ])))
        .expect("a ship container");
        assert_eq!((ship.ship_id.as_str(), ship.running), ("abc", true));
    }

    #[test]
    fn containers_of_a_kubelet_are_never_ships() {
        // What dockershim creates for a Pod `ship-abc` of the Kubernetes driver: the Pod's
        // labels copied next to its own (sandbox and container alike).
        let pod = |docker_type: &str| ContainerSummary {
            id: Some("k1".into()),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_owned(), "true".to_owned()),
                (LABEL_SHIP_ID.to_owned(), "abc".to_owned()),
                (
                    "io.kubernetes.docker.type".to_owned(),
                    docker_type.to_owned(),
                ),
                ("io.kubernetes.pod.name".to_owned(), "ship-abc".to_owned()),
            ])),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            ..Default::default()
        };
        assert_eq!(managed_ship(pod("podsandbox")), None);
        assert_eq!(managed_ship(pod("container")), None);
        // A Docker ship whose labels merely look alike (`bay.*` extra labels) is still one.
        let mut ship = pod("container");
        ship.labels = ship.labels.map(|mut l| {
            l.retain(|k, _| !k.starts_with("io.kubernetes."));
            l.insert("bay.io.kubernetes".to_owned(), "x".to_owned());
            l
        });
        assert_eq!(
            managed_ship(ship).map(|m| m.ship_id),
            Some("abc".to_owned())
        );
    }

    #[test]
    fn the_missing_image_error_says_how_to_build_it() {
        let e = image_missing("ship:latest");
        assert!(matches!(e, DriverError::ImageMissing(_)));
        let text = e.to_string();
        assert!(text.contains("ship:latest") && text.contains("cargo xtask ship-image"));
    }
}
