//! Usage an agent claims for its node (windows of per-namespace amounts and gaps in coverage), the bounds that make a claim believable, and exact sums of it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::claims::{agent_namespace, agent_text};
use crate::{Error, Result};

/// Most windows in one batch: a batch is one spool file's worth, and an
/// agent catching up after an outage sends several batches, not one huge one.
pub const MAX_WINDOWS_PER_BATCH: usize = 200;
/// Most namespaces in one window (far above what one node runs).
pub const MAX_NAMESPACES_PER_WINDOW: usize = 5000;
/// Most gaps in one batch.
pub const MAX_GAPS_PER_BATCH: usize = 100;
/// Shortest window an agent may report; shorter ones would only multiply rows.
pub const MIN_WINDOW_SECONDS: u32 = 10;
/// Longest window: an hour, so every window falls inside one hourly rollup.
pub const MAX_WINDOW_SECONDS: u32 = 3600;
/// How far ahead of the control plane's clock an agent's clock may be.
pub const CLOCK_SKEW_SECONDS: i64 = 600;
/// Longest gap one claim may describe; longer outages come as several gaps.
pub const MAX_GAP_SECONDS: i64 = 31 * 86_400;
/// Longest gap reason (it is shown in reports, so a short phrase).
pub const MAX_GAP_REASON_BYTES: usize = 63;
/// Most cores one node may claim for a namespace: above any machine sold
/// today, so a claim beyond it is a bug or a lie.
pub const MAX_NODE_CORES: u64 = 4096;
/// Most bytes of memory or storage one node may claim for a namespace (1 PiB).
pub const MAX_NODE_BYTES: u64 = 1 << 50;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// What one namespace used on one node during one window. For each of CPU,
/// memory and storage: what was requested, what was used, and what is billed
/// (per container, the larger of request and usage, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageAmounts {
    pub cpu_requested_core_nanos: u64,
    pub cpu_used_core_nanos: u64,
    pub cpu_billed_core_nanos: u64,
    pub memory_requested_byte_seconds: u64,
    pub memory_used_byte_seconds: u64,
    pub memory_billed_byte_seconds: u64,
    pub storage_requested_byte_seconds: u64,
    pub storage_used_byte_seconds: u64,
    pub storage_billed_byte_seconds: u64,
    pub network_receive_bytes: u64,
    pub network_transmit_bytes: u64,
    pub container_seconds: u64,
}

/// The names of the fields of [`UsageAmounts`] and [`UsageTotals`], in the
/// order of `to_array`; one list, so sums and messages cannot disagree.
pub const FIELD_NAMES: [&str; 12] = [
    "cpu_requested_core_nanos",
    "cpu_used_core_nanos",
    "cpu_billed_core_nanos",
    "memory_requested_byte_seconds",
    "memory_used_byte_seconds",
    "memory_billed_byte_seconds",
    "storage_requested_byte_seconds",
    "storage_used_byte_seconds",
    "storage_billed_byte_seconds",
    "network_receive_bytes",
    "network_transmit_bytes",
    "container_seconds",
];

impl UsageAmounts {
    /// The amounts in the order of [`FIELD_NAMES`].
    pub fn to_array(self) -> [u64; 12] {
        [
            self.cpu_requested_core_nanos,
            self.cpu_used_core_nanos,
            self.cpu_billed_core_nanos,
            self.memory_requested_byte_seconds,
            self.memory_used_byte_seconds,
            self.memory_billed_byte_seconds,
            self.storage_requested_byte_seconds,
            self.storage_used_byte_seconds,
            self.storage_billed_byte_seconds,
            self.network_receive_bytes,
            self.network_transmit_bytes,
            self.container_seconds,
        ]
    }

