//! The subcommands, one module per noun, and what they share: the command
//! context, `--expire-in`/`--expire-at` parsing, `k=v` parsing and the JSON
//! view of `Resources`.

pub mod agents;
pub mod audit;
pub mod budgets;
pub mod clusters;
pub mod cost;
pub mod environments;
pub mod prices;
pub mod profiles;
pub mod tenants;
pub mod tokens;

use chrono::{DateTime, Utc};
use mtp_proto::v1::Resources;
use serde::Serialize;

use crate::client::ControlPlane;
use crate::output::Format;

/// What every command gets: the server handle and the output format.
pub struct Ctx {
    pub api: ControlPlane,
    pub format: Format,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// `--expire-in` / `--expire-at`, shared by environments and tokens.
#[derive(Debug, Clone, clap::Args)]
pub struct ExpiryArgs {
    /// Expire after this long: a number with a unit s, m, h, d or w, combinable
    /// (e.g. 30m, 2h, 1d, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "expire_at")]
    pub expire_in: Option<chrono::Duration>,
    /// Expire at this time, RFC 3339 (e.g. 2025-07-01T18:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub expire_at: Option<DateTime<Utc>>,
}

impl ExpiryArgs {
    /// The expiry as a protobuf timestamp, relative durations counted from `now`.
    pub fn timestamp(&self, now: DateTime<Utc>) -> Option<prost_types::Timestamp> {
        let at = match (self.expire_in, self.expire_at) {
            (Some(d), _) => Some(now + d),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        }?;
        Some(to_timestamp(at))
    }
}

pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    std::time::SystemTime::from(t).into()
}

/// Parses `30m`, `2h`, `1d`, `1w`, `90s` and combinations such as `1h30m`,
/// in the grammar every mtp binary shares (`mtp_proto::duration`). A bare
/// number is refused: "30" could mean minutes or seconds.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let d = mtp_proto::duration::parse(s)?;
    chrono::Duration::from_std(d).map_err(|_| format!("invalid duration {s:?}: too large"))
}

pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("invalid time {s:?}: {e} (expected RFC 3339, e.g. 2025-07-01T18:00:00Z)")
        })
}

/// Parses `key=value` (labels). The key must be non-empty; the value may be.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("invalid label {s:?}: expected key=value")),
    }
}

/// JSON view of `Resources`; unset counts are `null`.
#[derive(Debug, Serialize)]
pub struct ResourcesView {
    pub cpu: String,
    pub memory: String,
    pub storage: String,
    pub pods: Option<i64>,
    pub services: Option<i64>,
    pub persistent_volume_claims: Option<i64>,
}

impl From<Option<&Resources>> for ResourcesView {
    fn from(r: Option<&Resources>) -> Self {
        let d = Resources::default();
        let r = r.unwrap_or(&d);
        ResourcesView {
            cpu: r.cpu.clone(),
            memory: r.memory.clone(),
            storage: r.storage.clone(),
            pods: r.pods,
            services: r.services,
            persistent_volume_claims: r.persistent_volume_claims,
        }
    }
}

/// One-line human summary of `Resources`, e.g. `cpu=2 memory=4Gi pods=20`.
pub fn resources_summary(r: Option<&Resources>) -> String {
    let Some(r) = r else { return String::new() };
    let mut parts = Vec::new();
    for (k, v) in [
        ("cpu", &r.cpu),
        ("memory", &r.memory),
        ("storage", &r.storage),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}={v}"));
        }
    }
    for (k, v) in [
        ("pods", r.pods),
        ("services", r.services),
        ("pvcs", r.persistent_volume_claims),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s| parse_duration(s).unwrap().num_seconds();
        assert_eq!(secs("30m"), 1800);
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("1w"), 604_800);
        assert_eq!(secs("45s"), 45);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs(" 2h "), 7200);
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("2x").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("h")
                .unwrap_err()
                .contains("without a number")
        );
        assert!(
            parse_duration("0m")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(
            parse_duration("1000000w")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn expiry_from_duration_or_time() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let e = ExpiryArgs {
            expire_in: Some(chrono::Duration::hours(2)),
            expire_at: None,
        };
        assert_eq!(e.timestamp(now).unwrap().seconds, 1_000_000 + 7200);
        let e = ExpiryArgs {
            expire_in: None,
            expire_at: Some(parse_rfc3339("2025-07-01T18:00:00+02:00").unwrap()),
        };
        assert_eq!(
            crate::output::rfc3339(e.timestamp(now).as_ref()).unwrap(),
            "2025-07-01T16:00:00Z"
        );
        let e = ExpiryArgs {
            expire_in: None,
            expire_at: None,
        };
        assert!(e.timestamp(now).is_none());
        assert!(parse_rfc3339("tomorrow").is_err());
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("zone=eu-1").unwrap(),
            ("zone".into(), "eu-1".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn resources_summary_skips_unset() {
        let r = Resources {
            cpu: "2".into(),
            memory: "4Gi".into(),
            pods: Some(20),
            ..Default::default()
        };
        assert_eq!(resources_summary(Some(&r)), "cpu=2 memory=4Gi pods=20");
        assert_eq!(resources_summary(None), "");
    }
}
