//! What both API paths (libpod and Docker-compatible) share: the network a ship's address is
//! read on, limits, the container list, and the missing-image error.

use std::collections::HashMap;

use bay_core::driver::{DriverError, DriverResult, ManagedContainer, ShipContainerRequest};
use bay_core::engine;

use crate::settings::{Mode, PodmanSettings};

/// Podman's default network (what ships join in network mode when `DOCKER_NETWORK` is empty).
pub(crate) const DEFAULT_NETWORK: &str = "podman";

/// The network whose IP is a ship's address in network mode.
pub(crate) fn address_network(settings: &PodmanSettings) -> &str {
    settings.network.as_deref().unwrap_or(DEFAULT_NETWORK)
}

/// Podman's network mode of a ship in host mode: a user-mode network stack of its own
/// (slirp4netns), so ships share no network with each other; the agent port is published on
/// the host's 127.0.0.1.
pub(crate) const HOST_MODE_NETNS: &str = "slirp4netns";

/// slirp4netns's options in host mode: no route from the ship to the host's loopback (its
/// `10.0.2.2` would otherwise be the host's 127.0.0.1, where the other ships' ports and Bay
/// listen).
pub(crate) const HOST_MODE_NETNS_OPTIONS: [&str; 1] = ["allow_host_loopback=false"];

/// The network ships join: `DOCKER_NETWORK` in network mode (`None`: Podman's default);
/// none in host mode, where every ship has its own network stack ([`HOST_MODE_NETNS`]).
pub(crate) fn ships_network(settings: &PodmanSettings) -> Option<&str> {
    match settings.mode {
        Mode::Network => settings.network.as_deref(),
        Mode::Host => None,
    }
}

/// What ships are attached to, as logged: the address network, or [`HOST_MODE_NETNS`].
pub(crate) fn network_of_ships(settings: &PodmanSettings) -> &str {
    match settings.mode {
        Mode::Network => address_network(settings),
        Mode::Host => HOST_MODE_NETNS,
    }
}

/// The CPU limit in nano-CPUs (`None` = unlimited).
pub(crate) fn nano_cpus(req: &ShipContainerRequest) -> Option<i64> {
    req.spec.cpus.map(|c| (c * 1e9).round() as i64)
}

/// The memory limit in bytes (`None` = unlimited); swap is limited to the same value.
pub(crate) fn memory(req: &ShipContainerRequest) -> Option<i64> {
    req.spec
        .memory_bytes
        .map(|m| i64::try_from(m).unwrap_or(i64::MAX))
}

/// The error of a missing ship image.
pub fn image_missing(image: &str) -> DriverError {
    DriverError::ImageMissing(format!(
        "ship image {image} is missing from podman's image store: build it with `cargo xtask ship-image`, then `docker save {image} | podman load`"
    ))
}

/// The ship containers in a container list answer (pure: unit-tested). Only `running` counts
/// as running; any other state, including ones Docker does not know, is "not running".
pub(crate) fn managed_ships(list: &serde_json::Value) -> DriverResult<Vec<ManagedContainer>> {
    let items = list.as_array().ok_or_else(|| {
        DriverError::Engine(format!(
            "podman's container list is not a JSON array: {list}"
        ))
    })?;
    Ok(items
        .iter()
        .filter_map(|c| {
            let labels: HashMap<String, String> =
                serde_json::from_value(c.get("Labels")?.clone()).ok()?;
            Some(ManagedContainer {
                container_id: c.get("Id")?.as_str()?.to_owned(),
                ship_id: engine::ship_id_of(&labels)?.to_owned(),
                running: c.get("State").and_then(|s| s.as_str()) == Some("running"),
            })
        })
        .collect())
}

/// What the unit tests of both paths build their cases from.
#[cfg(test)]
pub(crate) mod test_support {
    use bay_core::driver::ShipContainerRequest;
    use bay_core::model::EffectiveSpec;

    use crate::settings::PodmanSettings;

    /// The settings of `CONTAINER_DRIVER=<mode>` with `network` as `DOCKER_NETWORK`.
    pub(crate) fn settings(mode: &str, network: Option<&str>) -> PodmanSettings {
        let config = bay_core::config::Config::from_pairs([("CONTAINER_DRIVER", mode)]).unwrap();
        let mut s = PodmanSettings::from_config(&config).unwrap();
        s.network = network.map(str::to_owned);
        s
    }

    /// A creation request for ship `abc` with `spec`.
    pub(crate) fn request(spec: EffectiveSpec) -> ShipContainerRequest {
        ShipContainerRequest {
            ship_id: "abc".into(),
            spec,
            auth_token: "tok".into(),
            ttl: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::settings;
    use super::*;

    #[test]
    fn ships_read_their_address_on_docker_network_or_podmans_default() {
        assert_eq!(
            address_network(&settings("podman", Some("shipyard"))),
            "shipyard"
        );
        assert_eq!(address_network(&settings("podman", None)), DEFAULT_NETWORK);
        assert_eq!(
            ships_network(&settings("podman", Some("shipyard"))),
            Some("shipyard")
        );
        assert_eq!(
            ships_network(&settings("podman-host", Some("shipyard"))),
            None
        );
        assert_eq!(
            network_of_ships(&settings("podman-host", Some("shipyard"))),
            HOST_MODE_NETNS
        );
        assert_eq!(network_of_ships(&settings("podman", None)), DEFAULT_NETWORK);
    }

    #[test]
    fn the_missing_image_error_says_how_to_load_it() {
        let text = image_missing("ship:latest").to_string();
        assert!(
            text.contains("podman load") && text.contains("ship:latest"),
            "{text}"
        );
    }

    #[test]
    fn managed_ships_reads_podman_states_docker_does_not_know() {
        let list = serde_json::json!([
            {"Id": "a", "State": "running", "Labels": {"bay.managed": "true", "bay.ship-id": "s1"}},
            {"Id": "b", "State": "stopped", "Labels": {"bay.managed": "true", "bay.ship-id": "s2"}},
            {"Id": "c", "State": "exited", "Labels": {"bay.managed": "true", "bay.ship-id": "s3"}},
            {"Id": "d", "State": "running",
             "Labels": {"bay.managed": "true", "bay.ship-id": "s4", "bay.helper": "rm-ship-data"}},
            {"Id": "e", "State": "running", "Labels": null},
            {"State": "running", "Labels": {"bay.managed": "true", "bay.ship-id": "s6"}}
        ]);
        let got: Vec<_> = managed_ships(&list)
            .unwrap()
            .into_iter()
            .map(|m| (m.container_id, m.ship_id, m.running))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), "s1".to_owned(), true),
                ("b".to_owned(), "s2".to_owned(), false),
                ("c".to_owned(), "s3".to_owned(), false),
            ]
        );
        assert!(matches!(
            managed_ships(&serde_json::json!({"message": "x"})),
            Err(DriverError::Engine(_))
        ));
    }
}
