//! Kubernetes quantities (`500m`, `2Gi`, `1e9`) read exactly, as a fraction, for the callers to round as they need.

/// `text` as an exact fraction `(numerator, denominator)`, or `None` if it
/// is not a non-negative quantity (or does not fit in 128 bits).
pub fn exact(text: &str) -> Option<(u128, u128)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int = int.trim_start_matches('+');
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let num: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let den: u128 = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            if exp >= 0 {
                (10u128.checked_pow(exp.unsigned_abs())?, 1)
            } else {
                (1, 10u128.checked_pow(exp.unsigned_abs())?)
            }
        }
        _ => return None,
    };
    Some((num.checked_mul(mul)?, den.checked_mul(div)?))
}
