//! What this agent has applied, what it still owes the control plane and
//! which reported deletions wait for confirmation: the acknowledgement
//! ledger. Pure bookkeeping, no I/O; the reconciler sends what it returns.

use std::collections::BTreeMap;

use crate::report::{Ack, Results};

/// Acknowledgements carrying deletions that wait for confirmation, at most.
pub const MAX_UNCONFIRMED_ACKS: usize = 1_000;

#[derive(Debug, Default)]
pub struct Ledger {
    /// The revision this agent has completely applied (what it may acknowledge).
    applied_revision: i64,
    /// Number of the last acknowledgement made.
    sequence: u64,
    /// Namespaces reported Deleted, by the acknowledgement that carried them
    /// (with its revision), until the control plane confirms it recorded
    /// that acknowledgement.
    unconfirmed_deletions: BTreeMap<u64, (i64, Vec<String>)>,
    /// Results of passes that could not be acknowledged (namespaces were
    /// withheld), owed to the control plane with the next acknowledgement.
    owed: Results,
}

impl Ledger {
    /// The revision this agent may acknowledge; 0 while it has applied none.
    pub fn applied_revision(&self) -> i64 {
        self.applied_revision
    }

    /// Nothing applied counts any more: the role was lost, or the control
    /// plane's history went back (a restored database) and a revision it has
    /// not issued must never be acknowledged.
    pub fn forget_applied(&mut self) {
        self.applied_revision = 0;
    }

    /// A pass over `revision` finished completely: the revision is applied
    /// and acknowledged together with whatever earlier passes owed.
    pub fn complete(&mut self, revision: i64, results: Results) -> Option<Ack> {
        self.applied_revision = revision;
        let owed = std::mem::take(&mut self.owed);
        self.acknowledge(combine(owed, results))
    }

    /// A pass finished but its revision may not be acknowledged yet: its
    /// results go out with the next acknowledgement.
    pub fn owe(&mut self, results: Results) {
        self.owed = combine(std::mem::take(&mut self.owed), results);
    }

    /// "Everything up to the applied revision is applied", with results;
    /// `None` while no revision is applied (never acknowledge ahead of the work).
    pub fn acknowledge(&mut self, results: Results) -> Option<Ack> {
        if self.applied_revision == 0 {
            return None;
        }
        self.sequence += 1;
        let ack = Ack {
            revision: self.applied_revision,
            sequence: self.sequence,
            results,
        };
        let deletions = ack.deletions();
        if !deletions.is_empty() {
            self.unconfirmed_deletions
                .insert(ack.sequence, (ack.revision, deletions));
            // A control plane that never confirms must not grow this forever:
            // what falls off stays a tombstone and is reported next session.
            while self.unconfirmed_deletions.len() > MAX_UNCONFIRMED_ACKS {
                self.unconfirmed_deletions.pop_first();
            }
        }
        Some(ack)
    }

    /// The control plane recorded acknowledgement `sequence`: the deletions
    /// it carried (with its revision), if any were waiting.
    pub fn recorded(&mut self, sequence: u64) -> Option<(i64, Vec<String>)> {
        self.unconfirmed_deletions.remove(&sequence)
    }

    /// A new session: acks of an earlier one that were never confirmed are
    /// forgotten; their deletions are still tombstones and are reported again.
    pub fn new_session(&mut self) {
        self.unconfirmed_deletions.clear();
    }
}

/// Per-namespace results of two passes, the later one winning.
pub fn combine(earlier: Results, later: Results) -> Results {
    let mut by_namespace = BTreeMap::new();
    for (ns, r) in earlier.into_iter().chain(later) {
        by_namespace.insert(ns, r);
    }
    by_namespace.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::NamespaceReport::{Deleted, Failed, Verified};

    fn r(
        ns: &str,
        report: crate::report::NamespaceReport,
    ) -> (String, crate::report::NamespaceReport) {
        (ns.to_string(), report)
    }

    #[test]
    fn owed_results_go_out_with_the_next_acknowledgement_the_later_winning() {
        let earlier = vec![r("a", Verified), r("b", Failed("quota refused".into()))];
        let later = vec![r("b", Verified), r("c", Deleted)];
        assert_eq!(
            combine(earlier, later),
            [r("a", Verified), r("b", Verified), r("c", Deleted)]
        );
        assert!(combine(Vec::new(), Vec::new()).is_empty());

        let mut ledger = Ledger::default();
        ledger.owe(vec![r("a", Failed("x".into()))]);
        ledger.owe(vec![r("a", Verified), r("b", Verified)]);
        let ack = ledger.complete(4, vec![r("c", Verified)]).unwrap();
        assert_eq!(ack.revision, 4);
        assert_eq!(
            ack.results,
            [r("a", Verified), r("b", Verified), r("c", Verified)]
        );
        let next = ledger.complete(5, Vec::new()).unwrap();
        assert!(next.results.is_empty(), "owed results are paid once");
    }

    #[test]
    fn nothing_is_acknowledged_before_a_revision_is_applied() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.applied_revision(), 0);
        assert_eq!(ledger.acknowledge(vec![r("a", Verified)]), None);
        let ack = ledger.complete(3, Vec::new()).unwrap();
        assert_eq!((ack.revision, ack.sequence), (3, 1));
        assert_eq!(ledger.acknowledge(Vec::new()).map(|a| a.revision), Some(3));
        ledger.forget_applied();
        assert_eq!(ledger.acknowledge(vec![r("a", Verified)]), None);
        // The sequence goes on across the gap: the control plane confirms by it.
        assert_eq!(ledger.complete(4, Vec::new()).map(|a| a.sequence), Some(3));
    }

    #[test]
    fn deletions_wait_for_the_confirmation_of_their_own_acknowledgement() {
        let mut ledger = Ledger::default();
        let first = ledger
            .complete(7, vec![r("gone", Deleted), r("kept", Verified)])
            .unwrap();
        let second = ledger.acknowledge(vec![r("kept", Verified)]).unwrap();
        assert_eq!(
            ledger.recorded(second.sequence),
            None,
            "it carried no deletion"
        );
        assert_eq!(
            ledger.recorded(first.sequence),
            Some((7, vec!["gone".to_string()]))
        );
        assert_eq!(ledger.recorded(first.sequence), None, "confirmed once");

        let third = ledger.acknowledge(vec![r("again", Deleted)]).unwrap();
        ledger.new_session();
        assert_eq!(
            ledger.recorded(third.sequence),
            None,
            "a new session reports it again"
        );
    }

    #[test]
    fn unconfirmed_deletions_are_bounded_oldest_first() {
        let mut ledger = Ledger::default();
        ledger.complete(1, Vec::new());
        let first = ledger.acknowledge(vec![r("n0", Deleted)]).unwrap();
        for i in 1..=MAX_UNCONFIRMED_ACKS {
            ledger.acknowledge(vec![r(&format!("n{i}"), Deleted)]);
        }
        assert_eq!(ledger.unconfirmed_deletions.len(), MAX_UNCONFIRMED_ACKS);
        assert_eq!(ledger.recorded(first.sequence), None, "the oldest fell off");
        assert!(ledger.recorded(first.sequence + 1).is_some());
    }
}
