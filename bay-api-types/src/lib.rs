//! bay-api-types: the bodies of Bay's API (bay-api.md §3–§4), Serialize and Deserialize.
//!
//! bay-server writes its responses with these types and the `bay` CLI reads them back with the
//! same types, so the two cannot drift apart; bay-server's API tests snapshot every shape (and
//! `/openapi.json`). Field order is the wire order (`serde_json` keeps it).
//!
//! The request bodies here are what a client sends; bay-server validates raw JSON itself
//! (lax coercion and Pydantic-shaped 422s, bay-api.md §2.5), so they are client-side only.

use bay_core::model::{ShipStatus, Timestamp};
use bay_core::service::{Overview, Session, Ship};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `ShipResponse` (§3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipResponse {
    /// ship id
    pub id: String,
    /// `0` STOPPED, `1` RUNNING, `2` CREATING
    pub status: ShipStatus,
    /// record creation
    pub created_at: Timestamp,
    /// last change of a stored attribute
    pub updated_at: Timestamp,
    /// container id while one exists
    pub container_id: Option<String>,
    /// agent address while one exists
    pub ip_address: Option<String>,
    /// RUNNING: seconds left; CREATING: requested ttl; STOPPED: 0
    pub ttl: i64,
    /// session slots
    pub max_session_num: i32,
    /// active relations
    pub current_session_num: i64,
    /// RUNNING: the deadline
    pub expires_at: Option<Timestamp>,
}

impl From<Ship> for ShipResponse {
    fn from(s: Ship) -> Self {
        Self {
            id: s.id,
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
            container_id: s.container_id,
            ip_address: s.ip_address,
            ttl: s.ttl,
            max_session_num: s.max_session_num,
            current_session_num: s.current_session_num,
            expires_at: s.expires_at,
        }
    }
}

/// `SessionResponse` (§3.2): one relation between a session and a ship.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// relation id
    pub id: String,
    /// the client's session string
    pub session_id: String,
    /// the ship
    pub ship_id: String,
    /// relation creation
    pub created_at: Timestamp,
    /// last use
    pub last_activity: Timestamp,
    /// end of activity
    pub expires_at: Timestamp,
    /// ttl by which activity refreshes the expiry
    pub initial_ttl: i64,
    /// `expires_at > now`
    pub is_active: bool,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            id: s.id,
            session_id: s.session_id,
            ship_id: s.ship_id,
            created_at: s.created_at,
            last_activity: s.last_activity,
            expires_at: s.expires_at,
            initial_ttl: s.initial_ttl,
            is_active: s.is_active,
        }
    }
}

/// Converts a list of core values into their responses.
pub fn responses<T, R: From<T>>(items: Vec<T>) -> Vec<R> {
    items.into_iter().map(R::from).collect()
}

/// `GET /` and `GET /health`: `{"status": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// `ok` or `error`
    pub status: String,
    /// human text
    pub message: String,
}

impl StatusMessage {
    /// A status with its message.
    pub fn new(status: &str, message: &str) -> Self {
        Self {
            status: status.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `GET /stat` (§4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatResponse {
    /// always `bay`
    pub service: String,
    /// Bay's version
    pub version: String,
    /// always `running`
    pub status: String,
    /// always `AstrBot Team`
    pub author: String,
}

impl StatResponse {
    /// The `/stat` body of this Bay version.
    pub fn new(version: &str) -> Self {
        Self {
            service: "bay".to_owned(),
            version: version.to_owned(),
            status: "running".to_owned(),
            author: "AstrBot Team".to_owned(),
        }
    }
}

/// `GET /stat/overview` (§4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewResponse {
    /// always `bay`
    pub service: String,
    /// Bay's version
    pub version: String,
    /// always `running`
    pub status: String,
    /// ship counts
    pub ships: ShipCounts,
    /// relation counts
    pub sessions: SessionCounts,
}

impl OverviewResponse {
    /// The overview body of this Bay version.
    pub fn new(version: &str, overview: Overview) -> Self {
        Self {
            service: "bay".to_owned(),
            version: version.to_owned(),
            status: "running".to_owned(),
            ships: ShipCounts {
                total: overview.ships.total,
                running: overview.ships.running,
                stopped: overview.ships.stopped,
                creating: overview.ships.creating,
                warm: overview.ships.warm,
                warming: overview.ships.warming,
            },
            sessions: SessionCounts {
                total: overview.sessions.total,
                active: overview.sessions.active,
            },
        }
    }
}

/// Ship counts by status. Warm-pool ships (`WARM_POOL_SIZE`) are counted apart, in `warm`
/// and `warming`, not in the other fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipCounts {
    /// all records outside the warm pool
    pub total: usize,
    /// status 1
    pub running: usize,
    /// status 0
    pub stopped: usize,
    /// status 2
    pub creating: usize,
    /// warm-pool ships ready to be handed out (absent from older servers: 0)
    #[serde(default)]
    pub warm: usize,
    /// warm-pool ships being started (absent from older servers: 0)
    #[serde(default)]
    pub warming: usize,
}

/// Relation counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// all relations
    pub total: usize,
    /// relations with `expires_at > now`
    pub active: usize,
}

/// `GET /ship/logs/{id}` (§4.13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    /// the container's recent output
    pub logs: String,
}

