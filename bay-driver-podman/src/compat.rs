//! The Docker-compatible API path: [`CompatDriver`], the [`ContainerDriver`] on bollard
//! (Podman 5 and later, or `PODMAN_API=compat`).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bay_core::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};
use bay_core::engine::{
    self, CAPABILITIES, DataLayout, HELPER_DATA_MOUNT, HOME_MOUNT, METADATA_MOUNT,
    NO_NEW_PRIVILEGES, container_name, volume_names,
};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, PortBinding, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::common::{self, image_missing};
use crate::settings::{Mode, PodmanSettings};
use crate::{errors, raw};

/// The Podman driver on the Docker-compatible API.
///
/// Talks to Podman's Docker-compatible API (the same on Podman 4 and 5) with bollard over the
/// socket [`PodmanSettings::socket`] finds; connects lazily (the first connection reads
/// Podman's version, which [`crate::PodmanDriver`] uses to choose the API path).
#[derive(Debug)]
pub(crate) struct CompatDriver {
    settings: PodmanSettings,
    client: tokio::sync::Mutex<Option<Docker>>,
    /// Podman's version (known after the first connection).
    version: OnceLock<String>,
}

impl CompatDriver {
    /// A driver with these settings; nothing is contacted until the first call.
    pub(crate) fn new(settings: PodmanSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::Mutex::new(None),
            version: OnceLock::new(),
        }
    }

    /// Podman's version, once connected (`4.3.1`).
    pub(crate) fn podman_version(&self) -> Option<&str> {
        self.version.get().map(String::as_str)
    }

    /// The connected client (finding the socket and negotiating the API version on first use).
    pub(crate) async fn client(&self) -> DriverResult<Docker> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let socket = self.settings.socket()?;
        let path = socket.display().to_string();
        let docker = Docker::connect_with_unix(
            &path,
            self.settings.request_timeout.as_secs(),
            API_DEFAULT_VERSION,
        )
        .map_err(|e| {
            DriverError::Unavailable(format!(
                "cannot connect to podman at {path}: {}",
                errors::describe(&e)
            ))
        })?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            DriverError::Unavailable(format!(
                "podman at {path} does not answer (version negotiation): {}",
                errors::describe(&e)
            ))
        })?;
        let version = docker
            .version()
            .await
            .map_err(|e| errors::map(&format!("podman at {path}"), e))?;
        let podman = version
            .components
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == "Podman Engine")
            .map(|c| c.version)
            .ok_or_else(|| {
                DriverError::Engine(format!(
                    "the engine at {path} is not podman (its /version names no \"Podman Engine\")"
                ))
            })?;
        let v = docker.client_version();
        info!(socket = %path, podman.version = %podman, api.version = %format!("{}.{}", v.major_version, v.minor_version), "connected to podman");
        let _ = self.version.set(podman);
        *guard = Some(docker.clone());
        Ok(docker)
    }

    fn labels(&self, ship_id: Option<&str>) -> HashMap<String, String> {
        engine::labels(&self.settings.extra_labels, ship_id)
    }

    /// Creates the ships' network (bridge) unless it exists (network mode only: host-mode
    /// ships join no network).
    async fn ensure_network(&self, docker: &Docker) -> DriverResult<()> {
        let Some(net) = common::ships_network(&self.settings) else {
            return Ok(());
        };
        match docker.inspect_network(net, None).await {
            Ok(_) => return Ok(()),
            Err(e) if errors::status(&e) == Some(404) => {}
            Err(e) => return Err(errors::map(&format!("network {net}"), e)),
        }
        info!(network = %net, driver = "bridge", "podman network for ships is missing; creating it");
        let req = NetworkCreateRequest {
            name: net.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(engine::network_labels(&self.settings.extra_labels)),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else (Podman: 500 "network already exists").
            Err(e) if errors::is_conflict(&e) => Ok(()),
            Err(e) => Err(errors::map(&format!("network {net}"), e)),
        }
    }

    /// Makes sure the ship's data exists and returns the mounts for it.
    async fn prepare_data(&self, docker: &Docker, ship_id: &str) -> DriverResult<Vec<Mount>> {
        match &self.settings.data {
            DataLayout::Volumes => {
                let [home, metadata] = volume_names(ship_id);
                for name in [&home, &metadata] {
                    // Creating an existing volume returns it unchanged: data is reused.
                    let req = VolumeCreateRequest {
                        name: Some(name.clone()),
                        labels: Some(self.labels(Some(ship_id))),
                        ..Default::default()
                    };
                    match docker.create_volume(req).await {
                        Ok(_) => {}
                        Err(e) if errors::is_conflict(&e) => {}
                        Err(e) => return Err(errors::map(&format!("volume {name}"), e)),
                    }
                }
                Ok(vec![
                    mount(MountType::VOLUME, home, HOME_MOUNT),
                    mount(MountType::VOLUME, metadata, METADATA_MOUNT),
                ])
            }
            DataLayout::HostDirs { local, host } => {
                engine::prepare_ship_dirs(local, ship_id).await?;
                Ok(engine::host_dir_mounts(&host.join(ship_id))
                    .into_iter()
                    .map(|(source, target)| mount(MountType::BIND, source, target))
                    .collect())
            }
        }
    }

    /// Empties a ship's host data directories with a short-lived helper container that runs
    /// the ship image as root with the directory mounted (files of session users are not
    /// Bay's to remove). Does nothing with named volumes.
    pub(crate) async fn remove_host_data_with_helper(&self, ship_id: &str) -> DriverResult<()> {
        let DataLayout::HostDirs { host, .. } = &self.settings.data else {
            return Ok(());
        };
        let docker = self.client().await?;
        let host_root = host.join(ship_id);
        let (entrypoint, cmd) = engine::helper_command();
        let body = ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            user: Some("0:0".to_owned()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            labels: Some(engine::helper_labels(&self.settings.extra_labels, ship_id)),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![mount(
                    MountType::BIND,
                    host_root.display().to_string(),
                    HELPER_DATA_MOUNT,
                )]),
                network_mode: Some("none".to_owned()),
                ulimits: Some(self.ulimits()),
                ..Default::default()
            }),
            ..Default::default()
        };
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
            let mut wait = docker.wait_container(
                &id,
                Some(
                    WaitContainerOptionsBuilder::new()
                        .condition("not-running")
                        .build(),
                ),
            );
            match tokio::time::timeout(Duration::from_secs(120), wait.next()).await {
                Ok(Some(Ok(r))) if r.status_code == 0 => Ok(()),
                Ok(Some(Ok(r))) => Err(DriverError::Engine(format!(
                    "the helper container removing {} exited with {}",
                    host_root.display(),
                    r.status_code
                ))),
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
        let _ = self.remove(&docker, &id).await;
        result
    }

    fn ulimits(&self) -> Vec<ResourcesUlimits> {
        ulimits(&self.settings)
    }

    /// Maps a container-create error, telling a missing image apart.
    fn create_error(&self, e: bollard::errors::Error) -> DriverError {
        if errors::is_image_missing(&e) {
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
        if let Some(disk) = req.spec.disk_bytes {
            debug!(ship.id = %req.ship_id, disk.bytes = disk, "disk quota ignored: the podman driver does not limit a container's disk");
        }
        let mut retried_conflict = false;
        let mut retried_network = false;
        loop {
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let body = container_body(
                &self.settings,
                req,
                self.labels(Some(&req.ship_id)),
                mounts.clone(),
            );
            match docker.create_container(Some(options), body).await {
                Ok(created) => {
                    for w in created.warnings {
                        warn!(ship.id = %req.ship_id, warning = %w, "podman warning while creating the ship container");
                    }
                    return Ok(created.id);
                }
                Err(e) if errors::is_conflict(&e) && !retried_conflict => {
                    // A container of this ship survived (an interrupted stop): it must go.
                    retried_conflict = true;
                    warn!(ship.id = %req.ship_id, container.name = %name, "a stale container of the ship exists; removing it");
                    self.remove(docker, &name).await?;
                }
                Err(e) if errors::is_network_missing(&e) && !retried_network => {
                    retried_network = true;
                    self.ensure_network(docker).await?;
                }
                Err(e) => return Err(self.create_error(e)),
            }
        }
    }

    /// Force-removes a container with its anonymous volumes; a missing one is fine.
    async fn remove(&self, docker: &Docker, container: &str) -> DriverResult<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if errors::status(&e) == Some(404) => Ok(()),
            Err(e) if errors::status(&e) == Some(409) => {
                debug!(container.id = %container, error = %errors::describe(&e), "container removal already in progress");
                Ok(())
            }
            Err(e) => Err(errors::map(&format!("container {container}"), e)),
        }
    }

    /// The address of a started container: `IP` (network mode) or `127.0.0.1:port` (host mode).
    async fn address(&self, docker: &Docker, id: &str) -> DriverResult<String> {
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

fn mount(typ: MountType, source: String, target: &str) -> Mount {
    Mount {
        typ: Some(typ),
        source: Some(source),
        target: Some(target.to_owned()),
        ..Default::default()
    }
}

fn ulimits(settings: &PodmanSettings) -> Vec<ResourcesUlimits> {
    [("nofile", settings.nofile), ("nproc", settings.nproc)]
        .into_iter()
        .map(|(name, l)| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(l.soft),
            hard: Some(l.hard),
        })
        .collect()
}

