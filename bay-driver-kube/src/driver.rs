//! The [`ContainerDriver`] on a Kubernetes API server.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bay_core::driver::{
    ContainerDriver, ContainerInfo, DriverError, DriverResult, ManagedContainer,
    ShipContainerRequest,
};
use bay_core::engine;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::api::{WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::KubeSettings;
use crate::errors::{self, status};
use crate::objects::{self, CONTAINER_NAME, ShipQuantities};

/// The namespace used when neither `KUBE_NAMESPACE` nor a service account names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest single watch request (the API server ends watches after at most this long).
const WATCH_CHUNK: Duration = Duration::from_secs(290);

/// A client and the namespace ships live in.
#[derive(Clone)]
struct Conn {
    client: Client,
    namespace: String,
}

/// The Kubernetes driver: one Pod, PVC and Secret per ship, in one namespace.
pub struct KubeDriver {
    settings: KubeSettings,
    conn: OnceCell<Conn>,
}

impl std::fmt::Debug for KubeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDriver")
            .field("settings", &self.settings)
            .field("namespace", &self.conn.get().map(|c| c.namespace.as_str()))
            .finish()
    }
}

impl KubeDriver {
    /// A driver that connects on first use (in-cluster, then `KUBE_CONFIG_PATH`, then the
    /// default kubeconfig).
    pub fn new(settings: KubeSettings) -> Self {
        Self {
            settings,
            conn: OnceCell::new(),
        }
    }

    /// A driver on an existing client (tests use a mocked API server this way). The namespace
    /// is `settings.namespace`, else `default`.
    pub fn with_client(settings: KubeSettings, client: Client) -> Self {
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Self {
            settings,
            conn: OnceCell::new_with(Some(Conn { client, namespace })),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The namespace ships live in (connects if needed).
    pub async fn namespace(&self) -> DriverResult<String> {
        Ok(self.conn().await?.namespace.clone())
    }

    async fn conn(&self) -> DriverResult<&Conn> {
        self.conn.get_or_try_init(|| connect(&self.settings)).await
    }

    async fn apis(&self) -> DriverResult<Apis> {
        let c = self.conn().await?;
        Ok(Apis {
            pods: Api::namespaced(c.client.clone(), &c.namespace),
            pvcs: Api::namespaced(c.client.clone(), &c.namespace),
            secrets: Api::namespaced(c.client.clone(), &c.namespace),
        })
    }

    /// One API call bounded by the request timeout; the outer error is the timeout.
    async fn raw<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> DriverResult<Result<T, kube::Error>> {
        tokio::time::timeout(self.settings.request_timeout, fut)
            .await
            .map_err(|_| errors::timed_out(what, self.settings.request_timeout))
    }

    /// One API call bounded by the request timeout, its error classified.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> DriverResult<T> {
        self.raw(what, fut).await?.map_err(|e| errors::map(what, e))
    }

    /// Deletes `name`; an object already gone is not an error.
    async fn delete_quietly<K>(&self, api: &Api<K>, what: &str, name: &str) -> DriverResult<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let dp = DeleteParams {
            grace_period_seconds: u32::try_from(self.settings.stop_grace.as_secs()).ok(),
            ..Default::default()
        };
        match self.raw(what, api.delete(name, &dp)).await? {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(errors::map(what, e)),
        }
    }

