//! The container-driver seam: what Bay needs from a container engine.
//!
//! A driver creates and removes ship containers and their data; it never touches the database.
//! Errors tell "not found" apart from "the engine did not answer", because a transient engine
//! error must never mark a healthy ship stopped.

use async_trait::async_trait;

use crate::model::EffectiveSpec;

/// Where a new container was started and how Bay reaches its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Engine container id (Docker/Podman) or pod name (Kubernetes).
    pub container_id: String,
    /// `IP` for network modes (port `SHIP_CONTAINER_PORT` implied) or `IP:port` for host modes;
    /// IPv6 hosts bracketed (`[fd00::5]`, `[fd00::5]:8123`).
    pub ip_address: String,
}

/// Everything a driver needs to create a ship's container.
#[derive(Debug, Clone)]
pub struct ShipContainerRequest {
    /// The ship id (containers are named `ship-<id>` and labelled `bay.ship-id=<id>`).
    pub ship_id: String,
    /// The ship's effective resources.
    pub spec: EffectiveSpec,
    /// The per-ship bearer token, passed as `SHIP_AUTH_TOKEN`.
    pub auth_token: String,
    /// The ttl the ship was asked for (informational, passed as `TTL`).
    pub ttl: i64,
}

/// A container the driver created, found by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Engine container id or pod name.
    pub container_id: String,
    /// The `bay.ship-id` label.
    pub ship_id: String,
    /// Whether it is running.
    pub running: bool,
}

/// A driver failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The container (or data) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The engine did not answer (unreachable, timed out): the state is unknown.
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    /// The ship image is missing.
    #[error("{0}")]
    ImageMissing(String),
    /// The driver is not usable in this build or configuration.
    #[error("{0}")]
    NotSupported(String),
    /// Any other engine error.
    #[error("{0}")]
    Engine(String),
}

impl DriverError {
    /// Whether the state of the target is unknown (so nothing must be concluded from it).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The result of a driver call.
pub type DriverResult<T> = Result<T, DriverError>;

/// An error with its chain of sources on one line (`outer: cause: root cause`), for engine
/// clients whose top-level message hides the cause; a source whose text the line already holds
/// is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// A container engine that runs ships. Used as `Arc<dyn ContainerDriver>`.
///
/// The first seven methods are the original's; `delete_ship_data` and `list_managed` are what
/// a correct lifecycle needs (permanent delete, orphan reconciliation).
#[async_trait]
pub trait ContainerDriver: Send + Sync + std::fmt::Debug {
    /// Connects to the engine and prepares shared resources (networks, …).
    async fn initialize(&self) -> DriverResult<()>;

    /// Releases the engine connection. Ship containers keep running.
    async fn close(&self) -> DriverResult<()>;

    /// Creates and starts the container of a ship, attaching the ship's existing data if any.
    async fn create_ship_container(
        &self,
        req: &ShipContainerRequest,
    ) -> DriverResult<ContainerInfo>;

    /// Stops and removes a ship's container (data kept). A missing container is not an error.
    async fn stop_ship_container(&self, container_id: &str) -> DriverResult<()>;

    /// Whether a ship's data (volumes, directories, PVC) still exists.
    async fn ship_data_exists(&self, ship_id: &str) -> DriverResult<bool>;

    /// The last `tail` lines of a container's output.
    async fn get_container_logs(&self, container_id: &str, tail: u32) -> DriverResult<String>;

    /// Whether the container is running; `Err(NotFound)` when it does not exist.
    async fn is_container_running(&self, container_id: &str) -> DriverResult<bool>;

    /// Removes a ship's data. Data already gone is not an error.
    async fn delete_ship_data(&self, ship_id: &str) -> DriverResult<()>;

    /// Every container this driver created (found by the `bay.managed=true` label).
    async fn list_managed(&self) -> DriverResult<Vec<ManagedContainer>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chains_are_one_line_without_repeats() {
        let e = Layer(
            "request failed: connection refused",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("os error 111\nretry", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "request failed: connection refused: os error 111 retry"
        );
    }
}
