//! The typed errors of ship operations. bay-server maps each variant to a status and body in
//! exactly one place; bay-core knows nothing of HTTP.

use crate::driver::DriverError;
use crate::store::StoreError;

/// Why a ship operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No such ship (or, for soft delete and extend, not in a state the operation applies to).
    #[error("ship not found")]
    ShipNotFound,
    /// Exec, upload, download and terminal need a RUNNING ship.
    #[error("ship not found or not running")]
    ShipNotRunning,
    /// `/start` of an unknown or CREATING ship.
    #[error("ship not found or is currently being created")]
    ShipNotFoundOrCreating,
    /// The ship is being created or started.
    #[error("ship is currently being created")]
    ShipCreating,
    /// Joining a running ship whose slots are all taken.
    #[error("ship has no free session slot")]
    NoFreeSlot,
    /// The session has no relation with the ship.
    #[error("session does not have access to this ship")]
    NoAccess,
    /// `MAX_SHIP_NUM` reached in reject mode.
    #[error("maximum number of ships reached")]
    ShipLimitReached {
        /// seconds until a slot is likely to free
        retry_after_secs: u64,
    },
    /// No slot freed within `MAX_SHIP_WAIT_SECONDS`.
    #[error("timeout waiting for available ship slot")]
    SlotWaitTimeout,
    /// The agent did not answer `/health` within the budget.
    #[error("ship failed to become ready within {secs} seconds")]
    NotReady {
        /// the budget in seconds
        secs: u64,
    },
    /// The driver failed while creating a new ship.
    #[error("failed to create ship: {0}")]
    CreateFailed(String),
    /// The driver failed while restoring a stopped ship.
    #[error("failed to start ship: {0}")]
    StartFailed(String),
    /// A permanent delete aborted the start.
    #[error("ship was deleted while starting")]
    DeletedWhileStarting,
    /// Permanent delete could not remove the data; the ship is STOPPED and the call can be retried.
    #[error("failed to delete ship data: {0}")]
    DataDeleteFailed(String),
    /// No relation matches the session (and ship).
    #[error("session not found")]
    SessionNotFound,
    /// None of the session's targeted relations is on a RUNNING ship.
    #[error("ship is not running")]
    SessionShipNotRunning,
    /// A ttl that is zero or negative.
    #[error("ttl must be greater than 0")]
    TtlNotPositive,
    /// A ttl above `MAX_TTL`.
    #[error("ttl must not exceed {max} seconds")]
    TtlTooLarge {
        /// `MAX_TTL`
        max: i64,
    },
    /// An exec `type` outside the allow-list.
    #[error("unsupported exec type: {0}")]
    UnsupportedExecType(String),
    /// The agent answered with a non-2xx status.
    #[error("ship returned {status}: {body}")]
    ShipStatus {
        /// the agent's HTTP status
        status: u16,
        /// its body as text (first 4096 bytes)
        body: String,
    },
    /// The agent answered 2xx with a body that is not JSON.
    #[error("ship returned an invalid response: {0}")]
    ShipInvalidResponse(String),
    /// The agent's response exceeded the relay limit.
    #[error("ship response too large")]
    ShipResponseTooLarge,
    /// Bay could not reach the agent.
    #[error("connection error: {0}")]
    ShipConnection(String),
    /// The agent did not answer in time.
    #[error("request timeout")]
    ShipTimeout,
    /// The agent reported `success: false` for an upload.
    #[error("file upload failed: {0}")]
    UploadFailed(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver failed unexpectedly.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// The result of a ship operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