/// The creation body of a ship's container (pure: unit-tested).
pub(crate) fn container_body(
    settings: &PodmanSettings,
    req: &ShipContainerRequest,
    labels: HashMap<String, String>,
    mounts: Vec<Mount>,
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
    let memory = common::memory(req);
    let nano_cpus = common::nano_cpus(req);
    let network = common::ships_network(settings).map(str::to_owned);
    let network_mode = match settings.mode {
        Mode::Network => network.clone(),
        // A network stack of its own, with no route to the host's loopback.
        Mode::Host => Some(format!(
            "{}:{}",
            common::HOST_MODE_NETNS,
            common::HOST_MODE_NETNS_OPTIONS.join(",")
        )),
    };
    let host_config = HostConfig {
        network_mode,
        port_bindings,
        mounts: Some(mounts),
        nano_cpus,
        memory,
        // No swap beyond the memory limit.
        memory_swap: memory,
        pids_limit: Some(settings.pids_limit),
        // Rootful Podman's default nofile/nproc cannot be set everywhere: always explicit.
        ulimits: Some(ulimits(settings)),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        ..Default::default()
    };
    let networking_config = network.map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(net, EndpointSettings::default())])),
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
    settings: &PodmanSettings,
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
            let name = common::address_network(settings);
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
impl ContainerDriver for CompatDriver {
    async fn initialize(&self) -> DriverResult<()> {
        let docker = self.client().await?;
        self.ensure_network(&docker).await?;
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
            network = common::network_of_ships(&self.settings),
            podman.version = self.podman_version().unwrap_or("?"),
            "podman driver ready (docker-compatible api)"
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
        let mounts = self.prepare_data(&docker, &req.ship_id).await?;
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
        // The compatible API honours `t` (libpod clients that send `Timeout` wait the full
        // default grace period instead).
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
            Err(e) if errors::is_unavailable(&e) => {
                return Err(errors::map(&format!("container {container_id}"), e));
            }
            // 304 (not running) or anything else: the force-remove below still applies.
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
        // Raw JSON, not bollard's typed list: Podman reports states bollard's enum rejects
        // (`stopped`), and one such container would fail the whole list.
        let docker = self.client().await?;
        let socket = self.settings.socket()?;
        let v = docker.client_version();
        let filters = serde_json::json!({ "label": [engine::managed_filter()] }).to_string();
        let path = format!(
            "/v{}.{}/containers/json?all=true&filters={}",
            v.major_version,
            v.minor_version,
            percent_encoding::utf8_percent_encode(&filters, percent_encoding::NON_ALPHANUMERIC)
        );
        let list = raw::get_json(socket, &path, self.settings.request_timeout)
            .await
            .map_err(|e| errors::map_raw("managed containers", e))?;
        common::managed_ships(&list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{request, settings};
    use bay_core::model::EffectiveSpec;
    use bollard::models::NetworkSettings;

    #[test]
    fn host_mode_publishes_on_loopback_with_limits_ulimits_and_hardening() {
        let s = settings("podman-host", Some("shipyard"));
        let req = request(EffectiveSpec {
            cpus: Some(1.5),
            memory_bytes: Some(256 << 20),
            disk_bytes: Some(1 << 30),
        });
        let body = container_body(&s, &req, HashMap::new(), vec![]);
        let hc = body.host_config.unwrap();
        let b = &hc.port_bindings.unwrap()["8123/tcp"];
        let b = b.as_ref().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, Some(256 << 20));
        assert_eq!(hc.pids_limit, Some(engine::PIDS_LIMIT));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.cap_add.unwrap(), CAPABILITIES);
        assert_eq!(hc.security_opt, Some(vec![NO_NEW_PRIVILEGES.to_owned()]));
        let names: Vec<_> = hc
            .ulimits
            .unwrap()
            .into_iter()
            .map(|u| (u.name.unwrap(), u.soft.is_some() && u.hard.is_some()))
            .collect();
        assert_eq!(
            names,
            [("nofile".to_owned(), true), ("nproc".to_owned(), true)]
        );
        assert_eq!(hc.storage_opt, None);
        // A network stack of its own with no route to the host's loopback; DOCKER_NETWORK is
        // not joined.
        assert_eq!(
            hc.network_mode.as_deref(),
            Some("slirp4netns:allow_host_loopback=false")
        );
        assert!(body.networking_config.is_none());
        assert_eq!(body.env.unwrap(), engine::agent_env(&req, 8123));
    }

