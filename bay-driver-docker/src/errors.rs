//! Turning bollard's errors into [`DriverError`]s: "not found" (404), "the engine did not
//! answer" (connection refused, socket missing, timeout) and everything else.

use bay_core::driver::DriverError;
use bollard::errors::Error as BollardError;

/// The HTTP status of an engine answer, when the engine answered.
pub(crate) fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message, when the engine answered.
pub(crate) fn message(e: &BollardError) -> &str {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message,
        _ => "",
    }
}

/// Whether the engine did not answer at all (its state is unknown).
pub(crate) fn is_unavailable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
            | BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::UnsupportedURISchemeError { .. }
    )
}

/// Maps an engine error about `what` (e.g. `container ship-1`) to a [`DriverError`].
pub(crate) fn map(what: &str, e: BollardError) -> DriverError {
    if is_unavailable(&e) {
        return DriverError::Unavailable(format!("{what}: {}", describe(&e)));
    }
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => DriverError::NotFound(what.to_owned()),
        other => DriverError::Engine(format!("{what}: {}", describe(&other))),
    }
}

/// A one-line description, with the source chain (hyper's errors hide the cause otherwise).
pub(crate) fn describe(e: &BollardError) -> String {
    if let BollardError::DockerResponseServerError {
        status_code,
        message,
    } = e
    {
        return format!("docker answered {status_code}: {}", message.trim());
    }
    bay_core::driver::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_404_is_not_found() {
        let e = map("container ship-1", server(404, "No such container: ship-1"));
        assert!(matches!(e, DriverError::NotFound(ref w) if w == "container ship-1"));
        assert_eq!(e.to_string(), "container ship-1 not found");
    }

    #[test]
    fn no_answer_is_unavailable() {
        for e in [
            BollardError::RequestTimeoutError,
            BollardError::SocketNotFoundError("/var/run/docker.sock".into()),
            BollardError::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        ] {
            let mapped = map("container ship-1", e);
            assert!(mapped.is_transient(), "{mapped:?}");
        }
    }

    #[test]
    fn other_answers_are_engine_errors() {
        let e = map("container ship-1", server(500, "boom\n"));
        assert!(matches!(e, DriverError::Engine(_)));
        assert_eq!(e.to_string(), "container ship-1: docker answered 500: boom");
    }
}
