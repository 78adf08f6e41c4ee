//! Kubernetes quantities, parsed the way the API server does, for comparing limits.

use super::*;

/// A Kubernetes quantity in thousandths of its unit (so `500m` CPU is 500 and
/// `1Ki` is 1_024_000). Only the forms the API server accepts; anything else
/// is an error, as it would be on a real cluster.
pub(crate) fn milli(q: &Quantity) -> Result<i128, String> {
    let s = q.0.as_str();
    let bad = || format!("{s:?} is not a valid quantity");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let factor: i128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "P" => 1_000_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000_000,
        "Ki" => 1_000 << 10,
        "Mi" => 1_000 << 20,
        "Gi" => 1_000 << 30,
        "Ti" => 1_000 << 40,
        "Pi" => 1_000 << 50,
        "Ei" => 1_000 << 60,
        _ => return Err(bad()),
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut value: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    value *= factor;
    let mut scale = factor;
    for d in fraction.chars() {
        scale /= 10;
        ensure!(scale > 0, "{s:?}: more precision than a milli-unit");
        value += i128::from(d.to_digit(10).unwrap_or(0)) * scale;
    }
    Ok(if negative { -value } else { value })
}

#[test]
fn quantities_parse_like_the_api_server() {
    let m = |s: &str| milli(&Quantity(s.into()));
    assert_eq!(m("500m"), Ok(500));
    assert_eq!(m("2"), Ok(2000));
    assert_eq!(m("1.5"), Ok(1500));
    assert_eq!(m("1Ki"), Ok(1_024_000));
    assert_eq!(m("2Gi"), Ok(2_000 << 30));
    assert_eq!(m("1k"), Ok(1_000_000));
    assert_eq!(m("0"), Ok(0));
    assert_eq!(m("-1"), Ok(-1000));
    assert!(m("1Kb").is_err() && m("").is_err() && m("Gi").is_err() && m("1.2.3").is_err());
}
