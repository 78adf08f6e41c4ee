//! Kubernetes quantities ("500m", "1.5Gi", "2e3") parsed exactly into integers:
//! CPU into millicores, memory and storage into bytes. No floating point, so
//! quota arithmetic never rounds.

use crate::{Error, Result};

/// Upper bounds above which a value is refused as absurd rather than stored.
pub const MAX_CPU_MILLIS: u64 = 1_000_000 * 1000; // a million cores
pub const MAX_BYTES: u64 = 1 << 60; // 1 EiB
pub const MAX_COUNT: u64 = 1_000_000;

const BINARY_SUFFIXES: &[(&str, u32)] = &[
    ("Ki", 1),
    ("Mi", 2),
    ("Gi", 3),
    ("Ti", 4),
    ("Pi", 5),
    ("Ei", 6),
];
const DECIMAL_SUFFIXES: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// An exact non-negative rational `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    numerator: u128,
    denominator: u128,
}

fn too_large(field: &str) -> Error {
    Error::invalid(field, "is absurdly large")
}

fn pow10(field: &str, exp: u32) -> Result<u128> {
    10u128.checked_pow(exp).ok_or_else(|| too_large(field))
}

fn parse_exact(field: &str, input: &str) -> Result<Exact> {
    let s = input.trim();
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if let Some(rest) = s.strip_prefix('-') {
        if rest.chars().all(|c| c == '0' || c == '.') {
            return Err(Error::invalid(field, "must be greater than zero"));
        }
        return Err(Error::invalid(
            field,
            format!("{input:?} must not be negative"),
        ));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let malformed = || {
        Error::invalid(
            field,
            format!("{input:?} is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 10G)"),
        )
    };
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(malformed());
    }
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 24 {
        return Err(too_large(field));
    }
    let mantissa: u128 = digits.parse().map_err(|_| malformed())?;
    let mut numerator = mantissa;
    let mut denominator = pow10(field, frac_part.len() as u32)?;

    if suffix.is_empty() {
    } else if let Some((_, power)) = BINARY_SUFFIXES.iter().find(|(sfx, _)| *sfx == suffix) {
        numerator = numerator
            .checked_mul(1u128 << (10 * power))
            .ok_or_else(|| too_large(field))?;
    } else if let Some((_, exp)) = DECIMAL_SUFFIXES.iter().find(|(sfx, _)| *sfx == suffix) {
        if *exp >= 0 {
            numerator = numerator
                .checked_mul(pow10(field, *exp as u32)?)
                .ok_or_else(|| too_large(field))?;
        } else {
            denominator *= pow10(field, exp.unsigned_abs())?;
        }
    } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let exp: i32 = exp.parse().map_err(|_| malformed())?;
        if exp.unsigned_abs() > 30 {
            return Err(too_large(field));
        }
        if exp >= 0 {
            numerator = numerator
                .checked_mul(pow10(field, exp as u32)?)
                .ok_or_else(|| too_large(field))?;
        } else {
            denominator = denominator
                .checked_mul(pow10(field, exp.unsigned_abs())?)
                .ok_or_else(|| too_large(field))?;
        }
    } else {
        return Err(malformed());
    }
    Ok(Exact {
        numerator,
        denominator,
    })
}

/// Scales an exact value to integer units, refusing what does not divide evenly.
fn to_units(field: &str, value: Exact, scale: u128, unit: &str, max: u64) -> Result<u64> {
    let scaled = value
        .numerator
        .checked_mul(scale)
        .ok_or_else(|| too_large(field))?;
    if scaled % value.denominator != 0 {
        return Err(Error::invalid(
            field,
            format!("must be a whole number of {unit}"),
        ));
    }
    let units = scaled / value.denominator;
    if units == 0 {
        return Err(Error::invalid(field, "must be greater than zero"));
    }
    if units > u128::from(max) {
        return Err(Error::invalid(
            field,
            format!("is absurdly large (at most {max} {unit})"),
        ));
    }
    Ok(units as u64)
}

/// Parses a CPU quantity into millicores ("1.5" → 1500, "250m" → 250).
pub fn parse_cpu_millis(field: &str, input: &str) -> Result<u64> {
    let exact = parse_exact(field, input)?;
    to_units(field, exact, 1000, "millicores", MAX_CPU_MILLIS)
}

