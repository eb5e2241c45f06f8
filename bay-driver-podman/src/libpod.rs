//! The libpod API path: [`LibpodDriver`], the [`ContainerDriver`] on the `podman-api` crate
//! (Podman 4; `podman-api` cannot read Podman 5's libpod answers).
//!
//! Three `podman-api` 0.11 pitfalls and what this path does about them:
//!
//! * its create options spell no-new-privileges `no_new_privilages`, a key Podman ignores:
//!   the create body is built with `podman-api`'s builder, the key is renamed to Podman's
//!   `no_new_privileges`, and the body is posted to libpod's create endpoint by [`crate::raw`]
//!   (`podman-api` exposes no raw request). The created container is then inspected and
//!   removed again unless Podman reports `no-new-privileges` (fail closed);
//! * its stop timeout goes out as `Timeout`, which Podman ignores: every ship is created with
//!   Podman's own `stop_timeout` set to the driver's grace period (which a stop without a
//!   timeout uses), and the forced delete that follows carries `timeout`, which Podman honours;
//! * its delete sends "remove the anonymous volumes" as `v`, which libpod 4.3 ignores (it reads
//!   `volumes`): the delete is sent raw by [`crate::raw`] with `volumes=true` (measured: a
//!   container of an image with `VOLUME`s, such as the data-removal helper, left its anonymous
//!   volumes behind).
//!
//! Every call is bounded by the request timeout (`podman-api` has none): a call that does not
//! finish is `Unavailable`.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bay_core::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};
use bay_core::engine::{
    self, CAPABILITIES, DataLayout, HELPER_DATA_MOUNT, HOME_MOUNT, METADATA_MOUNT, container_name,
    volume_names,
};
use futures_util::StreamExt;
use podman_api::Podman;
use podman_api::models::{
    ContainerMount, ContainerStatus, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources, NamedVolume,
    Namespace, PortMapping, PosixRlimit,
};
use podman_api::opts::{
    ContainerCreateOpts, ContainerListFilter, ContainerListOpts, ContainerLogsOpts,
    ContainerStopOpts, ContainerWaitOpts, NetworkCreateOpts, VolumeCreateOpts,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::common::{self, image_missing};
use crate::errors::{
    conflict_answer, describe_answer, image_missing_answer, network_missing_answer,
};
use crate::raw;
use crate::settings::{Mode, PodmanSettings};

/// The CFS period the CPU limit is expressed in (µs).
const CPU_PERIOD: u64 = 100_000;

/// The key `podman-api` 0.11 writes no-new-privileges under (misspelt: Podman ignores it).
pub(crate) const PODMAN_API_NNP_KEY: &str = "no_new_privilages";
/// The key Podman's libpod reads.
pub(crate) const LIBPOD_NNP_KEY: &str = "no_new_privileges";

/// A libpod call that failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Podman answered with this status and message.
    Answer(u16, String),
    /// Podman did not answer (no socket, connection refused, timeout, broken answer).
    NoAnswer(String),
}

impl Failure {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Answer(s, _) => Some(*s),
            Self::NoAnswer(_) => None,
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Self::Answer(s, m) if conflict_answer(*s, m))
    }

    /// The [`DriverError`] of a failure about `what`.
    fn into_error(self, what: &str) -> DriverError {
        match self {
            Self::Answer(404, _) => DriverError::NotFound(what.to_owned()),
            Self::Answer(s, m) => {
                DriverError::Engine(format!("{what}: {}", describe_answer(s, &m)))
            }
            Self::NoAnswer(m) => DriverError::Unavailable(format!("{what}: {m}")),
        }
    }
}

impl From<podman_api::Error> for Failure {
    fn from(e: podman_api::Error) -> Self {
        match e {
            podman_api::Error::Fault { code, message } => Self::Answer(code.as_u16(), message),
            other => Self::NoAnswer(bay_core::driver::error_chain(&other)),
        }
    }
}

impl From<raw::RawError> for Failure {
    fn from(e: raw::RawError) -> Self {
        match e {
            raw::RawError::Answer(s, m) => Self::Answer(s, m),
            raw::RawError::NoAnswer(m) => Self::NoAnswer(m),
        }
    }
}

