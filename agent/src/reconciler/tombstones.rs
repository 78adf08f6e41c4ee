//! Namespaces removed from the desired state that the control plane has not
//! yet confirmed deleted: the tombstones (kept on disk, bounded) and which of
//! them this process saw gone, the only deletions it may report.

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::StateDir;

/// Deletions remembered for re-reporting, at most.
pub const MAX_TOMBSTONES: usize = 10_000;

pub struct Tombstones {
    dir: StateDir,
    /// Namespaces removed from the desired state (or pruned), with the
    /// revision of the state that removed them, until the control plane
    /// confirms it recorded their deletion. Kept on disk. The applier works
    /// through those not yet seen gone on every retry tick.
    removed_at: BTreeMap<String, i64>,
    /// Tombstones this process, as applier, saw gone from the cluster: the
    /// only deletions it may report (again, after a reconnect).
    deleted_here: BTreeSet<String>,
}

impl Tombstones {
    /// The tombstones stored in `dir` (none if they cannot be read).
    pub fn load(dir: StateDir) -> Self {
        let removed_at = dir.tombstones().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read stored tombstones");
            BTreeMap::new()
        });
        Tombstones {
            dir,
            removed_at,
            deleted_here: BTreeSet::new(),
        }
    }

    /// Every tombstoned namespace.
    pub fn names(&self) -> BTreeSet<String> {
        self.removed_at.keys().cloned().collect()
    }

    /// Folds in an update: desired namespaces are no longer tombstones,
    /// removed ones are, at `revision`. Saved (an fsync: only when they
    /// changed) before anything is deleted.
    pub fn update<'a>(
        &mut self,
        upserts: impl IntoIterator<Item = &'a String>,
        removals: impl IntoIterator<Item = &'a String>,
        revision: i64,
    ) {
        let mut changed = false;
        for ns in upserts {
            changed |= self.removed_at.remove(ns).is_some();
            self.deleted_here.remove(ns);
        }
        for ns in removals {
            changed |= self.removed_at.insert(ns.clone(), revision) != Some(revision);
        }
        if changed {
            self.save();
        }
    }

    /// Namespaces removed from the desired state become tombstones (before
    /// anything is deleted, so a lost report is never forgotten); one that
    /// is already a tombstone keeps its revision.
    pub fn entomb(&mut self, names: &[String], revision: i64) {
        if names.is_empty() {
            return;
        }
        for ns in names {
            self.removed_at.entry(ns.clone()).or_insert(revision);
        }
        self.save();
    }

    /// This applier saw the namespace gone.
    pub fn deleted_here(&mut self, ns: &str) {
        self.deleted_here.insert(ns.to_string());
    }

    /// Whatever was under way is the next applier's business now.
    pub fn forget_deleted_here(&mut self) {
        self.deleted_here.clear();
    }

    /// Tombstones not yet seen gone by this applier: still to delete.
    pub fn pending(&self) -> Vec<String> {
        self.removed_at
            .keys()
            .filter(|ns| !self.deleted_here.contains(*ns))
            .cloned()
            .collect()
    }

    /// Tombstones seen gone by this applier whose removal the revision it
    /// acknowledges covers: what the control plane will accept as Deleted.
    pub fn reportable(&self, applied_revision: i64) -> Vec<String> {
        self.removed_at
            .iter()
            .filter(|(ns, removed_at)| {
                **removed_at <= applied_revision && self.deleted_here.contains(*ns)
            })
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// The control plane recorded these deletions as of `revision`.
    pub fn confirmed(&mut self, revision: i64, names: &[String]) {
        let before = self.removed_at.len();
        for ns in names {
            // Only a removal the acknowledged revision covers was accepted
            // (a namespace re-created and removed again since has a later one).
            if self.removed_at.get(ns).is_some_and(|at| *at <= revision) {
                self.removed_at.remove(ns);
                self.deleted_here.remove(ns);
            }
        }
        if self.removed_at.len() != before {
            self.save();
        }
    }

    fn save(&mut self) {
        // Bounded: a non-applier collects deletions it never reports. The
        // oldest go first; a pass with the control plane's state prunes
        // whatever they covered anyway.
        while self.removed_at.len() > MAX_TOMBSTONES {
            let Some(oldest) = self
                .removed_at
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(ns, _)| ns.clone())
            else {
                break;
            };
            self.removed_at.remove(&oldest);
        }
        if let Err(e) = self.dir.save_tombstones(&self.removed_at) {
            tracing::warn!(error = %e, "could not store tombstones");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tombstones_are_stored_and_only_deletions_seen_here_are_reportable() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path()).unwrap();
        let mut t = Tombstones::load(state.clone());
        t.update(&[], &names(&["a", "b"]), 5);
        t.entomb(&names(&["b", "c"]), 6);
        assert_eq!(
            Tombstones::load(state.clone()).removed_at,
            BTreeMap::from([("a".into(), 5), ("b".into(), 5), ("c".into(), 6)]),
            "stored, and an existing tombstone keeps its revision"
        );
        assert!(t.reportable(10).is_empty(), "nothing seen gone yet");
        t.deleted_here("a");
        t.deleted_here("c");
        assert_eq!(t.pending(), ["b"]);
        assert_eq!(t.reportable(5), ["a"], "c was removed after revision 5");
        t.confirmed(5, &names(&["a", "c"]));
        assert_eq!(t.names(), BTreeSet::from(["b".into(), "c".into()]));
        t.update(&names(&["c"]), &[], 7);
        assert_eq!(
            Tombstones::load(state).names(),
            BTreeSet::from(["b".into()])
        );
    }

    #[test]
    fn the_oldest_tombstones_go_first_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::load(StateDir::new(dir.path()).unwrap());
        let many: Vec<String> = (0..MAX_TOMBSTONES).map(|i| format!("n{i}")).collect();
        t.entomb(&many, 2);
        t.entomb(&names(&["old"]), 1);
        assert_eq!(t.removed_at.len(), MAX_TOMBSTONES);
        assert!(!t.removed_at.contains_key("old"));
        t.entomb(&names(&["new"]), 3);
        assert!(t.removed_at.contains_key("new"));
    }
}
