//! The one place where errors become HTTP responses (and terminal close codes).
//!
//! bay-core returns typed [`bay_core::Error`]s and knows nothing of HTTP. [`ApiError::from_core`]
//! maps each variant to the status and `detail` text of bay-api.md §4, given the [`Op`] that
//! failed (the same error means 400 for exec but 404 for upload). [`TerminalReject`] does the
//! same for the terminal WebSocket. Unexpected failures become 500
//! `{"detail":"Internal Server Error"}`; their cause is logged, never returned.

use axum::Json;
use axum::response::{IntoResponse, Response};
use bay_api_types::ErrorBody;
use bay_core::Error;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// The operation whose failure is being mapped: a few errors answer differently per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Every route without special rules.
    General,
    /// `POST /ship/{id}/exec` (§4.15).
    Exec,
    /// `POST /ship/{id}/upload` (§4.16).
    Upload,
    /// `GET /ship/{id}/download` (§4.17).
    Download,
}

/// A short label for the `bay_errors_total{kind}` metric, attached to error responses as an
/// extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind(pub &'static str);

/// An error response of the API.
#[derive(Debug)]
pub enum ApiError {
    /// `{"detail": "<text>"}` with a status and optional extra headers.
    Detail {
        /// the status
        status: StatusCode,
        /// the `detail` text (part of the contract)
        detail: String,
        /// `Retry-After` seconds (429)
        retry_after: Option<u64>,
        /// metric label
        kind: &'static str,
    },
    /// 422 with the Pydantic-shaped entries of §2.5.
    Validation(Vec<Value>),
    /// 401 `Invalid access token` with `WWW-Authenticate: Bearer`.
    InvalidToken,
    /// 500 `Internal Server Error`; the cause is logged when the response is built.
    Internal(String),
}

impl ApiError {
    /// A `{"detail": …}` error.
    pub fn detail(status: StatusCode, detail: impl Into<String>, kind: &'static str) -> Self {
        Self::Detail {
            status,
            detail: detail.into(),
            retry_after: None,
            kind,
        }
    }

    /// 404 `Not Found` (unknown path).
    pub fn not_found() -> Self {
        Self::detail(StatusCode::NOT_FOUND, "Not Found", "not_found")
    }

    /// 413 for JSON bodies above `MAX_REQUEST_BODY`.
    pub fn body_too_large() -> Self {
        Self::detail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            "body_too_large",
        )
    }

    /// 413 for uploads above `MAX_UPLOAD_SIZE`.
    pub fn upload_too_large(max: u64) -> Self {
        Self::detail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("File size exceeds maximum allowed size ({max} bytes)"),
            "upload_too_large",
        )
    }

    /// Maps a bay-core error for the operation `op` (bay-api.md §4).
    pub fn from_core(err: Error, op: Op) -> Self {
        use StatusCode as S;
        fn d(status: StatusCode, detail: impl Into<String>, kind: &'static str) -> ApiError {
            ApiError::detail(status, detail, kind)
        }
        match err {
            Error::ShipNotFound => d(S::NOT_FOUND, "Ship not found", "ship_not_found"),
            Error::ShipNotRunning => match op {
                Op::Exec => d(
                    S::BAD_REQUEST,
                    "Ship not found or not running",
                    "ship_not_running",
                ),
                _ => d(
                    S::NOT_FOUND,
                    "Ship not found or not running",
                    "ship_not_running",
                ),
            },
            Error::ShipNotFoundOrCreating => d(
                S::NOT_FOUND,
                "Ship not found or is currently being created",
                "ship_not_found",
            ),
            Error::ShipCreating => d(
                S::CONFLICT,
                "Ship is currently being created",
                "ship_creating",
            ),
            Error::NoFreeSlot => d(S::CONFLICT, "Ship has no free session slot", "no_free_slot"),
            Error::NoAccess => d(
                if op == Op::Exec {
                    S::BAD_REQUEST
                } else {
                    S::FORBIDDEN
                },
                "Session does not have access to this ship",
                "no_access",
            ),
            Error::ShipLimitReached { retry_after_secs } => Self::Detail {
                status: S::TOO_MANY_REQUESTS,
                detail: "Maximum number of ships reached".into(),
                retry_after: Some(retry_after_secs),
                kind: "ship_limit",
            },
            Error::SlotWaitTimeout => d(
                S::REQUEST_TIMEOUT,
                "Timeout waiting for available ship slot",
                "slot_wait_timeout",
            ),
            Error::NotReady { secs } => d(
                S::INTERNAL_SERVER_ERROR,
                format!("Ship failed to become ready within {secs} seconds"),
                "not_ready",
            ),
            Error::CreateFailed(r) => d(
                S::INTERNAL_SERVER_ERROR,
                format!("Failed to create ship: {r}"),
                "create_failed",
            ),
            Error::StartFailed(r) => d(
                S::INTERNAL_SERVER_ERROR,
                format!("Failed to start ship: {r}"),
                "start_failed",
            ),
            Error::DeletedWhileStarting => d(
                S::INTERNAL_SERVER_ERROR,
                "Ship was deleted while starting",
                "deleted_while_starting",
            ),
            Error::DataDeleteFailed(r) => d(
                S::INTERNAL_SERVER_ERROR,
                format!("Failed to delete ship data: {r}"),
                "data_delete_failed",
            ),
            Error::SessionNotFound => d(S::NOT_FOUND, "Session not found", "session_not_found"),
            Error::SessionShipNotRunning => d(
                S::CONFLICT,
                "Ship is not running",
                "session_ship_not_running",
            ),
            Error::TtlNotPositive => d(S::BAD_REQUEST, "TTL must be greater than 0", "bad_ttl"),
            Error::TtlTooLarge { max } => d(
                S::BAD_REQUEST,
                format!("TTL must not exceed {max} seconds"),
                "bad_ttl",
            ),
            Error::UnsupportedExecType(t) => d(
                S::BAD_REQUEST,
                format!("Unsupported exec type: {t}"),
                "unsupported_exec_type",
            ),
            Error::ShipStatus { status, body } => {
                let code = match op {
                    Op::Exec | Op::General => S::BAD_REQUEST,
                    Op::Upload | Op::Download => match status {
                        403 => S::FORBIDDEN,
                        404 => S::NOT_FOUND,
                        413 if op == Op::Upload => S::PAYLOAD_TOO_LARGE,
                        400..=499 => S::BAD_REQUEST,
                        _ => S::BAD_GATEWAY,
                    },
                };
                d(
                    code,
                    format!("Ship returned {status}: {body}"),
                    "ship_status",
                )
            }
            Error::ShipInvalidResponse(r) => d(
                S::BAD_GATEWAY,
                format!("Ship returned an invalid response: {r}"),
                "ship_invalid_response",
            ),
            Error::ShipResponseTooLarge => d(
                S::BAD_GATEWAY,
                "Ship response too large",
                "ship_response_too_large",
            ),
            Error::ShipConnection(r) => d(
                S::BAD_GATEWAY,
                format!("Connection error: {r}"),
                "ship_connection",
            ),
            Error::ShipTimeout => d(
                S::GATEWAY_TIMEOUT,
                match op {
                    Op::Upload => "File upload timeout",
                    Op::Download => "File download timeout",
                    Op::Exec | Op::General => "Request timeout",
                },
                "ship_timeout",
            ),
            Error::UploadFailed(r) => d(
                S::INTERNAL_SERVER_ERROR,
                format!("File upload failed: {r}"),
                "upload_failed",
            ),
            e @ (Error::Store(_) | Error::Driver(_)) => Self::Internal(e.to_string()),
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Detail { status, .. } => *status,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        Self::from_core(err, Op::General)
    }
}

