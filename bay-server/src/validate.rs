//! A small typed validation layer over `serde_json::Value` that reports violations in the
//! FastAPI/Pydantic v2 shape of bay-api.md §2.5, with the reference's lax coercions.
//!
//! A [`Violations`] collects entries (headers, then query, then body); [`Fields`] reads one
//! JSON object field by field (`int`, `float`, `bool`, `string`, …) and records what is wrong
//! with each, then reports unknown keys as `extra_forbidden` when asked to.

use bay_core::model::{SESSION_ID_RULE, is_valid_session_id};
use http::HeaderMap;
use serde_json::{Map, Value, json};

/// One element of a `loc` array.
pub type Loc = Vec<Value>;

/// Builds a `loc` from string parts.
pub fn loc(parts: &[&str]) -> Loc {
    parts.iter().map(|p| Value::from(*p)).collect()
}

/// The 422 entries found so far.
#[derive(Debug, Default)]
pub struct Violations {
    entries: Vec<Value>,
}

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one entry.
    pub fn push(&mut self, kind: &str, loc: Loc, msg: impl Into<String>, input: Value) {
        self.entries
            .push(json!({"type": kind, "loc": loc, "msg": msg.into(), "input": input}));
    }

    /// Records one entry with a `ctx` object.
    pub fn push_ctx(
        &mut self,
        kind: &str,
        loc: Loc,
        msg: impl Into<String>,
        input: Value,
        ctx: Value,
    ) {
        self.entries
            .push(json!({"type": kind, "loc": loc, "msg": msg.into(), "input": input, "ctx": ctx}));
    }

    /// Records a ready-made entry.
    pub fn push_raw(&mut self, entry: Value) {
        self.entries.push(entry);
    }

    /// `missing` / `Field required`.
    pub fn missing(&mut self, loc: Loc) {
        self.push("missing", loc, "Field required", Value::Null);
    }

    /// `value_error` with `message`.
    pub fn value_error(&mut self, loc: Loc, message: &str, input: Value) {
        self.push_ctx(
            "value_error",
            loc,
            format!("Value error, {message}"),
            input,
            json!({ "error": message }),
        );
    }

    /// How many entries were recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Moves the entries of `other` after these.
    pub fn extend(&mut self, other: Violations) {
        self.entries.extend(other.entries);
    }

    /// `Ok(())` when empty, else the 422 error.
    pub fn finish(self) -> Result<(), crate::error::ApiError> {
        if self.entries.is_empty() {
            Ok(())
        } else {
            Err(crate::error::ApiError::Validation(self.entries))
        }
    }

    /// The entries.
    pub fn into_entries(self) -> Vec<Value> {
        self.entries
    }

    /// Checks the `X-SESSION-ID` header (§2.7) and returns its value when valid.
    pub fn session_header(&mut self, headers: &HeaderMap) -> Option<String> {
        let loc = loc(&["header", "X-SESSION-ID"]);
        let Some(raw) = headers.get("x-session-id") else {
            self.missing(loc);
            return None;
        };
        match std::str::from_utf8(raw.as_bytes()) {
            Ok(s) if is_valid_session_id(s) => Some(s.to_owned()),
            _ => {
                let shown = String::from_utf8_lossy(raw.as_bytes()).into_owned();
                self.value_error(loc, SESSION_ID_RULE, Value::String(shown));
                None
            }
        }
    }

    /// Checks a required `file_path` (§2.8) and returns it when valid.
    pub fn file_path(&mut self, loc: Loc, value: &str) -> bool {
        let chars = value.chars().count();
        let input = Value::from(value);
        if chars == 0 {
            self.push_ctx(
                "string_too_short",
                loc,
                "String should have at least 1 character",
                input,
                json!({"min_length": 1}),
            );
            false
        } else if chars > 4096 {
            self.push_ctx(
                "string_too_long",
                loc,
                "String should have at most 4096 characters",
                input,
                json!({"max_length": 4096}),
            );
            false
        } else if value.contains('\0') {
            self.value_error(loc, "file_path must not contain NUL characters", input);
            false
        } else {
            true
        }
    }

    /// Checks an integer bound pair (`> gt`, `≤ le`).
    pub fn int_bounds(&mut self, loc: Loc, value: i128, input: &Value, gt: i64, le: i64) -> bool {
        if value <= i128::from(gt) {
            self.push_ctx(
                "greater_than",
                loc,
                format!("Input should be greater than {gt}"),
                input.clone(),
                json!({ "gt": gt }),
            );
            false
        } else if value > i128::from(le) {
            self.push_ctx(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {le}"),
                input.clone(),
                json!({ "le": le }),
            );
            false
        } else {
            true
        }
    }
}

