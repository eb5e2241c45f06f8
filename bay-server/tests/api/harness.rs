//! `TestApp`: the real router over a temporary database, with the `FakeDriver` and an
//! in-process `FakeShip`, driven in-process (`oneshot`) or over a loopback listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bay_core::service::ShipService;
use bay_core::testing::{FakeDriver, FakeShip, test_config};
use bay_server::AppState;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const TOKEN: &str = bay_core::testing::TEST_TOKEN;

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub ship: FakeShip,
    pub driver: FakeDriver,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    pub async fn with(extra: &[(&str, &str)]) -> Self {
        let ship = FakeShip::start().await;
        let driver = FakeDriver::new(ship.address());
        Self::with_driver(ship, driver, extra, |_| {}).await
    }

    pub async fn with_driver(
        ship: FakeShip,
        driver: FakeDriver,
        extra: &[(&str, &str)],
        tweak: impl FnOnce(&mut AppState),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = ShipService::start(
            test_config(&dir.path().join("bay.db"), extra),
            Arc::new(driver.clone()),
        )
        .await
        .expect("service starts");
        let mut state = AppState::new(service);
        tweak(&mut state);
        let router = bay_server::router_with(state.clone());
        Self {
            state,
            router,
            ship,
            driver,
            _dir: dir,
        }
    }

    /// The SQLite database file of this app.
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join("bay.db")
    }

    /// A request with the valid bearer token.
    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            app: self,
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
            auth: Some(format!("Bearer {TOKEN}")),
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.req(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Req<'_> {
        self.req(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> Req<'_> {
        self.req(Method::DELETE, path)
    }

    /// Creates a ship for `session` and returns its JSON.
    pub async fn create_ship(&self, session: &str) -> Value {
        let r = self
            .post("/ship")
            .session(session)
            .json(&serde_json::json!({"ttl": 600}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// Serves the router on a loopback port (for WebSocket tests).
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = self.router.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    }
}

pub struct Req<'a> {
    app: &'a TestApp,
    builder: http::request::Builder,
    body: Body,
    auth: Option<String>,
}

impl Req<'_> {
    pub fn no_auth(mut self) -> Self {
        self.auth = None;
        self
    }

    /// Replaces the default `Authorization` header.
    pub fn auth(mut self, value: &str) -> Self {
        self.auth = Some(value.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.builder = self.builder.header(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
        self
    }

    pub fn session(self, session: &str) -> Self {
        self.header("x-session-id", session)
    }

    pub fn json(mut self, value: &Value) -> Self {
        self.builder = self.builder.header("content-type", "application/json");
        self.body = Body::from(value.to_string());
        self
    }

    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    pub async fn send(self) -> Resp {
        let mut builder = self.builder;
        if let Some(auth) = &self.auth {
            builder = builder.header("authorization", auth);
        }
        let request = builder.body(self.body).expect("request");
        let response = self
            .app
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts status and `{"detail": detail}`.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.json(), serde_json::json!({"detail": detail}));
        assert!(
            self.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "content type of {}",
            self.text()
        );
    }

    /// The 422 entries.
    #[track_caller]
    pub fn violations(&self) -> Vec<Value> {
        assert_eq!(
            self.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            self.text()
        );
        self.json()["detail"]
            .as_array()
            .expect("detail array")
            .clone()
    }
}
