//! Cluster revisions: the counter agents follow, its bump inside a change's
//! transaction, and the PostgreSQL NOTIFY that announces each bump to every
//! replica. This module writes the notification payload and is the only one
//! that reads it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{Postgres, Transaction};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::{Result, Store};

/// The PostgreSQL notification channel carrying `<cluster id>:<revision>`
/// whenever a cluster's revision moves.
const REVISION_CHANNEL: &str = "mtp_cluster_revision";

/// How many notices a slow session may fall behind before it is told it
/// lagged (it then catches up from what it last sent).
const NOTICE_BACKLOG: usize = 1024;

/// A revision change of one cluster, as announced by PostgreSQL NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionNotice {
    pub cluster_id: Uuid,
    pub revision: i64,
}

impl RevisionNotice {
    fn payload(&self) -> String {
        format!("{}:{}", self.cluster_id, self.revision)
    }

    fn parse(payload: &str) -> Option<Self> {
        let (cluster, revision) = payload.split_once(':')?;
        Some(RevisionNotice {
            cluster_id: cluster.parse().ok()?,
            revision: revision.parse().ok()?,
        })
    }
}

/// Bumps a cluster's revision and returns the new value. Takes the cluster row
/// lock, so revisions of one cluster are handed out in commit order.
/// Also queues a notification, delivered to every replica's listener when the
/// transaction commits (and never if it rolls back), so agents connected to
/// any replica hear about the change.
pub(crate) async fn bump_cluster_revision(
    tx: &mut Transaction<'_, Postgres>,
    cluster_id: Uuid,
) -> Result<i64> {
    let revision: i64 = sqlx::query_scalar(
        "UPDATE clusters SET revision = revision + 1 WHERE id = $1 RETURNING revision",
    )
    .bind(cluster_id)
    .fetch_one(&mut **tx)
    .await?;
    notify(
        tx,
        RevisionNotice {
            cluster_id,
            revision,
        },
    )
    .await?;
    Ok(revision)
}

/// Queues the notice of a revision set by other means (re-issuing), sent on commit.
pub(crate) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    notice: RevisionNotice,
) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVISION_CHANNEL)
        .bind(notice.payload())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A live feed of every cluster's revision notices, whichever replica
/// committed the change. Cheap to clone; the listener stops when the last
/// clone is dropped. A gap (while the listener reconnects) only delays:
/// sessions also compare revisions on every keepalive.
#[derive(Clone, Debug)]
pub struct RevisionNotices {
    sender: broadcast::Sender<RevisionNotice>,
    _listener: Arc<AbortOnDrop>,
}

impl RevisionNotices {
    /// Notices committed after this call (and after the listener is up).
    pub fn subscribe(&self) -> broadcast::Receiver<RevisionNotice> {
        self.sender.subscribe()
    }
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Store {
    /// Starts listening for revision notices. Returns once the first attempt
    /// to listen is done, so a change committed after this returns is heard
    /// unless that attempt failed (it is then retried with backoff, logged).
    pub async fn revision_notices(&self) -> RevisionNotices {
        let (sender, _) = broadcast::channel(NOTICE_BACKLOG);
        let first = self.listen().await;
        let store = self.clone();
        let relay = sender.clone();
        let task = tokio::spawn(
            async move { store.relay_notices(first, relay).await }
                .instrument(tracing::info_span!("revision_notices")),
        );
        RevisionNotices {
            sender,
            _listener: Arc::new(AbortOnDrop(task)),
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(REVISION_CHANNEL).await?;
        Ok(listener)
    }

    /// Forwards notifications until aborted or the store is closed;
    /// reconnects with backoff.
    async fn relay_notices(
        &self,
        mut attempt: Result<PgListener, sqlx::Error>,
        notices: broadcast::Sender<RevisionNotice>,
    ) {
        const FIRST_RETRY: Duration = Duration::from_millis(200);
        let mut backoff = FIRST_RETRY;
        loop {
            if self.pool.is_closed() {
                return;
            }
            let mut listener = match attempt {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for revision notifications");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    attempt = self.listen().await;
                    continue;
                }
            };
            backoff = FIRST_RETRY;
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match RevisionNotice::parse(n.payload()) {
                        // No receiver (no session on this replica) is fine.
                        Some(notice) => drop(notices.send(notice)),
                        None => tracing::warn!(
                            payload = n.payload(),
                            "ignoring a malformed revision notice"
                        ),
                    },
                    Ok(None) => {
                        tracing::warn!("notification connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; reconnecting");
                        break;
                    }
                }
            }
            attempt = self.listen().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_ignored() {
        let notice = RevisionNotice {
            cluster_id: Uuid::new_v4(),
            revision: 42,
        };
        assert_eq!(RevisionNotice::parse(&notice.payload()), Some(notice));
        assert_eq!(RevisionNotice::parse("junk"), None);
        assert_eq!(
            RevisionNotice::parse(&format!("{}:x", notice.cluster_id)),
            None
        );
    }
}
