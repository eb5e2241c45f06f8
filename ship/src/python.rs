//! Python execution (placeholder).
use axum::extract::State;
use axum::http::StatusCode;
use crate::api::{ApiError, ApiResult};
use crate::St;

#[derive(Debug, Default)]
pub struct KernelSlot;

macro_rules! stub { ($($n:ident),*) => { $(pub async fn $n(State(_st): State<St>) -> ApiResult { Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not implemented")) })* } }
stub!(exec, create_kernel, restart_kernel, delete_kernel, kernel_status, list_kernels);
