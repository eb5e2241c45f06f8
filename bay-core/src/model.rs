//! The domain model: ship status, timestamps, resource specs and the session-id rule.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Status of a ship, with the wire codes of bay-api.md §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub enum ShipStatus {
    /// No container; record and data kept; restorable.
    Stopped,
    /// Container up and its agent answered `/health`.
    Running,
    /// A container is being created or started (new ships and restores).
    Creating,
}

impl ShipStatus {
    /// The wire code (`0`, `1`, `2`).
    pub fn code(self) -> i32 {
        match self {
            Self::Stopped => 0,
            Self::Running => 1,
            Self::Creating => 2,
        }
    }

    /// Parses a stored wire code; unknown codes read as `Stopped` (the safe state).
    pub fn from_code(code: i32) -> Self {
        match code {
            1 => Self::Running,
            2 => Self::Creating,
            _ => Self::Stopped,
        }
    }

    /// Exec, upload, download and terminal need a running ship.
    pub fn is_usable(self) -> bool {
        self == Self::Running
    }

    /// Ships in this status hold one slot of `MAX_SHIP_NUM`.
    pub fn occupies_slot(self) -> bool {
        matches!(self, Self::Running | Self::Creating)
    }

    /// Only a stopped ship can be restored.
    pub fn can_restore(self) -> bool {
        self == Self::Stopped
    }

    /// Soft delete applies to running ships only (creating ones answer 409).
    pub fn can_stop(self) -> bool {
        self == Self::Running
    }

    /// Only a running ship's relations can be granted, joined, touched or extended.
    pub fn can_attach(self) -> bool {
        self == Self::Running
    }

    /// Ship extend-ttl applies to running ships only (creating ones answer 409).
    pub fn can_extend(self) -> bool {
        self == Self::Running
    }

    /// Whether a start (new ship or restore) is in progress, or was left unfinished.
    pub fn is_starting(self) -> bool {
        self == Self::Creating
    }
}

impl From<ShipStatus> for i32 {
    fn from(s: ShipStatus) -> i32 {
        s.code()
    }
}

/// Reads a wire code strictly (clients reading responses): unknown codes are errors.
impl TryFrom<i32> for ShipStatus {
    type Error = String;

    fn try_from(code: i32) -> Result<Self, String> {
        match code {
            0 => Ok(Self::Stopped),
            1 => Ok(Self::Running),
            2 => Ok(Self::Creating),
            other => Err(format!("unknown ship status {other}: expected 0, 1 or 2")),
        }
    }
}

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
///
/// It serialises as RFC 3339 with a `Z` suffix and exactly six fractional digits
/// (bay-api.md §2.2):
///
/// ```
/// use bay_core::model::Timestamp;
/// let t = Timestamp::from_micros(1_764_473_476_036_341);
/// assert_eq!(t.to_string(), "2025-11-30T03:31:16.036341Z");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// From microseconds since the epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// `self + secs` seconds (saturating).
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    /// Whole seconds from `now` until `self`, rounded up, never negative.
    pub fn secs_until_ceil(self, now: Timestamp) -> i64 {
        let d = self.0 - now.0;
        if d <= 0 { 0 } else { (d + 999_999) / 1_000_000 }
    }

    /// Time from `now` until `self` (zero when in the past).
    pub fn duration_since(self, now: Timestamp) -> std::time::Duration {
        std::time::Duration::from_micros(u64::try_from(self.0 - now.0).unwrap_or(0))
    }

    fn as_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_datetime().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads any RFC 3339 timestamp (clients reading responses), keeping microseconds.
///
/// ```
/// use bay_core::model::Timestamp;
/// let t: Timestamp = serde_json::from_str("\"2025-11-30T03:31:16.036341Z\"").unwrap();
/// assert_eq!(t, Timestamp::from_micros(1_764_473_476_036_341));
/// ```
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Self(t.timestamp_micros()))
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {text:?}: {e}")))
    }
}

/// Parses a size with the reference grammar (bay-api.md §3.3): digits and an optional binary unit
/// (`k`/`kb`/`ki`, `m`/`mb`/`mi`, `g`/`gb`/`gi`, any case), surrounding whitespace allowed.
///
/// ```
/// use bay_core::model::parse_size;
/// assert_eq!(parse_size("512m"), Some(512 * 1024 * 1024));
/// assert_eq!(parse_size(" 1Gi "), Some(1024 * 1024 * 1024));
/// assert_eq!(parse_size("100"), Some(100));
/// assert_eq!(parse_size("1.5g"), None);
/// ```
pub fn parse_size(input: &str) -> Option<u64> {
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return None;
    }
    let number: u64 = s[..digits_end].parse().ok()?;
    let multiplier: u64 = match s[digits_end..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kb" | "ki" => 1 << 10,
        "m" | "mb" | "mi" => 1 << 20,
        "g" | "gb" | "gi" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Largest memory a spec may ask for (1 TiB).
pub const MAX_MEMORY_BYTES: u64 = 1 << 40;
/// Largest disk a spec may ask for (16 TiB).
pub const MAX_DISK_BYTES: u64 = 16 << 40;
/// Memory below this is raised to it (128 MiB, reference).
pub const MIN_MEMORY_BYTES: u64 = 128 << 20;
/// Disk below this is raised to it (100 MiB, reference).
pub const MIN_DISK_BYTES: u64 = 100 << 20;
/// Largest `cpus` a spec may ask for.
pub const MAX_CPUS: f64 = 256.0;

/// Which size field a [`SizeError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeField {
    /// `spec.memory`
    Memory,
    /// `spec.disk`
    Disk,
}