/// The Podman driver on the libpod API.
#[derive(Debug)]
pub(crate) struct LibpodDriver {
    settings: PodmanSettings,
    podman: Podman,
    socket: std::path::PathBuf,
}

impl LibpodDriver {
    /// A client on the socket [`PodmanSettings::socket`] finds (no request yet).
    pub(crate) fn connect(settings: PodmanSettings) -> DriverResult<Self> {
        let socket = settings.socket()?.to_owned();
        Ok(Self {
            podman: Podman::unix(&socket),
            socket,
            settings,
        })
    }

    /// Runs one call bounded by the request timeout.
    async fn call<T, E: Into<Failure>>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.settings.request_timeout, fut).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(Failure::NoAnswer(format!(
                "no answer within {} s",
                self.settings.request_timeout.as_secs()
            ))),
        }
    }

    /// Creates the ships' network (`DOCKER_NETWORK`, a bridge) unless it exists (network mode
    /// only: host-mode ships join no network).
    async fn ensure_network(&self) -> DriverResult<()> {
        let Some(net) = common::ships_network(&self.settings) else {
            return Ok(());
        };
        let what = format!("network {net}");
        let network = self.podman.networks().get(net);
        if self
            .call(network.exists())
            .await
            .map_err(|f| f.into_error(&what))?
        {
            return Ok(());
        }
        info!(network = %net, driver = "bridge", "podman network for ships is missing; creating it");
        let opts = NetworkCreateOpts::builder()
            .name(net)
            .driver("bridge")
            .labels(engine::network_labels(&self.settings.extra_labels))
            .build();
        match self.call(self.podman.networks().create(&opts)).await {
            Ok(_) => Ok(()),
            // Created meanwhile (500 "network already exists").
            Err(f) if f.is_conflict() => Ok(()),
            Err(f) => Err(f.into_error(&what)),
        }
    }

    /// Makes sure the ship's data exists; returns its named volumes and bind mounts.
    async fn prepare_data(
        &self,
        ship_id: &str,
    ) -> DriverResult<(Vec<NamedVolume>, Vec<ContainerMount>)> {
        match &self.settings.data {
            DataLayout::Volumes => {
                let [home, metadata] = volume_names(ship_id);
                for name in [&home, &metadata] {
                    // An existing volume (500 "already exists") is reused: data is kept.
                    let opts = VolumeCreateOpts::builder()
                        .name(name)
                        .labels(engine::labels(&self.settings.extra_labels, Some(ship_id)))
                        .build();
                    match self.call(self.podman.volumes().create(&opts)).await {
                        Ok(_) => {}
                        Err(f) if f.is_conflict() => {}
                        Err(f) => return Err(f.into_error(&format!("volume {name}"))),
                    }
                }
                Ok((
                    vec![
                        named_volume(home, HOME_MOUNT),
                        named_volume(metadata, METADATA_MOUNT),
                    ],
                    vec![],
                ))
            }
            DataLayout::HostDirs { local, host } => {
                engine::prepare_ship_dirs(local, ship_id).await?;
                Ok((
                    vec![],
                    engine::host_dir_mounts(&host.join(ship_id))
                        .into_iter()
                        .map(|(source, target)| bind_mount(source, target))
                        .collect(),
                ))
            }
        }
    }

    /// Posts a create body (with libpod's no-new-privileges key) and returns the id.
    async fn post_create(&self, body: &Value) -> Result<String, Failure> {
        let path = format!(
            "/v{}/libpod/containers/create",
            podman_api::LATEST_API_VERSION
        );
        let answer = self
            .call(raw::post_json(
                &self.socket,
                &path,
                body,
                self.settings.request_timeout,
            ))
            .await?;
        for w in answer
            .get("Warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            warn!(warning = %w, "podman warning while creating a container");
        }
        answer
            .get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Failure::NoAnswer(format!("create answered without an Id: {answer}")))
    }

    /// Maps a container-create failure, telling a missing image apart.
    fn create_error(&self, f: Failure) -> DriverError {
        if let Failure::Answer(s, m) = &f
            && image_missing_answer(*s, m)
        {
            return image_missing(&self.settings.image);
        }
        f.into_error("ship container")
    }

    /// Creates the ship container (removing a stale one of the same name, creating its network
    /// again when it vanished), checks that Podman set no-new-privileges, returns the id.
    async fn create_container(
        &self,
        req: &ShipContainerRequest,
        volumes: Vec<NamedVolume>,
        mounts: Vec<ContainerMount>,
    ) -> DriverResult<String> {
        let name = container_name(&req.ship_id);
        if let Some(disk) = req.spec.disk_bytes {
            debug!(ship.id = %req.ship_id, disk.bytes = disk, "disk quota ignored: the podman driver does not limit a container's disk");
        }
        let body = create_body(
            &self.settings,
            req,
            engine::labels(&self.settings.extra_labels, Some(&req.ship_id)),
            volumes,
            mounts,
        )
        .map_err(DriverError::Engine)?;
        let mut retried_conflict = false;
        let mut retried_network = false;
        let id = loop {
            match self.post_create(&body).await {
                Ok(id) => break id,
                Err(f) if f.is_conflict() && !retried_conflict => {
                    retried_conflict = true;
                    warn!(ship.id = %req.ship_id, container.name = %name, "a stale container of the ship exists; removing it");
                    self.remove(&name).await?;
                }
                Err(Failure::Answer(s, m)) if network_missing_answer(s, &m) && !retried_network => {
                    retried_network = true;
                    self.ensure_network().await?;
                }
                Err(f) => return Err(self.create_error(f)),
            }
        };
        // Fail closed: a ship without no-new-privileges must not run.
        let checked = self
            .call(self.podman.containers().get(&id).inspect())
            .await
            .map_err(|f| f.into_error(&format!("container {id}")))
            .and_then(|i| {
                let opts = i.host_config.and_then(|h| h.security_opt).unwrap_or_default();
                if opts.iter().any(|o| o.starts_with("no-new-privileges")) {
                    Ok(())
                } else {
                    Err(DriverError::Engine(format!(
                        "podman created container {id} without no-new-privileges (security options {opts:?}); it was removed"
                    )))
                }
            });
        if let Err(e) = checked {
            let _ = self.remove(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Force-removes a container with its anonymous volumes; a missing one is fine.
    async fn remove(&self, container: &str) -> DriverResult<()> {
        let timeout = self.settings.stop_timeout.as_secs();
        let path = format!(
            "/v{}/libpod/containers/{}?force=true&volumes=true&timeout={timeout}",
            podman_api::LATEST_API_VERSION,
            percent_encoding::utf8_percent_encode(container, percent_encoding::NON_ALPHANUMERIC)
        );
        let delete = raw::request_json(
            &self.socket,
            hyper::Method::DELETE,
            &path,
            None,
            self.settings.request_timeout,
        );
        match self.call(delete).await {
            Ok(_) => Ok(()),
            Err(f) if f.status() == Some(404) => Ok(()),
            Err(f) if f.status() == Some(409) => {
                debug!(container.id = %container, "container removal already in progress");
                Ok(())
            }
            Err(f) => Err(f.into_error(&format!("container {container}"))),
        }
    }

    /// The address of a started container: `IP` (network mode) or `127.0.0.1:port`.
    async fn address(&self, id: &str) -> DriverResult<String> {
        let mut last = None;
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let inspect = self
                .call(self.podman.containers().get(id).inspect())
                .await
                .map_err(|f| f.into_error(&format!("container {id}")))?;
            let inspect = serde_json::to_value(&inspect)
                .map_err(|e| DriverError::Engine(format!("container {id}: {e}")))?;
            match address_of(&self.settings, &inspect) {
                Ok(a) => return Ok(a),
                Err(e) => last = Some(e),
            }
            if inspect["State"]["Running"] == Value::Bool(false) {
                break;
            }
        }
        Err(DriverError::Engine(last.unwrap_or_else(|| {
            "the ship container has no address".to_owned()
        })))
    }

    /// Empties a ship's host data directories with a short-lived root helper container (files
    /// of session users are not Bay's to remove). Does nothing with named volumes.
    async fn remove_host_data_with_helper(&self, ship_id: &str) -> DriverResult<()> {
        let DataLayout::HostDirs { host, .. } = &self.settings.data else {
            return Ok(());
        };
        let host_root = host.join(ship_id);
        let (entrypoint, cmd) = engine::helper_command();
        let opts = ContainerCreateOpts::builder()
            .image(&self.settings.image)
            .user("0:0")
            .entrypoint(entrypoint)
            .command(cmd)
            .labels(engine::helper_labels(&self.settings.extra_labels, ship_id))
            .net_namespace(Namespace {
                nsmode: Some("none".to_owned()),
                value: None,
            })
            .mounts([bind_mount(
                host_root.display().to_string(),
                HELPER_DATA_MOUNT,
            )])
            .r_limits(rlimits(&self.settings))
            .build();
        let created = self
            .call(self.podman.containers().create(&opts))
            .await
            .map_err(|f| self.create_error(f))?;
        let id = created.id;
        info!(ship.id = %ship_id, container.id = %id, "removing ship data with a helper container");
        let container = self.podman.containers().get(&id);
        let result = async {
            self.call(container.start(None))
                .await
                .map_err(|f| f.into_error("helper container"))?;
            let wait = ContainerWaitOpts::builder()
                .conditions([ContainerStatus::Exited])
                .build();
            match tokio::time::timeout(Duration::from_secs(120), container.wait(&wait)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Failure::from(e).into_error("helper container")),
                Err(_) => {
                    return Err(DriverError::Unavailable(
                        "the helper container did not finish within 120 s".to_owned(),
                    ));
                }
            }
            let code = self
                .call(container.inspect())
                .await
                .map_err(|f| f.into_error("helper container"))?
                .state
                .and_then(|s| s.exit_code);
            match code {
                Some(0) => Ok(()),
                other => Err(DriverError::Engine(format!(
                    "the helper container removing {} exited with {other:?}",
                    host_root.display()
                ))),
            }
        }
        .await;
        let _ = self.remove(&id).await;
        result
    }
}