/// An integer after lax coercion, or the violation type and message.
pub fn coerce_int(v: &Value) -> Result<i128, (&'static str, &'static str)> {
    const INT_TYPE: (&str, &str) = ("int_type", "Input should be a valid integer");
    const FROM_FLOAT: (&str, &str) = (
        "int_from_float",
        "Input should be a valid integer, got a number with a fractional part",
    );
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 {
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "checked integral and bounded"
                    )]
                    Ok(f as i128)
                } else {
                    Err(FROM_FLOAT)
                }
            }
        }
        Value::String(s) => parse_int_str(s).ok_or((
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )),
        _ => Err(INT_TYPE),
    }
}

/// Parses a decimal integer string: optional sign, surrounding white space ignored.
pub fn parse_int_str(s: &str) -> Option<i128> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    t.parse::<i128>().ok()
}

/// A field was invalid; the violation is already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Reads the fields of one JSON object, recording violations under `prefix`.
#[derive(Debug)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: Loc,
    seen: Vec<&'static str>,
    /// the violations found
    pub v: &'a mut Violations,
}

impl<'a> Fields<'a> {
    /// Starts reading `obj`; entries get `loc` = `prefix` + field name.
    pub fn new(obj: &'a Map<String, Value>, prefix: Loc, v: &'a mut Violations) -> Self {
        Self {
            obj,
            prefix,
            seen: Vec::new(),
            v,
        }
    }

    fn loc(&self, name: &str) -> Loc {
        let mut l = self.prefix.clone();
        l.push(Value::from(name));
        l
    }

