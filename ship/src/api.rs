//! HTTP plumbing shared by all routes: error bodies, FastAPI-style validation with lax
//! coercion, the `X-SESSION-ID` rule and bearer-token authentication.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answered as `{"detail": …}`.
#[derive(Debug)]
pub enum ApiError {
    /// Application error with a string detail.
    Detail(StatusCode, String),
    /// 422 with a list of validation entries.
    Validation(Vec<Value>),
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::Detail(status, detail.into())
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Detail(status, detail) => {
                (status, json_body(&json!({ "detail": detail }))).into_response()
            }
            Self::Validation(entries) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json_body(&json!({ "detail": entries })),
            )
                .into_response(),
        }
    }
}

/// A JSON response body with the documented content type.
pub fn json_body(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// 200 with a JSON body.
pub fn ok(v: Value) -> Response {
    json_body(&v)
}

pub type ApiResult = Result<Response, ApiError>;

/// One validation entry.
pub fn entry(kind: &str, loc: Vec<Value>, msg: &str, input: Value, ctx: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("loc".into(), Value::Array(loc));
    m.insert("msg".into(), msg.into());
    m.insert("input".into(), input);
    if let Some(ctx) = ctx {
        m.insert("ctx".into(), ctx);
    }
    Value::Object(m)
}

pub fn missing(loc: Vec<Value>) -> Value {
    entry("missing", loc, "Field required", Value::Null, None)
}

const SESSION_RULE: &str = "X-SESSION-ID must be 1 to 128 characters without control characters or leading/trailing spaces";

/// Whether a session id satisfies the §2.1 rule.
pub fn session_id_valid(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n)
        && !s.chars().any(char::is_control)
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
}

/// Checks a session id given as `loc`; `None` → `missing`.
pub fn check_session(value: Option<&[u8]>, loc: Vec<Value>) -> Result<String, Value> {
    let Some(raw) = value else {
        return Err(missing(loc));
    };
    match std::str::from_utf8(raw) {
        Ok(s) if session_id_valid(s) => Ok(s.to_owned()),
        other => {
            let input = match other {
                Ok(s) => Value::from(s),
                Err(_) => Value::from(String::from_utf8_lossy(raw).into_owned()),
            };
            Err(entry(
                "value_error",
                loc,
                &format!("Value error, {SESSION_RULE}"),
                input,
                Some(json!({ "error": SESSION_RULE })),
            ))
        }
    }
}

/// The `X-SESSION-ID` header, validated.
pub fn session_header(headers: &HeaderMap) -> Result<String, Value> {
    check_session(
        headers.get("x-session-id").map(|v| v.as_bytes()),
        vec!["header".into(), "X-SESSION-ID".into()],
    )
}

/// A JSON request body being validated field by field; errors are collected in order.
#[derive(Debug)]
pub struct Body {
    obj: Map<String, Value>,
    pub errors: Vec<Value>,
    /// The body as a whole was rejected: field errors are not reported.
    invalid: bool,
}

fn loc(name: &str) -> Vec<Value> {
    vec!["body".into(), name.into()]
}

