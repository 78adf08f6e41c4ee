//! What the reconciler knows of each namespace between passes: its last
//! outcome, the versions of its last clean read-back, when this agent last
//! wrote it, and whether stale state held its creation back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::kubernetes::Versions;
use crate::report::{NamespaceReport, Results};

#[derive(Debug, Default)]
pub struct NsState {
    /// The last outcome of applying or verifying it: `Verified` or `Failed`.
    outcome: Option<NamespaceReport>,
    /// The resourceVersions of its objects when last read back and found
    /// right: watch events at these versions are this state (most often the
    /// agent's own writes) and need no second read.
    verified_versions: Option<Versions>,
    /// When this agent last wrote it.
    last_written: Option<Instant>,
    /// Desired but missing from the cluster, and a state not (yet) confirmed
    /// by the control plane did not create it: another applier may have
    /// deleted it at a later revision. Created once the control plane
    /// confirms the state; until then the revision is not acknowledged.
    withheld: bool,
}

/// One record per namespace.
#[derive(Debug, Default)]
pub struct Namespaces {
    by_name: BTreeMap<String, NsState>,
}

impl Namespaces {
    fn entry(&mut self, ns: &str) -> &mut NsState {
        self.by_name.entry(ns.to_string()).or_default()
    }

    pub fn outcome(&self, ns: &str) -> Option<&NamespaceReport> {
        self.by_name.get(ns).and_then(|s| s.outcome.as_ref())
    }

    pub fn is_verified(&self, ns: &str) -> bool {
        self.outcome(ns) == Some(&NamespaceReport::Verified)
    }

    pub fn set_outcome(&mut self, ns: &str, outcome: NamespaceReport) {
        self.entry(ns).outcome = Some(outcome);
    }

    /// The namespace is being removed: no outcome, no versions to trust.
    pub fn forget(&mut self, ns: &str) {
        if let Some(s) = self.by_name.get_mut(ns) {
            s.outcome = None;
            s.verified_versions = None;
        }
    }

    /// Keeps the versions of a namespace's last clean read-back (forgets
    /// them after a failed one: every event is then worth a look).
    pub fn remember_versions(&mut self, ns: &str, versions: Versions) {
        self.entry(ns).verified_versions = (!versions.is_empty()).then_some(versions);
    }

    pub fn verified_versions(&self, ns: &str) -> Option<&Versions> {
        self.by_name
            .get(ns)
            .and_then(|s| s.verified_versions.as_ref())
    }

    pub fn written(&mut self, ns: &str, at: Instant) {
        self.entry(ns).last_written = Some(at);
    }

    /// Whether this agent has not written the namespace for `quiet`.
    pub fn quiet_for(&self, ns: &str, quiet: Duration) -> bool {
        self.by_name
            .get(ns)
            .and_then(|s| s.last_written)
            .is_none_or(|w| w.elapsed() >= quiet)
    }

    pub fn withhold(&mut self, ns: &str) {
        self.entry(ns).withheld = true;
    }

    pub fn withheld(&self) -> BTreeSet<String> {
        self.by_name
            .iter()
            .filter(|(_, s)| s.withheld)
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// The withheld namespaces, no longer withheld.
    pub fn take_withheld(&mut self) -> BTreeSet<String> {
        let names = self.withheld();
        for ns in &names {
            self.entry(ns).withheld = false;
        }
        names
    }

    /// Namespaces whose last apply or verification failed.
    pub fn failing(&self) -> BTreeSet<String> {
        self.by_name
            .iter()
            .filter(|(_, s)| matches!(s.outcome, Some(NamespaceReport::Failed(_))))
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// The last outcome of every namespace that has one.
    pub fn results(&self) -> Results {
        self.by_name
            .iter()
            .filter_map(|(ns, s)| s.outcome.clone().map(|o| (ns.clone(), o)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_holds_outcome_versions_and_withholding() {
        let mut n = Namespaces::default();
        n.set_outcome("a", NamespaceReport::Verified);
        n.set_outcome("b", NamespaceReport::Failed("no".into()));
        n.remember_versions("a", Versions::from([("Namespace/a".into(), "7".into())]));
        n.withhold("c");
        assert!(n.is_verified("a"));
        assert_eq!(n.failing(), BTreeSet::from(["b".into()]));
        assert_eq!(n.results().len(), 2, "a withheld namespace has no outcome");
        assert!(n.verified_versions("a").is_some());
        n.remember_versions("a", Versions::new());
        assert!(
            n.verified_versions("a").is_none(),
            "a failed read-back forgets"
        );
        assert_eq!(n.take_withheld(), BTreeSet::from(["c".into()]));
        assert!(n.withheld().is_empty());
        n.forget("b");
        assert!(n.failing().is_empty());
        assert!(n.quiet_for("a", Duration::from_secs(3600)), "never written");
        n.written("a", Instant::now());
        assert!(!n.quiet_for("a", Duration::from_secs(3600)));
    }
}