    /// Follows the Pod `name` with a watch (re-reading it whenever a watch ends) until
    /// `decide` gives an answer for its state (`None` = the Pod is gone), bounded by `deadline`.
    async fn follow_pod<T>(
        &self,
        pods: &Api<Pod>,
        name: &str,
        deadline: Instant,
        mut decide: impl FnMut(Option<&Pod>) -> Option<DriverResult<T>>,
        on_timeout: impl Fn(Option<&Pod>) -> DriverError,
    ) -> DriverResult<T> {
        let what = format!("pod {name}");
        let mut last: Option<Pod> = None;
        loop {
            let current = self.call(&what, pods.get_opt(name)).await?;
            if let Some(answer) = decide(current.as_ref()) {
                return answer;
            }
            let version = current
                .as_ref()
                .and_then(|p| p.metadata.resource_version.clone())
                .unwrap_or_else(|| "0".to_owned());
            last = current.or(last);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(on_timeout(last.as_ref()));
            }
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(u32::try_from(left.min(WATCH_CHUNK).as_secs().max(1)).unwrap_or(1));
            let stream = match tokio::time::timeout_at(deadline, pods.watch(&wp, &version)).await {
                Err(_) => return Err(on_timeout(last.as_ref())),
                Ok(r) => r.map_err(|e| errors::map(&what, e))?,
            };
            let mut stream = stream.boxed();
            let mut failed = false;
            loop {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => return Err(on_timeout(last.as_ref())),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        debug!(pod = %name, error = %errors::describe(&e), "watch failed; reading the pod again");
                        failed = true;
                        break;
                    }
                    Ok(Some(Ok(event))) => match event {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                            if let Some(answer) = decide(Some(&p)) {
                                return answer;
                            }
                            last = Some(p);
                        }
                        WatchEvent::Deleted(_) => {
                            if let Some(answer) = decide(None) {
                                return answer;
                            }
                        }
                        WatchEvent::Bookmark(_) => {}
                        WatchEvent::Error(e) => {
                            // 410 Gone: the version is too old; read the Pod again.
                            debug!(pod = %name, code = e.code, "watch error event; reading the pod again");
                            failed = true;
                            break;
                        }
                    },
                }
            }
            if failed {
                // A watch that fails at once must not turn into a busy loop.
                tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(200)))
                    .await;
            }
        }
    }

    /// Removes a leftover Pod `name` (failed, succeeded, terminating or orphaned) and waits
    /// until it is gone. Never touches the PVC.
    async fn remove_leftover_pod(&self, pods: &Api<Pod>, name: &str) -> DriverResult<()> {
        let what = format!("pod {name}");
        let Some(old) = self.call(&what, pods.get_opt(name)).await? else {
            return Ok(());
        };
        let phase = old
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        info!(pod = %name, phase = %phase, terminating = old.metadata.deletion_timestamp.is_some(),
              "removing a leftover pod before creating the ship's pod (its data is kept)");
        if old.metadata.deletion_timestamp.is_none() {
            self.delete_quietly(pods, &what, name).await?;
        }
        let uid = old.metadata.uid.clone();
        let deadline = Instant::now() + self.settings.stop_grace + self.settings.ready_timeout;
        self.follow_pod(
            pods,
            name,
            deadline,
            |p| match p {
                None => Some(Ok(())),
                Some(p) if p.metadata.uid != uid => Some(Ok(())),
                Some(_) => None,
            },
            |_| {
                DriverError::Engine(format!(
                    "the leftover pod {name} was not removed in time; try again later"
                ))
            },
        )
        .await
    }

    /// Creates the Secret with the ship's token, or replaces the token of an existing one.
    async fn put_secret(
        &self,
        secrets: &Api<Secret>,
        req: &ShipContainerRequest,
    ) -> DriverResult<()> {
        let secret = objects::secret(&self.settings, req);
        let name = engine::container_name(&req.ship_id);
        let what = format!("secret {name}");
        match self
            .raw(&what, secrets.create(&PostParams::default(), &secret))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => {
                let patch = serde_json::json!({
                    "metadata": {"labels": secret.metadata.labels},
                    "stringData": secret.string_data,
                });
                self.call(
                    &what,
                    secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
                .map(drop)
            }
            Err(e) => Err(errors::map(&what, e)),
        }
    }

    /// Creates the ship's PVC unless it exists (a restore reuses it).
    async fn ensure_pvc(
        &self,
        pvcs: &Api<PersistentVolumeClaim>,
        ship_id: &str,
        disk: &str,
    ) -> DriverResult<()> {
        let pvc = objects::pvc(&self.settings, ship_id, disk);
        let name = engine::container_name(ship_id);
        let what = format!("persistentvolumeclaim {name}");
        match self
            .raw(&what, pvcs.create(&PostParams::default(), &pvc))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => {
                let existing = self.call(&what, pvcs.get_opt(&name)).await?;
                match existing {
                    Some(p) if p.metadata.deletion_timestamp.is_some() => Err(DriverError::Engine(
                        format!("{what} is being deleted; the ship's data is going away"),
                    )),
                    Some(_) => Ok(()),
                    // Deleted in between: its data is gone, so a new claim is right.
                    None => self
                        .call(&what, pvcs.create(&PostParams::default(), &pvc))
                        .await
                        .map(drop),
                }
            }
            Err(e) => Err(errors::map(&what, e)),
        }
    }

    /// Waits until the Pod `name` is ready and returns its address.
    async fn wait_ready(&self, pods: &Api<Pod>, name: &str) -> DriverResult<String> {
        let deadline = Instant::now() + self.settings.ready_timeout;
        let timeout = self.settings.ready_timeout;
        self.follow_pod(
            pods,
            name,
            deadline,
            |p| {
                let Some(p) = p else {
                    return Some(Err(DriverError::Engine(format!(
                        "pod {name} was deleted while starting"
                    ))));
                };
                if let Some(ip) = objects::ready_ip(p) {
                    return Some(Ok(ip));
                }
                objects::never_ready(p).map(|why| {
                    let text = format!("pod {name} cannot start: {why}");
                    Err(if objects::is_image_problem(&why) {
                        DriverError::ImageMissing(format!(
                            "{text} (the image {} must be present on the nodes or pullable)",
                            self.settings.image
                        ))
                    } else {
                        DriverError::Engine(text)
                    })
                })
            },
            |last| {
                let phase = last
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                DriverError::Engine(format!(
                    "pod {name} did not become ready within {} s (phase {phase})",
                    timeout.as_secs()
                ))
            },
        )
        .await
    }

    async fn create(&self, req: &ShipContainerRequest) -> DriverResult<ContainerInfo> {
        // Every quantity is checked before anything is created.
        let q = ShipQuantities::of(&self.settings, req)
            .map_err(|e| DriverError::Engine(e.to_string()))?;
        let apis = self.apis().await?;
        let name = engine::container_name(&req.ship_id);
        self.remove_leftover_pod(&apis.pods, &name).await?;
        self.ensure_pvc(&apis.pvcs, &req.ship_id, &q.disk).await?;
        // From here on, an error or an abandoned call removes the Pod and the Secret.
        let mut guard = Cleanup {
            pods: apis.pods.clone(),
            secrets: apis.secrets.clone(),
            name: name.clone(),
            armed: true,
        };
        let result = async {
            self.put_secret(&apis.secrets, req).await?;
            let pod = objects::pod(&self.settings, req, &q);
            self.call(
                &format!("pod {name}"),
                apis.pods.create(&PostParams::default(), &pod),
            )
            .await?;
            self.wait_ready(&apis.pods, &name).await
        }
        .await;
        match result {
            Ok(ip) => {
                guard.armed = false;
                info!(ship.id = %req.ship_id, pod = %name, ip = %ip, "ship pod ready");
                Ok(ContainerInfo {
                    container_id: name,
                    ip_address: ip,
                })
            }
            Err(e) => {
                guard.armed = false;
                if let Err(c) = self.remove_pod_and_secret(&apis, &name).await {
                    warn!(pod = %name, error = %c, "cannot remove the pod of a failed create");
                }
                Err(e)
            }
        }
    }

    async fn remove_pod_and_secret(&self, apis: &Apis, name: &str) -> DriverResult<()> {
        self.delete_quietly(&apis.pods, &format!("pod {name}"), name)
            .await?;
        self.delete_quietly(&apis.secrets, &format!("secret {name}"), name)
            .await
    }
}