fn named_volume(name: String, dest: &str) -> NamedVolume {
    NamedVolume {
        name: Some(name),
        dest: Some(dest.to_owned()),
        is_anonymous: None,
        options: None,
    }
}

fn bind_mount(source: String, target: &str) -> ContainerMount {
    ContainerMount {
        destination: Some(target.to_owned()),
        source: Some(source),
        _type: Some("bind".to_owned()),
        options: Some(vec!["rbind".to_owned()]),
        uid_mappings: None,
        gid_mappings: None,
    }
}

fn rlimits(settings: &PodmanSettings) -> Vec<PosixRlimit> {
    [("nofile", settings.nofile), ("nproc", settings.nproc)]
        .into_iter()
        .map(|(name, l)| PosixRlimit {
            type_: Some(name.to_owned()),
            soft: u64::try_from(l.soft).ok(),
            hard: u64::try_from(l.hard).ok(),
        })
        .collect()
}

/// The libpod create body of a ship's container (pure: unit-tested): `podman-api`'s options
/// with no-new-privileges under the key Podman reads.
pub(crate) fn create_body(
    settings: &PodmanSettings,
    req: &ShipContainerRequest,
    labels: HashMap<String, String>,
    volumes: Vec<NamedVolume>,
    mounts: Vec<ContainerMount>,
) -> Result<Value, String> {
    let env: HashMap<String, String> = engine::agent_env(req, settings.container_port)
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let memory = common::memory(req);
    let cpu = common::nano_cpus(req).map(|n| LinuxCpu {
        period: Some(CPU_PERIOD),
        quota: Some(n.saturating_mul(CPU_PERIOD as i64) / 1_000_000_000),
        cpus: None,
        mems: None,
        realtime_period: None,
        realtime_runtime: None,
        shares: None,
    });
    let resources = LinuxResources {
        cpu,
        memory: memory.map(|m| LinuxMemory {
            limit: Some(m),
            // No swap beyond the memory limit (memory + swap = the limit).
            swap: Some(m),
            disable_oom_killer: None,
            kernel: None,
            kernel_tcp: None,
            reservation: None,
            swappiness: None,
            use_hierarchy: None,
        }),
        pids: Some(LinuxPids {
            limit: Some(settings.pids_limit),
        }),
        block_io: None,
        devices: None,
        hugepage_limits: None,
        network: None,
        rdma: None,
        unified: None,
    };
    let mut opts = ContainerCreateOpts::builder()
        .name(container_name(&req.ship_id))
        .image(&settings.image)
        .env(env)
        .labels(labels)
        .drop_capabilities(["ALL"])
        .add_capabilities(CAPABILITIES.iter().copied())
        .no_new_privilages(true)
        .resource_limits(resources)
        // Rootful Podman's default nofile/nproc cannot be set everywhere: always explicit.
        .r_limits(rlimits(settings))
        // Podman ignores podman-api's stop timeout; it honours the container's own.
        .stop_timeout(settings.stop_timeout.as_secs())
        .volumes(volumes)
        .mounts(mounts);
    if let Some(net) = common::ships_network(settings) {
        opts = opts.networks([(net.to_owned(), serde_json::json!({}))]);
    }
    if settings.mode == Mode::Network {
        opts = opts.net_namespace(Namespace {
            nsmode: Some("bridge".to_owned()),
            value: None,
        });
    } else {
        // A network stack of its own, with no route to the host's loopback.
        opts = opts
            .net_namespace(Namespace {
                nsmode: Some(common::HOST_MODE_NETNS.to_owned()),
                value: None,
            })
            .network_options([(common::HOST_MODE_NETNS, common::HOST_MODE_NETNS_OPTIONS)])
            .portmappings([PortMapping {
                container_port: Some(settings.container_port),
                host_ip: Some("127.0.0.1".to_owned()),
                // none: Podman picks a free port
                host_port: None,
                protocol: Some("tcp".to_owned()),
                range: None,
            }]);
    }
    let text = opts.build().serialize().map_err(|e| e.to_string())?;
    let mut body: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = body
        .as_object_mut()
        .ok_or_else(|| format!("podman-api's create options are not an object: {text}"))?;
    let nnp = map.remove(PODMAN_API_NNP_KEY).unwrap_or(Value::Bool(true));
    map.insert(LIBPOD_NNP_KEY.to_owned(), nnp);
    Ok(body)
}