impl Body {
    /// Parses a JSON object body (§2.2). `errors` are the header/query errors found so far;
    /// they come first in the 422 list.
    pub fn parse(
        headers: &HeaderMap,
        bytes: &[u8],
        mut errors: Vec<Value>,
    ) -> Result<Self, ApiError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let json_ct = match &ct {
            None => true,
            Some(t) => {
                t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
            }
        };
        let before = errors.len();
        let obj = if !json_ct {
            errors.push(entry(
                "model_attributes_type",
                vec!["body".into()],
                "Input should be a valid dictionary or object to extract fields from",
                Value::from(String::from_utf8_lossy(bytes).into_owned()),
                None,
            ));
            Map::new()
        } else if bytes.iter().all(u8::is_ascii_whitespace) {
            errors.push(missing(vec!["body".into()]));
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(m)) => m,
                Ok(other) => {
                    errors.push(entry(
                        "model_attributes_type",
                        vec!["body".into()],
                        "Input should be a valid dictionary or object to extract fields from",
                        other,
                        None,
                    ));
                    Map::new()
                }
                Err(e) => {
                    let offset = char_offset(bytes, e.line(), e.column());
                    errors.push(entry(
                        "json_invalid",
                        vec!["body".into(), offset.into()],
                        "JSON decode error",
                        json!({}),
                        Some(json!({ "error": json_error_text(&e) })),
                    ));
                    Map::new()
                }
            }
        };
        let invalid = errors.len() > before;
        Ok(Self {
            obj,
            errors,
            invalid,
        })
    }

    /// Fails with 422 when any error was collected.
    pub fn finish(&self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors.clone()))
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.obj.get(name)
    }

    /// A required string field.
    pub fn req_str(&mut self, name: &str) -> String {
        match self.get(name).cloned() {
            None => {
                if !self.invalid {
                    self.errors.push(missing(loc(name)));
                }
                String::new()
            }
            Some(v) => self.string_value(name, v).unwrap_or_default(),
        }
    }

    /// An optional string field with a default; `null` allowed when `nullable`.
    pub fn opt_str(&mut self, name: &str, nullable: bool) -> Option<String> {
        match self.get(name).cloned() {
            None => None,
            Some(Value::Null) if nullable => None,
            Some(v) => self.string_value(name, v),
        }
    }

    fn string_value(&mut self, name: &str, v: Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.errors.push(entry(
                    "string_type",
                    loc(name),
                    "Input should be a valid string",
                    other,
                    None,
                ));
                None
            }
        }
    }

    /// An optional int field: `Some(None)` is an explicit `null` (nullable only).
    pub fn opt_int(&mut self, name: &str, nullable: bool) -> Option<Option<i64>> {
        match self.get(name).cloned() {
            None => None,
            Some(Value::Null) if nullable => Some(None),
            Some(v) => match coerce_int(&v) {
                Ok(i) => Some(Some(i)),
                Err(e) => {
                    self.errors.push(entry(e.0, loc(name), e.1, v, None));
                    None
                }
            },
        }
    }

    /// An optional bool field.
    pub fn opt_bool(&mut self, name: &str) -> Option<bool> {
        let v = self.get(name).cloned()?;
        match coerce_bool(&v) {
            Ok(b) => Some(b),
            Err(e) => {
                self.errors.push(entry(e.0, loc(name), e.1, v, None));
                None
            }
        }
    }

    /// An optional `{string: string}` object, nullable.
    pub fn opt_str_map(&mut self, name: &str) -> Option<Vec<(String, String)>> {
        match self.get(name).cloned() {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => out.push((k, s)),
                        other => self.errors.push(entry(
                            "string_type",
                            vec!["body".into(), name.into(), k.into()],
                            "Input should be a valid string",
                            other,
                            None,
                        )),
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.errors.push(entry(
                    "dict_type",
                    loc(name),
                    "Input should be a valid dictionary",
                    other,
                    None,
                ));
                None
            }
        }
    }
}

/// Lax int coercion (§2.2): `Err((type, msg))`.
pub fn coerce_int(v: &Value) -> Result<i64, (&'static str, &'static str)> {
    const INT_TYPE: (&str, &str) = ("int_type", "Input should be a valid integer");
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.is_finite() && f.abs() < 9.2e18 {
                    Ok(f as i64)
                } else if f.is_finite() && f.fract() != 0.0 {
                    Err((
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    ))
                } else {
                    Err(INT_TYPE)
                }
            } else {
                Err(INT_TYPE)
            }
        }
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                t.parse::<i64>().map_err(|_| {
                    (
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                    )
                })
            } else {
                Err((
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                ))
            }
        }
        _ => Err(INT_TYPE),
    }
}

/// Lax bool coercion (§2.2).
pub fn coerce_bool(v: &Value) -> Result<bool, (&'static str, &'static str)> {
    const PARSING: (&str, &str) = (
        "bool_parsing",
        "Input should be a valid boolean, unable to interpret input",
    );
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Ok(false),
            Some(1.0) => Ok(true),
            _ => Err(PARSING),
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(PARSING),
        },
        _ => Err(("bool_type", "Input should be a valid boolean")),
    }
}

