//! The reports waiting for the control plane — across a disconnect, and
//! while the stream is slow — with one policy per kind of report, so a flood
//! of one kind can only ever displace reports of its own kind.
//!
//! | kind  | policy |
//! |-------|--------|
//! | drift | kept; past a soft limit the latest report for an object supersedes a queued one (lossless for state; bounded by the number of objects) |
//! | ack   | one at most: the latest supersedes the queued one (results merged, the later winning); dropped when a session ends: a new session starts with a full status ack |
//! | role  | at most [`ROLE_LIMIT`], the oldest dropped first |
//! | prune held | one at most: the latest supersedes (it describes the hold as it stands) |
//!
//! Usage is not queued here: it waits in its spool on disk (`usage`), and
//! the session sends a batch only when this outbox is empty, so usage can
//! never delay or push out a report.
//!
//! Reports leave in the order they came; a merged ack takes the place of
//! the newest one it holds (it moves later, never earlier, so it never
//! overtakes the role change before it).

use std::collections::VecDeque;

use crate::metrics::Metrics;
use crate::report::{Ack, Report};

/// Drift reports kept before they are coalesced per object.
pub const DRIFT_SOFT_LIMIT: usize = 10_000;
/// Role changes kept, at most.
pub const ROLE_LIMIT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Role,
    Ack,
    Drift,
    PruneHeld,
}