/// The agent address of an inspected container, as libpod's inspect JSON (pure: unit-tested).
pub(crate) fn address_of(settings: &PodmanSettings, inspect: &Value) -> Result<String, String> {
    let net = &inspect["NetworkSettings"];
    match settings.mode {
        Mode::Host => {
            let key = format!("{}/tcp", settings.container_port);
            let port = net["Ports"][&key]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| {
                    b["HostIp"]
                        .as_str()
                        .is_none_or(|ip| ip.is_empty() || ip == "127.0.0.1")
                })
                .find_map(|b| b["HostPort"].as_str().filter(|p| !p.is_empty()))
                .ok_or_else(|| format!("port {key} of the ship container is not published"))?;
            Ok(format!("127.0.0.1:{port}"))
        }
        Mode::Network => {
            let name = common::address_network(settings);
            let endpoint = &net["Networks"][name];
            if !endpoint.is_object() {
                return Err(format!(
                    "the ship container is not attached to network {name}"
                ));
            }
            if let Some(ip) = endpoint["IPAddress"].as_str().filter(|ip| !ip.is_empty()) {
                return Ok(ip.to_owned());
            }
            endpoint["GlobalIPv6Address"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map(|ip| format!("[{ip}]"))
                .ok_or_else(|| format!("the ship container has no IP address on network {name}"))
        }
    }
}