/// serde_json reports 1-based line/column; FastAPI reports a 0-based character offset.
fn char_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.chars().count());
        }
        offset += l.chars().count() + 1;
    }
    offset
}

fn json_error_text(e: &serde_json::Error) -> String {
    let s = e.to_string();
    // Drop serde's " at line L column C" suffix.
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Constant-time bearer check (§1). `None` token → everything allowed.
pub fn authorized(token: Option<&str>, headers: &HeaderMap, query_token: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    let Some(expected) = token else { return true };
    let eq = |given: &str| bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let h = h.trim();
        if let Some(t) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            && eq(t.trim())
        {
            return true;
        }
    }
    query_token.is_some_and(eq)
}

/// 401 body for a missing or wrong token.
pub fn unauthorized() -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "Invalid ship token").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_coercion_follows_the_lax_rules() {
        assert_eq!(coerce_int(&json!(10)), Ok(10));
        assert_eq!(coerce_int(&json!(10.0)), Ok(10));
        assert_eq!(coerce_int(&json!("420")), Ok(420));
        assert_eq!(coerce_int(&json!(" -3 ")), Ok(-3));
        assert_eq!(coerce_int(&json!(10.5)).unwrap_err().0, "int_from_float");
        assert_eq!(coerce_int(&json!("0o644")).unwrap_err().0, "int_parsing");
        assert_eq!(coerce_int(&json!(true)).unwrap_err().0, "int_type");
        assert_eq!(coerce_int(&json!(null)).unwrap_err().0, "int_type");
    }

    #[test]
    fn bool_coercion_follows_the_lax_rules() {
        for s in ["true", "1", "YES", "on", "t", "Y"] {
            assert_eq!(coerce_bool(&json!(s)), Ok(true), "{s}");
        }
        for s in ["false", "0", "No", "OFF", "f", "n"] {
            assert_eq!(coerce_bool(&json!(s)), Ok(false), "{s}");
        }
        assert_eq!(coerce_bool(&json!(1)), Ok(true));
        assert_eq!(coerce_bool(&json!(2)).unwrap_err().0, "bool_parsing");
        assert_eq!(coerce_bool(&json!("maybe")).unwrap_err().0, "bool_parsing");
        assert_eq!(coerce_bool(&json!([])).unwrap_err().0, "bool_type");
    }

    #[test]
    fn session_ids_follow_the_rule() {
        assert!(session_id_valid("user-123"));
        assert!(session_id_valid("aiocqhttp:GroupMessage:12345"));
        assert!(session_id_valid("a b é"));
        assert!(!session_id_valid(""));
        assert!(!session_id_valid(" a"));
        assert!(!session_id_valid("a\n"));
        assert!(!session_id_valid(&"x".repeat(129)));
        assert!(session_id_valid(&"é".repeat(128)));
    }

    #[test]
    fn body_validation_collects_errors_in_order() {
        let headers = HeaderMap::new();
        let mut b = Body::parse(&headers, br#"{"mode":"x","path":5}"#, vec![]).unwrap();
        let _ = b.req_str("path");
        let _ = b.opt_int("mode", false);
        let _ = b.req_str("content");
        let types: Vec<_> = b
            .errors
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types, ["string_type", "int_parsing", "missing"]);
        assert!(b.finish().is_err());
    }

    #[test]
    fn malformed_json_reports_the_offset() {
        let headers = HeaderMap::new();
        let b = Body::parse(&headers, b"{\"a\": }", vec![]).unwrap();
        assert_eq!(b.errors[0]["type"], "json_invalid");
        assert_eq!(b.errors[0]["loc"], json!(["body", 6]));
        let b = Body::parse(&headers, b"[1]", vec![]).unwrap();
        assert_eq!(b.errors[0]["type"], "model_attributes_type");
        let b = Body::parse(&headers, b"", vec![]).unwrap();
        assert_eq!(b.errors[0]["type"], "missing");
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let mut h = HeaderMap::new();
        assert!(authorized(None, &h, None));
        assert!(!authorized(Some("s3cret"), &h, None));
        assert!(authorized(Some("s3cret"), &h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(Some("s3cret"), &h, None));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &h, None));
    }
}
