//! Who speaks for a cluster, decided in PostgreSQL: each agent's one live
//! session (a newer one replaces it on every replica), and each cluster's
//! applier, fenced by an epoch that only grows. Reports that change state
//! check the fence first in their own transaction.

use std::time::Duration;

use mtp_core::agents::AgentIdentity;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::revisions::{self, AgentNotice};
use crate::{ChangeContext, Result, Store, audit};

/// Whether a session is still its agent's live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStanding {
    Live,
    /// A newer session of the agent took over.
    Replaced,
    /// The agent was revoked (or its row is gone).
    Revoked,
}

/// The answer to an agent's candidacy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplierDecision {
    /// This agent is the applier at `epoch` (a new epoch for every grant).
    Granted { epoch: i64 },
    /// Another agent, alive, holds the fence.
    Held { by: String },
}

/// Whether `agent` is its cluster's applier at `epoch` (and not revoked).
/// Takes a share lock on the fence, first in the caller's transaction: a
/// grant to another agent waits until this report is recorded, and the
/// report is never recorded after such a grant.
pub(crate) async fn fenced(
    tx: &mut Transaction<'_, Postgres>,
    agent: &AgentIdentity,
    epoch: i64,
) -> Result<bool> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM cluster_appliers f JOIN agents a ON a.id = f.agent_id
         WHERE f.cluster_id = $1 AND f.agent_id = $2 AND f.epoch = $3 AND a.revoke_time IS NULL
         FOR SHARE OF f",
    )
    .bind(agent.cluster_id)
    .bind(&agent.agent_id)
    .bind(epoch)
    .fetch_optional(&mut **tx)
    .await?;
    if held.is_none() {
        tracing::warn!(cluster = %agent.cluster, agent = %agent.agent_id, epoch, "report from an agent that is not the fenced applier at this epoch; ignored");
    }
    Ok(held.is_some())
}