#[async_trait]
impl ContainerDriver for LibpodDriver {
    async fn initialize(&self) -> DriverResult<()> {
        self.ensure_network().await?;
        let image = &self.settings.image;
        let exists = self
            .call(self.podman.images().get(image).exists())
            .await
            .map_err(|f| f.into_error(&format!("image {image}")))?;
        if !exists {
            warn!(image = %image, "{}", image_missing(image));
        }
        info!(
            mode = ?self.settings.mode,
            image = %image,
            network = common::network_of_ships(&self.settings),
            "podman driver ready (libpod api)"
        );
        Ok(())
    }

    async fn close(&self) -> DriverResult<()> {
        Ok(())
    }

    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo> {
        let (volumes, mounts) = self.prepare_data(&req.ship_id).await?;
        let id = self.create_container(req, volumes, mounts).await?;
        debug!(ship.id = %req.ship_id, container.id = %id, "ship container created");
        let started = match self
            .call(self.podman.containers().get(&id).start(None))
            .await
        {
            Ok(()) => self.address(&id).await,
            Err(f) => Err(f.into_error(&format!("starting container {id}"))),
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
                if let Err(re) = self.remove(&id).await {
                    warn!(ship.id = %req.ship_id, container.id = %id, error = %re, "cannot remove the failed container");
                }
                Err(e)
            }
        }
    }

    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()> {
        let container = self.podman.containers().get(container_id);
        let what = format!("container {container_id}");
        // podman-api sends the timeout as `Timeout`, which Podman ignores: the container's own
        // stop timeout (set at create to the same grace period) applies.
        let t = usize::try_from(self.settings.stop_timeout.as_secs()).unwrap_or(5);
        match self
            .call(container.stop(&ContainerStopOpts::builder().timeout(t).build()))
            .await
        {
            Ok(()) => {}
            Err(f) if f.status() == Some(404) => {
                debug!(container.id = %container_id, "container already gone");
                return Ok(());
            }
            Err(f @ Failure::NoAnswer(_)) => return Err(f.into_error(&what)),
            // 304 (not running) or anything else: the forced delete below still applies.
            Err(f) => {
                debug!(container.id = %container_id, error = ?f, "stop failed; removing anyway")
            }
        }
        self.remove(container_id).await?;
        debug!(container.id = %container_id, "ship container stopped and removed");
        Ok(())
    }

    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool> {
        match &self.settings.data {
            DataLayout::Volumes => {
                for name in volume_names(ship_id) {
                    let exists = self
                        .call(self.podman.volumes().get(&name).exists())
                        .await
                        .map_err(|f| f.into_error(&format!("volume {name}")))?;
                    if exists {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            DataLayout::HostDirs { local, .. } => engine::ship_dirs_exist(local, ship_id).await,
        }
    }

    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String> {
        let what = format!("container {container_id}");
        let container = self.podman.containers().get(container_id);
        // libpod answers logs of a missing container with a 200 and an empty stream on some
        // versions: ask whether it exists first.
        if !self
            .call(container.exists())
            .await
            .map_err(|f| f.into_error(&what))?
        {
            return Err(DriverError::NotFound(what));
        }
        let opts = ContainerLogsOpts::builder()
            .stdout(true)
            .stderr(true)
            .tail(engine::log_tail_lines(tail).to_string())
            .build();
        let collect = async {
            let mut stream = container.logs(&opts);
            let mut logs = engine::LogTail::default();
            while let Some(chunk) = stream.next().await {
                let chunk: Vec<u8> = chunk?.into();
                logs.push(&chunk);
            }
            Ok::<_, podman_api::Error>(logs)
        };
        let logs = self.call(collect).await.map_err(|f| f.into_error(&what))?;
        Ok(logs.into_string())
    }

    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool> {
        let inspect = self
            .call(self.podman.containers().get(container_id).inspect())
            .await
            .map_err(|f| f.into_error(&format!("container {container_id}")))?;
        Ok(inspect.state.and_then(|s| s.running).unwrap_or(false))
    }

    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()> {
        match &self.settings.data {
            DataLayout::Volumes => {
                for name in volume_names(ship_id) {
                    match self.call(self.podman.volumes().get(&name).delete()).await {
                        Ok(()) => info!(ship.id = %ship_id, volume = %name, "ship volume removed"),
                        Err(f) if f.status() == Some(404) => {}
                        Err(f) => return Err(f.into_error(&format!("volume {name}"))),
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
        let opts = ContainerListOpts::builder()
            .all(true)
            .filter([ContainerListFilter::LabelKeyVal(
                engine::LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])
            .build();
        let list = self
            .call(self.podman.containers().list(&opts))
            .await
            .map_err(|f| f.into_error("managed containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let ship_id = engine::ship_id_of(c.labels.as_ref()?)?.to_owned();
                Some(ManagedContainer {
                    container_id: c.id?,
                    ship_id,
                    running: c.state.as_deref() == Some("running"),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{request, settings};
    use bay_core::model::EffectiveSpec;

    #[test]
    fn the_create_body_carries_hardening_limits_and_libpods_nnp_key() {
        let s = settings("podman-host", Some("shipyard"));
        let req = request(EffectiveSpec {
            cpus: Some(1.5),
            memory_bytes: Some(256 << 20),
            disk_bytes: None,
        });
        let body = create_body(
            &s,
            &req,
            engine::labels(&s.extra_labels, Some("abc")),
            vec![named_volume("ship-abc-home".into(), HOME_MOUNT)],
            vec![],
        )
        .unwrap();
        assert_eq!(body[LIBPOD_NNP_KEY], true, "{body}");
        assert!(body.get(PODMAN_API_NNP_KEY).is_none(), "{body}");
        assert_eq!(body["name"], "ship-abc");
        assert_eq!(body["cap_drop"], serde_json::json!(["ALL"]));
        assert_eq!(body["cap_add"], serde_json::json!(CAPABILITIES));
        assert_eq!(body["stop_timeout"], 5);
        let r = &body["resource_limits"];
        assert_eq!(r["pids"]["limit"], engine::PIDS_LIMIT);
        assert_eq!(r["memory"]["limit"], 256 << 20);
        assert_eq!(r["memory"]["swap"], 256 << 20);
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        let limits: Vec<&str> = body["r_limits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["type"].as_str().unwrap())
            .collect();
        assert_eq!(limits, ["nofile", "nproc"]);
        assert_eq!(body["env"]["SHIP_ID"], "abc");
        assert_eq!(body["env"]["SHIP_AUTH_TOKEN"], "tok");
        assert_eq!(body["env"]["SHIP_PORT"], "8123");
        assert_eq!(body["labels"][engine::LABEL_SHIP_ID], "abc");
        // Host mode: published on loopback only, from a network stack of its own with no
        // route to the host's loopback; DOCKER_NETWORK is not joined.
        assert_eq!(body["portmappings"][0]["host_ip"], "127.0.0.1");
        assert_eq!(body["portmappings"][0]["container_port"], 8123);
        assert_eq!(body["netns"]["nsmode"], "slirp4netns", "{body}");
        assert_eq!(
            body["network_options"]["slirp4netns"],
            serde_json::json!(["allow_host_loopback=false"]),
            "{body}"
        );
        assert!(body.get("Networks").is_none(), "{body}");
        assert_eq!(body["volumes"][0]["Name"], "ship-abc-home", "{body}");
    }

    #[test]
    fn network_mode_publishes_nothing_and_unlimited_means_none() {
        let s = settings("podman", None);
        let body = create_body(
            &s,
            &request(EffectiveSpec::default()),
            HashMap::new(),
            vec![],
            vec![],
        )
        .unwrap();
        assert!(body.get("portmappings").is_none(), "{body}");
        assert!(body.get("Networks").is_none(), "{body}");
        assert_eq!(body["netns"]["nsmode"], "bridge", "{body}");
        assert!(body.get("network_options").is_none(), "{body}");
        let joined = create_body(
            &settings("podman", Some("shipyard")),
            &request(EffectiveSpec::default()),
            HashMap::new(),
            vec![],
            vec![],
        )
        .unwrap();
        assert!(joined["Networks"]["shipyard"].is_object(), "{joined}");
        assert!(
            body["resource_limits"]
                .get("cpu")
                .is_none_or(Value::is_null),
            "{body}"
        );
        assert_eq!(body[LIBPOD_NNP_KEY], true);
    }

    #[test]
    fn addresses_are_read_from_libpods_inspect() {
        let inspect = serde_json::json!({
            "State": {"Running": true},
            "NetworkSettings": {
                "Ports": {"8123/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40001"}]},
                "Networks": {"podman": {"IPAddress": "10.88.0.7"}}
            }
        });
        assert_eq!(
            address_of(&settings("podman-host", None), &inspect).unwrap(),
            "127.0.0.1:40001"
        );
        assert_eq!(
            address_of(&settings("podman", None), &inspect).unwrap(),
            "10.88.0.7"
        );
        assert!(address_of(&settings("podman", Some("shipyard")), &inspect).is_err());
    }
}
