//! Bearer authentication (bay-api.md §2.3): checked from the headers alone, before any body is
//! read, with a constant-time comparison of the token.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No header, or no credentials after the scheme: 403 `Not authenticated`.
    Missing,
    /// The scheme is not `bearer`: 403 `Invalid authentication credentials`.
    WrongScheme,
    /// The credentials are not the token: 401 `Invalid access token`.
    WrongToken,
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::Missing => ApiError::detail(
                StatusCode::FORBIDDEN,
                "Not authenticated",
                "unauthenticated",
            ),
            AuthFailure::WrongScheme => ApiError::detail(
                StatusCode::FORBIDDEN,
                "Invalid authentication credentials",
                "unauthenticated",
            ),
            AuthFailure::WrongToken => ApiError::InvalidToken,
        }
    }
}

/// Compares `given` with `token` in constant time (for equal lengths).
pub fn token_matches(given: &[u8], token: &[u8]) -> bool {
    given.ct_eq(token).into()
}

/// Checks an `Authorization` header value: split at the first space into scheme and
/// credentials; the scheme is `bearer` in any case; the credentials equal the token.
pub fn check_authorization(value: Option<&[u8]>, token: &[u8]) -> Result<(), AuthFailure> {
    let value = value.unwrap_or_default();
    let (scheme, credentials) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[][..]),
    };
    if scheme.is_empty() || credentials.is_empty() {
        return Err(AuthFailure::Missing);
    }
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::WrongScheme);
    }
    if token_matches(credentials, token) {
        Ok(())
    } else {
        Err(AuthFailure::WrongToken)
    }
}

/// The `Authorization` header's first value, as bytes.
pub fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
}

/// Middleware for every authenticated route.
pub async fn require_bearer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_authorization(authorization(req.headers()), state.token.as_bytes()) {
        Ok(()) => next.run(req).await,
        Err(f) => ApiError::from(f).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_cases() {
        let t = b"tok";
        assert_eq!(check_authorization(None, t), Err(AuthFailure::Missing));
        assert_eq!(check_authorization(Some(b""), t), Err(AuthFailure::Missing));
        assert_eq!(
            check_authorization(Some(b"Bearer"), t),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            check_authorization(Some(b"Bearer "), t),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            check_authorization(Some(b"Basic x"), t),
            Err(AuthFailure::WrongScheme)
        );
        assert_eq!(
            check_authorization(Some(b"Bearer x"), t),
            Err(AuthFailure::WrongToken)
        );
        assert_eq!(
            check_authorization(Some(b"Bearer tok "), t),
            Err(AuthFailure::WrongToken)
        );
        assert_eq!(check_authorization(Some(b"bEaReR tok"), t), Ok(()));
    }
}
