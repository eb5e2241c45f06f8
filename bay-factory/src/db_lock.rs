//! Who holds a Bay database: one process at a time runs bay-core's background work on it.
//!
//! bay-core's `ShipService` reconciles at start-up, reaps expired ships and checks containers.
//! Two processes doing that on one database would fight (each stopping what the other just
//! started), so both binaries take an advisory lock on `<database>.lock` before starting the
//! service: `bay-server` for its whole life, the `bay` CLI in local mode for one command.
//! The holder's role is written into the file, so a second process can say who is in the way.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Who holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// a running `bay-server`
    Server,
    /// one `bay` command in local mode
    Cli,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "bay-server",
            Self::Cli => "bay",
        }
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the database {path} is in use by {holder} (lock file {lock})")]
    Busy {
        /// the database
        path: PathBuf,
        /// the lock file
        lock: PathBuf,
        /// what the lock file says about the holder (`bay-server pid 12`, …)
        holder: String,
        /// whether the holder is a bay-server
        server: bool,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {lock}: {source}")]
    Io {
        /// the lock file
        lock: PathBuf,
        /// the cause
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends, whatever the way).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

/// The lock file of a database: `<database>.lock` next to it.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn open(lock: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)
        .map_err(|source| LockError::Io {
            lock: lock.to_owned(),
            source,
        })
}

fn claim(mut file: File, lock: &Path, holder: Holder) -> Result<DatabaseLock, LockError> {
    let io = |source| LockError::Io {
        lock: lock.to_owned(),
        source,
    };
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{} pid {}", holder.as_str(), std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(DatabaseLock { _file: file })
}

/// Takes the lock of `database` for `holder`, or says who holds it.
pub fn try_lock(database: &Path, holder: Holder) -> Result<DatabaseLock, LockError> {
    let lock = lock_path(database);
    let mut file = open(&lock)?;
    match file.try_lock() {
        Ok(()) => claim(file, &lock, holder),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // The holder's note is informational: an unreadable one still means busy.
            let _ = file.read_to_string(&mut text);
            let text = text.trim().to_owned();
            Err(LockError::Busy {
                path: database.to_owned(),
                lock,
                server: text.starts_with(Holder::Server.as_str()),
                holder: if text.is_empty() {
                    "another process".to_owned()
                } else {
                    text
                },
            })
        }
        Err(TryLockError::Error(source)) => Err(LockError::Io { lock, source }),
    }
}

/// Takes the lock of `database` for `holder`, waiting for the current holder to let go.
pub fn lock(database: &Path, holder: Holder) -> Result<DatabaseLock, LockError> {
    let lock = lock_path(database);
    let file = open(&lock)?;
    file.lock().map_err(|source| LockError::Io {
        lock: lock.clone(),
        source,
    })?;
    claim(file, &lock, holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_who_is_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bay.db");
        let held = try_lock(&db, Holder::Server).unwrap();
        match try_lock(&db, Holder::Cli) {
            Err(LockError::Busy { server, holder, .. }) => {
                assert!(server);
                assert!(holder.starts_with("bay-server pid"), "{holder}");
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(held);
        let cli = try_lock(&db, Holder::Cli).unwrap();
        match try_lock(&db, Holder::Server) {
            Err(LockError::Busy { server, .. }) => assert!(!server),
            other => panic!("expected busy, got {other:?}"),
        }
        drop(cli);
    }
}
