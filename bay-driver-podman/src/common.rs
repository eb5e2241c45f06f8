//! What both API paths (libpod and Docker-compatible) share: which network a ship joins, the
//! per-ship isolated networks of host mode, limits, and the missing-image error.

use std::collections::HashMap;

use bay_core::driver::{DriverError, DriverResult, ManagedContainer, ShipContainerRequest};
use bay_core::engine;

use crate::settings::{Mode, PodmanSettings};

/// Podman's default network (what ships join in network mode when `DOCKER_NETWORK` is empty).
pub(crate) const DEFAULT_NETWORK: &str = "podman";

/// The bridge option that blocks traffic between networks that carry it (netavark and CNI,
/// Podman ≥ 4.0): every ship of host mode gets a network of its own with it.
pub(crate) const ISOLATE_OPTION: &str = "isolate";

/// The network of one ship in host mode: `ship-<id>-net`, a bridge with
/// [`ISOLATE_OPTION`], so that a ship reaches neither another ship's IP nor its network.
/// `None` in network mode (ships share `DOCKER_NETWORK` so that Bay can reach them by IP).
pub(crate) fn ship_network(settings: &PodmanSettings, ship_id: &str) -> Option<String> {
    (settings.mode == Mode::Host).then(|| format!("{}-net", engine::container_name(ship_id)))
}

/// The network a ship's container is attached to (`None` = Podman's default network).
pub(crate) fn attached_network(settings: &PodmanSettings, ship_id: &str) -> Option<String> {
    match settings.mode {
        Mode::Host => ship_network(settings, ship_id),
        Mode::Network => settings.network.clone(),
    }
}

/// The network whose IP is a ship's address in network mode.
pub(crate) fn address_network(settings: &PodmanSettings) -> &str {
    settings.network.as_deref().unwrap_or(DEFAULT_NETWORK)
}

/// The labels of a ship's own network: the ship's labels (so that `bay.managed` and
/// `bay.ship-id` find it).
pub(crate) fn ship_network_labels(
    settings: &PodmanSettings,
    ship_id: &str,
) -> HashMap<String, String> {
    engine::labels(&settings.extra_labels, Some(ship_id))
}

/// The options of a ship's own network.
pub(crate) fn ship_network_options() -> HashMap<String, String> {
    HashMap::from([(ISOLATE_OPTION.to_owned(), "true".to_owned())])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: &str, network: Option<&str>) -> PodmanSettings {
        let config = bay_core::config::Config::from_pairs([("CONTAINER_DRIVER", mode)]).unwrap();
        let mut s = PodmanSettings::from_config(&config).unwrap();
        s.network = network.map(str::to_owned);
        s
    }

    #[test]
    fn host_mode_ships_get_a_network_each_and_network_mode_ships_share_one() {
        let host = settings("podman-host", Some("shipyard"));
        assert_eq!(ship_network(&host, "a1").as_deref(), Some("ship-a1-net"));
        assert_eq!(
            attached_network(&host, "a1").as_deref(),
            Some("ship-a1-net")
        );
        let net = settings("podman", Some("shipyard"));
        assert_eq!(ship_network(&net, "a1"), None);
        assert_eq!(attached_network(&net, "a1").as_deref(), Some("shipyard"));
        assert_eq!(address_network(&net), "shipyard");
        assert_eq!(address_network(&settings("podman", None)), DEFAULT_NETWORK);
        assert_eq!(ship_network_options()[ISOLATE_OPTION], "true");
        let labels = ship_network_labels(&host, "a1");
        assert_eq!(labels[engine::LABEL_SHIP_ID], "a1");
        assert_eq!(labels[engine::LABEL_MANAGED], "true");
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
