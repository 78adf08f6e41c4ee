//! The desired state of this agent's cluster as received from the control
//! plane: folding snapshots and changes into it, and keeping it on disk so
//! that a restarted agent enforces it at once and resumes from its revision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mtp_proto::v1::{DesiredChanges, DesiredSnapshot, NamespaceConfig};
use prost::Message;

/// Namespace name → its configuration, at one cluster revision. (The
/// control plane's store has its own `DesiredState`: a snapshot or changes
/// on their way out; this is what the agent holds.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredNamespaces {
    pub revision: i64,
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// The whole desired state of the cluster at `revision`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub namespaces: Vec<NamespaceConfig>,
}

/// What changed between `from_revision` and `revision`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub from_revision: i64,
    pub revision: i64,
    pub upserts: Vec<NamespaceConfig>,
    pub deletes: Vec<String>,
}

impl From<DesiredSnapshot> for Snapshot {
    fn from(s: DesiredSnapshot) -> Self {
        Snapshot {
            revision: s.revision,
            namespaces: s.namespaces,
        }
    }
}

impl From<DesiredChanges> for Changes {
    fn from(c: DesiredChanges) -> Self {
        Changes {
            from_revision: c.from_revision,
            revision: c.revision,
            upserts: c.upserts,
            deletes: c.deletes,
        }
    }
}

/// What an update changed: namespaces to (re)apply and namespaces to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub upserts: BTreeSet<String>,
    /// Deletions the control plane asked for (a change set's `deletes`):
    /// carried out as asked.
    pub removals: BTreeSet<String>,
    /// A snapshot replaced everything: managed namespaces that are not
    /// desired must be pruned, even ones this agent never heard of.
    pub full: bool,
    /// Namespaces the stored state had and a snapshot no longer lists. Not
    /// removals: they are pruned (under the prune guard), and reported
    /// deleted if they are already gone.
    pub dropped: BTreeSet<String>,
}

/// Why an update could not be folded in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("changes start at revision {from} but this agent is at {have}")]
    Gap { from: i64, have: i64 },
}

impl DesiredNamespaces {
    /// Replaces the state with a snapshot.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Delta {
        let new: BTreeMap<String, NamespaceConfig> = snapshot
            .namespaces
            .into_iter()
            .map(|n| (n.namespace.clone(), n))
            .collect();
        let dropped = self
            .namespaces
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        let upserts = new.keys().cloned().collect();
        self.namespaces = new;
        self.revision = snapshot.revision;
        Delta {
            upserts,
            removals: BTreeSet::new(),
            full: true,
            dropped,
        }
    }

    /// Folds in the changes after `from_revision`. Changes that do not start
    /// where this state is would leave a hole, so they are refused (the
    /// session then asks for a snapshot).
    pub fn apply_changes(&mut self, changes: Changes) -> Result<Delta, UpdateError> {
        if changes.from_revision != self.revision {
            return Err(UpdateError::Gap {
                from: changes.from_revision,
                have: self.revision,
            });
        }
        let mut delta = Delta::default();
        for name in changes.deletes {
            self.namespaces.remove(&name);
            delta.upserts.remove(&name);
            delta.removals.insert(name);
        }
        for config in changes.upserts {
            delta.removals.remove(&config.namespace);
            delta.upserts.insert(config.namespace.clone());
            self.namespaces.insert(config.namespace.clone(), config);
        }
        self.revision = changes.revision;
        Ok(delta)
    }

    pub fn to_snapshot(&self) -> DesiredSnapshot {
        DesiredSnapshot {
            revision: self.revision,
            namespaces: self.namespaces.values().cloned().collect(),
            ..Default::default()
        }
    }
}

