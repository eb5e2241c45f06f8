//! The route table: every route of bay-api.md §4 with its handler and its documentation.
//!
//! The router ([`crate::app::router`]) and `/openapi.json` ([`openapi`]) are both built from
//! [`table`], so a route cannot be served without being documented.

use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::{handlers as h, terminal, transfer};

/// Documentation of one route.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    /// `get`, `post` or `delete` (lowercase, as in OpenAPI)
    pub method: &'static str,
    /// axum path syntax (`/ship/{ship_id}`), which is also OpenAPI's
    pub path: &'static str,
    /// one line
    pub summary: &'static str,
    /// whether the bearer token is required (checked by the auth layer)
    pub auth: bool,
    /// whether `X-SESSION-ID` is required
    pub session_header: bool,
    /// query parameters: (name, schema, required)
    pub query: &'static [(&'static str, &'static str, bool)],
    /// request body: (content type, schema name, required)
    pub body: Option<(&'static str, &'static str, bool)>,
    /// responses: (status, description, schema name or "")
    pub responses: &'static [(u16, &'static str, &'static str)],
}

/// One route: documentation and handler.
#[derive(Debug)]
pub struct Route {
    /// the documentation
    pub doc: Doc,
    /// the handler for `doc.method`
    pub handler: MethodRouter<AppState>,
}

const JSON: &str = "application/json";
const SHIP_404: (u16, &str, &str) = (404, "Ship not found", "HTTPError");
const ACCESS_ERRORS: [(u16, &str, &str); 3] = [
    (
        400,
        "Ship not found or not running, no access, or the ship answered non-2xx",
        "HTTPError",
    ),
    (
        502,
        "The ship could not be reached or answered invalidly",
        "HTTPError",
    ),
    (504, "The ship did not answer in time", "HTTPError"),
];

fn route(doc: Doc, handler: MethodRouter<AppState>) -> Route {
    Route { doc, handler }
}

const fn doc(method: &'static str, path: &'static str, summary: &'static str) -> Doc {
    Doc {
        method,
        path,
        summary,
        auth: true,
        session_header: false,
        query: &[],
        body: None,
        responses: &[],
    }
}

