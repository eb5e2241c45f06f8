//! The application: shared state, the router with its layers, and serving with graceful
//! shutdown.
//!
//! Routing comes first (bay-api.md §2.4): axum applies `Router::layer` layers to each route and
//! to the fallback, so they all run after the path was matched. Layers, outermost first: JSON
//! responses get `charset=utf-8` (§2.1); panics in the layers below become 500 JSON; CORS
//! (§2.9) answers preflights of known paths; request tracing; metrics and the JSON bodies of
//! router-generated 405s; panics in handlers become 500 JSON (so they are counted and get CORS
//! headers); then the handler, and for authenticated routes the bearer check (a `route_layer`,
//! so unknown paths and wrong methods answer 404/405 without credentials).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bay_core::service::ShipService;
use http::{StatusCode, header};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::cors::CorsPolicy;
use crate::error::{ApiError, ErrorKind, internal_error_response};
use crate::metrics::Metrics;

/// State shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// the lifecycle service
    pub service: ShipService,
    /// the API token (`ACCESS_TOKEN`)
    pub token: Arc<str>,
    /// metrics registry
    pub metrics: Arc<Metrics>,
    /// CORS policy
    pub cors: Arc<CorsPolicy>,
    /// cancelled when the server shuts down (open terminals close with 1001)
    pub shutdown: CancellationToken,
    /// how often terminal input touches the session (30 s)
    pub terminal_touch_interval: Duration,
    /// how long `/health` waits for the database before answering 503 (5 s; SQLite's own busy
    /// timeout is longer)
    pub health_timeout: Duration,
}

impl AppState {
    /// State for `service`, with the configuration's token and CORS policy.
    pub fn new(service: ShipService) -> Self {
        let config = service.config();
        Self {
            token: Arc::from(config.access_token.as_str()),
            cors: Arc::new(CorsPolicy::new(
                config.cors_allow_origins.clone(),
                config.cors_allow_credentials,
            )),
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
            terminal_touch_interval: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            service,
        }
    }
}

/// The full router over `service` (see [`router_with`]).
pub fn router(service: ShipService) -> Router {
    router_with(AppState::new(service))
}

/// The full router over prepared state.
pub fn router_with(state: AppState) -> Router {
    let mut router = Router::new();
    for r in crate::routes::table() {
        // A per-method `route_layer`: a wrong method still answers 405 without credentials.
        let handler = if r.doc.auth {
            r.handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::require_bearer,
            ))
        } else {
            r.handler
        };
        router = router.route(r.doc.path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::cors::cors,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(json_charset))
        .with_state(state)
}

/// `application/json` → `application/json; charset=utf-8` (bay-api.md §2.1).
async fn json_charset(mut response: Response) -> Response {
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json")
    {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    response
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %message, "handler panicked");
    internal_error_response()
}

/// Gives router-generated 405s their JSON body (the `Allow` header is kept) and records the
/// response in the metrics.
async fn finish(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::detail(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "method_not_allowed",
        )
        .into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    let kind = response.extensions().get::<ErrorKind>().map(|k| k.0);
    state
        .metrics
        .record_response(response.status().as_u16(), kind);
    response
}

/// Serves `state`'s router on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish, closes open terminals and shuts the service down (ships keep running).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = state.service.clone();
    let cancel = state.shutdown.clone();
    let app = router_with(state);
    let signal = {
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            cancel.cancel();
        }
    };
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await;
    cancel.cancel();
    service.shutdown().await;
    tracing::info!("shutdown complete");
    result
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
