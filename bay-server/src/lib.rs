//! bay-server: Bay's HTTP/WebSocket API over bay-core, and the container-driver factory.
//!
//! The binary `bay-server` reads the configuration (bay-api.md §8), builds the driver named by
//! `CONTAINER_DRIVER` through [`factory::build_driver`], starts `ShipService` and serves the API.
//! `bay-server migrate` only applies the database migrations.

pub mod factory;
pub mod logging;
