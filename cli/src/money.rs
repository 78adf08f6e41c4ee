//! Exact money and decimal strings: `Money` (units + nanos) is handled as an
//! integer count of nanos, never as a float, so what is printed is exactly
//! what the server computed.

use mtp_proto::v1::Money;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A `Money` as a signed count of nanos (units and nanos carry the same sign).
pub fn nanos(m: Option<&Money>) -> i128 {
    m.map(|m| i128::from(m.units) * NANOS_PER_UNIT + i128::from(m.nanos))
        .unwrap_or(0)
}

/// Nanos rounded half to even to 2 decimals, e.g. 0.125 → `0.12`,
/// 0.135 → `0.14`, -1.005 → `-1.00`.
pub fn format_2dp(total_nanos: i128) -> String {
    format_dp(total_nanos, 2)
}

/// Nanos rounded half to even to `decimals` (0..=9) decimals.
pub fn format_dp(total_nanos: i128, decimals: u32) -> String {
    let decimals = decimals.min(9);
    let neg = total_nanos < 0;
    let abs = total_nanos.unsigned_abs();
    let step: u128 = 10u128.pow(9 - decimals);
    let mut steps = abs / step;
    let rem = abs % step;
    let half = step / 2;
    if step > 1 && (rem > half || (rem == half && steps % 2 == 1)) {
        steps += 1;
    }
    let sign = if neg && steps != 0 { "-" } else { "" };
    let scale = 10u128.pow(decimals);
    if decimals == 0 {
        return format!("{sign}{steps}");
    }
    format!(
        "{sign}{}.{:0width$}",
        steps / scale,
        steps % scale,
        width = decimals as usize
    )
}

/// Nanos at full precision: trailing zeros dropped but at least 2 decimals
/// (`12.50`, `0.125`, `3.000000001`).
pub fn format_full(total_nanos: i128) -> String {
    let neg = total_nanos < 0;
    let abs = total_nanos.unsigned_abs();
    let units = abs / NANOS_PER_UNIT as u128;
    let frac = abs % NANOS_PER_UNIT as u128;
    let mut f = format!("{frac:09}");
    while f.len() > 2 && f.ends_with('0') {
        f.pop();
    }
    let sign = if neg && abs != 0 { "-" } else { "" };
    format!("{sign}{units}.{f}")
}

/// Parses a non-negative decimal with at most 9 fractional digits (`500`,
/// `0.031`, `12.5`) into nanos. The error says what is wrong, for the caller
/// to prefix with the flag name.
pub fn parse_decimal(s: &str) -> Result<i128, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("expected a decimal number, e.g. 0.031".into());
    }
    if t.starts_with('-') {
        return Err(format!("{t:?} is negative"));
    }
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(format!(
            "{t:?} is not a decimal number (digits with an optional `.`, e.g. 0.031)"
        ));
    }
    if frac.len() > 9 {
        return Err(format!("{t:?} has more than 9 decimal places"));
    }
    if int.len() > 18 {
        return Err(format!("{t:?} is too large"));
    }
    let int: i128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| format!("{t:?} is too large"))?
    };
    let frac_n: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().unwrap_or(0)
    };
    Ok(int * NANOS_PER_UNIT + frac_n)
}

/// An amount with its ISO 4217 code in front (`EUR 12.35`), or the bare
/// amount when the code is unknown (an empty price book).
pub fn with_currency(currency: &str, amount: &str) -> String {
    if currency.is_empty() {
        amount.to_string()
    } else {
        format!("{currency} {amount}")
    }
}

/// A decimal string from the server shown with at least 2 decimals (as typed
/// otherwise); a string that does not parse is shown as is.
pub fn display_decimal(s: &str) -> String {
    match parse_decimal(s) {
        Ok(n) => format_full(n),
        Err(_) => s.to_string(),
    }
}