    /// The raw value: `None` when absent (a `missing` entry is recorded when `required`),
    /// `Some(Null)` when null and `nullable`, the value otherwise.
    fn raw(&mut self, name: &'static str, required: bool) -> Option<&'a Value> {
        self.seen.push(name);
        let value = self.obj.get(name);
        if value.is_none() && required {
            let loc = self.loc(name);
            self.v.missing(loc);
        }
        value
    }

    /// An int field (lax), bounded by `gt` and `le` when given. `Ok(None)` = absent or null
    /// (when `nullable`); `Err(Invalid)` = a violation was recorded.
    pub fn int(
        &mut self,
        name: &'static str,
        required: bool,
        nullable: bool,
        bounds: Option<(i64, i64)>,
    ) -> Result<Option<i64>, Invalid> {
        let Some(value) = self.raw(name, required) else {
            return if required { Err(Invalid) } else { Ok(None) };
        };
        if value.is_null() && nullable {
            return Ok(None);
        }
        let loc = self.loc(name);
        match coerce_int(value) {
            Ok(i) => {
                if let Some((gt, le)) = bounds
                    && !self.v.int_bounds(loc.clone(), i, value, gt, le)
                {
                    return Err(Invalid);
                }
                match i64::try_from(i) {
                    Ok(i) => Ok(Some(i)),
                    Err(_) => {
                        self.v.push(
                            "int_type",
                            loc,
                            "Input should be a valid integer",
                            value.clone(),
                        );
                        Err(Invalid)
                    }
                }
            }
            Err((kind, msg)) => {
                self.v.push(kind, loc, msg, value.clone());
                Err(Invalid)
            }
        }
    }

    /// A float field (lax), `> gt` and `≤ le`.
    pub fn float(
        &mut self,
        name: &'static str,
        nullable: bool,
        gt: i64,
        le: i64,
    ) -> Result<Option<f64>, Invalid> {
        let Some(value) = self.raw(name, false) else {
            return Ok(None);
        };
        if value.is_null() && nullable {
            return Ok(None);
        }
        let loc = self.loc(name);
        let f = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    self.v.push(
                        "float_parsing",
                        loc,
                        "Input should be a valid number, unable to parse string as a number",
                        value.clone(),
                    );
                    return Err(Invalid);
                }
            },
            _ => None,
        };
        let Some(f) = f else {
            self.v.push(
                "float_type",
                loc,
                "Input should be a valid number",
                value.clone(),
            );
            return Err(Invalid);
        };
        #[expect(clippy::cast_precision_loss, reason = "small bounds")]
        let (gt_f, le_f) = (gt as f64, le as f64);
        if f.is_nan() || f <= gt_f {
            self.v.push_ctx(
                "greater_than",
                loc,
                format!("Input should be greater than {gt}"),
                value.clone(),
                json!({ "gt": gt }),
            );
            Err(Invalid)
        } else if f > le_f {
            self.v.push_ctx(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {le}"),
                value.clone(),
                json!({ "le": le }),
            );
            Err(Invalid)
        } else {
            Ok(Some(f))
        }
    }

    /// A bool field (lax).
    pub fn bool(&mut self, name: &'static str) -> Result<Option<bool>, Invalid> {
        let Some(value) = self.raw(name, false) else {
            return Ok(None);
        };
        let loc = self.loc(name);
        let parsed = match value {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err("bool_parsing"),
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
                "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
                _ => Err("bool_parsing"),
            },
            _ => Err("bool_type"),
        };
        match parsed {
            Ok(b) => Ok(Some(b)),
            Err(kind) => {
                let msg = if kind == "bool_type" {
                    "Input should be a valid boolean"
                } else {
                    "Input should be a valid boolean, unable to interpret input"
                };
                self.v.push(kind, loc, msg, value.clone());
                Err(Invalid)
            }
        }
    }

    /// A string field (strict: JSON strings only).
    pub fn string(
        &mut self,
        name: &'static str,
        required: bool,
        nullable: bool,
    ) -> Result<Option<&'a str>, Invalid> {
        let Some(value) = self.raw(name, required) else {
            return if required { Err(Invalid) } else { Ok(None) };
        };
        match value {
            Value::Null if nullable => Ok(None),
            Value::String(s) => Ok(Some(s.as_str())),
            other => {
                let loc = self.loc(name);
                self.v.push(
                    "string_type",
                    loc,
                    "Input should be a valid string",
                    other.clone(),
                );
                Err(Invalid)
            }
        }
    }

    /// An object field (`dict_type` otherwise); `Ok(None)` when absent or null (nullable).
    pub fn object(
        &mut self,
        name: &'static str,
    ) -> Result<Option<&'a Map<String, Value>>, Invalid> {
        let Some(value) = self.raw(name, false) else {
            return Ok(None);
        };
        match value {
            Value::Null => Ok(None),
            Value::Object(m) => Ok(Some(m)),
            other => {
                let loc = self.loc(name);
                self.v.push(
                    "dict_type",
                    loc,
                    "Input should be a valid dictionary",
                    other.clone(),
                );
                Err(Invalid)
            }
        }
    }

    /// The location of a field, for callers that validate a value further.
    pub fn field_loc(&self, name: &str) -> Loc {
        self.loc(name)
    }

    /// Records `extra_forbidden` for every key not read so far.
    pub fn forbid_extra(&mut self) {
        for (key, value) in self.obj {
            if !self.seen.contains(&key.as_str()) {
                let mut l = self.prefix.clone();
                l.push(Value::from(key.as_str()));
                self.v.push(
                    "extra_forbidden",
                    l,
                    "Extra inputs are not permitted",
                    value.clone(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_are_coerced_like_pydantic() {
        assert_eq!(coerce_int(&json!(60)), Ok(60));
        assert_eq!(coerce_int(&json!(60.0)), Ok(60));
        assert_eq!(coerce_int(&json!(" -60 ")), Ok(-60));
        assert_eq!(coerce_int(&json!(60.5)).unwrap_err().0, "int_from_float");
        assert_eq!(coerce_int(&json!("abc")).unwrap_err().0, "int_parsing");
        assert_eq!(coerce_int(&json!("6 0")).unwrap_err().0, "int_parsing");
        assert_eq!(coerce_int(&json!(true)).unwrap_err().0, "int_type");
        assert_eq!(coerce_int(&json!(null)).unwrap_err().0, "int_type");
    }

    #[test]
    fn extra_keys_are_reported_with_their_value() {
        let body = json!({"ttl": 5, "bogus": [1]});
        let mut v = Violations::new();
        let mut f = Fields::new(body.as_object().unwrap(), loc(&["body"]), &mut v);
        assert_eq!(f.int("ttl", true, false, Some((0, 10))), Ok(Some(5)));
        f.forbid_extra();
        let e = v.into_entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["type"], "extra_forbidden");
        assert_eq!(e[0]["loc"], json!(["body", "bogus"]));
        assert_eq!(e[0]["input"], json!([1]));
    }
}
