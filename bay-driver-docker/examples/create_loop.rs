//! Starts a `ShipService` with the Docker driver and creates ships in a loop until killed.
//!
//! Used by the crash test (`tests/docker`): it is started, SIGKILLed in the middle of creates,
//! and a new service on the same database must then leave no orphan and no ship in Creating.
//!
//! Configuration comes from the environment like bay-server's (`DATABASE_URL`,
//! `CONTAINER_DRIVER`, `DOCKER_NETWORK`, …). Arguments: extra labels `key=value` to put on
//! everything the driver creates. Each ready ship is printed as `created <ship id>`.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use bay_core::config::Config;
use bay_core::service::{CreateShip, ShipService};
use bay_driver_docker::{DockerDriver, DockerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = Config::from_env().context("invalid configuration")?;
    let mut settings = DockerSettings::from_config(&config)?;
    for arg in std::env::args().skip(1) {
        let (k, v) = arg
            .split_once('=')
            .with_context(|| format!("expected a label key=value, got {arg:?}"))?;
        settings.extra_labels.insert(k.to_owned(), v.to_owned());
    }
    let service = ShipService::start(config, Arc::new(DockerDriver::new(settings)))
        .await
        .context("cannot start the ship service")?;
    let workers = 3;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let session = format!("create-loop-{}-{worker}-{n}", std::process::id());
                match service
                    .create_ship(&session, CreateShip::with_ttl(600))
                    .await
                {
                    Ok(ship) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "created {}", ship.id);
                        let _ = out.flush();
                    }
                    Err(e) => eprintln!("create failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}