    #[test]
    fn network_mode_publishes_nothing_and_unlimited_means_none() {
        let s = settings("podman", None);
        let body = container_body(
            &s,
            &request(EffectiveSpec::default()),
            HashMap::new(),
            vec![],
        );
        let hc = body.host_config.unwrap();
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.memory, None);
        assert_eq!(hc.network_mode, None);
        assert!(body.networking_config.is_none());
        let joined = container_body(
            &settings("podman", Some("shipyard")),
            &request(EffectiveSpec::default()),
            HashMap::new(),
            vec![],
        );
        assert_eq!(
            joined.host_config.unwrap().network_mode.as_deref(),
            Some("shipyard")
        );
        assert!(
            joined
                .networking_config
                .unwrap()
                .endpoints_config
                .unwrap()
                .contains_key("shipyard")
        );
    }

    #[test]
    fn addresses_are_read_from_inspect_with_podman_as_the_default_network() {
        let inspect = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([(
                    "8123/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some("49153".into()),
                    }]),
                )])),
                networks: Some(HashMap::from([(
                    "podman".to_owned(),
                    EndpointSettings {
                        ip_address: Some("10.88.0.5".into()),
                        ..Default::default()
                    },
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            address_of(&settings("podman-host", None), &inspect).unwrap(),
            "127.0.0.1:49153"
        );
        assert_eq!(
            address_of(&settings("podman", None), &inspect).unwrap(),
            "10.88.0.5"
        );
        assert!(address_of(&settings("podman", Some("shipyard")), &inspect).is_err());
    }
}
