//! `bay-server [serve|migrate]`: runs Bay's API server (default) or only applies migrations.

use anyhow::{Context, bail};
use bay_core::config::Config;
use bay_core::service::ShipService;
use bay_factory::db_lock;
use tracing::{info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    let config = Config::from_env().context("invalid configuration")?;
    bay_server::logging::init(&config);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    match command.as_str() {
        "migrate" => {
            let url = config.database_path.to_string_lossy().into_owned();
            let applied = bay_core::store::run_migrations(&url)
                .await
                .with_context(|| format!("migrating {url}"))?;
            info!(database = %url, applied = applied.len(), "migrations applied");
            println!("{} migration(s) applied to {url}", applied.len());
            Ok(())
        }
        "serve" => serve(config).await,
        "-h" | "--help" | "help" => {
            println!(
                "usage: bay-server [serve|migrate]\n\nConfiguration comes from the environment and ./.env (see README.md)."
            );
            Ok(())
        }
        other => bail!("unknown command {other:?}: expected `serve` or `migrate`"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let driver = bay_server::factory::build_driver(&config)
        .with_context(|| format!("CONTAINER_DRIVER={}", config.container_driver.as_str()))?;
    let address = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let _lock = lock_database(&config.database_path).await?;
    let service = ShipService::start(config, driver)
        .await
        .context("starting the ship service")?;
    let local = listener.local_addr().context("reading the bound address")?;
    info!(address = %local, "bay-server listening");
    println!("bay-server listening on http://{local}");
    bay_server::app::serve(
        listener,
        bay_server::AppState::new(service),
        bay_server::app::shutdown_signal(),
    )
    .await
    .context("serving the API")
}

/// Takes the database lock (`bay_factory::db_lock`) for the server's whole life: refuses when
/// another bay-server holds it, waits while a `bay` command in local mode finishes.
async fn lock_database(path: &std::path::Path) -> anyhow::Result<db_lock::DatabaseLock> {
    match db_lock::try_lock(path, db_lock::Holder::Server) {
        Ok(lock) => Ok(lock),
        Err(e @ db_lock::LockError::Busy { server: true, .. }) => {
            Err(e).context("another bay-server serves this database")
        }
        Err(db_lock::LockError::Busy { holder, .. }) => {
            info!(%holder, database = %path.display(), "waiting for a local bay command to finish");
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || db_lock::lock(&path, db_lock::Holder::Server))
                .await
                .context("waiting for the database lock")?
                .context("locking the database")
        }
        Err(e) => Err(e).context("locking the database"),
    }
}
