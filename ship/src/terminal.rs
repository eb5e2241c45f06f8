//! Terminal (placeholder).
use axum::extract::State;
use axum::http::StatusCode;
use crate::api::{ApiError, ApiResult};
use crate::St;
pub async fn ws(State(_st): State<St>) -> ApiResult { Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not implemented")) }