/// Every route Bay serves.
pub fn table() -> Vec<Route> {
    vec![
        route(
            Doc {
                auth: false,
                responses: &[(200, "Welcome", "Status")],
                ..doc("get", "/", "Welcome message")
            },
            get(h::root),
        ),
        route(
            Doc {
                auth: false,
                responses: &[
                    (200, "Bay can query its database", "Status"),
                    (503, "Database unavailable", "Status"),
                ],
                ..doc("get", "/health", "Health check")
            },
            get(h::health),
        ),
        route(
            Doc {
                auth: false,
                responses: &[(200, "Service and version", "Stat")],
                ..doc("get", "/stat", "Service information")
            },
            get(h::stat),
        ),
        route(
            Doc {
                responses: &[(200, "Counts of ships and sessions", "Overview")],
                ..doc("get", "/stat/overview", "Ship and session counts")
            },
            get(h::overview),
        ),
        route(
            Doc {
                responses: &[(200, "Every ship, newest first", "ShipList")],
                ..doc("get", "/ships", "List ships")
            },
            get(h::list_ships),
        ),
        route(
            Doc {
                session_header: true,
                body: Some((JSON, "CreateShipRequest", true)),
                responses: &[
                    (201, "The ship the session now uses", "ShipResponse"),
                    (408, "Timeout waiting for available ship slot", "HTTPError"),
                    (
                        429,
                        "Maximum number of ships reached (Retry-After)",
                        "HTTPError",
                    ),
                    (
                        500,
                        "The ship could not be created, started or made ready",
                        "HTTPError",
                    ),
                ],
                ..doc("post", "/ship", "Create, reuse, join or restore a ship")
            },
            post(h::create_ship),
        ),
        route(
            Doc {
                responses: &[(200, "The ship", "ShipResponse"), SHIP_404],
                ..doc("get", "/ship/{ship_id}", "Get a ship")
            },
            get(h::get_ship),
        ),
        route(
            Doc {
                responses: &[
                    (204, "Stopped, data kept", ""),
                    SHIP_404,
                    (409, "Ship is currently being created", "HTTPError"),
                ],
                ..doc("delete", "/ship/{ship_id}", "Stop a ship (data kept)")
            },
            delete(h::stop_ship),
        ),
        route(
            Doc {
                responses: &[
                    (204, "Removed with its data", ""),
                    SHIP_404,
                    (500, "Failed to delete ship data", "HTTPError"),
                ],
                ..doc(
                    "delete",
                    "/ship/{ship_id}/permanent",
                    "Delete a ship and its data",
                )
            },
            delete(h::delete_ship),
        ),
        route(
            Doc {
                body: Some((JSON, "ExtendTTLRequest", true)),
                responses: &[
                    (200, "The ship with its new deadline", "ShipResponse"),
                    SHIP_404,
                    (409, "Ship is currently being created", "HTTPError"),
                ],
                ..doc(
                    "post",
                    "/ship/{ship_id}/extend-ttl",
                    "Extend a ship's lifetime",
                )
            },
            post(h::extend_ship_ttl),
        ),
        route(
            Doc {
                session_header: true,
                body: Some((JSON, "StartShipRequest", false)),
                responses: &[
                    (200, "The running ship", "ShipResponse"),
                    (
                        404,
                        "Ship not found or is currently being created",
                        "HTTPError",
                    ),
                    (409, "Ship has no free session slot", "HTTPError"),
                    (
                        429,
                        "Maximum number of ships reached (Retry-After)",
                        "HTTPError",
                    ),
                    (500, "The ship could not be started", "HTTPError"),
                ],
                ..doc(
                    "post",
                    "/ship/{ship_id}/start",
                    "Start a stopped ship or join a running one",
                )
            },
            post(h::start_ship),
        ),
        route(
            Doc {
                query: &[("tail", "integer", false)],
                responses: &[(200, "The last lines of the container's output", "Logs")],
                ..doc("get", "/ship/logs/{ship_id}", "Container logs")
            },
            get(h::ship_logs),
        ),
        route(
            Doc {
                responses: &[
                    (200, "Every relation of the ship", "ShipSessions"),
                    SHIP_404,
                ],
                ..doc("get", "/ship/{ship_id}/sessions", "Sessions of a ship")
            },
            get(h::ship_sessions),
        ),
        route(
            Doc {
                session_header: true,
                body: Some((JSON, "ExecRequest", true)),
                responses: &[
                    (200, "The ship's JSON answer", "ExecResponse"),
                    ACCESS_ERRORS[0],
                    ACCESS_ERRORS[1],
                    ACCESS_ERRORS[2],
                ],
                ..doc(
                    "post",
                    "/ship/{ship_id}/exec",
                    "Forward an operation to the ship",
                )
            },
            post(h::exec),
        ),
        route(
            Doc {
                session_header: true,
                body: Some(("multipart/form-data", "UploadForm", true)),
                responses: &[
                    (200, "Uploaded", "UploadResponse"),
                    (403, "No access, or path outside the workspace", "HTTPError"),
                    (404, "Ship not found or not running", "HTTPError"),
                    (413, "File size exceeds maximum allowed size", "HTTPError"),
                    (500, "File upload failed", "HTTPError"),
                    (502, "Ship error", "HTTPError"),
                    (504, "File upload timeout", "HTTPError"),
                ],
                ..doc(
                    "post",
                    "/ship/{ship_id}/upload",
                    "Upload a file into the ship",
                )
            },
            post(transfer::upload),
        ),
        route(
            Doc {
                session_header: true,
                query: &[("file_path", "string", true)],
                responses: &[
                    (200, "The file's bytes (application/octet-stream)", "Binary"),
                    (403, "No access", "HTTPError"),
                    (404, "Ship not running or file not found", "HTTPError"),
                    (502, "Ship error", "HTTPError"),
                    (504, "File download timeout", "HTTPError"),
                ],
                ..doc(
                    "get",
                    "/ship/{ship_id}/download",
                    "Download a file from the ship",
                )
            },
            get(transfer::download),
        ),
        route(
            Doc {
                auth: false,
                query: &[
                    ("token", "string", false),
                    ("session_id", "string", true),
                    ("cols", "integer", false),
                    ("rows", "integer", false),
                ],
                responses: &[
                    (101, "WebSocket relay to the ship's terminal", ""),
                    (
                        400,
                        "Invalid query parameters (non-browser clients)",
                        "HTTPError",
                    ),
                    (401, "Unauthorized (non-browser clients)", "HTTPError"),
                    (
                        403,
                        "Session does not have access to this ship (non-browser clients)",
                        "HTTPError",
                    ),
                    (
                        404,
                        "Ship not found or not running (non-browser clients)",
                        "HTTPError",
                    ),
                ],
                ..doc(
                    "get",
                    "/ship/{ship_id}/term",
                    "Terminal WebSocket (token in the query or Authorization header)",
                )
            },
            get(terminal::terminal),
        ),
        route(
            Doc {
                responses: &[(200, "Every relation", "SessionList")],
                ..doc("get", "/sessions", "List sessions")
            },
            get(h::list_sessions),
        ),
        route(
            Doc {
                query: &[("ship_id", "string", false)],
                responses: &[
                    (
                        200,
                        "The primary relation, or the one with ship_id",
                        "SessionResponse",
                    ),
                    (404, "Session not found", "HTTPError"),
                ],
                ..doc("get", "/sessions/{session_id}", "Get a session")
            },
            get(h::get_session),
        ),
        route(
            Doc {
                query: &[("ship_id", "string", false)],
                body: Some((JSON, "SessionExtendTTLRequest", true)),
                responses: &[
                    (200, "The updated primary relation", "SessionResponse"),
                    (400, "TTL out of range", "HTTPError"),
                    (404, "Session not found", "HTTPError"),
                    (409, "Ship is not running", "HTTPError"),
                ],
                ..doc(
                    "post",
                    "/sessions/{session_id}/extend-ttl",
                    "Reset a session's expiry",
                )
            },
            post(h::extend_session_ttl),
        ),
        route(
            Doc {
                query: &[("ship_id", "string", false)],
                responses: &[
                    (204, "Deleted", ""),
                    (404, "Session not found", "HTTPError"),
                ],
                ..doc(
                    "delete",
                    "/sessions/{session_id}",
                    "Delete a session's relations",
                )
            },
            delete(h::delete_session),
        ),
        route(
            Doc {
                responses: &[(200, "Prometheus text format", "")],
                ..doc("get", "/metrics", "Prometheus metrics")
            },
            get(h::metrics),
        ),
        route(
            Doc {
                auth: false,
                responses: &[(200, "This document", "")],
                ..doc("get", "/openapi.json", "OpenAPI description")
            },
            get(h::openapi),
        ),
    ]
}

