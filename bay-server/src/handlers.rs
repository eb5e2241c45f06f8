//! The JSON handlers: parse and validate, call one `ShipService` method, serialise.
//!
//! Upload and download are in [`crate::transfer`], the terminal in [`crate::terminal`].

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bay_api_types::{
    ExecResponse, LogsResponse, OverviewResponse, SessionListResponse, SessionResponse,
    ShipResponse, ShipSessionsResponse, StatResponse, StatusMessage, responses,
};
use bay_core::model::{SizeField, SpecRequest, parse_spec_size};
use bay_core::service::CreateShip;
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{ApiError, Op};
use crate::extract::{JsonBody, PathParam, Query};
use crate::validate::{Fields, Violations, coerce_int, loc};

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /`
pub async fn root() -> Response {
    Json(StatusMessage::new("ok", "Welcome to Bay API")).into_response()
}

/// `GET /health`: 503 when the database fails or does not answer within
/// [`AppState::health_timeout`].
///
/// The check runs in its own task, which is left to finish when the timeout passes: dropping a
/// database future of diesel-async's `SyncConnectionWrapper` blocks the thread until the query
/// ends (and panics on a current-thread runtime), so the query must not be cancelled.
pub async fn health(State(state): State<AppState>) -> Response {
    let service = state.service.clone();
    let check = tokio::spawn(async move { service.health().await });
    let failure = match tokio::time::timeout(state.health_timeout, check).await {
        Ok(Ok(Ok(()))) => {
            return Json(StatusMessage::new("ok", "Bay service is running")).into_response();
        }
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(join)) => format!("health check task failed: {join}"),
        Err(_) => format!(
            "the database did not answer within {:?}",
            state.health_timeout
        ),
    };
    tracing::error!(error = %failure, "health check: database unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(StatusMessage::new("error", "Database unavailable")),
    )
        .into_response()
}

/// `GET /stat`
pub async fn stat() -> Response {
    Json(StatResponse::new(crate::VERSION)).into_response()
}

/// `GET /stat/overview`
pub async fn overview(State(state): State<AppState>) -> ApiResult {
    let o = state.service.overview().await?;
    ok(OverviewResponse::new(crate::VERSION, o))
}

/// `GET /ships`
pub async fn list_ships(State(state): State<AppState>) -> ApiResult {
    ok(responses::<_, ShipResponse>(
        state.service.list_ships().await?,
    ))
}

/// A value that validation guarantees; its absence is an internal error.
fn validated<T>(value: Option<T>, what: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::Internal(format!("validated {what} missing")))
}

/// The session and the request that validation guarantees; an absence is an internal error.
fn validated_request<R>(
    session: Option<String>,
    request: Option<R>,
    what: &str,
) -> Result<(String, R), ApiError> {
    match (session, request) {
        (Some(session), Some(request)) => Ok((session, request)),
        _ => Err(ApiError::Internal(format!(
            "validated {what} request incomplete"
        ))),
    }
}

/// The body object (recording its violations, see [`JsonBody::object`]) read by `read` as
/// the fields under `body`.
fn body_fields<T>(
    body: &JsonBody,
    v: &mut Violations,
    required: bool,
    read: impl FnOnce(&mut Fields<'_>) -> Option<T>,
) -> Option<T> {
    body.object(v, required).and_then(|obj| {
        let mut f = Fields::new(&obj, loc(&["body"]), v);
        read(&mut f)
    })
}

/// Reads the `ttl` field bounded by 1 … `MAX_TTL`.
fn ttl_field(f: &mut Fields<'_>, required: bool, max_ttl: i64) -> Option<i64> {
    f.int("ttl", required, false, Some((0, max_ttl)))
        .ok()
        .flatten()
}

/// A body whose only field is [`ttl_field`].
fn ttl_body(body: &JsonBody, v: &mut Violations, required: bool, max_ttl: i64) -> Option<i64> {
    body_fields(body, v, required, |f| {
        let ttl = ttl_field(f, required, max_ttl);
        f.forbid_extra();
        ttl
    })
}

/// Validates `spec` (§3.3).
fn spec_field(f: &mut Fields<'_>) -> Option<SpecRequest> {
    let spec_loc = f.field_loc("spec");
    let obj = f.object("spec").ok()?;
    let Some(obj) = obj else {
        return Some(SpecRequest::default());
    };
    let mut s = Fields::new(obj, spec_loc, f.v);
    let cpus = s.float("cpus", true, 0, 256);
    let mut sizes = [None, None];
    for (i, (name, field)) in [("memory", SizeField::Memory), ("disk", SizeField::Disk)]
        .into_iter()
        .enumerate()
    {
        if let Ok(Some(text)) = s.string(name, false, true) {
            match parse_spec_size(field, text) {
                Ok(bytes) => sizes[i] = Some(bytes),
                Err(e) => {
                    let l = s.field_loc(name);
                    s.v.value_error(l, &e.to_string(), Value::from(text));
                }
            }
        }
    }
    s.forbid_extra();
    Some(SpecRequest {
        cpus: cpus.ok()?,
        memory_bytes: sizes[0],
        disk_bytes: sizes[1],
    })
}

fn parse_create(f: &mut Fields<'_>, max_ttl: i64) -> Option<CreateShip> {
    let before = f.v.len();
    let ttl = ttl_field(f, true, max_ttl);
    let spec = spec_field(f);
    let max_session_num = f.int("max_session_num", false, false, Some((0, 100)));
    let force_create = f.bool("force_create");
    f.forbid_extra();
    if f.v.len() != before {
        return None;
    }
    Some(CreateShip {
        ttl: ttl?,
        spec: spec?,
        max_session_num: i32::try_from(max_session_num.ok()?.unwrap_or(1)).ok()?,
        force_create: force_create.ok()?.unwrap_or(false),
    })
}

/// `POST /ship`
pub async fn create_ship(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult {
    let mut v = Violations::new();
    let session = v.session_header(&headers);
    let req = body_fields(&body, &mut v, true, |f| {
        parse_create(f, state.service.config().max_ttl)
    });
    v.finish()?;
    let (session, req) = validated_request(session, req, "create")?;
    let started = Instant::now();
    let result = state.service.create_ship(&session, req).await;
    state
        .metrics
        .record_create(result.is_ok(), started.elapsed());
    Ok((StatusCode::CREATED, Json(ShipResponse::from(result?))).into_response())
}

/// `GET /ship/{ship_id}`
pub async fn get_ship(State(state): State<AppState>, PathParam(ship_id): PathParam) -> ApiResult {
    ok(ShipResponse::from(state.service.get_ship(&ship_id).await?))
}

/// `DELETE /ship/{ship_id}`
pub async fn stop_ship(State(state): State<AppState>, PathParam(ship_id): PathParam) -> ApiResult {
    state.service.stop_ship(&ship_id).await?;
    no_content()
}

/// `DELETE /ship/{ship_id}/permanent`
pub async fn delete_ship(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
) -> ApiResult {
    state.service.delete_ship(&ship_id).await?;
    no_content()
}

/// `POST /ship/{ship_id}/extend-ttl`
pub async fn extend_ship_ttl(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    body: JsonBody,
) -> ApiResult {
    let mut v = Violations::new();
    let ttl = ttl_body(&body, &mut v, true, state.service.config().max_ttl);
    v.finish()?;
    let ttl = validated(ttl, "ttl")?;
    ok(ShipResponse::from(
        state.service.extend_ship_ttl(&ship_id, ttl).await?,
    ))
}

/// `POST /ship/{ship_id}/start` (body optional)
pub async fn start_ship(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult {
    let mut v = Violations::new();
    let session = v.session_header(&headers);
    let ttl = ttl_body(&body, &mut v, false, state.service.config().max_ttl);
    v.finish()?;
    let session = validated(session, "session")?;
    ok(ShipResponse::from(
        state.service.start_ship(&ship_id, &session, ttl).await?,
    ))
}

/// `GET /ship/logs/{ship_id}?tail=`
pub async fn ship_logs(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    query: Query,
) -> ApiResult {
    let mut v = Violations::new();
    let mut tail = 1000;
    if let Some(raw) = query.get("tail") {
        let l = loc(&["query", "tail"]);
        let input = Value::from(raw);
        match coerce_int(&input) {
            Ok(n) => {
                if v.int_bounds(l, n, &input, 0, 100_000) {
                    tail = u32::try_from(n).unwrap_or(1000);
                }
            }
            Err((kind, msg)) => v.push(kind, l, msg, input),
        }
    }
    v.finish()?;
    ok(LogsResponse {
        logs: state.service.ship_logs(&ship_id, tail).await?,
    })
}

/// `GET /ship/{ship_id}/sessions`
pub async fn ship_sessions(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
) -> ApiResult {
    let sessions = SessionListResponse::new(state.service.ship_sessions(&ship_id).await?);
    ok(ShipSessionsResponse {
        ship_id,
        sessions: sessions.sessions,
        total: sessions.total,
    })
}

/// `POST /ship/{ship_id}/exec`: the §4.15 envelope around the agent's JSON.
pub async fn exec(
    State(state): State<AppState>,
    PathParam(ship_id): PathParam,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult {
    let mut v = Violations::new();
    let session = v.session_header(&headers);
    let parsed = body_fields(&body, &mut v, true, |f| {
        let exec_type = f.string("type", true, false).map(|t| t.map(str::to_owned));
        let payload = f.object("payload").map(|p| p.cloned());
        f.forbid_extra();
        Some((exec_type.ok()??, payload.ok()?))
    });
    v.finish()?;
    let (session, (exec_type, payload)) = validated_request(session, parsed, "exec")?;
    let started = Instant::now();
    let result = state
        .service
        .exec(&ship_id, &session, &exec_type, payload.map(Value::Object))
        .await;
    if !matches!(result, Err(bay_core::Error::UnsupportedExecType(_))) {
        state.metrics.record_exec(&exec_type, started.elapsed());
    }
    let data = result.map_err(|e| ApiError::from_core(e, Op::Exec))?;
    ok(ExecResponse::ok(data))
}

/// `GET /sessions`
pub async fn list_sessions(State(state): State<AppState>) -> ApiResult {
    ok(SessionListResponse::new(
        state.service.list_sessions().await?,
    ))
}

/// `GET /sessions/{session_id}?ship_id=`
pub async fn get_session(
    State(state): State<AppState>,
    PathParam(session): PathParam,
    query: Query,
) -> ApiResult {
    ok(SessionResponse::from(
        state
            .service
            .get_session(&session, query.get("ship_id"))
            .await?,
    ))
}

/// `POST /sessions/{session_id}/extend-ttl?ship_id=` (unknown keys ignored; bounds → 400)
pub async fn extend_session_ttl(
    State(state): State<AppState>,
    PathParam(session): PathParam,
    query: Query,
    body: JsonBody,
) -> ApiResult {
    let mut v = Violations::new();
    let ttl = body_fields(&body, &mut v, true, |f| {
        f.int("ttl", true, false, None).ok().flatten()
    });
    v.finish()?;
    let ttl = validated(ttl, "ttl")?;
    ok(SessionResponse::from(
        state
            .service
            .extend_session_ttl(&session, ttl, query.get("ship_id"))
            .await?,
    ))
}

/// `DELETE /sessions/{session_id}?ship_id=`
pub async fn delete_session(
    State(state): State<AppState>,
    PathParam(session): PathParam,
    query: Query,
) -> ApiResult {
    state
        .service
        .delete_session(&session, query.get("ship_id"))
        .await?;
    no_content()
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let overview = state.service.overview().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(overview.as_ref()),
    )
        .into_response()
}

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    Json(crate::routes::openapi()).into_response()
}
