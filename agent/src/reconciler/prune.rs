//! The prune guard: whether a prune pass (deleting managed namespaces the
//! desired state does not list) may go ahead, or is held for an operator's
//! confirmation because it would delete too large a share. Pure: no I/O.

use std::collections::BTreeSet;

use crate::report::{PRUNE_SAMPLE, PruneHeld};

/// A held prune pass.
#[derive(Debug, Clone)]
struct Held {
    revision: i64,
    names: BTreeSet<String>,
    /// Managed namespaces when it was held.
    managed: usize,
}

#[derive(Debug)]
pub struct PruneGuard {
    /// Hold a pass that would delete more than this share of the managed
    /// namespaces (and always one that would delete all of them).
    max_share: f64,
    held: Option<Held>,
    /// Confirmed by an operator: these namespaces at this revision.
    confirmed: Option<Held>,
    /// The revision whose hold was last reported (once per held revision).
    reported: Option<i64>,
    /// The revision at which namespaces of another identity were last
    /// logged (once per revision, not on every periodic pass).
    foreign_noticed: Option<i64>,
}

/// What to do with one prune pass.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Delete these now.
    pub prune: Vec<String>,
    /// Held back (not deleted).
    pub held: usize,
    /// Tell the control plane (the first hold of its revision).
    pub report: Option<PruneHeld>,
}

/// What became of an operator's confirmation.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The hold of this revision may be carried out.
    Accepted,
    /// Nothing is held.
    NothingHeld,
    /// A newer revision was evaluated since (the hold is of this one).
    Stale { held: i64 },
}

impl PruneGuard {
    pub fn new(max_share: f64) -> PruneGuard {
        PruneGuard {
            max_share,
            held: None,
            confirmed: None,
            reported: None,
            foreign_noticed: None,
        }
    }

    /// Whether namespaces of another cluster identity seen at `revision`
    /// are worth a log line (the first time at this revision).
    pub fn first_foreign_notice(&mut self, revision: i64) -> bool {
        self.foreign_noticed.replace(revision) != Some(revision)
    }

    /// Decides a prune pass at `revision`: `candidates` are the managed
    /// namespaces nobody wants (and that are this cluster's to delete), of
    /// `managed` managed namespaces in all. With `trusted` false (the
    /// cluster identity does not match) everything is held, whatever the
    /// share. Confirmed namespaces of this revision go ahead; the rest is
    /// judged by the share.
    pub fn decide(
        &mut self,
        revision: i64,
        candidates: BTreeSet<String>,
        managed: usize,
        trusted: bool,
    ) -> Decision {
        let confirmed = self
            .confirmed
            .as_ref()
            .filter(|c| c.revision == revision)
            .map(|c| &c.names);
        let (approved, rest): (BTreeSet<String>, BTreeSet<String>) = candidates
            .into_iter()
            .partition(|ns| trusted && confirmed.is_some_and(|c| c.contains(ns)));
        if rest.is_empty() || (trusted && !self.exceeds(rest.len(), managed)) {
            self.held = None;
            return Decision {
                prune: approved.into_iter().chain(rest).collect(),
                ..Decision::default()
            };
        }
        let report = (self.reported != Some(revision)).then(|| PruneHeld {
            revision,
            would_delete: rest.len(),
            managed,
            sample: rest.iter().take(PRUNE_SAMPLE).cloned().collect(),
        });
        if report.is_some() {
            self.reported = Some(revision);
        }
        let held = rest.len();
        self.held = Some(Held {
            revision,
            names: rest,
            managed,
        });
        Decision {
            prune: approved.into_iter().collect(),
            held,
            report,
        }
    }

    /// Whether deleting `n` of `managed` namespaces is too much to do
    /// without a confirmation: more than the share, or all of them.
    fn exceeds(&self, n: usize, managed: usize) -> bool {
        n > 0 && (n >= managed || n as f64 > self.max_share * managed as f64)
    }