impl Store {
    /// Makes `session` the agent's one live session and tells every replica
    /// (their sessions of this agent end). False if the agent is revoked.
    pub async fn claim_session(
        &self,
        agent: &AgentIdentity,
        session: Uuid,
        version: &str,
    ) -> Result<bool> {
        self.timed("claim_session", async {
            let mut tx = self.begin().await?;
            // Lock order: the cluster's fence row, then agent rows, as
            // claim_applier and end_session (release) take them. Taking the
            // agent row first deadlocked against the end of this agent's
            // previous session, which PostgreSQL broke by failing one of
            // them (an Internal error for the new session).
            sqlx::query("SELECT 1 FROM cluster_appliers WHERE cluster_id = $1 FOR UPDATE")
                .bind(agent.cluster_id)
                .execute(&mut *tx)
                .await?;
            let claimed = sqlx::query(
                "UPDATE agents SET session_id = $2, connected = TRUE, applier = FALSE,
                        last_seen_time = now(), agent_version = $3
                 WHERE id = $1 AND revoke_time IS NULL",
            )
            .bind(&agent.agent_id)
            .bind(session)
            .bind(version)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if claimed {
                // A grant held by an earlier session of this agent goes with
                // it (the epoch stays; a candidacy of this session claims
                // above it). Otherwise an agent that comes back without the
                // Lease would keep the fence from the one that has it.
                sqlx::query("UPDATE cluster_appliers SET agent_id = NULL WHERE agent_id = $1")
                    .bind(&agent.agent_id)
                    .execute(&mut *tx)
                    .await?;
                let notice = AgentNotice::Session {
                    agent_id: agent.agent_id.clone(),
                    session,
                };
                revisions::notify_agent(&mut tx, &notice).await?;
            }
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    /// A beat of a live session: records the agent as seen, or says why the
    /// session is over (the fallback for a missed notice).
    pub async fn touch_session(
        &self,
        agent: &AgentIdentity,
        session: Uuid,
    ) -> Result<SessionStanding> {
        self.timed("touch_session", async {
            let standing: Option<(bool, bool)> = sqlx::query_as(
                "WITH beat AS (
                     UPDATE agents SET last_seen_time = now(), connected = TRUE
                     WHERE id = $1 AND session_id = $2 AND revoke_time IS NULL
                     RETURNING id)
                 SELECT revoke_time IS NOT NULL, EXISTS (SELECT 1 FROM beat)
                 FROM agents WHERE id = $1",
            )
            .bind(&agent.agent_id)
            .bind(session)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match standing {
                None | Some((true, _)) => SessionStanding::Revoked,
                Some((false, true)) => SessionStanding::Live,
                Some((false, false)) => SessionStanding::Replaced,
            })
        })
        .await
    }

    /// The session ended: the agent is disconnected (unless a newer session
    /// took over) and lets go of the applier fence it held at `epoch`.
    pub async fn end_session(
        &self,
        agent: &AgentIdentity,
        session: Uuid,
        epoch: Option<i64>,
    ) -> Result<()> {
        self.timed("end_session", async {
            let mut tx = self.begin().await?;
            if let Some(epoch) = epoch {
                release(&mut tx, agent, epoch).await?;
            }
            sqlx::query(
                "UPDATE agents SET connected = FALSE, applier = FALSE, last_seen_time = now()
                 WHERE id = $1 AND session_id = $2",
            )
            .bind(&agent.agent_id)
            .bind(session)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// An agent's candidacy (it holds its cluster's Lease): granted with a
    /// new epoch when nobody holds the fence, when this agent held it (a new
    /// session fences its old one out), or when the holder is revoked,
    /// disconnected or silent for `stale_after`. Audited when granted.
    pub async fn claim_applier(
        &self,
        agent: &AgentIdentity,
        session: Uuid,
        stale_after: Duration,
    ) -> Result<ApplierDecision> {
        self.timed("claim_applier", async {
            let mut tx = self.begin().await?;
            // Only the agent's live session may be fenced in: a replaced one
            // (its notice not heard yet) must not take the grant back.
            let live: bool = sqlx::query_scalar(
                "SELECT COALESCE(bool_or(session_id = $2 AND revoke_time IS NULL), FALSE) FROM agents WHERE id = $1",
            )
            .bind(&agent.agent_id)
            .bind(session)
            .fetch_one(&mut *tx)
            .await?;
            if !live {
                tx.rollback().await?;
                return Ok(ApplierDecision::Held {
                    by: "a newer session of this agent".into(),
                });
            }
            sqlx::query(
                "INSERT INTO cluster_appliers (cluster_id, agent_id, epoch, grant_time)
                 VALUES ($1, NULL, 0, now()) ON CONFLICT (cluster_id) DO NOTHING",
            )
            .bind(agent.cluster_id)
            .execute(&mut *tx)
            .await?;
            let (holder, epoch): (Option<String>, i64) = sqlx::query_as(
                "SELECT agent_id, epoch FROM cluster_appliers WHERE cluster_id = $1 FOR UPDATE",
            )
            .bind(agent.cluster_id)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(holder) = holder.as_ref().filter(|h| **h != agent.agent_id) {
                let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
                let alive: bool = sqlx::query_scalar(
                    "SELECT COALESCE(bool_or(revoke_time IS NULL AND connected
                              AND last_seen_time > now() - make_interval(secs => $2::float8 / 1000)), FALSE)
                     FROM agents WHERE id = $1",
                )
                .bind(holder)
                .bind(stale_ms as f64)
                .fetch_one(&mut *tx)
                .await?;
                if alive {
                    tx.rollback().await?;
                    return Ok(ApplierDecision::Held { by: holder.clone() });
                }
            }
            let next = epoch
                .checked_add(1)
                .ok_or_else(|| crate::Error::Corrupt("applier epoch out of range".into()))?;
            sqlx::query(
                "UPDATE cluster_appliers SET agent_id = $2, epoch = $3, grant_time = now() WHERE cluster_id = $1",
            )
            .bind(agent.cluster_id)
            .bind(&agent.agent_id)
            .bind(next)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE agents SET applier = (id = $2) WHERE cluster_id = $1")
                .bind(agent.cluster_id)
                .bind(&agent.agent_id)
                .execute(&mut *tx)
                .await?;
            audit::append(
                &mut tx,
                &ChangeContext::system("applier-fence"),
                "cluster.applier_granted",
                format!("cluster/{}", agent.cluster),
                None,
                json!({
                    "agent": agent.agent_id,
                    "node": agent.node_name,
                    "epoch": next,
                    "previous": holder,
                }),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cluster = %agent.cluster, agent = %agent.agent_id, epoch = next, previous = ?holder, "applier fenced in");
            Ok(ApplierDecision::Granted { epoch: next })
        })
        .await
    }

    /// The applier withdrew (it lost its Lease): the fence is free.
    pub async fn release_applier(&self, agent: &AgentIdentity, epoch: i64) -> Result<()> {
        self.timed("release_applier", async {
            let mut tx = self.begin().await?;
            release(&mut tx, agent, epoch).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

async fn release(
    tx: &mut Transaction<'_, Postgres>,
    agent: &AgentIdentity,
    epoch: i64,
) -> Result<()> {
    // The epoch stays: the next grant moves above it.
    let released = sqlx::query(
        "UPDATE cluster_appliers SET agent_id = NULL
         WHERE cluster_id = $1 AND agent_id = $2 AND epoch = $3",
    )
    .bind(agent.cluster_id)
    .bind(&agent.agent_id)
    .bind(epoch)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if released > 0 {
        sqlx::query("UPDATE agents SET applier = FALSE WHERE id = $1")
            .bind(&agent.agent_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