/// The typed APIs of the namespace.
struct Apis {
    pods: Api<Pod>,
    pvcs: Api<PersistentVolumeClaim>,
    secrets: Api<Secret>,
}

/// Removes the Pod and Secret of a create that was abandoned (its future dropped).
struct Cleanup {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    name: String,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!(pod = %self.name, "abandoned create outside a runtime: the pod is left for reconciliation");
            return;
        };
        let (pods, secrets, name) = (self.pods.clone(), self.secrets.clone(), self.name.clone());
        warn!(pod = %name, "create abandoned: removing its pod and secret");
        rt.spawn(async move {
            let dp = DeleteParams::default();
            let t = Duration::from_secs(60);
            let _ = tokio::time::timeout(t, pods.delete(&name, &dp)).await;
            let _ = tokio::time::timeout(t, secrets.delete(&name, &dp)).await;
        });
    }
}

/// Builds the client: in-cluster first, then `KUBE_CONFIG_PATH`, then the default kubeconfig.
async fn connect(settings: &KubeSettings) -> DriverResult<Conn> {
    let opts = KubeConfigOptions::default();
    let (mut config, in_cluster) = match Config::incluster() {
        Ok(c) => (c, true),
        Err(in_cluster) => {
            let config = match &settings.config_path {
                Some(path) => {
                    let kc = Kubeconfig::read_from(path).map_err(|e| {
                        DriverError::NotSupported(format!(
                            "cannot read KUBE_CONFIG_PATH {:?}: {e}",
                            path.display().to_string()
                        ))
                    })?;
                    Config::from_custom_kubeconfig(kc, &opts)
                        .await
                        .map_err(|e| {
                            DriverError::NotSupported(format!(
                                "cannot use KUBE_CONFIG_PATH {:?}: {e}",
                                path.display().to_string()
                            ))
                        })?
                }
                None => Config::from_kubeconfig(&opts).await.map_err(|e| {
                    DriverError::NotSupported(format!(
                        "no kubernetes configuration: not in a cluster ({in_cluster}), no \
                         KUBE_CONFIG_PATH, and the default kubeconfig cannot be used ({e})"
                    ))
                })?,
            };
            (config, false)
        }
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    let namespace = match (&settings.namespace, in_cluster) {
        (Some(ns), _) => ns.clone(),
        (None, true) => config.default_namespace.clone(),
        (None, false) => DEFAULT_NAMESPACE.to_owned(),
    };
    let client = Client::try_from(config).map_err(|e| {
        DriverError::NotSupported(format!("cannot build the kubernetes client: {e}"))
    })?;
    info!(namespace = %namespace, in_cluster, "kubernetes driver configured");
    Ok(Conn { client, namespace })
}

#[async_trait]
impl ContainerDriver for KubeDriver {
    async fn initialize(&self) -> DriverResult<()> {
        let conn = self.conn().await?;
        let version = self
            .call("the kubernetes API server", conn.client.apiserver_version())
            .await?;
        // Checks the namespace and the permission to list Pods in it.
        let apis = self.apis().await?;
        self.call(
            &format!("pods in namespace {}", conn.namespace),
            apis.pods.list(
                &ListParams::default()
                    .labels(&engine::managed_filter())
                    .limit(1),
            ),
        )
        .await?;
        info!(version = %version.git_version, namespace = %conn.namespace, "connected to kubernetes");
        Ok(())
    }

    async fn close(&self) -> DriverResult<()> {
        Ok(())
    }

    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo> {
        self.create(req).await
    }

    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()> {
        let apis = self.apis().await?;
        let what = format!("pod {container_id}");
        self.remove_pod_and_secret(&apis, container_id).await?;
        // Wait (bounded) until the Pod is gone, so a restore finds its name free; a Pod still
        // terminating after that is removed by the next create.
        let deadline = Instant::now() + self.settings.stop_grace + Duration::from_secs(15);
        let gone = self
            .follow_pod(
                &apis.pods,
                container_id,
                deadline,
                |p| p.is_none().then_some(Ok(())),
                |_| DriverError::Engine(format!("{what} still terminating")),
            )
            .await;
        if let Err(e) = gone {
            warn!(pod = %container_id, error = %e, "the pod is still terminating after the stop");
        }
        Ok(())
    }

    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool> {
        let apis = self.apis().await?;
        let name = engine::container_name(ship_id);
        let pvc = self
            .call(
                &format!("persistentvolumeclaim {name}"),
                apis.pvcs.get_opt(&name),
            )
            .await?;
        Ok(pvc.is_some_and(|p| p.metadata.deletion_timestamp.is_none()))
    }

    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String> {
        let apis = self.apis().await?;
        let what = format!("pod {container_id}");
        let lp = LogParams {
            container: Some(CONTAINER_NAME.to_owned()),
            tail_lines: Some(i64::from(tail)),
            limit_bytes: Some(self.settings.log_limit_bytes),
            ..Default::default()
        };
        match self.raw(&what, apis.pods.logs(container_id, &lp)).await? {
            Ok(text) => Ok(text),
            // The container has not started yet: no output.
            Err(e)
                if status(&e) == Some(400) && errors::describe(&e).contains("waiting to start") =>
            {
                Ok(String::new())
            }
            Err(e) => Err(errors::map(&what, e)),
        }
    }

    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool> {
        let apis = self.apis().await?;
        let what = format!("pod {container_id}");
        match self.call(&what, apis.pods.get_opt(container_id)).await? {
            Some(pod) => Ok(objects::is_running(&pod)),
            None => Err(DriverError::NotFound(what)),
        }
    }

    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()> {
        let apis = self.apis().await?;
        let name = engine::container_name(ship_id);
        self.delete_quietly(&apis.secrets, &format!("secret {name}"), &name)
            .await?;
        self.delete_quietly(&apis.pvcs, &format!("persistentvolumeclaim {name}"), &name)
            .await
    }

    async fn list_managed(&self) -> DriverResult<Vec<ManagedContainer>> {
        let apis = self.apis().await?;
        let list = self
            .call(
                "managed pods",
                apis.pods
                    .list(&ListParams::default().labels(&engine::managed_filter())),
            )
            .await?;
        Ok(list
            .items
            .iter()
            .filter_map(|pod| {
                let labels: HashMap<String, String> = pod
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let ship_id = engine::ship_id_of(&labels)?.to_owned();
                Some(ManagedContainer {
                    container_id: pod.metadata.name.clone()?,
                    ship_id,
                    running: objects::is_running(pod),
                })
            })
            .collect())
    }
}
