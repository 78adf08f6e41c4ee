//! What an agent may claim over its channel, and the bounds on it: texts
//! (length, NUL), acknowledgement sizes, how far above the cluster a claimed
//! revision may be, the rate of drift reports, and a held prune pass. Pure.

use std::time::{Duration, Instant};

use crate::agents::NamespaceReport;
use crate::{Error, Result};

/// Longest namespace name an agent may report (a DNS-1123 label).
pub const MAX_NAMESPACE_BYTES: usize = 63;
/// Longest object reference in a drift report (`Kind/name`).
pub const MAX_OBJECT_BYTES: usize = 253;
/// Longest failure reason or drift description.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most results in one acknowledgement message (longer lists come as
/// several acknowledgements of the same revision).
pub const MAX_ACK_RESULTS: usize = 500;
/// Most namespaces named in a held prune's sample.
pub const MAX_PRUNE_SAMPLE: usize = 20;
/// How far above the cluster's revision a revision an agent claims to hold
/// (or finds stamped on a namespace) may be for the control plane to re-issue
/// above it. A restored backup is behind by what happened since it was
/// taken; a claim beyond this is refused, so no message can push a cluster's
/// counter towards the end of its range.
pub const MAX_REVISION_AHEAD: i64 = 1_000_000;

/// A text from an agent: at most `max` bytes, no NUL (PostgreSQL text cannot
/// hold one). Refused, not cut: an honest agent trims before sending.
pub fn agent_text(field: &str, value: String, max: usize) -> Result<String> {
    if value.len() > max {
        return Err(Error::invalid(field, format!("at most {max} bytes")));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL"));
    }
    Ok(value)
}

/// A namespace name from an agent: non-empty and bounded like [`agent_text`].
pub fn agent_namespace(field: &str, value: String) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    agent_text(field, value, MAX_NAMESPACE_BYTES)
}

/// The revision to re-issue a cluster's environments at, so that it is above
/// `claimed` (what an agent holds, or a stamp it found), or `None` when no
/// re-issue is needed. Refuses claims too far ahead; never overflows.
pub fn reissue_above(cluster_revision: i64, claimed: i64) -> Result<Option<i64>> {
    if claimed <= cluster_revision {
        return Ok(None);
    }
    let limit = cluster_revision.saturating_add(MAX_REVISION_AHEAD);
    if claimed > limit {
        return Err(Error::invalid(
            "revision",
            format!(
                "{claimed} is more than {MAX_REVISION_AHEAD} above the cluster's revision {cluster_revision}; refused"
            ),
        ));
    }
    claimed
        .checked_add(1)
        .map(Some)
        .ok_or_else(|| Error::invalid("revision", "out of range"))
}

/// A drift report, as the agent claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftClaim {
    pub namespace: String,
    pub object: String,
    pub description: String,
    pub repaired: bool,
}

impl DriftClaim {
    pub fn new(
        namespace: String,
        object: String,
        description: String,
        repaired: bool,
    ) -> Result<Self> {
        Ok(DriftClaim {
            namespace: agent_namespace("drift.namespace", namespace)?,
            object: agent_text("drift.object", object, MAX_OBJECT_BYTES)?,
            description: agent_text("drift.description", description, MAX_TEXT_BYTES)?,
            repaired,
        })
    }
}

/// An acknowledgement: everything up to `revision` applied, with results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaim {
    pub revision: i64,
    pub results: Vec<(String, NamespaceReport)>,
    /// 0: no confirmation wanted.
    pub sequence: u64,
}

impl AckClaim {
    /// Checks the revision, the size and every text of an acknowledgement.
    pub fn new(
        revision: i64,
        results: Vec<(String, NamespaceReport)>,
        sequence: u64,
    ) -> Result<Self> {
        if revision < 0 {
            return Err(Error::invalid("ack.revision", "must not be negative"));
        }
        if results.len() > MAX_ACK_RESULTS {
            return Err(Error::invalid(
                "ack.results",
                format!(
                    "at most {MAX_ACK_RESULTS} per message; send several acknowledgements of the revision"
                ),
            ));
        }
        let mut checked = Vec::with_capacity(results.len());
        for (namespace, report) in results {
            let namespace = agent_namespace("ack.results.namespace", namespace)?;
            let report = match report {
                NamespaceReport::Failed(reason) => NamespaceReport::Failed(agent_text(
                    "ack.results.reason",
                    reason,
                    MAX_TEXT_BYTES,
                )?),
                NamespaceReport::Superseded { live_revision } if live_revision <= 0 => {
                    return Err(Error::invalid(
                        "ack.results.live_revision",
                        "must be positive for a superseded namespace",
                    ));
                }
                other => other,
            };
            checked.push((namespace, report));
        }
        Ok(AckClaim {
            revision,
            results: checked,
            sequence,
        })
    }

    /// The highest revision stamped on a live namespace this ack reports as
    /// superseded.
    pub fn highest_live_stamp(&self) -> Option<i64> {
        self.results
            .iter()
            .filter_map(|(_, r)| match r {
                NamespaceReport::Superseded { live_revision } => Some(*live_revision),
                _ => None,
            })
            .max()
    }
}

