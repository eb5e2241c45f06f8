//! Request extraction: JSON bodies read under `MAX_REQUEST_BODY` with the content-type rules of
//! bay-api.md §2.1, and raw query strings.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::error::ApiError;
use crate::validate::{Violations, loc};

/// A JSON request body as read, before validation.
#[derive(Debug)]
pub enum JsonBody {
    /// No body (or JSON `null`).
    Empty,
    /// A parsed JSON value.
    Json(Value),
    /// Unparseable JSON or a non-JSON content type: the 422 entries.
    Invalid(Vec<Value>),
}

impl JsonBody {
    /// The body as an object, recording violations otherwise: `missing` when `required` and
    /// absent, `model_attributes_type` for non-objects, the parse errors. `Some(empty)` for an
    /// absent optional body.
    pub fn object(&self, v: &mut Violations, required: bool) -> Option<Map<String, Value>> {
        match self {
            Self::Empty if required => {
                v.missing(loc(&["body"]));
                None
            }
            Self::Empty => Some(Map::new()),
            Self::Json(Value::Object(m)) => Some(m.clone()),
            Self::Json(other) => {
                model_attributes_type(v, other.clone());
                None
            }
            Self::Invalid(entries) => {
                let mut extra = Violations::new();
                for e in entries {
                    extra.push_raw(e.clone());
                }
                v.extend(extra);
                None
            }
        }
    }
}

fn model_attributes_type(v: &mut Violations, input: Value) {
    v.push(
        "model_attributes_type",
        loc(&["body"]),
        "Input should be a valid dictionary or object to extract fields from",
        input,
    );
}

/// Whether a `Content-Type` is parsed as JSON: absent, `application/json` or
/// `application/<anything>+json`, parameters ignored.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Reads a whole body, failing with 413 above `limit` bytes (declared or read).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::body_too_large());
    }
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "reading the request body failed");
            ApiError::detail(
                http::StatusCode::BAD_REQUEST,
                "There was an error reading the body",
                "body_read",
            )
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::body_too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Parses JSON text, turning a syntax error into the `json_invalid` entry of §2.5.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let message = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(m, _)| m)
            .to_owned();
        json!({
            "type": "json_invalid",
            "loc": ["body", char_offset(bytes, e.line(), e.column())],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": message},
        })
    })
}

/// The 0-based character offset of a 1-based (line, byte column) position.
fn char_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match bytes[start..].iter().position(|b| *b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    let end = (start + column.saturating_sub(1)).min(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).chars().count()
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_limited(
            &parts.headers,
            body,
            state.service.config().max_request_body,
        )
        .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::Empty);
        }
        if !is_json_content_type(&parts.headers) {
            let mut v = Violations::new();
            model_attributes_type(
                &mut v,
                Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            );
            return Ok(Self::Invalid(v.into_entries()));
        }
        Ok(match parse_json(&bytes) {
            Ok(Value::Null) => Self::Empty,
            Ok(value) => Self::Json(value),
            Err(entry) => Self::Invalid(vec![entry]),
        })
    }
}

/// The one `{…}` parameter of the matched route, percent-decoded. Any string is an id
/// (bay-api.md §4.1): invalid UTF-8 is replaced by U+FFFD instead of being refused with axum's
/// plain-text 400, so such an id answers the route's JSON 404 like any unknown one.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let index = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|m| m.as_str().split('/').position(|s| s.starts_with('{')));
        let raw = index.and_then(|i| parts.uri.path().split('/').nth(i));
        let Some(raw) = raw else {
            return Err(ApiError::Internal(format!(
                "no path parameter in {}",
                parts.uri.path()
            )));
        };
        Ok(Self(
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned(),
        ))
    }
}

/// The decoded query parameters (first value of each name wins).
#[derive(Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        Ok(Self(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_point_at_a_character() {
        let e = parse_json(b"{bad").unwrap_err();
        assert_eq!(e["loc"], json!(["body", 1]));
        assert_eq!(e["type"], "json_invalid");
        let e = parse_json("{\"é\": x}".as_bytes()).unwrap_err();
        assert_eq!(e["loc"], json!(["body", 6]));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json_content_type(&h));
    }
}