/// Parses a memory or storage quantity into bytes ("1Gi" → 1073741824).
pub fn parse_bytes(field: &str, input: &str) -> Result<u64> {
    let exact = parse_exact(field, input)?;
    to_units(field, exact, 1, "bytes", MAX_BYTES)
}

/// Validates an object count (pods, services, …): positive and not absurd.
pub fn validate_count(field: &str, value: i64, max: u64) -> Result<u64> {
    if value <= 0 {
        return Err(Error::invalid(
            field,
            format!("must be greater than zero (got {value})"),
        ));
    }
    let value = value as u64;
    if value > max {
        return Err(Error::invalid(
            field,
            format!("is absurdly large (at most {max}, got {value})"),
        ));
    }
    Ok(value)
}

/// Formats millicores the way Kubernetes would: whole cores without a suffix.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest binary suffix that divides them exactly.
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, power) in BINARY_SUFFIXES.iter().rev() {
        let unit = 1u64 << (10 * power);
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_forms_exactly() {
        assert_eq!(parse_cpu_millis("cpu", "500m").unwrap(), 500);
        assert_eq!(parse_cpu_millis("cpu", "2").unwrap(), 2000);
        assert_eq!(parse_cpu_millis("cpu", "1.5").unwrap(), 1500);
        assert_eq!(parse_cpu_millis("cpu", "0.1").unwrap(), 100);
        assert_eq!(parse_cpu_millis("cpu", "1e3").unwrap(), 1_000_000);
        assert_eq!(parse_cpu_millis("cpu", "1e-3").unwrap(), 1);
        assert_eq!(parse_bytes("memory", "2Gi").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("memory", "1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("memory", "1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("memory", "128974848").unwrap(), 128_974_848);
        assert_eq!(parse_bytes("memory", "129e6").unwrap(), 129_000_000);
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        for (input, expect) in [
            ("-1", "negative"),
            ("0", "greater than zero"),
            ("0m", "greater than zero"),
            ("abc", "not a Kubernetes quantity"),
            ("1.5.2", "not a Kubernetes quantity"),
            ("5Xi", "not a Kubernetes quantity"),
            ("0.0001", "whole number"),
            ("99999999999999999999999999", "absurdly large"),
            ("2000000", "absurdly large"),
            ("", "empty"),
        ] {
            let err = parse_cpu_millis("quota.cpu", input).unwrap_err();
            let Error::Invalid { field, reason } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(field, "quota.cpu");
            assert!(reason.contains(expect), "{input:?}: {reason}");
        }
        assert!(
            parse_bytes("memory", "500m")
                .unwrap_err()
                .to_string()
                .contains("whole number of bytes")
        );
        assert!(
            parse_bytes("memory", "2Ei")
                .unwrap_err()
                .to_string()
                .contains("absurdly large")
        );
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_cpu_millis(1500), "1500m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_bytes(2 << 30), "2Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
    }

    proptest! {
        #[test]
        fn cpu_format_then_parse_is_identity(millis in 1u64..=MAX_CPU_MILLIS) {
            prop_assert_eq!(parse_cpu_millis("cpu", &format_cpu_millis(millis)).unwrap(), millis);
        }

        #[test]
        fn bytes_format_then_parse_is_identity(bytes in 1u64..=MAX_BYTES) {
            prop_assert_eq!(parse_bytes("memory", &format_bytes(bytes)).unwrap(), bytes);
        }

        #[test]
        fn decimal_cores_parse_exactly(whole in 0u64..1000, frac in 0u64..1000) {
            prop_assume!(whole + frac > 0);
            let text = format!("{whole}.{frac:03}");
            prop_assert_eq!(parse_cpu_millis("cpu", &text).unwrap(), whole * 1000 + frac);
        }

        #[test]
        fn never_panics_and_never_accepts_negative(s in "[-+]?[0-9.]{0,30}[a-zA-Z]{0,3}[0-9]{0,3}") {
            let cpu = parse_cpu_millis("cpu", &s);
            let mem = parse_bytes("memory", &s);
            if s.starts_with('-') {
                prop_assert!(cpu.is_err() && mem.is_err());
            }
            if let Ok(v) = cpu { prop_assert!(v > 0 && v <= MAX_CPU_MILLIS); }
            if let Ok(v) = mem { prop_assert!(v > 0 && v <= MAX_BYTES); }
        }
    }
}
