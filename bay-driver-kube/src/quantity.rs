//! Sizes and CPUs as Kubernetes quantities.
//!
//! Bay's size grammar (bay-api.md §3.3) is binary and case-insensitive: `512m`, `512MB` and
//! `512Mi` all mean 512 MiB, `1g` means 1 GiB. Kubernetes reads the same text differently
//! (`512m` is 0.512 bytes, `1g` and `256MI` are rejected), which is how the original driver
//! created objects the API server refused. Every size therefore goes through Bay's parser to
//! bytes and is written back as an exact binary quantity (`512Mi`, `1Gi`, `100`), and anything
//! else is rejected before any object is created, with an error naming the field and value.

use bay_core::model::parse_size;

/// A size or CPU count that cannot become a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow Bay's size grammar.
    #[error(
        "invalid size {value:?} in {field}: expected digits and an optional binary unit \
         (512Mi, 512m, 1g, 1Gi, 512mb or plain bytes)"
    )]
    Format {
        /// The field, e.g. `spec.memory`.
        field: String,
        /// The value as given.
        value: String,
    },
    /// Zero, or larger than Kubernetes can hold (2^63 - 1).
    #[error("invalid size {value:?} in {field}: expected from 1 byte to 8Ei")]
    OutOfRange {
        /// The field.
        field: String,
        /// The value as given.
        value: String,
    },
    /// A CPU count that is not a positive finite number.
    #[error("invalid cpus {value} in {field}: expected a number of CPUs above 0.001")]
    Cpus {
        /// The field.
        field: String,
        /// The value as given.
        value: f64,
    },
}

/// Turns a size written in Bay's grammar into a valid Kubernetes quantity.
///
/// ```
/// use bay_driver_kube::quantity::normalize_size;
/// assert_eq!(normalize_size("spec.memory", "512m").unwrap(), "512Mi");
/// assert_eq!(normalize_size("spec.disk", "1G").unwrap(), "1Gi");
/// assert!(normalize_size("spec.memory", "0.5Gi").unwrap_err().to_string().contains("spec.memory"));
/// ```
pub fn normalize_size(field: &str, value: &str) -> Result<String, QuantityError> {
    let bytes = parse_size(value).ok_or_else(|| QuantityError::Format {
        field: field.to_owned(),
        value: value.to_owned(),
    })?;
    bytes_quantity(field, bytes).map_err(|_| QuantityError::OutOfRange {
        field: field.to_owned(),
        value: value.to_owned(),
    })
}

/// Writes a number of bytes as the shortest exact binary quantity (`1Gi`, `1536Mi`, `100`).
///
/// ```
/// use bay_driver_kube::quantity::bytes_quantity;
/// assert_eq!(bytes_quantity("spec.memory", 256 << 20).unwrap(), "256Mi");
/// assert!(bytes_quantity("spec.memory", 0).is_err());
/// ```
pub fn bytes_quantity(field: &str, bytes: u64) -> Result<String, QuantityError> {
    if bytes == 0 || bytes > i64::MAX as u64 {
        return Err(QuantityError::OutOfRange {
            field: field.to_owned(),
            value: bytes.to_string(),
        });
    }
    const UNITS: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    for (suffix, shift) in UNITS {
        if bytes.trailing_zeros() >= shift {
            return Ok(format!("{}{suffix}", bytes >> shift));
        }
    }
    Ok(bytes.to_string())
}

/// Writes a CPU count as millicores (`0.5` → `500m`); below one millicore is rejected.
///
/// ```
/// use bay_driver_kube::quantity::cpu_quantity;
/// assert_eq!(cpu_quantity("spec.cpus", 1.5).unwrap(), "1500m");
/// ```
pub fn cpu_quantity(field: &str, cpus: f64) -> Result<String, QuantityError> {
    let millis = (cpus * 1000.0).round();
    if !cpus.is_finite() || !(1.0..=1e12).contains(&millis) {
        return Err(QuantityError::Cpus {
            field: field.to_owned(),
            value: cpus,
        });
    }
    Ok(format!("{}m", millis as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form_becomes_a_valid_quantity() {
        let table: &[(&str, &str)] = &[
            ("512Mi", "512Mi"),
            ("512mi", "512Mi"),
            ("512MI", "512Mi"),
            ("512m", "512Mi"),
            ("512M", "512Mi"),
            ("512mb", "512Mi"),
            ("512MB", "512Mi"),
            ("1g", "1Gi"),
            ("1G", "1Gi"),
            ("1gb", "1Gi"),
            ("1Gi", "1Gi"),
            ("1GI", "1Gi"),
            ("2048m", "2Gi"),
            ("1536m", "1536Mi"),
            ("1024", "1Ki"),
            ("1048576", "1Mi"),
            ("100", "100"),
            ("1000", "1000"),
            ("64k", "64Ki"),
            ("64KB", "64Ki"),
            ("64Ki", "64Ki"),
            (" 1Gi ", "1Gi"),
            ("16384g", "16Ti"),
        ];
        for (input, want) in table {
            assert_eq!(
                normalize_size("spec.memory", input).as_deref(),
                Ok(*want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_rejected_naming_field_and_value() {
        for input in [
            "", "abc", "512x", "1.5g", "-1", "1T", "1Ti", "0.5Gi", "512 Mi", "1e9", "Mi", "0",
            "0Gi", "500u",
        ] {
            let err = normalize_size("spec.disk", input)
                .expect_err(input)
                .to_string();
            assert!(err.contains("spec.disk"), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
        // Beyond what Kubernetes can hold.
        let err = normalize_size("KUBE_PVC_SIZE", "9000000000g").unwrap_err();
        assert!(matches!(err, QuantityError::OutOfRange { .. }), "{err}");
        assert!(err.to_string().contains("KUBE_PVC_SIZE"), "{err}");
    }

    #[test]
    fn cpus_become_millicores() {
        assert_eq!(cpu_quantity("spec.cpus", 0.5).unwrap(), "500m");
        assert_eq!(cpu_quantity("spec.cpus", 2.0).unwrap(), "2000m");
        assert_eq!(cpu_quantity("spec.cpus", 0.001).unwrap(), "1m");
        for bad in [0.0, -1.0, 0.0001, f64::NAN, f64::INFINITY] {
            let err = cpu_quantity("spec.cpus", bad).unwrap_err().to_string();
            assert!(err.contains("spec.cpus"), "{err}");
        }
    }
}
