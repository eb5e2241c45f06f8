//! What a failed command prints and how `bay` exits (the codes listed in `bay --help`).

use std::fmt;

/// The exit code classes of `bay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: the server, the engine or the connection failed
    Server,
    /// 2: bad arguments or request fields
    Usage,
    /// 3: the ship, session or file does not exist
    NotFound,
    /// 4: refused or limited
    Refused,
}

impl Kind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Server => 1,
            Self::Usage => 2,
            Self::NotFound => 3,
            Self::Refused => 4,
        }
    }

    /// The class of an HTTP error status of bay-server.
    pub fn of_status(status: u16) -> Self {
        match status {
            404 => Self::NotFound,
            422 => Self::Usage,
            400 | 401 | 403 | 408 | 409 | 413 | 429 => Self::Refused,
            _ => Self::Server,
        }
    }

    /// The class of a bay-core error (local mode), matching what bay-server answers for it.
    pub fn of_core(err: &bay_core::Error) -> Self {
        use bay_core::Error as E;
        match err {
            E::ShipNotFound
            | E::ShipNotRunning
            | E::ShipNotFoundOrCreating
            | E::SessionNotFound => Self::NotFound,
            E::ShipCreating
            | E::NoFreeSlot
            | E::NoAccess
            | E::ShipLimitReached { .. }
            | E::SlotWaitTimeout
            | E::SessionShipNotRunning
            | E::UnsupportedExecType(_) => Self::Refused,
            E::TtlNotPositive | E::TtlTooLarge { .. } => Self::Usage,
            E::ShipStatus { status, .. } => match Self::of_status(*status) {
                Self::Usage => Self::Refused,
                other => other,
            },
            _ => Self::Server,
        }
    }
}

/// A failed command: one line for people and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// the class
    pub kind: Kind,
    /// `<what failed>: <why>`
    pub message: String,
}

impl Failure {
    /// A failure of this class.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// A server, engine or I/O error (exit 1).
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Kind::Server, message)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<bay_core::Error> for Failure {
    fn from(err: bay_core::Error) -> Self {
        Self::new(Kind::of_core(&err), err.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Self::server(err.to_string())
    }
}

/// The result of a command step.
pub type Result<T, E = Failure> = std::result::Result<T, E>;