/// `GET /ship/{id}/sessions` (§4.14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipSessionsResponse {
    /// the ship
    pub ship_id: String,
    /// its relations, oldest first
    pub sessions: Vec<SessionResponse>,
    /// `sessions.len()`
    pub total: usize,
}

/// `GET /sessions` (§4.19).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionListResponse {
    /// every relation, oldest first
    pub sessions: Vec<SessionResponse>,
    /// `sessions.len()`
    pub total: usize,
}

impl SessionListResponse {
    /// The list body of these relations.
    pub fn new(sessions: Vec<Session>) -> Self {
        let sessions: Vec<SessionResponse> = responses(sessions);
        Self {
            total: sessions.len(),
            sessions,
        }
    }
}

/// `POST /ship/{id}/exec` success envelope (§4.15): `data` is the agent's JSON, verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResponse {
    /// the agent answered (the operation's own outcome is inside `data`)
    pub success: bool,
    /// the agent's JSON
    pub data: Value,
    /// always null on success
    pub error: Option<String>,
}

impl ExecResponse {
    /// The envelope around the agent's answer.
    pub fn ok(data: Value) -> Self {
        Self {
            success: true,
            data,
            error: None,
        }
    }
}

/// `POST /ship/{id}/upload` success (§4.16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// always true on 200
    pub success: bool,
    /// `File uploaded successfully`
    pub message: String,
    /// the agent's resolved absolute path
    pub file_path: String,
    /// always null on 200
    pub error: Option<String>,
}

impl UploadResponse {
    /// The success body for this resolved path.
    pub fn ok(file_path: String) -> Self {
        Self {
            success: true,
            message: "File uploaded successfully".to_owned(),
            file_path,
            error: None,
        }
    }
}

/// Every error body: `{"detail": …}` (§2.5, §2.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// a text, or the 422 entries
    pub detail: ErrorDetail,
}

impl ErrorBody {
    /// `{"detail": "<text>"}`
    pub fn text(detail: impl Into<String>) -> Self {
        Self {
            detail: ErrorDetail::Text(detail.into()),
        }
    }

    /// `{"detail": [<entry>…]}` (422)
    pub fn validation(entries: Vec<ValidationError>) -> Self {
        Self {
            detail: ErrorDetail::Validation(entries),
        }
    }

    /// One line for people: the text, or each entry as `loc: msg` joined by `; `.
    pub fn message(&self) -> String {
        match &self.detail {
            ErrorDetail::Text(text) => text.clone(),
            ErrorDetail::Validation(entries) => entries
                .iter()
                .map(ValidationError::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// The `detail` of an error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorDetail {
    /// application errors (`Ship not found`, …)
    Text(String),
    /// 422 validation entries
    Validation(Vec<ValidationError>),
}

/// One 422 entry (Pydantic v2 shape, §2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationError {
    /// e.g. `missing`, `greater_than`
    #[serde(rename = "type")]
    pub kind: String,
    /// where: `["body", "ttl"]`, `["header", "X-SESSION-ID"]`
    pub loc: Vec<Value>,
    /// the message
    pub msg: String,
    /// the offending value (`null` when missing)
    pub input: Value,
    /// extra context for some types (`{"gt": 0}`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loc: Vec<String> = self
            .loc
            .iter()
            .map(|l| match l {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        write!(f, "{}: {}", loc.join("."), self.msg)
    }
}

/// `POST /ship` body (§4.7), as a client sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateShipRequest {
    /// seconds (1 … `MAX_TTL`)
    pub ttl: i64,
    /// resources; absent = server defaults
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecBody>,
    /// session slots (1 … 100)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_num: Option<i32>,
    /// always make a new ship
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_create: Option<bool>,
}

/// `spec` (§3.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecBody {
    /// CPUs (> 0, ≤ 256)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// memory size (`512m`, `1Gi`, …)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// disk size
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

impl SpecBody {
    /// `None` when no field is set (so the request carries no `spec`).
    pub fn into_option(self) -> Option<Self> {
        (self != Self::default()).then_some(self)
    }
}

/// `{"ttl": n}`: `POST /ship/{id}/extend-ttl`, `POST /sessions/{sid}/extend-ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlRequest {
    /// seconds
    pub ttl: i64,
}

/// `POST /ship/{id}/start` body (§4.12): ttl optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartShipRequest {
    /// seconds; absent = `DEFAULT_SHIP_TTL`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// `POST /ship/{id}/exec` body (§4.15).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// the operation, e.g. `shell/exec`
    #[serde(rename = "type")]
    pub kind: String,
    /// the agent's payload
    #[serde(default)]
    pub payload: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_read_back_both_forms() {
        let text: ErrorBody = serde_json::from_str(r#"{"detail":"Ship not found"}"#).unwrap();
        assert_eq!(text.message(), "Ship not found");
        let body = r#"{"detail":[{"type":"missing","loc":["body","ttl"],"msg":"Field required","input":null}]}"#;
        let v: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(v.message(), "body.ttl: Field required");
        assert_eq!(serde_json::to_string(&v).unwrap(), body);
    }

    #[test]
    fn status_codes_are_strict_when_read() {
        assert!(serde_json::from_str::<ShipStatus>("7").is_err());
        assert_eq!(
            serde_json::from_str::<ShipStatus>("1").unwrap(),
            ShipStatus::Running
        );
    }
}