    /// Checks the amounts of one window of `duration_seconds`. `field` is the
    /// path of the namespace entry (`windows[3].namespaces[0]`).
    fn validate(&self, field: &str, duration_seconds: u32) -> Result<()> {
        let duration = u64::from(duration_seconds);
        // Both bounds fit u64 for durations up to an hour (1.5e16, 4.1e18).
        let cpu_max = MAX_NODE_CORES * NANOS_PER_SECOND * duration;
        let bytes_max = MAX_NODE_BYTES * duration;
        let resources = [
            (
                "cpu",
                "core_nanos",
                self.cpu_requested_core_nanos,
                self.cpu_used_core_nanos,
                self.cpu_billed_core_nanos,
                cpu_max,
                "4096 cores",
            ),
            (
                "memory",
                "byte_seconds",
                self.memory_requested_byte_seconds,
                self.memory_used_byte_seconds,
                self.memory_billed_byte_seconds,
                bytes_max,
                "1 PiB",
            ),
            (
                "storage",
                "byte_seconds",
                self.storage_requested_byte_seconds,
                self.storage_used_byte_seconds,
                self.storage_billed_byte_seconds,
                bytes_max,
                "1 PiB",
            ),
        ];
        for (resource, unit, requested, used, billed, max, physical) in resources {
            let name = |kind: &str| format!("{field}.{resource}_{kind}_{unit}");
            for (kind, value) in [("requested", requested), ("used", used), ("billed", billed)] {
                if value > max {
                    return Err(Error::invalid(
                        name(kind),
                        format!(
                            "{value} is more than {physical} for {duration_seconds} s ({max}); no node has that"
                        ),
                    ));
                }
            }
            // Billed is Σ max(request, usage) over containers, so it is at least
            // each sum and at most both together.
            if billed < requested {
                return Err(Error::invalid(
                    name("billed"),
                    format!(
                        "{billed} is below {} {requested}; billed is the larger of request and usage per container",
                        name("requested")
                    ),
                ));
            }
            if billed < used {
                return Err(Error::invalid(
                    name("billed"),
                    format!(
                        "{billed} is below {} {used}; billed is the larger of request and usage per container",
                        name("used")
                    ),
                ));
            }
            // u128: requested + used may not fit u64 (it cannot pass the
            // physical bound then, but this check must not overflow first).
            let both = u128::from(requested) + u128::from(used);
            if u128::from(billed) > both {
                return Err(Error::invalid(
                    name("billed"),
                    format!(
                        "{billed} is above requested + used ({both}); billed is the larger of request and usage per container"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One namespace's usage in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceWindow {
    pub namespace: String,
    pub amounts: UsageAmounts,
}

/// One window of a node's usage: `[start, start + duration_seconds)`, of
/// which the agent observed `covered_seconds` (less after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClaim {
    pub start: DateTime<Utc>,
    pub duration_seconds: u32,
    pub covered_seconds: u32,
    /// The node's allocatable capacity during the window (for idle cost).
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
    pub namespaces: Vec<NamespaceWindow>,
}

/// A stretch the agent has no usage for (it was down, or lost its spool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapClaim {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: String,
}

/// A batch of usage from an agent's spool, validated by [`UsageBatchClaim::new`].
/// `(spool_epoch, sequence)` identifies it, so a batch resent after a lost
/// acknowledgement is recognised and counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatchClaim {
    pub spool_epoch: u64,
    pub sequence: u64,
    pub windows: Vec<WindowClaim>,
    pub gaps: Vec<GapClaim>,
}

impl UsageBatchClaim {
    /// Checks a batch as the agent sent it. `now` is the control plane's
    /// clock; `oldest` the start of retention (older windows would be
    /// deleted at once, and would reopen rollups already closed).
    pub fn new(
        spool_epoch: u64,
        sequence: u64,
        windows: Vec<WindowClaim>,
        gaps: Vec<GapClaim>,
        now: DateTime<Utc>,
        oldest: DateTime<Utc>,
    ) -> Result<Self> {
        // Both are stored as BIGINT; 0 is left for "none".
        let bigint = |field: &str, v: u64| {
            if v == 0 || v > i64::MAX as u64 {
                Err(Error::invalid(
                    field,
                    format!("{v} is not in 1..={}", i64::MAX),
                ))
            } else {
                Ok(())
            }
        };
        bigint("spool_epoch", spool_epoch)?;
        bigint("sequence", sequence)?;
        if windows.len() > MAX_WINDOWS_PER_BATCH {
            return Err(Error::invalid(
                "windows",
                format!(
                    "at most {MAX_WINDOWS_PER_BATCH} per batch (got {}); send several batches",
                    windows.len()
                ),
            ));
        }
        if gaps.len() > MAX_GAPS_PER_BATCH {
            return Err(Error::invalid(
                "gaps",
                format!(
                    "at most {MAX_GAPS_PER_BATCH} per batch (got {})",
                    gaps.len()
                ),
            ));
        }
        let latest = now + Duration::seconds(CLOCK_SKEW_SECONDS);
        let mut starts: HashMap<DateTime<Utc>, usize> = HashMap::with_capacity(windows.len());
        let mut checked = Vec::with_capacity(windows.len());
        for (i, window) in windows.into_iter().enumerate() {
            let field = format!("windows[{i}]");
            if let Some(j) = starts.insert(window.start, i) {
                return Err(Error::invalid(
                    format!("{field}.start"),
                    format!(
                        "{} is also the start of windows[{j}]",
                        window.start.to_rfc3339()
                    ),
                ));
            }
            checked.push(check_window(&field, window, latest, oldest)?);
        }
        let mut checked_gaps = Vec::with_capacity(gaps.len());
        for (i, gap) in gaps.into_iter().enumerate() {
            let field = format!("gaps[{i}]");
            if gap.start >= gap.end {
                return Err(Error::invalid(
                    format!("{field}.end"),
                    format!(
                        "{} is not after start {}",
                        gap.end.to_rfc3339(),
                        gap.start.to_rfc3339()
                    ),
                ));
            }
            if gap.end - gap.start > Duration::seconds(MAX_GAP_SECONDS) {
                return Err(Error::invalid(
                    format!("{field}.end"),
                    "a gap spans at most 31 days; send a longer one as several",
                ));
            }
            if gap.end > latest {
                return Err(Error::invalid(
                    format!("{field}.end"),
                    format!(
                        "{} is in the future (now is {}, allowing {CLOCK_SKEW_SECONDS} s of clock skew)",
                        gap.end.to_rfc3339(),
                        now.to_rfc3339()
                    ),
                ));
            }
            let reason = agent_text(&format!("{field}.reason"), gap.reason, MAX_GAP_REASON_BYTES)?;
            checked_gaps.push(GapClaim {
                start: gap.start,
                end: gap.end,
                reason,
            });
        }
        Ok(UsageBatchClaim {
            spool_epoch,
            sequence,
            windows: checked,
            gaps: checked_gaps,
        })
    }
}

fn check_window(
    field: &str,
    window: WindowClaim,
    latest: DateTime<Utc>,
    oldest: DateTime<Utc>,
) -> Result<WindowClaim> {
    let d = window.duration_seconds;
    if !(MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(&d) {
        return Err(Error::invalid(
            format!("{field}.duration_seconds"),
            format!("{d} is not in {MIN_WINDOW_SECONDS}..={MAX_WINDOW_SECONDS}"),
        ));
    }
    // Aligned windows from every node tile the same grid, so a window never
    // straddles an hourly rollup and two agents' windows are comparable.
    let secs = window.start.timestamp();
    if window.start.timestamp_subsec_nanos() != 0 || secs.rem_euclid(i64::from(d)) != 0 {
        return Err(Error::invalid(
            format!("{field}.start"),
            format!(
                "{} is not a multiple of duration_seconds ({d} s) since the Unix epoch",
                window.start.to_rfc3339()
            ),
        ));
    }
    if window.covered_seconds > d {
        return Err(Error::invalid(
            format!("{field}.covered_seconds"),
            format!(
                "{} is more than duration_seconds {d}",
                window.covered_seconds
            ),
        ));
    }
    let end = window.start + Duration::seconds(i64::from(d));
    if end > latest {
        return Err(Error::invalid(
            format!("{field}.start"),
            format!(
                "the window ends at {}, in the future (allowing {CLOCK_SKEW_SECONDS} s of clock skew)",
                end.to_rfc3339()
            ),
        ));
    }
    if window.start < oldest {
        return Err(Error::invalid(
            format!("{field}.start"),
            format!(
                "{} is before {}, past retention",
                window.start.to_rfc3339(),
                oldest.to_rfc3339()
            ),
        ));
    }
    if window.node_cpu_millis < 0 {
        return Err(Error::invalid(
            format!("{field}.node_cpu_millis"),
            "must not be negative",
        ));
    }
    if window.node_memory_bytes < 0 {
        return Err(Error::invalid(
            format!("{field}.node_memory_bytes"),
            "must not be negative",
        ));
    }
    if window.namespaces.len() > MAX_NAMESPACES_PER_WINDOW {
        return Err(Error::invalid(
            format!("{field}.namespaces"),
            format!(
                "at most {MAX_NAMESPACES_PER_WINDOW} per window (got {})",
                window.namespaces.len()
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(window.namespaces.len());
    let mut namespaces = Vec::with_capacity(window.namespaces.len());
    for (k, entry) in window.namespaces.into_iter().enumerate() {
        let entry_field = format!("{field}.namespaces[{k}]");
        let namespace = agent_namespace(&format!("{entry_field}.namespace"), entry.namespace)?;
        if let Some(j) = seen.insert(namespace.clone(), k) {
            return Err(Error::invalid(
                format!("{entry_field}.namespace"),
                format!("{namespace:?} is already in this window at namespaces[{j}]"),
            ));
        }
        entry.amounts.validate(&entry_field, d)?;
        namespaces.push(NamespaceWindow {
            namespace,
            amounts: entry.amounts,
        });
    }
    Ok(WindowClaim {
        namespaces,
        ..window
    })
}

/// Exact sums of [`UsageAmounts`]. u128 cannot overflow for any realistic
/// input; adding is checked anyway, so a bug shows as an error, not a wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub cpu_requested_core_nanos: u128,
    pub cpu_used_core_nanos: u128,
    pub cpu_billed_core_nanos: u128,
    pub memory_requested_byte_seconds: u128,
    pub memory_used_byte_seconds: u128,
    pub memory_billed_byte_seconds: u128,
    pub storage_requested_byte_seconds: u128,
    pub storage_used_byte_seconds: u128,
    pub storage_billed_byte_seconds: u128,
    pub network_receive_bytes: u128,
    pub network_transmit_bytes: u128,
    pub container_seconds: u128,
}

impl UsageTotals {
    /// The sums in the order of [`FIELD_NAMES`].
    pub fn to_array(self) -> [u128; 12] {
        [
            self.cpu_requested_core_nanos,
            self.cpu_used_core_nanos,
            self.cpu_billed_core_nanos,
            self.memory_requested_byte_seconds,
            self.memory_used_byte_seconds,
            self.memory_billed_byte_seconds,
            self.storage_requested_byte_seconds,
            self.storage_used_byte_seconds,
            self.storage_billed_byte_seconds,
            self.network_receive_bytes,
            self.network_transmit_bytes,
            self.container_seconds,
        ]
    }

    /// Sums given in the order of [`FIELD_NAMES`].
    pub fn from_array(a: [u128; 12]) -> Self {
        UsageTotals {
            cpu_requested_core_nanos: a[0],
            cpu_used_core_nanos: a[1],
            cpu_billed_core_nanos: a[2],
            memory_requested_byte_seconds: a[3],
            memory_used_byte_seconds: a[4],
            memory_billed_byte_seconds: a[5],
            storage_requested_byte_seconds: a[6],
            storage_used_byte_seconds: a[7],
            storage_billed_byte_seconds: a[8],
            network_receive_bytes: a[9],
            network_transmit_bytes: a[10],
            container_seconds: a[11],
        }
    }

    /// Adds one namespace-window's amounts. On error `self` is unchanged.
    pub fn add(&mut self, amounts: &UsageAmounts) -> Result<()> {
        self.merge_array(amounts.to_array().map(u128::from))
    }

    /// Adds another sum. On error `self` is unchanged.
    pub fn merge(&mut self, other: &UsageTotals) -> Result<()> {
        self.merge_array(other.to_array())
    }

    fn merge_array(&mut self, other: [u128; 12]) -> Result<()> {
        let mut sum = self.to_array();
        for (i, (s, o)) in sum.iter_mut().zip(other).enumerate() {
            *s = s
                .checked_add(o)
                .ok_or_else(|| Error::invalid(FIELD_NAMES[i], "sum overflows u128"))?;
        }
        *self = UsageTotals::from_array(sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    // 2026-12-02T12:00:00Z, on every grid up to an hour.
    const NOW: i64 = 1_796_212_800;

    fn amounts() -> UsageAmounts {
        UsageAmounts {
            cpu_requested_core_nanos: 500_000_000 * 60,
            cpu_used_core_nanos: 200_000_000 * 60,
            cpu_billed_core_nanos: 500_000_000 * 60,
            memory_requested_byte_seconds: (1 << 30) * 60,
            memory_used_byte_seconds: (2 << 30) * 60,
            memory_billed_byte_seconds: (2 << 30) * 60,
            storage_requested_byte_seconds: (10 << 30) * 60,
            storage_used_byte_seconds: (3 << 30) * 60,
            storage_billed_byte_seconds: (10 << 30) * 60,
            network_receive_bytes: 1000,
            network_transmit_bytes: 2000,
            container_seconds: 120,
        }
    }

    fn window(start: i64, namespaces: &[&str]) -> WindowClaim {
        WindowClaim {
            start: at(start),
            duration_seconds: 60,
            covered_seconds: 60,
            node_cpu_millis: 8000,
            node_memory_bytes: 32 << 30,
            namespaces: namespaces
                .iter()
                .map(|n| NamespaceWindow {
                    namespace: (*n).into(),
                    amounts: amounts(),
                })
                .collect(),
        }
    }

    fn batch(windows: Vec<WindowClaim>, gaps: Vec<GapClaim>) -> Result<UsageBatchClaim> {
        UsageBatchClaim::new(1, 1, windows, gaps, at(NOW), at(NOW - 90 * 86_400))
    }

    /// The field an error names, for asserting on it.
    fn field_of(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("not Invalid: {other}"),
        }
    }

    #[test]
    fn a_good_batch_passes() {
        assert_eq!(NOW % 3600, 0);
        let b = batch(
            vec![window(NOW - 120, &["a", "b"]), window(NOW - 60, &["a"])],
            vec![GapClaim {
                start: at(NOW - 7200),
                end: at(NOW - 3600),
                reason: "agent restarted".into(),
            }],
        )
        .unwrap();
        assert_eq!(b.windows.len(), 2);
        assert_eq!(b.gaps.len(), 1);
        // The clock-skew allowance: a window ending 10 minutes ahead is taken.
        assert!(batch(vec![window(NOW + 540, &["a"])], vec![]).is_ok());
    }

    #[test]
    fn epoch_and_sequence_fit_a_bigint() {
        let b = |e, s| UsageBatchClaim::new(e, s, vec![], vec![], at(NOW), at(0));
        assert!(b(1, i64::MAX as u64).is_ok());
        assert_eq!(field_of(b(0, 1).unwrap_err()), "spool_epoch");
        assert_eq!(field_of(b(1, 0).unwrap_err()), "sequence");
        assert_eq!(field_of(b(1, i64::MAX as u64 + 1).unwrap_err()), "sequence");
    }

    #[test]
    fn counts_are_bounded() {
        let many = (0..=MAX_WINDOWS_PER_BATCH as i64)
            .map(|i| window(NOW - 60 * (i + 1), &[]))
            .collect();
        assert_eq!(field_of(batch(many, vec![]).unwrap_err()), "windows");
        let names: Vec<String> = (0..=MAX_NAMESPACES_PER_WINDOW)
            .map(|i| format!("n{i}"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            field_of(batch(vec![window(NOW - 60, &refs)], vec![]).unwrap_err()),
            "windows[0].namespaces"
        );
        let gap = GapClaim {
            start: at(NOW - 100),
            end: at(NOW - 50),
            reason: String::new(),
        };
        assert_eq!(
            field_of(batch(vec![], vec![gap; MAX_GAPS_PER_BATCH + 1]).unwrap_err()),
            "gaps"
        );
    }

    #[test]
    fn windows_are_aligned_bounded_and_in_range() {
        let mut w = window(NOW - 60, &["a"]);
        w.start = at(NOW - 90);
        let e = batch(vec![window(NOW - 180, &[]), w], vec![]).unwrap_err();
        assert!(e.to_string().starts_with("windows[1].start: "), "{e}");
        assert!(
            e.to_string().contains("not a multiple of duration_seconds"),
            "{e}"
        );
        // Sub-second starts are misaligned too.
        let mut w = window(NOW - 60, &[]);
        w.start += Duration::milliseconds(1);
        assert_eq!(
            field_of(batch(vec![w], vec![]).unwrap_err()),
            "windows[0].start"
        );

        for d in [9, 3601, 0] {
            let mut w = window(NOW - 7200, &[]);
            w.duration_seconds = d;
            assert_eq!(
                field_of(batch(vec![w], vec![]).unwrap_err()),
                "windows[0].duration_seconds"
            );
        }
        let mut w = window(NOW - 3600, &[]);
        w.duration_seconds = 3600;
        assert!(batch(vec![w], vec![]).is_ok());

        let mut w = window(NOW - 60, &[]);
        w.covered_seconds = 61;
        assert_eq!(
            field_of(batch(vec![w], vec![]).unwrap_err()),
            "windows[0].covered_seconds"
        );

        // Ends 10 min + 60 s ahead.
        let e = batch(vec![window(NOW + 600, &["a"])], vec![]).unwrap_err();
        assert!(e.to_string().starts_with("windows[0].start: "), "{e}");
        assert!(e.to_string().contains("in the future"), "{e}");
        // Older than retention.
        let e = batch(vec![window(NOW - 91 * 86_400, &["a"])], vec![]).unwrap_err();
        assert!(e.to_string().contains("past retention"), "{e}");

        let mut w = window(NOW - 60, &[]);
        w.node_cpu_millis = -1;
        assert_eq!(
            field_of(batch(vec![w], vec![]).unwrap_err()),
            "windows[0].node_cpu_millis"
        );
        let mut w = window(NOW - 60, &[]);
        w.node_memory_bytes = -1;
        assert_eq!(
            field_of(batch(vec![w], vec![]).unwrap_err()),
            "windows[0].node_memory_bytes"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let e = batch(vec![window(NOW - 60, &["a", "b", "a"])], vec![]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "windows[0].namespaces[2].namespace: \"a\" is already in this window at namespaces[0]"
        );
        let e = batch(
            vec![window(NOW - 60, &["a"]), window(NOW - 60, &["b"])],
            vec![],
        )
        .unwrap_err();
        assert_eq!(field_of(e), "windows[1].start");
        let e = batch(vec![window(NOW - 60, &[""])], vec![]).unwrap_err();
        assert_eq!(field_of(e), "windows[0].namespaces[0].namespace");
    }

    #[test]
    fn billed_lies_between_the_larger_and_the_sum() {
        let with = |f: fn(&mut UsageAmounts)| {
            let mut w = window(NOW - 60, &["a", "b"]);
            f(&mut w.namespaces[1].amounts);
            batch(vec![window(NOW - 120, &[]), w], vec![])
        };
        let e = with(|a| a.cpu_billed_core_nanos = a.cpu_requested_core_nanos - 1).unwrap_err();
        // Below requested (and used) — refused naming the billed field.
        assert!(
            e.to_string()
                .starts_with("windows[1].namespaces[1].cpu_billed_core_nanos: "),
            "{e}"
        );
        let e =
            with(|a| a.memory_billed_byte_seconds = a.memory_used_byte_seconds - 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("windows[1].namespaces[1].memory_billed_byte_seconds: ")
                && e.to_string()
                    .contains("below windows[1].namespaces[1].memory_used_byte_seconds"),
            "{e}"
        );
        let e = with(|a| a.storage_billed_byte_seconds = a.storage_requested_byte_seconds - 1)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("below windows[1].namespaces[1].storage_requested"),
            "{e}"
        );
        let e = with(|a| {
            a.cpu_billed_core_nanos = a.cpu_requested_core_nanos + a.cpu_used_core_nanos + 1
        })
        .unwrap_err();
        assert!(e.to_string().contains("above requested + used"), "{e}");
        // Exactly the sum is fine (every container above its request the whole window
        // in one, below it in the other, adds up to it).
        assert!(
            with(|a| a.cpu_billed_core_nanos = a.cpu_requested_core_nanos + a.cpu_used_core_nanos)
                .is_ok()
        );
    }

    #[test]
    fn amounts_are_physically_bounded() {
        let limit = 4096 * 1_000_000_000 * 60;
        let with = |f: &dyn Fn(&mut UsageAmounts)| {
            let mut w = window(NOW - 60, &["a"]);
            f(&mut w.namespaces[0].amounts);
            batch(vec![w], vec![])
        };
        assert!(
            with(&|a| {
                a.cpu_used_core_nanos = limit;
                a.cpu_billed_core_nanos = limit;
            })
            .is_ok()
        );
        let e = with(&|a| {
            a.cpu_used_core_nanos = limit + 1;
            a.cpu_billed_core_nanos = limit + 1;
        })
        .unwrap_err();
        assert_eq!(field_of(e), "windows[0].namespaces[0].cpu_used_core_nanos");
        let e = with(&|a| {
            a.memory_requested_byte_seconds = (1 << 50) * 60 + 1;
            a.memory_billed_byte_seconds = (1 << 50) * 60 + 1;
        })
        .unwrap_err();
        assert_eq!(
            field_of(e),
            "windows[0].namespaces[0].memory_requested_byte_seconds"
        );
        // No overflow in requested + used.
        let e = with(&|a| {
            a.storage_requested_byte_seconds = u64::MAX;
            a.storage_used_byte_seconds = u64::MAX;
            a.storage_billed_byte_seconds = u64::MAX;
        })
        .unwrap_err();
        assert_eq!(
            field_of(e),
            "windows[0].namespaces[0].storage_requested_byte_seconds"
        );
    }

    #[test]
    fn gaps_are_checked() {
        let gap = |start: i64, end: i64, reason: &str| GapClaim {
            start: at(start),
            end: at(end),
            reason: reason.into(),
        };
        let e = |g| field_of(batch(vec![], vec![gap(NOW - 10, NOW - 5, "ok"), g]).unwrap_err());
        assert_eq!(e(gap(NOW - 5, NOW - 5, "")), "gaps[1].end");
        assert_eq!(e(gap(NOW - 5, NOW - 6, "")), "gaps[1].end");
        assert_eq!(e(gap(NOW - 31 * 86_400 - 1, NOW, "")), "gaps[1].end");
        assert!(batch(vec![], vec![gap(NOW - 31 * 86_400, NOW, "")]).is_ok());
        assert_eq!(e(gap(NOW, NOW + 601, "")), "gaps[1].end");
        assert!(batch(vec![], vec![gap(NOW, NOW + 600, "")]).is_ok());
        assert_eq!(e(gap(NOW - 5, NOW, &"x".repeat(64))), "gaps[1].reason");
        assert_eq!(e(gap(NOW - 5, NOW, "a\0")), "gaps[1].reason");
    }

    #[test]
    fn totals_add_every_field_exactly() {
        let mut t = UsageTotals::default();
        let a = UsageAmounts {
            cpu_requested_core_nanos: 1,
            cpu_used_core_nanos: 2,
            cpu_billed_core_nanos: 3,
            memory_requested_byte_seconds: 4,
            memory_used_byte_seconds: 5,
            memory_billed_byte_seconds: 6,
            storage_requested_byte_seconds: 7,
            storage_used_byte_seconds: 8,
            storage_billed_byte_seconds: 9,
            network_receive_bytes: 10,
            network_transmit_bytes: 11,
            container_seconds: u64::MAX,
        };
        t.add(&a).unwrap();
        t.add(&a).unwrap();
        assert_eq!(
            t.to_array(),
            [
                2,
                4,
                6,
                8,
                10,
                12,
                14,
                16,
                18,
                20,
                22,
                2 * u128::from(u64::MAX)
            ]
        );
        let mut m = UsageTotals::default();
        m.merge(&t).unwrap();
        m.merge(&t).unwrap();
        assert_eq!(m.cpu_billed_core_nanos, 12);
        assert_eq!(m.container_seconds, 4 * u128::from(u64::MAX));

        let full = UsageTotals {
            network_transmit_bytes: u128::MAX,
            ..UsageTotals::default()
        };
        let before = m;
        let e = m.merge(&full).unwrap_err();
        assert_eq!(field_of(e), "network_transmit_bytes");
        assert_eq!(m, before, "a failed merge leaves the sum unchanged");
    }
}
