//! bay-server: Bay's HTTP/WebSocket API over bay-core.
//!
//! The binary `bay-server` reads the configuration (bay-api.md §8), builds the driver named by
//! `CONTAINER_DRIVER` through [`factory::build_driver`] (the `bay-factory` crate), starts `ShipService` and serves the API
//! ([`router`], [`app::serve`]). `bay-server migrate` only applies the database migrations.
//!
//! Map: [`routes`] is the route table (router and `/openapi.json` both come from it);
//! [`handlers`], [`transfer`] and [`terminal`] are the thin handlers; [`validate`] and
//! [`extract`] turn requests into typed values or 422s; [`error`] is the one place where
//! bay-core errors become statuses and bodies; [`auth`], [`cors`] and [`metrics`] are the
//! cross-cutting layers.

pub mod app;
pub mod auth;
pub mod cors;
pub mod error;
pub mod extract;
pub mod factory;
pub mod handlers;
pub mod logging;
pub mod metrics;
pub mod routes;
pub mod terminal;
pub mod transfer;
pub mod validate;

pub use app::{AppState, router, router_with};

/// Bay's version (`/stat`, `/stat/overview`, OpenAPI).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