    /// An operator confirmed the held pass at `revision`.
    pub fn confirm(&mut self, revision: i64) -> Confirmation {
        match &self.held {
            None => Confirmation::NothingHeld,
            Some(h) if h.revision != revision => Confirmation::Stale { held: h.revision },
            Some(h) => {
                self.confirmed = Some(h.clone());
                Confirmation::Accepted
            }
        }
    }

    /// The hold as it stands, to report again to a new session.
    pub fn current(&self) -> Option<PruneHeld> {
        self.held.as_ref().map(|h| PruneHeld {
            revision: h.revision,
            would_delete: h.names.len(),
            managed: h.managed,
            sample: h.names.iter().take(PRUNE_SAMPLE).cloned().collect(),
        })
    }

    /// The revision of the held pass, if one is held.
    pub fn held_revision(&self) -> Option<i64> {
        self.held.as_ref().map(|h| h.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("ns-{i:03}")).collect()
    }

    #[test]
    fn more_than_the_share_or_everything_is_held() {
        let mut g = PruneGuard::new(0.5);
        assert_eq!(
            g.decide(3, names(5), 10, true).prune.len(),
            5,
            "exactly half goes"
        );
        let d = g.decide(3, names(6), 10, true);
        assert!(d.prune.is_empty());
        assert_eq!(d.held, 6);
        let report = d.report.expect("reported");
        assert_eq!(
            (report.revision, report.would_delete, report.managed),
            (3, 6, 10)
        );
        assert_eq!(report.sample.len(), 6);
        assert!(
            g.decide(3, names(6), 10, true).report.is_none(),
            "once per held revision"
        );
        assert!(
            g.decide(4, names(6), 10, true).report.is_some(),
            "a new revision reports"
        );
        let mut lenient = PruneGuard::new(1.0);
        assert_eq!(lenient.decide(1, names(9), 10, true).prune.len(), 9);
        assert_eq!(
            lenient.decide(1, names(1), 1, true).held,
            1,
            "never all of them"
        );
        assert!(lenient.decide(1, BTreeSet::new(), 0, true).prune.is_empty());
        assert!(lenient.held_revision().is_none(), "nothing to hold");
        let big = lenient.decide(2, names(30), 30, true).report.unwrap();
        assert_eq!(big.sample.len(), PRUNE_SAMPLE);
    }

    #[test]
    fn a_confirmation_releases_what_was_held_at_that_revision_only() {
        let mut g = PruneGuard::new(0.5);
        assert_eq!(g.confirm(3), Confirmation::NothingHeld);
        g.decide(3, names(8), 10, true);
        assert_eq!(g.confirm(2), Confirmation::Stale { held: 3 });
        assert_eq!(g.confirm(3), Confirmation::Accepted);
        let d = g.decide(3, names(8), 10, true);
        assert_eq!(d.prune.len(), 8, "confirmed");
        assert_eq!(g.held_revision(), None);
        // Namespaces that were not in the held set are judged on their own.
        let mut more = names(8);
        more.extend([
            "x-1".to_string(),
            "x-2".into(),
            "x-3".into(),
            "x-4".into(),
            "x-5".into(),
            "x-6".into(),
        ]);
        let d = g.decide(3, more.clone(), 14, true);
        assert_eq!(d.prune.len(), 14, "6 unconfirmed of 14 is less than half");
        assert_eq!(d.held, 0);
        let d = g.decide(3, more, 10, true);
        assert_eq!(
            (d.prune.len(), d.held),
            (8, 6),
            "6 unconfirmed of 10 is more"
        );
        // A newer revision re-evaluates: the confirmation was for revision 3.
        let d = g.decide(4, names(8), 10, true);
        assert!(d.prune.is_empty() && d.held == 8);
    }

    #[test]
    fn an_untrusted_identity_holds_everything_even_when_confirmed() {
        let mut g = PruneGuard::new(0.5);
        let d = g.decide(3, names(1), 10, false);
        assert!(d.prune.is_empty());
        assert_eq!(d.held, 1);
        assert!(d.report.is_some());
        assert_eq!(g.confirm(3), Confirmation::Accepted);
        assert!(g.decide(3, names(1), 10, false).prune.is_empty());
    }
}