/// `{"detail": "Internal Server Error"}` with status 500.
pub fn internal_error_response() -> Response {
    let mut r = (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorBody::text("Internal Server Error")),
    )
        .into_response();
    r.extensions_mut().insert(ErrorKind("internal"));
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (mut response, kind) = match self {
            Self::Detail {
                status,
                detail,
                retry_after,
                kind,
            } => {
                let mut r = (status, Json(ErrorBody::text(detail))).into_response();
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                (r, kind)
            }
            Self::Validation(entries) => (
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({ "detail": entries })),
                )
                    .into_response(),
                "validation",
            ),
            Self::InvalidToken => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    Json(ErrorBody::text("Invalid access token")),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                (r, "unauthorized")
            }
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                return internal_error_response();
            }
        };
        response.extensions_mut().insert(ErrorKind(kind));
        response
    }
}

/// How the terminal WebSocket rejects a client (bay-api.md §4.18): a close code for browsers,
/// an HTTP status for the others, and the same reason for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalReject {
    /// close code after accepting
    pub close_code: u16,
    /// status when refusing the handshake
    pub status: StatusCode,
    /// close reason / `detail`
    pub reason: String,
}

impl TerminalReject {
    /// Check 1: token missing or wrong.
    pub fn unauthorized() -> Self {
        Self {
            close_code: 4001,
            status: StatusCode::UNAUTHORIZED,
            reason: "Unauthorized".into(),
        }
    }

    /// Check 2: bad query parameters.
    pub fn invalid_query() -> Self {
        Self {
            close_code: 1008,
            status: StatusCode::BAD_REQUEST,
            reason: "Invalid query parameters".into(),
        }
    }

    /// Checks 3 and 4 (and unexpected failures) from a bay-core error.
    pub fn from_core(err: Error) -> Self {
        match err {
            Error::ShipNotRunning | Error::ShipNotFound => Self {
                close_code: 4004,
                status: StatusCode::NOT_FOUND,
                reason: "Ship not found or not running".into(),
            },
            Error::NoAccess => Self {
                close_code: 4003,
                status: StatusCode::FORBIDDEN,
                reason: "Session does not have access to this ship".into(),
            },
            other => {
                tracing::error!(error = %other, "terminal check failed");
                Self {
                    close_code: 1011,
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "Internal Server Error".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ship_status_depends_on_the_operation() {
        let e = || Error::ShipStatus {
            status: 413,
            body: "x".into(),
        };
        assert_eq!(ApiError::from_core(e(), Op::Exec).status(), 400);
        assert_eq!(ApiError::from_core(e(), Op::Upload).status(), 413);
        assert_eq!(ApiError::from_core(e(), Op::Download).status(), 400);
        let five = Error::ShipStatus {
            status: 503,
            body: String::new(),
        };
        assert_eq!(ApiError::from_core(five, Op::Download).status(), 502);
    }
}
