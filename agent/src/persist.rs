//! Keeps the desired state on disk off the reconciler's path: each fsync'd
//! write of it takes milliseconds that grow with the number of namespaces,
//! so a task of its own writes the newest submitted state, and a burst of
//! changes becomes one write.
//!
//! A crash can lose only the newest few states, never their order: the
//! restarted agent reports an older revision and is sent those changes
//! again, and stored state that is behind is never used to create, prune or
//! overwrite (see the reconciler). Tombstones stay synchronous (they are
//! small, change only with removals, and must be on disk before a deletion),
//! so they are never older than the desired state beside them.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::desired::{DesiredNamespaces, StateDir};

#[derive(Default)]
struct Slot {
    pending: Option<Arc<DesiredNamespaces>>,
    closed: bool,
}

/// The reconciler's handle: submits the newest state; dropping it lets the
/// writer finish what was submitted and end.
pub struct StateWriter {
    slot: Arc<Mutex<Slot>>,
    wake: Arc<Notify>,
}

impl StateWriter {
    /// The handle and the writer task to spawn beside the reconciler.
    pub fn new(dir: StateDir) -> (StateWriter, impl Future<Output = ()> + Send + 'static) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let wake = Arc::new(Notify::new());
        let task = write_loop(dir, slot.clone(), wake.clone());
        (StateWriter { slot, wake }, task)
    }

    /// Replaces whatever is waiting with this state.
    pub fn submit(&self, desired: &Arc<DesiredNamespaces>) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.pending = Some(desired.clone());
        }
        self.wake.notify_one();
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.closed = true;
        }
        self.wake.notify_one();
    }
}

async fn write_loop(dir: StateDir, slot: Arc<Mutex<Slot>>, wake: Arc<Notify>) {
    loop {
        let (pending, closed) = match slot.lock() {
            Ok(mut s) => (s.pending.take(), s.closed),
            Err(_) => return,
        };
        let Some(desired) = pending else {
            if closed {
                return;
            }
            wake.notified().await;
            continue;
        };
        let dir = dir.clone();
        // The state is dropped on the blocking thread once written, so the
        // reconciler's next change usually finds it unshared (no copy).
        let written = tokio::task::spawn_blocking(move || {
            let result = dir.save_desired(&desired);
            drop(desired);
            (result, dir)
        })
        .await;
        match written {
            Ok((Ok(()), _)) => {}
            Ok((Err(e), dir)) => {
                tracing::error!(error = %e, dir = %dir.path().display(), "could not store the desired state; a restart will need a snapshot");
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Snapshot;
    use mtp_proto::v1::NamespaceConfig;

    fn state(revision: i64, names: &[&str]) -> Arc<DesiredNamespaces> {
        let mut s = DesiredNamespaces::default();
        s.apply_snapshot(Snapshot {
            revision,
            namespaces: names
                .iter()
                .map(|n| NamespaceConfig {
                    namespace: n.to_string(),
                    ..Default::default()
                })
                .collect(),
        });
        Arc::new(s)
    }

    #[tokio::test]
    async fn the_newest_submitted_state_is_on_disk_once_the_writer_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path()).unwrap();
        let (writer, task) = StateWriter::new(dir.clone());
        let task = tokio::spawn(task);
        for revision in 1..=200 {
            let names: Vec<String> = (0..revision).map(|i| format!("ns-{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            writer.submit(&state(revision, &names));
            if revision % 50 == 25 {
                // Let the writer run mid-burst too.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        drop(writer);
        task.await.unwrap();
        let stored = dir.desired().unwrap();
        assert_eq!(stored.revision, 200);
        assert_eq!(stored.namespaces.len(), 200);
    }

    #[tokio::test]
    async fn a_writer_with_nothing_submitted_ends_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path()).unwrap();
        let (writer, task) = StateWriter::new(dir.clone());
        let task = tokio::spawn(task);
        drop(writer);
        task.await.unwrap();
        assert_eq!(dir.desired().unwrap(), DesiredNamespaces::default());
        assert!(!tmp.path().join("desired.pb").exists());
    }
}
