//! Turning bollard's errors (from Podman's Docker-compatible API) into [`DriverError`]s: "not
//! found" (404), "the engine did not answer" (connection refused, socket missing, timeout) and
//! everything else — plus the places where Podman answers 500 where Docker answers 409 or 404
//! (the `*_answer` predicates, shared with the libpod path).

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

/// A name already taken (Docker: 409; Podman: 500 "... is already in use" or "already exists").
pub(crate) fn is_conflict(e: &BollardError) -> bool {
    status(e).is_some_and(|s| conflict_answer(s, message(e)))
}

/// A missing network on container create (Docker: 404; Podman: 500 "network not found").
pub(crate) fn is_network_missing(e: &BollardError) -> bool {
    status(e).is_some_and(|s| network_missing_answer(s, message(e)))
}

/// A missing image on container create (404 naming the image).
pub(crate) fn is_image_missing(e: &BollardError) -> bool {
    status(e).is_some_and(|s| image_missing_answer(s, message(e)))
}

/// Whether Podman's answer (either API) says the name is taken: 409, or 500 "... is already
/// in use" / "already exists".
pub(crate) fn conflict_answer(status: u16, message: &str) -> bool {
    status == 409
        || (status == 500
            && (message.contains("already in use") || message.contains("already exists")))
}

/// Whether Podman's answer to a container create says the network is missing (404, or 500
/// "network not found").
pub(crate) fn network_missing_answer(status: u16, message: &str) -> bool {
    (matches!(status, 404 | 500) && message.contains("network not found"))
        || (status == 404 && message.contains("network"))
}

/// Whether Podman's answer to a container create says the image is missing (compatible API:
/// 404 naming the image; libpod: 500 "image not known").
pub(crate) fn image_missing_answer(status: u16, message: &str) -> bool {
    (status == 404 && message.contains("image"))
        || (status == 500 && message.contains("image not known"))
}

/// An engine answer as text.
pub(crate) fn describe_answer(status: u16, message: &str) -> String {
    format!("podman answered {status}: {}", message.trim())
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

/// Maps a failed raw request about `what` to a [`DriverError`], like [`map`].
pub(crate) fn map_raw(what: &str, e: crate::raw::RawError) -> DriverError {
    use crate::raw::RawError;
    match e {
        RawError::NoAnswer(m) => DriverError::Unavailable(format!("{what}: {m}")),
        RawError::Answer(404, _) => DriverError::NotFound(what.to_owned()),
        RawError::Answer(status, m) => {
            DriverError::Engine(format!("{what}: podman answered {status}: {}", m.trim()))
        }
    }
}

/// A one-line description, with the source chain (hyper's errors hide the cause otherwise).
pub(crate) fn describe(e: &BollardError) -> String {
    if let BollardError::DockerResponseServerError {
        status_code,
        message,
    } = e
    {
        return describe_answer(*status_code, message);
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
    fn podman_500s_are_conflicts_and_missing_networks() {
        // Messages as Podman 4.3 sends them (shared/notes/podman-here.md).
        let conflict = server(
            500,
            "container create: creating container storage: the container name \"ship-1\" is already in use by 2b75. You have to remove that container to be able to reuse that name: that name is already in use",
        );
        assert!(is_conflict(&conflict));
        assert!(!is_network_missing(&conflict));
        assert!(is_conflict(&server(409, "Conflict")));
        assert!(is_conflict(&server(
            500,
            "network name n already used: network already exists"
        )));
        let network = server(
            500,
            "container create: unable to find network with name or ID nonet: network not found",
        );
        assert!(is_network_missing(&network));
        assert!(!is_conflict(&network));
        assert!(is_network_missing(&server(404, "network nonet not found")));
        assert!(!is_conflict(&server(500, "boom")));
        assert!(!is_network_missing(&server(500, "boom")));
        assert!(is_image_missing(&server(
            404,
            "no such image: docker.io/library/ship:nope: image not known"
        )));
        // libpod's answers (Podman 4.3).
        assert!(image_missing_answer(
            500,
            "localhost/nope:1: image not known"
        ));
        assert!(conflict_answer(
            500,
            "volume with name v already exists: volume already exists"
        ));
        assert!(network_missing_answer(
            500,
            "unable to find network with name or ID nonet: network not found"
        ));
        assert!(!image_missing_answer(500, "boom"));
    }

    #[test]
    fn a_404_is_not_found_and_no_answer_is_unavailable() {
        let e = map("container ship-1", server(404, "no such container"));
        assert!(matches!(e, DriverError::NotFound(ref w) if w == "container ship-1"));
        let e = map(
            "container ship-1",
            BollardError::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        );
        assert!(e.is_transient(), "{e:?}");
        let e = map("container ship-1", server(500, "boom\n"));
        assert!(matches!(e, DriverError::Engine(_)));
        assert_eq!(e.to_string(), "container ship-1: podman answered 500: boom");
    }
}