/// A prune pass the applier held, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldPrune {
    pub revision: i64,
    pub would_delete: u32,
    pub managed: u32,
    pub sample: Vec<String>,
    /// Set when an operator confirmed the pass at this revision.
    #[serde(default)]
    pub confirmed_revision: i64,
    /// When the control plane heard of it.
    #[serde(default)]
    pub hold_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl HeldPrune {
    pub fn new(
        revision: i64,
        would_delete: u32,
        managed: u32,
        sample: Vec<String>,
    ) -> Result<Self> {
        if revision <= 0 {
            return Err(Error::invalid("prune_held.revision", "must be positive"));
        }
        if would_delete == 0 || would_delete > managed {
            return Err(Error::invalid(
                "prune_held.would_delete",
                "must be between 1 and managed",
            ));
        }
        if sample.len() > MAX_PRUNE_SAMPLE {
            return Err(Error::invalid(
                "prune_held.sample",
                format!("at most {MAX_PRUNE_SAMPLE} namespaces"),
            ));
        }
        let sample = sample
            .into_iter()
            .map(|n| agent_namespace("prune_held.sample", n))
            .collect::<Result<_>>()?;
        Ok(HeldPrune {
            revision,
            would_delete,
            managed,
            sample,
            confirmed_revision: 0,
            hold_time: None,
        })
    }
}

/// A token bucket: how many drift reports one session may have recorded.
/// A burst of `capacity`, then `per_second`; the rest is dropped and counted
/// (the agent repairs drift whether or not its report is heard).
#[derive(Debug, Clone)]
pub struct ReportBudget {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl ReportBudget {
    pub fn new(capacity: u32, per_second: u32, now: Instant) -> Self {
        ReportBudget {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            tokens: f64::from(capacity),
            last: now,
        }
    }

    /// Takes one report's worth; false if the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until one more report fits.
    pub fn refill_time(&self) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0)) / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_texts_are_bounded_and_nul_free() {
        assert_eq!(agent_text("f", "ok".into(), 2).unwrap(), "ok");
        assert_eq!(
            agent_text("f", "abc".into(), 2).unwrap_err().to_string(),
            "f: at most 2 bytes"
        );
        assert_eq!(
            agent_text("f", "a\0".into(), 9).unwrap_err().to_string(),
            "f: must not contain NUL"
        );
        assert!(agent_namespace("n", String::new()).is_err());
        assert!(agent_namespace("n", "a".repeat(64)).is_err());
        // Bytes, not characters: 512 two-byte characters are 1024 bytes.
        assert!(agent_text("f", "é".repeat(512), MAX_TEXT_BYTES).is_ok());
        assert!(agent_text("f", "é".repeat(513), MAX_TEXT_BYTES).is_err());
    }

    #[test]
    fn reissue_is_bounded_and_never_overflows() {
        assert_eq!(reissue_above(10, 5), Ok(None));
        assert_eq!(reissue_above(10, 10), Ok(None));
        assert_eq!(reissue_above(10, 11), Ok(Some(12)));
        assert_eq!(
            reissue_above(10, 10 + MAX_REVISION_AHEAD),
            Ok(Some(11 + MAX_REVISION_AHEAD))
        );
        assert!(reissue_above(10, 11 + MAX_REVISION_AHEAD).is_err());
        // The reproduction of the wedge: a hello near i64::MAX.
        assert!(reissue_above(3, 9_223_372_036_854_775_806).is_err());
        assert!(reissue_above(i64::MAX - 1, i64::MAX).is_err());
        assert_eq!(reissue_above(i64::MAX, i64::MAX), Ok(None));
    }

    #[test]
    fn acknowledgements_are_checked_whole() {
        let ok = AckClaim::new(3, vec![("ns-a".into(), NamespaceReport::Verified)], 1).unwrap();
        assert_eq!(ok.results.len(), 1);
        let many = (0..=MAX_ACK_RESULTS)
            .map(|i| (format!("ns-{i}"), NamespaceReport::Verified))
            .collect();
        assert!(
            AckClaim::new(3, many, 1)
                .unwrap_err()
                .to_string()
                .starts_with("ack.results: at most 500")
        );
        let long = vec![(
            "ns".into(),
            NamespaceReport::Failed("x".repeat(MAX_TEXT_BYTES + 1)),
        )];
        assert!(
            AckClaim::new(3, long, 1)
                .unwrap_err()
                .to_string()
                .starts_with("ack.results.reason")
        );
        let nul = vec![("n\0s".into(), NamespaceReport::Verified)];
        assert!(AckClaim::new(3, nul, 1).is_err());
        assert!(AckClaim::new(-1, vec![], 1).is_err());
        let stale = vec![
            (
                "a".into(),
                NamespaceReport::Superseded { live_revision: 40 },
            ),
            (
                "b".into(),
                NamespaceReport::Superseded { live_revision: 90 },
            ),
        ];
        assert_eq!(
            AckClaim::new(3, stale, 0).unwrap().highest_live_stamp(),
            Some(90)
        );
        let zero = vec![("a".into(), NamespaceReport::Superseded { live_revision: 0 })];
        assert!(AckClaim::new(3, zero, 0).is_err());
    }

    #[test]
    fn held_prunes_are_checked() {
        assert!(HeldPrune::new(4, 3, 5, vec!["a".into()]).is_ok());
        assert!(HeldPrune::new(0, 3, 5, vec![]).is_err());
        assert!(HeldPrune::new(4, 6, 5, vec![]).is_err());
        assert!(HeldPrune::new(4, 0, 5, vec![]).is_err());
        assert!(HeldPrune::new(4, 3, 5, vec!["a".into(); 21]).is_err());
        assert!(HeldPrune::new(4, 3, 5, vec!["a\0".into()]).is_err());
    }

    #[test]
    fn the_report_budget_allows_a_burst_then_a_rate() {
        let start = Instant::now();
        let mut budget = ReportBudget::new(5, 2, start);
        assert_eq!((0..10).filter(|_| budget.take(start)).count(), 5);
        assert!(budget.refill_time() > Duration::ZERO);
        // One second later: two more.
        let later = start + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| budget.take(later)).count(), 2);
        // Never more than the burst, however long it was quiet.
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| budget.take(much_later)).count(), 5);
    }
}
