//! CORS exactly as bay-api.md §2.9: `CORS_ALLOW_ORIGINS` (`*`, a list, or empty = disabled)
//! and `CORS_ALLOW_CREDENTIALS`. Preflights of known paths are answered here, after routing
//! and before authentication (§2.4); a preflight of an unknown path gets the router's 404, and
//! a disabled CORS layer lets preflights reach the router, which answers 405.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bay_core::config::CorsOrigins;
use http::{HeaderValue, Method, StatusCode, header};

use crate::app::AppState;
use crate::error::ApiError;

/// What the CORS layer allows.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: CorsOrigins,
    credentials: bool,
}

impl CorsPolicy {
    /// The policy from the configuration.
    pub fn new(origins: CorsOrigins, credentials: bool) -> Self {
        Self {
            origins,
            credentials,
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` when not allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            CorsOrigins::Disabled => None,
            CorsOrigins::Any if !self.credentials => Some(HeaderValue::from_static("*")),
            CorsOrigins::Any => Some(origin.clone()),
            CorsOrigins::List(list) => list
                .iter()
                .any(|o| o.as_bytes() == origin.as_bytes())
                .then(|| origin.clone()),
        }
    }

    fn decorate(&self, response: &mut Response, allow: HeaderValue) {
        let h = response.headers_mut();
        let echoed = allow != "*";
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if echoed {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The CORS middleware.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let policy = &state.cors;
    if matches!(policy.origins, CorsOrigins::Disabled) {
        return next.run(req).await;
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    // This layer runs after routing: `MatchedPath` is absent only for the 404 fallback.
    let preflight = req.method() == Method::OPTIONS
        && req.extensions().get::<MatchedPath>().is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allow = policy.allow_origin(&origin);
    if preflight {
        let Some(allow) = allow else {
            return ApiError::detail(
                StatusCode::BAD_REQUEST,
                "Disallowed CORS origin",
                "cors_origin",
            )
            .into_response();
        };
        let mut response = StatusCode::OK.into_response();
        policy.decorate(&mut response, allow);
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(req).await;
    if let Some(allow) = allow {
        policy.decorate(&mut response, allow);
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Content-Disposition, Retry-After"),
        );
    }
    response
}
