//! Cluster revisions and agent events: the counter agents follow, its bump
//! inside a change's transaction, and the PostgreSQL NOTIFYs that announce
//! each bump, and each agent session replaced or agent revoked, to every
//! replica. This module writes the notification payloads and is the only one
//! that reads them.

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

/// The channel carrying `<agent id>:<session id>` when an agent's live
/// session changes (a newer one replaces it) and `<agent id>:revoked` when it
/// is revoked: sessions of that agent on every replica end.
const AGENT_CHANNEL: &str = "mtp_agent_session";

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

/// What happened to an agent that its open sessions must hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNotice {
    /// `session` is now the agent's one live session; any other ends.
    Session { agent_id: String, session: Uuid },
    /// The agent was revoked: every session of it ends.
    Revoked { agent_id: String },
}

impl AgentNotice {
    pub fn agent_id(&self) -> &str {
        match self {
            AgentNotice::Session { agent_id, .. } | AgentNotice::Revoked { agent_id } => agent_id,
        }
    }

    fn payload(&self) -> String {
        match self {
            AgentNotice::Session { agent_id, session } => format!("{agent_id}:{session}"),
            AgentNotice::Revoked { agent_id } => format!("{agent_id}:revoked"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        let (agent, what) = payload.rsplit_once(':')?;
        if agent.is_empty() {
            return None;
        }
        let agent_id = agent.to_owned();
        if what == "revoked" {
            return Some(AgentNotice::Revoked { agent_id });
        }
        Some(AgentNotice::Session {
            agent_id,
            session: what.parse().ok()?,
        })
    }
}

/// Queues an agent notice, sent on commit.
pub(crate) async fn notify_agent(
    tx: &mut Transaction<'_, Postgres>,
    notice: &AgentNotice,
) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(AGENT_CHANNEL)
        .bind(notice.payload())
        .execute(&mut **tx)
        .await?;
    Ok(())
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
    agents: broadcast::Sender<AgentNotice>,
    _listener: Arc<AbortOnDrop>,
}

impl RevisionNotices {
    /// Notices committed after this call (and after the listener is up).
    pub fn subscribe(&self) -> broadcast::Receiver<RevisionNotice> {
        self.sender.subscribe()
    }

    /// Agent notices (session replaced, agent revoked) committed after this call.
    pub fn subscribe_agents(&self) -> broadcast::Receiver<AgentNotice> {
        self.agents.subscribe()
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
        let (agents, _) = broadcast::channel(NOTICE_BACKLOG);
        let first = self.listen().await;
        let store = self.clone();
        let relay = Relay {
            revisions: sender.clone(),
            agents: agents.clone(),
        };
        let task = tokio::spawn(
            async move { store.relay_notices(first, relay).await }
                .instrument(tracing::info_span!("revision_notices")),
        );
        RevisionNotices {
            sender,
            agents,
            _listener: Arc::new(AbortOnDrop(task)),
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([REVISION_CHANNEL, AGENT_CHANNEL])
            .await?;
        Ok(listener)
    }

    /// Forwards notifications until aborted or the store is closed;
    /// reconnects with backoff.
    async fn relay_notices(&self, mut attempt: Result<PgListener, sqlx::Error>, notices: Relay) {
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
                    Ok(Some(n)) => notices.forward(n.channel(), n.payload()),
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

/// Where the listener forwards what it hears, by channel.
struct Relay {
    revisions: broadcast::Sender<RevisionNotice>,
    agents: broadcast::Sender<AgentNotice>,
}

impl Relay {
    fn forward(&self, channel: &str, payload: &str) {
        // No receiver (no session on this replica) is fine.
        let sent = match channel {
            REVISION_CHANNEL => {
                RevisionNotice::parse(payload).map(|n| drop(self.revisions.send(n)))
            }
            AGENT_CHANNEL => AgentNotice::parse(payload).map(|n| drop(self.agents.send(n))),
            _ => None,
        };
        if sent.is_none() {
            tracing::warn!(channel, payload, "ignoring a malformed notice");
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
        let session = AgentNotice::Session {
            agent_id: "mtpagent_0123".into(),
            session: Uuid::new_v4(),
        };
        assert_eq!(AgentNotice::parse(&session.payload()), Some(session));
        let revoked = AgentNotice::Revoked {
            agent_id: "mtpagent_0123".into(),
        };
        assert_eq!(AgentNotice::parse(&revoked.payload()), Some(revoked));
        assert_eq!(AgentNotice::parse(":revoked"), None);
        assert_eq!(AgentNotice::parse("a:not-a-uuid"), None);
    }
}
