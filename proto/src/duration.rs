//! The one way every k8s-mtp binary writes a duration: `500ms`, `5s`, `2m`,
//! `1h30m`, `1d`, `1w` — in flags, environment variables and config files.
//!
//! A bare number is refused: "30" could mean seconds or minutes, and a wrong
//! guess in a keepalive or an expiry is worse than an error at start-up.

use std::time::Duration;

const MAX_MS: u64 = 100 * 365 * 86_400_000;
const UNITS: &str = "ms, s, m, h, d or w, e.g. 500ms, 5s or 1h30m";

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h30m`, `1d` or `1w`.
/// Zero is refused: every duration we take is an interval or a lifetime.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: unit {unit:?} without a number"
            ));
        }
        if unit.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: missing unit after {number} (use {UNITS})"
            ));
        }
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use {UNITS})"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        total_ms = n
            .checked_mul(per_unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = next;
    }
    if total_ms == 0 {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    // Beyond ~100 years is surely a typo, and it keeps date arithmetic on
    // the result (an expiry: now + duration) in range.
    if total_ms > MAX_MS {
        return Err(format!("invalid duration {s:?}: too large"));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration back in the same grammar, largest units first
/// (`90s` → `1m30s`), so defaults shown by `--help` parse as they read.
pub fn format(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u128 {
        parse(s).unwrap().as_millis()
    }

    #[test]
    fn every_unit_and_combinations_parse() {
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("5s"), 5_000);
        assert_eq!(ms("2m"), 120_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1s500ms"), 1_500);
        assert_eq!(ms("1d"), 86_400_000);
        assert_eq!(ms("1w"), 604_800_000);
        assert_eq!(ms(" 2h "), 7_200_000);
    }

    #[test]
    fn bad_durations_say_why() {
        let err = |s| parse(s).unwrap_err();
        assert!(err("30").contains("missing unit"), "{}", err("30"));
        assert!(err("2x").contains("unknown unit"));
        assert!(err("5sec").contains("unknown unit"));
        assert!(err("h").contains("without a number"));
        assert!(err("0s").contains("greater than zero"));
        assert!(err("0m0s").contains("greater than zero"));
        assert!(err("").contains("empty"));
        assert!(err("-1h").contains("without a number"));
        assert!(err("1.5s").contains("unknown unit"));
        assert!(err("99999999999999999999h").contains("too large"));
        assert!(err("100000000000w").contains("too large"));
        assert!(err("1000000w").contains("too large"));
        assert_eq!(ms("5200w"), 5_200 * 604_800_000);
    }

    #[test]
    fn formatted_durations_parse_back_to_themselves() {
        for d in [
            1,
            500,
            1_000,
            5_000,
            90_000,
            3_600_000,
            5_400_500,
            691_200_000,
        ] {
            let d = Duration::from_millis(d);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }
}
