//! The cluster identity this agent's state was applied for (kept in the
//! state directory) against the one the control plane says it serves (each
//! session's `SessionInfo`): what decides whether pruning is safe at all.

use std::io::Write;

use crate::desired::StateDir;
use crate::kubernetes::Owner;

const CLUSTER_ID_FILE: &str = "cluster-id";
/// A cluster id is a UUID; anything much longer is not one.
const MAX_CLUSTER_ID_BYTES: usize = 64;

/// How the two identities compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No session told its cluster identity yet: nothing may be deleted.
    Unknown,
    Matches,
    /// The control plane's database is not the one the state was applied
    /// for: nothing is pruned.
    Mismatch {
        stored: String,
        session: String,
    },
}

pub struct ClusterIdentity {
    dir: StateDir,
    /// The identity the stored state was applied for.
    stored: Option<String>,
    /// The identity of the current (or last) session's control plane.
    session: Option<String>,
}

impl ClusterIdentity {
    pub fn load(dir: StateDir) -> ClusterIdentity {
        let stored = read(&dir);
        ClusterIdentity {
            dir,
            stored,
            session: None,
        }
    }

    /// The identity the stored state was applied for (what the hello says).
    pub fn stored(&self) -> Option<&str> {
        self.stored.as_deref()
    }

    /// The session's identity: what namespaces are stamped with.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// A session began with the control plane's identity. With none stored
    /// (a first start, or an agent from before identities), it is adopted
    /// and stored. The file is read again first: an operator who removed it
    /// to accept a new identity need not restart the agent.
    pub fn session_started(&mut self, cluster_id: &str) -> Check {
        let cluster_id = cluster_id.trim();
        self.session = (!cluster_id.is_empty() && cluster_id.len() <= MAX_CLUSTER_ID_BYTES)
            .then(|| cluster_id.to_string());
        self.stored = read(&self.dir);
        if let (None, Some(id)) = (&self.stored, &self.session) {
            match write(&self.dir, id) {
                Ok(()) => {
                    tracing::info!(cluster_id = %id, "applying for this cluster identity from now on");
                    self.stored = Some(id.clone());
                }
                // Not adopted: without it on disk, a restart could not tell.
                Err(e) => {
                    tracing::error!(error = %e, "could not store the cluster identity; nothing will be pruned")
                }
            }
        }
        self.check()
    }

    pub fn check(&self) -> Check {
        match (&self.stored, &self.session) {
            (_, None) | (None, Some(_)) => Check::Unknown,
            (Some(stored), Some(session)) if stored == session => Check::Matches,
            (Some(stored), Some(session)) => Check::Mismatch {
                stored: stored.clone(),
                session: session.clone(),
            },
        }
    }

    /// Whose namespaces deletions may touch: this session's cluster's
    /// (unstamped ones count as the stored identity's). `None` while the
    /// session's identity is unknown: then nothing is deleted.
    pub fn owner(&self) -> Option<Owner<'_>> {
        Some(Owner {
            cluster_id: self.session.as_deref()?,
            unstamped_as: self.stored.as_deref(),
        })
    }

    /// What an operator is told when the identities differ.
    pub fn mismatch_help(&self, stored: &str, session: &str) -> String {
        format!(
            "this agent's state was applied for cluster id {stored}, but the control plane serves cluster id {session}: its database is not the one this agent applied for (restored from another installation, or the cluster re-created). Nothing is pruned, and namespaces stamped mtp.io/cluster-id={stored} are never deleted. If cluster id {session} is right, remove {} (the next session adopts it) and delete by hand whatever of cluster {stored} should go; otherwise point this agent at the right control plane",
            self.dir.path().join(CLUSTER_ID_FILE).display()
        )
    }
}

fn read(dir: &StateDir) -> Option<String> {
    match std::fs::read_to_string(dir.path().join(CLUSTER_ID_FILE)) {
        Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            // Unreadable is not "none": adopting another identity over it
            // would make pruning look safe.
            tracing::error!(error = %e, "could not read the stored cluster identity");
            Some(format!("<unreadable: {e}>"))
        }
    }
}

/// Temporary file, fsync, rename: a crash leaves the old file or the new one.
fn write(dir: &StateDir, id: &str) -> std::io::Result<()> {
    let tmp = dir.path().join(format!(".{CLUSTER_ID_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.path().join(CLUSTER_ID_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_identity_is_adopted_and_a_different_one_is_a_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path()).unwrap();
        let mut id = ClusterIdentity::load(dir.clone());
        assert_eq!(id.check(), Check::Unknown);
        assert!(
            id.owner().is_none(),
            "no deletion before a session says who"
        );
        assert_eq!(id.session_started("c-1"), Check::Matches);
        assert_eq!(
            ClusterIdentity::load(dir.clone()).stored(),
            Some("c-1"),
            "stored"
        );
        let owner = id.owner().unwrap();
        assert_eq!(owner.foreign(None), None);
        assert_eq!(owner.foreign(Some("c-1")), None);
        assert_eq!(owner.foreign(Some("c-2")).as_deref(), Some("c-2"));

        let mut restarted = ClusterIdentity::load(dir.clone());
        assert_eq!(
            restarted.session_started("c-2"),
            Check::Mismatch {
                stored: "c-1".into(),
                session: "c-2".into()
            }
        );
        let owner = restarted.owner().unwrap();
        assert_eq!(
            owner.foreign(None).as_deref(),
            Some("c-1"),
            "an unstamped namespace is the stored identity's"
        );
        assert!(restarted.mismatch_help("c-1", "c-2").contains("cluster-id"));
        // The operator removes the file: the next session adopts.
        std::fs::remove_file(tmp.path().join(CLUSTER_ID_FILE)).unwrap();
        assert_eq!(restarted.session_started("c-2"), Check::Matches);
        assert_eq!(restarted.session_started(""), Check::Unknown);
    }
}
