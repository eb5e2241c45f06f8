//! Turning kube's errors into [`DriverError`]s: "not found" (404), "the API server did not
//! answer" (connection refused or reset, timeouts, 429/502/503/504: the state is unknown) and
//! everything else.

use bay_core::driver::DriverError;

/// The HTTP status of an API server answer, when it answered with a `Status`.
pub(crate) fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether the API server did not answer usefully (its state is unknown).
pub(crate) fn is_unavailable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Maps an API error about `what` (e.g. `pod ship-1`) to a [`DriverError`].
pub(crate) fn map(what: &str, e: kube::Error) -> DriverError {
    if is_unavailable(&e) {
        return DriverError::Unavailable(format!("{what}: {}", describe(&e)));
    }
    match status(&e) {
        Some(404) => DriverError::NotFound(what.to_owned()),
        _ => DriverError::Engine(format!("{what}: {}", describe(&e))),
    }
}

/// A call that took longer than the request timeout: the state is unknown.
pub(crate) fn timed_out(what: &str, after: std::time::Duration) -> DriverError {
    DriverError::Unavailable(format!(
        "{what}: the kubernetes API server did not answer within {} s",
        after.as_secs()
    ))
}

/// A one-line description with the source chain.
pub(crate) fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(s) = e {
        let reason = if s.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason)
        };
        return format!(
            "kubernetes answered {}{reason}: {}",
            s.code,
            s.message.trim()
        );
    }
    bay_core::driver::error_chain(e)
}