/// What happens to a kind when it piles up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every report is kept; past `soft_limit` a new one supersedes a queued
    /// one about the same thing.
    Coalesce { soft_limit: usize },
    /// Only the latest matters.
    Latest,
    /// At most `limit`, the oldest of this kind going first.
    DropOldest { limit: usize },
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Role, Kind::Ack, Kind::Drift, Kind::PruneHeld];

    pub fn of(report: &Report) -> Kind {
        match report {
            Report::Role { .. } => Kind::Role,
            Report::Ack(_) => Kind::Ack,
            Report::Drift(_) => Kind::Drift,
            Report::PruneHeld(_) => Kind::PruneHeld,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Ack => "ack",
            Kind::Drift => "drift",
            Kind::PruneHeld => "prune_held",
        }
    }

    pub fn policy(self) -> Policy {
        match self {
            Kind::Role => Policy::DropOldest { limit: ROLE_LIMIT },
            Kind::Ack => Policy::Latest,
            Kind::Drift => Policy::Coalesce {
                soft_limit: DRIFT_SOFT_LIMIT,
            },
            Kind::PruneHeld => Policy::DropOldest { limit: 1 },
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Report>,
    depth: [usize; 4],
    metrics: Metrics,
}

impl Outbox {
    pub fn new(metrics: Metrics) -> Self {
        let outbox = Outbox {
            queue: VecDeque::new(),
            depth: [0; 4],
            metrics,
        };
        outbox.publish();
        outbox
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Reports of `kind` waiting.
    pub fn depth(&self, kind: Kind) -> usize {
        self.depth[kind.index()]
    }

    /// Queues a report, making room (within its own kind) by its policy.
    pub fn push(&mut self, report: Report) {
        let kind = Kind::of(&report);
        let report = match kind.policy() {
            Policy::Latest => self.supersede_ack(report),
            Policy::Coalesce { soft_limit } if self.depth(kind) >= soft_limit => {
                if let Some(i) = self.queue.iter().position(|r| same_subject(r, &report)) {
                    self.remove(i);
                } else {
                    tracing::debug!(kind = kind.name(), "outbox past its soft limit");
                }
                report
            }
            Policy::DropOldest { limit } if self.depth(kind) >= limit => {
                if let Some(i) = self.queue.iter().position(|r| Kind::of(r) == kind) {
                    self.remove(i);
                    // With room for one, the newer one simply supersedes.
                    if limit > 1 {
                        tracing::warn!(
                            kind = kind.name(),
                            "outbox full for this kind; dropped its oldest report"
                        );
                    }
                }
                report
            }
            Policy::Coalesce { .. } | Policy::DropOldest { .. } => report,
        };
        self.depth[kind.index()] += 1;
        self.queue.push_back(report);
        self.publish();
    }

    /// The next report to send.
    pub fn pop(&mut self) -> Option<Report> {
        let report = self.queue.pop_front()?;
        self.depth[Kind::of(&report).index()] -= 1;
        self.publish();
        Some(report)
    }

    /// A session ended: acks are not carried over (the next session starts
    /// with a full status ack, with fresh sequence numbers).
    pub fn session_ended(&mut self) {
        self.queue.retain(|r| Kind::of(r) != Kind::Ack);
        self.depth[Kind::Ack.index()] = 0;
        self.publish();
    }

    /// A newer ack replaces the queued one, so at most one waits: the
    /// results merge, the later winning per namespace, and it leaves in the
    /// newer one's place (later, never earlier). An older ack with a higher
    /// revision is dropped: the control plane's history went back.
    ///
    /// An ack that carries deletions is never merged away: the control plane
    /// confirms an ack by its own sequence number, and the agent forgets a
    /// tombstone only on that confirmation, so both acks go out.
    fn supersede_ack(&mut self, report: Report) -> Report {
        let Report::Ack(newer) = report else {
            return report;
        };
        let queued = self
            .queue
            .iter()
            .position(|r| matches!(r, Report::Ack(a) if a.deletions().is_empty()));
        let Some(Report::Ack(older)) = queued.and_then(|i| self.remove(i)) else {
            return Report::Ack(newer);
        };
        if older.revision > newer.revision {
            return Report::Ack(newer);
        }
        Report::Ack(Ack {
            results: crate::reconciler::ledger::combine(older.results, newer.results),
            ..newer
        })
    }

    fn remove(&mut self, i: usize) -> Option<Report> {
        let report = self.queue.remove(i)?;
        self.depth[Kind::of(&report).index()] -= 1;
        Some(report)
    }

    fn publish(&self) {
        for kind in Kind::ALL {
            self.metrics.set_outbox_depth(kind.name(), self.depth(kind));
        }
    }
}

/// Whether two reports are about the same thing (a newer one supersedes).
fn same_subject(a: &Report, b: &Report) -> bool {
    match (a, b) {
        (Report::Drift(a), Report::Drift(b)) => a.namespace == b.namespace && a.object == b.object,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Drift, NamespaceReport};

    fn drift(ns: &str, object: &str, description: &str) -> Report {
        Report::Drift(Drift {
            namespace: ns.into(),
            object: object.into(),
            description: description.into(),
            repaired: true,
        })
    }

    fn ack(revision: i64, sequence: u64, results: &[(&str, NamespaceReport)]) -> Report {
        Report::Ack(Ack {
            revision,
            sequence,
            results: results
                .iter()
                .map(|(ns, r)| (ns.to_string(), r.clone()))
                .collect(),
        })
    }

    fn drain(outbox: &mut Outbox) -> Vec<Report> {
        std::iter::from_fn(|| outbox.pop()).collect()
    }

    #[test]
    fn a_flood_of_acks_or_roles_never_evicts_drift() {
        let mut outbox = Outbox::new(Metrics::new());
        outbox.push(drift("a", "Namespace/a", "label changed"));
        for i in 0..(DRIFT_SOFT_LIMIT as u64 * 2) {
            outbox.push(ack(5, i, &[("a", NamespaceReport::Verified)]));
            outbox.push(Report::Role {
                applier: i % 2 == 0,
            });
        }
        assert_eq!(outbox.depth(Kind::Drift), 1);
        assert_eq!(outbox.depth(Kind::Role), ROLE_LIMIT);
        assert_eq!(outbox.depth(Kind::Ack), 1, "acks coalesce to the latest");
        assert_eq!(
            drain(&mut outbox)[0],
            drift("a", "Namespace/a", "label changed")
        );
        assert_eq!(Kind::ALL.map(|k| outbox.depth(k)), [0, 0, 0, 0]);
    }

    #[test]
    fn a_flood_of_drift_evicts_neither_acks_nor_roles_nor_other_objects() {
        let mut outbox = Outbox::new(Metrics::new());
        outbox.push(Report::Role { applier: true });
        outbox.push(ack(3, 1, &[("a", NamespaceReport::Verified)]));
        outbox.push(drift("b", "Quota/b", "first"));
        for i in 0..DRIFT_SOFT_LIMIT * 2 {
            outbox.push(drift(
                "a",
                &format!("Object/{}", i % (DRIFT_SOFT_LIMIT - 1)),
                &i.to_string(),
            ));
        }
        assert_eq!(outbox.depth(Kind::Role), 1);
        assert_eq!(outbox.depth(Kind::Ack), 1);
        assert_eq!(
            outbox.depth(Kind::Drift),
            DRIFT_SOFT_LIMIT,
            "coalesced per object"
        );
        let sent = drain(&mut outbox);
        assert_eq!(sent[0], Report::Role { applier: true });
        assert!(
            sent.contains(&drift("b", "Quota/b", "first")),
            "another object's drift stays"
        );
        let last = (DRIFT_SOFT_LIMIT * 2 - 1).to_string();
        assert!(
            sent.iter()
                .any(|r| matches!(r, Report::Drift(d) if d.description == last)),
            "the latest report of an object wins"
        );
    }

    #[test]
    fn an_ack_that_carries_a_deletion_keeps_its_own_sequence() {
        // The deletion is confirmed by sequence 1 only; merged into 2, the
        // agent would never hear that confirmation and keep the tombstone.
        let mut outbox = Outbox::new(Metrics::new());
        let deleted = ack(4, 1, &[("a", NamespaceReport::Deleted)]);
        outbox.push(deleted.clone());
        outbox.push(ack(5, 2, &[("b", NamespaceReport::Verified)]));
        outbox.push(ack(6, 3, &[("b", NamespaceReport::Verified)]));
        assert_eq!(
            drain(&mut outbox),
            [deleted, ack(6, 3, &[("b", NamespaceReport::Verified)])]
        );
    }

    #[test]
    fn the_latest_ack_carries_the_results_of_the_ones_it_supersedes() {
        let mut outbox = Outbox::new(Metrics::new());
        outbox.push(ack(
            4,
            1,
            &[
                ("a", NamespaceReport::Verified),
                ("b", NamespaceReport::Failed("x".into())),
            ],
        ));
        outbox.push(Report::Role { applier: true });
        outbox.push(ack(5, 2, &[("b", NamespaceReport::Verified)]));
        assert_eq!(
            drain(&mut outbox),
            [
                Report::Role { applier: true },
                ack(
                    5,
                    2,
                    &[
                        ("a", NamespaceReport::Verified),
                        ("b", NamespaceReport::Verified)
                    ]
                ),
            ],
            "merged, in the newer one's place"
        );
        outbox.push(ack(9, 3, &[("a", NamespaceReport::Verified)]));
        outbox.push(ack(2, 4, &[("c", NamespaceReport::Verified)]));
        assert_eq!(
            drain(&mut outbox),
            [ack(2, 4, &[("c", NamespaceReport::Verified)])],
            "a revision the control plane went back from is not claimed"
        );
        outbox.push(ack(6, 5, &[]));
        outbox.push(drift("a", "Namespace/a", "x"));
        outbox.session_ended();
        assert_eq!(drain(&mut outbox), [drift("a", "Namespace/a", "x")]);
    }

    #[test]
    fn a_newer_prune_hold_supersedes_the_queued_one_and_survives_a_session_end() {
        let held = |revision| {
            Report::PruneHeld(crate::report::PruneHeld {
                revision,
                would_delete: 3,
                managed: 4,
                sample: vec![],
            })
        };
        let mut outbox = Outbox::new(Metrics::new());
        outbox.push(held(3));
        outbox.push(drift("a", "Namespace/a", "x"));
        outbox.push(held(4));
        outbox.session_ended();
        assert_eq!(
            drain(&mut outbox),
            [drift("a", "Namespace/a", "x"), held(4)]
        );
    }

    #[test]
    fn depth_per_kind_is_exported() {
        let metrics = Metrics::new();
        let mut outbox = Outbox::new(metrics.clone());
        outbox.push(drift("a", "Namespace/a", "x"));
        outbox.push(drift("a", "Quota/a", "y"));
        let text = metrics.render();
        assert!(
            text.contains("mtp_agent_outbox_depth{kind=\"drift\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mtp_agent_outbox_depth{kind=\"ack\"} 0"),
            "{text}"
        );
        outbox.pop();
        assert!(
            metrics
                .render()
                .contains("mtp_agent_outbox_depth{kind=\"drift\"} 1")
        );
    }
}
