//! bay-core: the library at the heart of Bay.
//!
//! It knows what a ship is and how ships are created, reused, limited, expired, restored and
//! deleted ([`service::ShipService`]), remembers all of it in SQLite ([`store`]), talks to ship
//! agents ([`ship_client`]) and drives containers through the [`driver::ContainerDriver`] seam.
//! It names no container-engine client type and knows nothing of HTTP status codes: embed it in
//! any Rust program with the driver of your choice.
//!
//! ```no_run
//! # async fn demo(driver: std::sync::Arc<dyn bay_core::driver::ContainerDriver>) -> Result<(), Box<dyn std::error::Error>> {
//! use bay_core::config::Config;
//! use bay_core::service::{CreateShip, ShipService};
//!
//! let config = Config::from_pairs([("DATABASE_URL", "sqlite:///tmp/bay.db")])?;
//! let service = ShipService::start(config, driver).await?;
//! let ship = service.create_ship("session-1", CreateShip::with_ttl(600)).await?;
//! println!("ship {} is {:?}", ship.id, ship.status);
//! service.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod config;
pub mod driver;
pub mod engine;
pub mod error;
pub mod keyed_lock;
pub mod model;
pub mod service;
pub mod ship_client;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
