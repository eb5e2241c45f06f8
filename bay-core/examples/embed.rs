//! Embedding bay-core in your own program.
//!
//! Run with `cargo run -p bay-core --example embed --features testing`. It uses the in-memory
//! FakeDriver and an in-process fake ship agent, so it needs no container engine; swap in
//! `bay_driver_docker::DockerDriver` (or another driver) for real ships.

use std::sync::Arc;

use bay_core::config::Config;
use bay_core::service::{CreateShip, ShipService};
use bay_core::testing::{FakeDriver, FakeShip};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bay.db");
    let config = Config::from_pairs([
        (
            "DATABASE_URL",
            format!("sqlite://{}", db.display()).as_str(),
        ),
        ("MAX_SHIP_NUM", "2"),
        ("ACCESS_TOKEN", "embedded"),
    ])?;

    let agent = FakeShip::start().await;
    let driver = Arc::new(FakeDriver::new(agent.address()));
    let service = ShipService::start(config, driver).await?;

    let ship = service
        .create_ship("my-session", CreateShip::with_ttl(600))
        .await?;
    let expires = ship.expires_at.map(|t| t.to_string()).unwrap_or_default();
    println!(
        "created ship {} ({:?}), expires at {expires}",
        ship.id, ship.status
    );

    let again = service
        .create_ship("my-session", CreateShip::with_ttl(600))
        .await?;
    assert_eq!(again.id, ship.id);
    println!("the same session gets the same ship back: {}", again.id);

    let out = service
        .exec(
            &ship.id,
            "my-session",
            "shell/exec",
            Some(json!({"command": "echo hello"})),
        )
        .await?;
    println!("exec answered: {out}");

    println!(
        "ships: {}",
        serde_json::to_string(&service.list_ships().await?)?
    );
    service.stop_ship(&ship.id).await?;
    println!(
        "stopped; status now {:?}",
        service.get_ship(&ship.id).await?.status
    );
    service.shutdown().await;
    Ok(())
}