fn schema_ref(name: &str) -> Value {
    match name {
        "Binary" => json!({"type": "string", "format": "binary"}),
        "ShipList" => {
            json!({"type": "array", "items": {"$ref": "#/components/schemas/ShipResponse"}})
        }
        _ => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

fn operation(d: &Doc) -> Value {
    let mut params = Vec::new();
    for seg in d.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    for (name, ty, required) in d.query {
        params.push(
            json!({"name": name, "in": "query", "required": required, "schema": {"type": ty}}),
        );
    }
    if d.session_header {
        params.push(
            json!({"name": "X-SESSION-ID", "in": "header", "required": true,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}),
        );
    }
    let mut responses = Map::new();
    for (status, description, schema) in d.responses {
        let mut r = json!({"description": description});
        if !schema.is_empty() {
            let ct = if *schema == "Binary" {
                "application/octet-stream"
            } else {
                JSON
            };
            r["content"] = json!({ ct: {"schema": schema_ref(schema)} });
        }
        responses.insert(status.to_string(), r);
    }
    if d.auth {
        responses.insert("401".into(), json!({"description": "Invalid access token", "content": {JSON: {"schema": schema_ref("HTTPError")}}}));
        responses.insert("403".into(), json!({"description": "Not authenticated, or no access", "content": {JSON: {"schema": schema_ref("HTTPError")}}}));
    }
    if d.auth || !d.query.is_empty() {
        responses.insert("422".into(), json!({"description": "Validation error", "content": {JSON: {"schema": schema_ref("HTTPValidationError")}}}));
    }
    let mut op = json!({"summary": d.summary, "operationId": format!("{}_{}", d.method, d.path.replace(['/', '{', '}', '-', '.'], "_").trim_matches('_')), "parameters": params, "responses": responses});
    if let Some((ct, schema, required)) = d.body {
        op["requestBody"] =
            json!({"required": required, "content": { ct: {"schema": schema_ref(schema)} }});
    }
    if d.auth {
        op["security"] = json!([{"bearer": []}]);
    }
    op
}

fn schemas() -> Value {
    let ts = json!({"type": "string", "format": "date-time"});
    let tsn = json!({"type": ["string", "null"], "format": "date-time"});
    json!({
        "ShipResponse": {"type": "object", "required": ["id","status","created_at","updated_at","container_id","ip_address","ttl","max_session_num","current_session_num","expires_at"],
            "properties": {"id": {"type": "string"}, "status": {"type": "integer", "enum": [0,1,2], "description": "0 STOPPED, 1 RUNNING, 2 CREATING"},
                "created_at": ts, "updated_at": ts, "container_id": {"type": ["string","null"]}, "ip_address": {"type": ["string","null"]},
                "ttl": {"type": "integer"}, "max_session_num": {"type": "integer"}, "current_session_num": {"type": "integer"}, "expires_at": tsn}},
        "SessionResponse": {"type": "object", "required": ["id","session_id","ship_id","created_at","last_activity","expires_at","initial_ttl","is_active"],
            "properties": {"id": {"type": "string"}, "session_id": {"type": "string"}, "ship_id": {"type": "string"}, "created_at": ts,
                "last_activity": ts, "expires_at": ts, "initial_ttl": {"type": "integer"}, "is_active": {"type": "boolean"}}},
        "Spec": {"type": "object", "additionalProperties": false, "properties": {
            "cpus": {"type": ["number","null"], "exclusiveMinimum": 0, "maximum": 256},
            "memory": {"type": ["string","null"], "description": "e.g. 512m, 1Gi; at most 1Ti"},
            "disk": {"type": ["string","null"], "description": "e.g. 1Gi; at most 16Ti"}}},
        "CreateShipRequest": {"type": "object", "additionalProperties": false, "required": ["ttl"], "properties": {
            "ttl": {"type": "integer", "exclusiveMinimum": 0}, "spec": {"anyOf": [schema_ref("Spec"), {"type": "null"}]},
            "max_session_num": {"type": "integer", "exclusiveMinimum": 0, "maximum": 100, "default": 1},
            "force_create": {"type": "boolean", "default": false}}},
        "ExtendTTLRequest": {"type": "object", "additionalProperties": false, "required": ["ttl"], "properties": {"ttl": {"type": "integer", "exclusiveMinimum": 0}}},
        "StartShipRequest": {"type": "object", "additionalProperties": false, "properties": {"ttl": {"type": "integer", "exclusiveMinimum": 0}}},
        "SessionExtendTTLRequest": {"type": "object", "required": ["ttl"], "properties": {"ttl": {"type": "integer"}}},
        "ExecRequest": {"type": "object", "additionalProperties": false, "required": ["type"], "properties": {
            "type": {"type": "string", "description": "shell/exec, ipython/exec, ipython/create_kernel, ipython/kernel/restart, ipython/kernel/status, fs/create_file, fs/read_file, fs/write_file, fs/edit_file, fs/delete_file, fs/list_dir, shell/processes, shell/process/<8 hex>"},
            "payload": {"type": ["object","null"]}}},
        "ExecResponse": {"type": "object", "required": ["success","data","error"], "properties": {"success": {"type": "boolean"}, "data": {}, "error": {"type": "null"}}},
        "UploadForm": {"type": "object", "required": ["file","file_path"], "properties": {"file": {"type": "string", "format": "binary"}, "file_path": {"type": "string", "minLength": 1, "maxLength": 4096}}},
        "UploadResponse": {"type": "object", "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}, "file_path": {"type": "string"}, "error": {"type": "null"}}},
        "Logs": {"type": "object", "required": ["logs"], "properties": {"logs": {"type": "string"}}},
        "ShipSessions": {"type": "object", "properties": {"ship_id": {"type": "string"}, "sessions": {"type": "array", "items": schema_ref("SessionResponse")}, "total": {"type": "integer"}}},
        "SessionList": {"type": "object", "properties": {"sessions": {"type": "array", "items": schema_ref("SessionResponse")}, "total": {"type": "integer"}}},
        "Overview": {"type": "object", "properties": {"service": {"type": "string"}, "version": {"type": "string"}, "status": {"type": "string"},
            "ships": {"type": "object", "properties": {"total": {"type": "integer"}, "running": {"type": "integer"}, "stopped": {"type": "integer"}, "creating": {"type": "integer"}, "warm": {"type": "integer"}, "warming": {"type": "integer"}}},
            "sessions": {"type": "object", "properties": {"total": {"type": "integer"}, "active": {"type": "integer"}}}}},
        "Stat": {"type": "object", "properties": {"service": {"type": "string"}, "version": {"type": "string"}, "status": {"type": "string"}, "author": {"type": "string"}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}, "message": {"type": "string"}}},
        "HTTPError": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
        "ValidationError": {"type": "object", "required": ["type","loc","msg","input"], "properties": {"type": {"type": "string"},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}, "msg": {"type": "string"}, "input": {}, "ctx": {"type": "object"}}},
        "HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": schema_ref("ValidationError")}}},
    })
}

/// The OpenAPI 3.1 document of every route in [`table`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for r in table() {
        let entry = paths.entry(r.doc.path).or_insert_with(|| json!({}));
        entry[r.doc.method] = operation(&r.doc);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Bay API", "version": crate::VERSION,
                 "description": "Bay: sandboxes (ships) for AI agents. Wire contract: bay-api.md."},
        "paths": paths,
        "components": {"schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    })
}