/// The agent's state directory: its identity (see `crate::identity`), the
/// last desired state and the tombstones.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const DESIRED_FILE: &str = "desired.pb";
const TOMBSTONES_FILE: &str = "tombstones";

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(StateDir { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The last desired state received, or an empty one.
    pub fn desired(&self) -> std::io::Result<DesiredNamespaces> {
        let bytes = match std::fs::read(self.root.join(DESIRED_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DesiredNamespaces::default());
            }
            Err(e) => return Err(e),
        };
        let snapshot = DesiredSnapshot::decode(bytes.as_slice())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut state = DesiredNamespaces::default();
        state.apply_snapshot(snapshot.into());
        Ok(state)
    }

    pub fn save_desired(&self, state: &DesiredNamespaces) -> std::io::Result<()> {
        self.write_atomically(DESIRED_FILE, &state.to_snapshot().encode_to_vec(), false)
    }

    /// Namespaces removed from the desired state whose deletion has not yet
    /// been confirmed to the control plane, with the revision that removed
    /// them (one `name revision` per line).
    pub fn tombstones(&self) -> std::io::Result<BTreeMap<String, i64>> {
        match std::fs::read_to_string(self.root.join(TOMBSTONES_FILE)) {
            Ok(text) => Ok(parse_tombstones(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    pub fn save_tombstones(&self, tombstones: &BTreeMap<String, i64>) -> std::io::Result<()> {
        let text: String = tombstones
            .iter()
            .map(|(name, revision)| format!("{name} {revision}\n"))
            .collect();
        self.write_atomically(TOMBSTONES_FILE, text.as_bytes(), false)
    }

    /// Write to a temporary file, fsync, rename: a crash leaves the old or
    /// the new file, never half of one.
    pub(crate) fn write_atomically(
        &self,
        name: &str,
        bytes: &[u8],
        secret: bool,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.root.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.root.join(name))
    }
}

/// Reads the tombstones file; a line without a revision (or with a bad one)
/// counts as removed at revision 0: any acknowledgement may report it.
fn parse_tombstones(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let revision = words.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            Some((name.to_string(), revision))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, revision: i64) -> NamespaceConfig {
        NamespaceConfig {
            namespace: name.into(),
            tenant: "t".into(),
            environment: name.into(),
            revision,
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_replaces_and_reports_removals() {
        let mut s = DesiredNamespaces::default();
        s.apply_snapshot(Snapshot {
            revision: 2,
            namespaces: vec![ns("a", 1), ns("b", 2)],
        });
        let d = s.apply_snapshot(Snapshot {
            revision: 5,
            namespaces: vec![ns("b", 2), ns("c", 5)],
        });
        assert_eq!(s.revision, 5);
        assert!(d.full);
        assert!(d.removals.is_empty(), "a snapshot asks for no deletion");
        assert_eq!(d.dropped, BTreeSet::from(["a".to_string()]));
        assert_eq!(
            d.upserts,
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn changes_must_continue_from_the_current_revision() {
        let mut s = DesiredNamespaces::default();
        s.apply_snapshot(Snapshot {
            revision: 2,
            namespaces: vec![ns("a", 1)],
        });
        let gap = s.apply_changes(Changes {
            from_revision: 3,
            revision: 4,
            upserts: vec![ns("b", 4)],
            deletes: vec![],
        });
        assert_eq!(gap, Err(UpdateError::Gap { from: 3, have: 2 }));
        assert_eq!(s.revision, 2, "a refused update changes nothing");
        let d = s
            .apply_changes(Changes {
                from_revision: 2,
                revision: 4,
                upserts: vec![ns("b", 4)],
                deletes: vec!["a".into()],
            })
            .unwrap();
        assert_eq!(s.revision, 4);
        assert!(!d.full);
        assert_eq!(d.removals, BTreeSet::from(["a".to_string()]));
        assert_eq!(s.namespaces.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path()).unwrap();
        assert_eq!(state.desired().unwrap(), DesiredNamespaces::default());
        let mut s = DesiredNamespaces::default();
        s.apply_snapshot(Snapshot {
            revision: 9,
            namespaces: vec![ns("a", 3), ns("b", 9)],
        });
        state.save_desired(&s).unwrap();

        let reopened = StateDir::new(dir.path()).unwrap();
        assert_eq!(reopened.desired().unwrap(), s);
        std::fs::write(dir.path().join(DESIRED_FILE), b"\xff\xff garbage").unwrap();
        assert!(reopened.desired().is_err());
    }

    #[test]
    fn tombstones_survive_a_reopen_with_their_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path()).unwrap();
        assert!(state.tombstones().unwrap().is_empty());
        let tombstones = BTreeMap::from([("team-a-dev".to_string(), 7), ("team-b-qa".into(), 12)]);
        state.save_tombstones(&tombstones).unwrap();
        let reopened = StateDir::new(dir.path()).unwrap();
        assert_eq!(reopened.tombstones().unwrap(), tombstones);
        assert_eq!(
            parse_tombstones("old-format\n\nteam-c-x 3\nbad x\n"),
            BTreeMap::from([
                ("old-format".to_string(), 0),
                ("team-c-x".to_string(), 3),
                ("bad".to_string(), 0)
            ])
        );
    }
}