/// `part / whole` as a percentage with one decimal, rounded half to even
/// (None when `whole` is zero).
pub fn percent_1dp(part: i128, whole: i128) -> Option<String> {
    if whole == 0 {
        return None;
    }
    // Keep the divisor positive so rounding goes the right way.
    let (part, whole) = if whole < 0 {
        (-part, -whole)
    } else {
        (part, whole)
    };
    // Tenths of a percent: part * 1000 / whole, rounded half to even.
    let num = part * 1000;
    let (q, r) = (num.div_euclid(whole), num.rem_euclid(whole));
    let twice = 2 * r;
    let q = if twice > whole || (twice == whole && q % 2 != 0) {
        q + 1
    } else {
        q
    };
    let sign = if q < 0 { "-" } else { "" };
    let q = q.abs();
    Some(format!("{sign}{}.{}", q / 10, q % 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(units: i64, nanos: i32) -> i128 {
        super::nanos(Some(&Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        }))
    }

    #[test]
    fn four_decimals_round_half_to_even() {
        assert_eq!(format_dp(1_234_550_000, 4), "1.2346");
        assert_eq!(format_dp(1_234_450_000, 4), "1.2344");
        assert_eq!(format_dp(1_400_000, 4), "0.0014");
        assert_eq!(format_dp(-50_000, 4), "0.0000", "no minus on a zero");
        assert_eq!(format_dp(7_000_000_000, 0), "7");
        assert_eq!(format_dp(1, 9), "0.000000001");
    }

    #[test]
    fn two_decimals_round_half_to_even() {
        assert_eq!(format_2dp(m(0, 125_000_000)), "0.12");
        assert_eq!(format_2dp(m(0, 135_000_000)), "0.14");
        assert_eq!(format_2dp(m(0, 125_000_001)), "0.13");
        assert_eq!(format_2dp(m(12, 345_000_000)), "12.34");
        assert_eq!(format_2dp(m(12, 355_000_000)), "12.36");
        assert_eq!(format_2dp(m(0, 995_000_000)), "1.00");
        assert_eq!(format_2dp(m(-1, -5_000_000)), "-1.00");
        assert_eq!(format_2dp(m(-1, -15_000_000)), "-1.02");
        assert_eq!(format_2dp(m(0, -1)), "0.00");
        assert_eq!(format_2dp(0), "0.00");
        assert_eq!(
            format_2dp(m(i64::MAX, 999_999_999)),
            "9223372036854775808.00"
        );
    }

    #[test]
    fn full_precision() {
        assert_eq!(format_full(m(12, 500_000_000)), "12.50");
        assert_eq!(format_full(m(0, 125_000_000)), "0.125");
        assert_eq!(format_full(m(3, 1)), "3.000000001");
        assert_eq!(format_full(m(-2, -250_000_000)), "-2.25");
        assert_eq!(format_full(0), "0.00");
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("500").unwrap(), 500 * NANOS_PER_UNIT);
        assert_eq!(parse_decimal("0.031").unwrap(), 31_000_000);
        assert_eq!(parse_decimal(".5").unwrap(), 500_000_000);
        assert_eq!(parse_decimal("1.000000001").unwrap(), 1_000_000_001);
        assert!(
            parse_decimal("1.0000000001")
                .unwrap_err()
                .contains("9 decimal")
        );
        assert!(parse_decimal("-1").unwrap_err().contains("negative"));
        assert!(parse_decimal("1e3").is_err());
        assert!(parse_decimal("1,5").is_err());
        assert!(parse_decimal(".").is_err());
        assert!(parse_decimal("").is_err());
        assert_eq!(display_decimal("500"), "500.00");
        assert_eq!(display_decimal("0.031"), "0.031");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_1dp(12_345, 50_000).as_deref(), Some("24.7"));
        assert_eq!(percent_1dp(1, 8).as_deref(), Some("12.5"));
        assert_eq!(percent_1dp(1, 16).as_deref(), Some("6.2"));
        assert_eq!(percent_1dp(3, 16).as_deref(), Some("18.8"));
        assert_eq!(percent_1dp(2, 1).as_deref(), Some("200.0"));
        assert_eq!(percent_1dp(1, 0), None);
        assert_eq!(percent_1dp(-1, 16).as_deref(), Some("-6.2"));
        assert_eq!(percent_1dp(1, -16).as_deref(), Some("-6.2"));
        assert_eq!(percent_1dp(-3, -16).as_deref(), Some("18.8"));
    }

    #[test]
    fn large_and_negative_amounts_stay_exact() {
        // Far beyond f64's 2^53: every digit is kept.
        assert_eq!(
            format_full(m(123_456_789_012_345_678, 987_654_321)),
            "123456789012345678.987654321"
        );
        assert_eq!(
            format_2dp(m(-123_456_789_012_345_678, -987_654_321)),
            "-123456789012345678.99"
        );
        assert_eq!(format_full(m(-0, -1)), "-0.000000001");
        assert_eq!(with_currency("EUR", "12.35"), "EUR 12.35");
        assert_eq!(with_currency("", "12.35"), "12.35");
    }
}