impl SizeField {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// A memory or disk value that cannot be accepted; the message is the contract's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text does not follow the size grammar.
    #[error(
        "Invalid {}: '{value}'. Supported formats: 512Mi, 1Gi, 512m, 1g, 512mb, 1gb, or plain bytes.",
        format_field(*.field)
    )]
    Format {
        /// which field
        field: SizeField,
        /// the value as sent
        value: String,
    },
    /// Above the upper bound.
    #[error("{} must not exceed {}", .field.name(), if *.field == SizeField::Memory { "1Ti" } else { "16Ti" })]
    TooLarge {
        /// which field
        field: SizeField,
    },
}

fn format_field(field: SizeField) -> String {
    format!("{} format", field.name())
}

/// Parses and bounds a memory or disk value, raising it to the minimum (bay-api.md §3.3).
///
/// ```
/// use bay_core::model::{SizeField, parse_spec_size};
/// assert_eq!(parse_spec_size(SizeField::Memory, "1m").unwrap(), 128 << 20);
/// assert!(parse_spec_size(SizeField::Disk, "abc").unwrap_err().to_string().starts_with("Invalid disk format: 'abc'"));
/// ```
pub fn parse_spec_size(field: SizeField, value: &str) -> Result<u64, SizeError> {
    let bytes = parse_size(value).ok_or_else(|| SizeError::Format {
        field,
        value: value.to_owned(),
    })?;
    let (min, max) = match field {
        SizeField::Memory => (MIN_MEMORY_BYTES, MAX_MEMORY_BYTES),
        SizeField::Disk => (MIN_DISK_BYTES, MAX_DISK_BYTES),
    };
    if bytes > max {
        return Err(SizeError::TooLarge { field });
    }
    Ok(bytes.max(min))
}

/// A resource request as validated at request time (`spec` of `POST /ship`), before defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecRequest {
    /// CPUs, > 0 and ≤ 256.
    pub cpus: Option<f64>,
    /// Memory in bytes (already parsed, bounded and raised to the minimum).
    pub memory_bytes: Option<u64>,
    /// Disk in bytes (already parsed, bounded and raised to the minimum).
    pub disk_bytes: Option<u64>,
}

/// The effective spec of a ship: the request after defaults. Stored with the ship, used for
/// every restore and compared when joining.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EffectiveSpec {
    /// CPU limit; `None` means unlimited.
    pub cpus: Option<f64>,
    /// Memory limit in bytes; `None` means unlimited.
    pub memory_bytes: Option<u64>,
    /// Disk quota in bytes; `None` means the driver's default (none for Docker/Podman).
    pub disk_bytes: Option<u64>,
}

/// The message of the `X-SESSION-ID` rule (bay-api.md §2.7).
pub const SESSION_ID_RULE: &str = "X-SESSION-ID must be 1 to 128 characters without control characters or leading/trailing spaces";

/// Checks the session-id rule: 1 to 128 characters, no control character, no surrounding
/// white space.
///
/// ```
/// use bay_core::model::is_valid_session_id;
/// assert!(is_valid_session_id("aiocqhttp:GroupMessage:12345"));
/// assert!(is_valid_session_id("with inner space"));
/// assert!(!is_valid_session_id(""));
/// assert!(!is_valid_session_id(" lead"));
/// assert!(!is_valid_session_id("tab\there"));
/// ```
pub fn is_valid_session_id(s: &str) -> bool {
    let count = s.chars().count();
    (1..=128).contains(&count)
        && !s.chars().any(char::is_control)
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_reference_grammar() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size("2KB"), Some(2048));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("3Mi"), Some(3 << 20));
        for bad in ["", "m", "-1m", "1.5g", "1t", "1 g", "abc", "1gib"] {
            assert_eq!(parse_size(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn spec_sizes_are_bounded_and_raised() {
        assert_eq!(
            parse_spec_size(SizeField::Disk, "1m").unwrap(),
            MIN_DISK_BYTES
        );
        assert_eq!(parse_spec_size(SizeField::Memory, "2g").unwrap(), 2 << 30);
        let err = parse_spec_size(SizeField::Memory, "2048g").unwrap_err();
        assert_eq!(err.to_string(), "memory must not exceed 1Ti");
        let err = parse_spec_size(SizeField::Memory, "abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid memory format: 'abc'. Supported formats: 512Mi, 1Gi, 512m, 1g, 512mb, 1gb, or plain bytes."
        );
    }

    #[test]
    fn timestamps_have_six_digits_and_z() {
        assert_eq!(
            Timestamp::from_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        let t = Timestamp::from_micros(1_500_000);
        assert_eq!(t.secs_until_ceil(Timestamp::from_micros(0)), 2);
        assert_eq!(Timestamp::from_micros(0).secs_until_ceil(t), 0);
    }

    #[test]
    fn session_ids_longer_than_128_chars_are_refused() {
        assert!(is_valid_session_id(&"é".repeat(128)));
        assert!(!is_valid_session_id(&"a".repeat(129)));
    }
}
