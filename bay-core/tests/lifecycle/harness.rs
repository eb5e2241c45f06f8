//! Shared harness: a ShipService over a temporary database, the FakeDriver and a FakeShip.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bay_core::model::ShipStatus;
use bay_core::service::ShipService;
use bay_core::testing::{FakeDriver, FakeShip, test_config};

pub struct Harness {
    pub service: ShipService,
    pub driver: FakeDriver,
    pub ship: FakeShip,
    pub db: PathBuf,
    /// Keeps the database directory alive for the harness's lifetime.
    pub _dir: tempfile::TempDir,
    pub settings: Vec<(String, String)>,
}

impl Harness {
    pub async fn new(extra: &[(&str, &str)]) -> Self {
        let ship = FakeShip::start().await;
        let driver = FakeDriver::new(ship.address());
        Self::with(ship, driver, extra).await
    }

    pub async fn with(ship: FakeShip, driver: FakeDriver, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("bay.db");
        let service = ShipService::start(test_config(&db, extra), Arc::new(driver.clone()))
            .await
            .expect("service starts");
        Self {
            service,
            driver,
            ship,
            db,
            _dir: dir,
            settings: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The ship's status now.
    pub async fn status(&self, ship_id: &str) -> ShipStatus {
        self.service.get_ship(ship_id).await.unwrap().status
    }

    /// Shuts the service down and starts a new one on the same database and driver.
    pub async fn restart(&mut self) {
        self.service.shutdown().await;
        self.start_again().await;
    }

    /// Simulates a crash of Bay (every operation dropped where it stands, no cleanup), then
    /// starts a new service on the same database and driver, which must reconcile.
    pub async fn crash_and_restart(&mut self) {
        self.service.crash().await;
        self.start_again().await;
    }

    /// Starts a new service on the same database and driver (after a shutdown or a crash).
    pub async fn start_again(&mut self) {
        let extra: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.service =
            ShipService::start(test_config(&self.db, &extra), Arc::new(self.driver.clone()))
                .await
                .expect("service restarts");
    }
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
