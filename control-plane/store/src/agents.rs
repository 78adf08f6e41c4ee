//! Agents in PostgreSQL: the desired state of a cluster at a revision
//! (snapshot or changes since), and what agents report back (acknowledged
//! revisions, per-namespace results, drift). Identities are in `identities`.

use chrono::{DateTime, Utc};
use mtp_core::agents::{Agent, AgentIdentity, DesiredUpdate, NamespaceReport, NamespaceSpec};
use mtp_core::claims::{self, AckClaim, DriftClaim, HeldPrune};
use mtp_core::environments::EnvironmentStatus;
use mtp_core::profiles::Profile;
use mtp_core::tenants::Owners;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::appliers;
use crate::environments::{self, QuotaColumns};
use crate::revisions::{self, RevisionNotice};
use crate::{ChangeContext, Error, Result, Store, audit};

/// An `agents` row joined with its cluster's name.
#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    cluster: String,
    node_name: String,
    agent_version: String,
    register_time: DateTime<Utc>,
    last_seen_time: Option<DateTime<Utc>>,
    acknowledged_revision: i64,
    applier: bool,
    connected: bool,
    certificate_expire_time: Option<DateTime<Utc>>,
    revoke_time: Option<DateTime<Utc>>,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Agent {
            id: r.id,
            cluster: r.cluster,
            node_name: r.node_name,
            agent_version: r.agent_version,
            register_time: r.register_time,
            last_seen_time: r.last_seen_time,
            acknowledged_revision: r.acknowledged_revision,
            applier: r.applier,
            connected: r.connected,
            certificate_expire_time: r.certificate_expire_time,
            revoke_time: r.revoke_time,
        }
    }
}

/// One environment of a cluster as its agents render it.
#[derive(sqlx::FromRow)]
struct SpecRow {
    namespace: String,
    tenant: String,
    environment: String,
    revision: i64,
    status: String,
    #[sqlx(flatten)]
    quota: QuotaColumns,
    profile: Json<Profile>,
    owners: Json<Owners>,
    ingress_namespace: String,
}

/// What an acknowledgement changed, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AckOutcome {
    /// Creation-to-Ready time of each environment that became Ready for the
    /// first time with this acknowledgement.
    pub first_ready: Vec<std::time::Duration>,
}

impl Store {
    /// The desired state of one cluster: a snapshot, or the changes after
    /// `since`. Read in one repeatable-read snapshot, so the revision and the
    /// rows agree: every change numbered up to `revision` is included.
    pub async fn desired_state(
        &self,
        cluster_id: Uuid,
        since: Option<i64>,
    ) -> Result<DesiredUpdate> {
        self.timed("desired_state", async {
            let mut tx = self.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            let revision: i64 = sqlx::query_scalar("SELECT revision FROM clusters WHERE id = $1")
                .bind(cluster_id)
                .fetch_one(&mut *tx)
                .await?;
            // An agent claiming a revision we never issued (e.g. the database was
            // restored from a backup) gets a snapshot, which also prunes.
            let since = since.filter(|s| *s >= 0 && *s <= revision);
            let rows: Vec<SpecRow> = sqlx::query_as(
                "SELECT e.namespace, t.name AS tenant, e.name AS environment, e.revision, e.status,
                        e.cpu_millis, e.memory_bytes, e.storage_bytes, e.pods, e.services, e.persistent_volume_claims,
                        p.spec AS profile, t.owners, c.ingress_namespace
                 FROM environments e
                 JOIN tenants t ON t.id = e.tenant_id
                 JOIN profiles p ON p.name = e.profile
                 JOIN clusters c ON c.id = e.cluster_id
                 WHERE e.cluster_id = $1
                   AND (($2::bigint IS NULL AND e.status NOT IN ('deleting', 'deleted'))
                        OR ($2::bigint IS NOT NULL AND e.revision > $2))
                 ORDER BY e.revision, e.namespace",
            )
            .bind(cluster_id)
            .bind(since)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut state = DesiredUpdate {
                since,
                revision,
                upserts: Vec::new(),
                deletes: Vec::new(),
            };
            for r in rows {
                let status = EnvironmentStatus::parse(&r.status)
                    .ok_or_else(|| Error::Corrupt(format!("unknown environment status {:?}", r.status)))?;
                if matches!(status, EnvironmentStatus::Deleting | EnvironmentStatus::Deleted) {
                    state.deletes.push(r.namespace);
                    continue;
                }
                state.upserts.push(NamespaceSpec {
                    namespace: r.namespace,
                    tenant: r.tenant,
                    environment: r.environment,
                    revision: r.revision,
                    quota: r.quota.into(),
                    profile: r.profile.0,
                    owners: r.owners.0,
                    ingress_namespace: r.ingress_namespace,
                });
            }
            Ok(state)
        })
        .await
    }

    /// Pending environments of a cluster up to `revision` are now being applied.
    pub async fn mark_applying(&self, cluster_id: Uuid, revision: i64) -> Result<()> {
        self.timed("mark_applying", async {
            sqlx::query(
                "UPDATE environments SET status = 'applying'
                 WHERE cluster_id = $1 AND status = 'pending' AND revision <= $2",
            )
            .bind(cluster_id)
            .bind(revision)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Records an acknowledgement of the applier fenced at `epoch`, with its
    /// results. `None`: the agent is not that applier (any more); nothing
    /// changed. A result only moves an environment whose latest change is
    /// covered by the acknowledged revision, so a stale ack never marks a
    /// newer change Ready. Every namespace the agent reports deleted is
    /// audited: an environment's deletion confirmed, or (its claim) a
    /// namespace it pruned that no environment here owns.
    pub async fn record_ack(
        &self,
        agent: &AgentIdentity,
        epoch: i64,
        ack: &AckClaim,
    ) -> Result<Option<AckOutcome>> {
        self.timed("record_ack", async {
            let mut outcome = AckOutcome::default();
            let mut tx = self.begin().await?;
            if !appliers::fenced(&mut tx, agent, epoch).await? {
                tx.rollback().await?;
                return Ok(None);
            }
            sqlx::query(
                "UPDATE agents SET acknowledged_revision = GREATEST(acknowledged_revision, $2), last_seen_time = now()
                 WHERE id = $1",
            )
            .bind(&agent.agent_id)
            .bind(ack.revision)
            .execute(&mut *tx)
            .await?;
            let mut audits = Vec::new();
            for (namespace, report) in &ack.results {
                if let Some(after) =
                    record_result(&mut tx, agent, ack.revision, namespace, report, &mut audits).await?
                {
                    outcome.first_ready.push(after);
                }
            }
            // The audit chain head is locked last, after every environment
            // row this ack touches: taking it in between would wait on it
            // while holding rows that a deletion (environment row, cluster
            // row, then the head) may be waiting for.
            append_audits(&mut tx, agent, ack.revision, audits).await?;
            tx.commit().await?;
            Ok(Some(outcome))
        })
        .await
    }

    /// Records a drift the fenced applier reports, in the audit log, as its
    /// claim. False: not that applier; nothing written.
    pub async fn record_drift(
        &self,
        agent: &AgentIdentity,
        epoch: i64,
        drift: &DriftClaim,
    ) -> Result<bool> {
        self.timed("record_drift", async {
            let mut tx = self.begin().await?;
            if !appliers::fenced(&mut tx, agent, epoch).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            let env: Option<(String, String)> = sqlx::query_as(
                "SELECT t.name, e.name FROM environments e JOIN tenants t ON t.id = e.tenant_id
                 WHERE e.cluster_id = $1 AND e.namespace = $2 AND e.status <> 'deleted'",
            )
            .bind(agent.cluster_id)
            .bind(&drift.namespace)
            .fetch_optional(&mut *tx)
            .await?;
            let (tenant, target) = match &env {
                Some((t, e)) => (Some(t.as_str()), format!("environment/{t}/{e}")),
                None => (
                    None,
                    format!("namespace/{}/{}", agent.cluster, drift.namespace),
                ),
            };
            audit::append(
                &mut tx,
                &agent_context(agent),
                "environment.drift_repaired",
                target,
                tenant,
                json!({
                    "namespace": drift.namespace,
                    "object": drift.object,
                    "description": drift.description,
                    "repaired": drift.repaired,
                    "node": agent.node_name,
                    "reported_by": "agent",
                }),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// The fenced applier holds a revision (or found a namespace stamped
    /// with one) above the cluster's: this database was restored from a
    /// backup, and the revisions it would issue next were already used, for
    /// other content. Every live environment is re-issued above `claimed`,
    /// so that stored state and stamps can never be mistaken for the new
    /// history. Bounded (see `claims::reissue_above`: a claim too far ahead
    /// is refused), checked arithmetic, audited. `None`: not the applier.
    /// Returns the cluster revision afterwards.
    pub async fn reissue_revisions(
        &self,
        agent: &AgentIdentity,
        epoch: i64,
        claimed: i64,
    ) -> Result<Option<i64>> {
        self.timed("reissue_revisions", async {
            let mut tx = self.begin().await?;
            if !appliers::fenced(&mut tx, agent, epoch).await? {
                tx.rollback().await?;
                return Ok(None);
            }
            // Environment rows first, then the cluster row: the order a
            // deletion takes them in (environment, then the revision bump),
            // so the two wait for each other instead of deadlocking.
            sqlx::query(
                "SELECT id FROM environments WHERE cluster_id = $1 AND status <> 'deleted' ORDER BY id FOR UPDATE",
            )
            .bind(agent.cluster_id)
            .execute(&mut *tx)
            .await?;
            let current: i64 =
                sqlx::query_scalar("SELECT revision FROM clusters WHERE id = $1 FOR UPDATE")
                    .bind(agent.cluster_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let Some(revision) = claims::reissue_above(current, claimed)? else {
                // Already above (another session got there first).
                tx.rollback().await?;
                return Ok(Some(current));
            };
            sqlx::query("UPDATE clusters SET revision = $2 WHERE id = $1")
                .bind(agent.cluster_id)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
            let reissued = sqlx::query(
                "UPDATE environments SET revision = $2 WHERE cluster_id = $1 AND status <> 'deleted'",
            )
            .bind(agent.cluster_id)
            .bind(revision)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            audit::append(
                &mut tx,
                &agent_context(agent),
                "cluster.revisions_reissued",
                format!("cluster/{}", agent.cluster),
                None,
                json!({
                    "database_revision": current,
                    "agent_revision": claimed,
                    "revision": revision,
                    "environments": reissued,
                    "node": agent.node_name,
                    "epoch": epoch,
                }),
            )
            .await?;
            revisions::notify(
                &mut tx,
                RevisionNotice {
                    cluster_id: agent.cluster_id,
                    revision,
                },
            )
            .await?;
            tx.commit().await?;
            Ok(Some(revision))
        })
        .await
    }

    /// The fenced applier held a prune pass: kept on the cluster (shown by
    /// `mtp cluster get`) until an operator confirms it, audited once per
    /// held revision. False: not the applier.
    pub async fn hold_prune(
        &self,
        agent: &AgentIdentity,
        epoch: i64,
        held: &HeldPrune,
    ) -> Result<bool> {
        self.timed("hold_prune", async {
            let mut tx = self.begin().await?;
            if !appliers::fenced(&mut tx, agent, epoch).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            let held = HeldPrune {
                hold_time: Some(chrono::Utc::now()),
                ..held.clone()
            };
            // A different pass (another revision, or other numbers at the
            // same one) replaces the shown one and needs a confirmation of
            // its own; the same pass said again changes nothing.
            let changed = sqlx::query(
                "UPDATE clusters SET held_prune = $2
                 WHERE id = $1 AND (held_prune IS NULL
                       OR (held_prune->>'revision')::bigint <> $3
                       OR (held_prune->>'would_delete')::bigint <> $4
                       OR (held_prune->>'managed')::bigint <> $5
                       OR held_prune->'sample' <> $6)",
            )
            .bind(agent.cluster_id)
            .bind(Json(&held))
            .bind(held.revision)
            .bind(i64::from(held.would_delete))
            .bind(i64::from(held.managed))
            .bind(Json(&held.sample))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                audit::append(
                    &mut tx,
                    &agent_context(agent),
                    "cluster.prune_held",
                    format!("cluster/{}", agent.cluster),
                    None,
                    json!({
                        "revision": held.revision,
                        "would_delete": held.would_delete,
                        "managed": held.managed,
                        "sample": held.sample,
                        "node": agent.node_name,
                        "reported_by": "agent",
                    }),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    pub async fn list_agents(&self, cluster: Option<&str>) -> Result<Vec<Agent>> {
        self.timed("list_agents", async {
            let rows: Vec<AgentRow> = sqlx::query_as(
                "SELECT a.id, c.name AS cluster, a.node_name, a.agent_version, a.register_time, a.last_seen_time,
                        a.acknowledged_revision, a.applier, a.connected,
                        a.certificate_expire_time, a.revoke_time
                 FROM agents a JOIN clusters c ON c.id = a.cluster_id
                 WHERE ($1::text IS NULL OR c.name = $1)
                 ORDER BY c.name, a.node_name",
            )
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Agent::from).collect())
        })
        .await
    }

    /// Marks for deletion every environment whose expiry time has passed.
    /// Safe to run on every replica at once: rows are claimed with SKIP LOCKED.
    pub async fn expire_environments(&self) -> Result<Vec<String>> {
        self.timed("expire_environments", async {
            let mut expired = Vec::new();
            loop {
                let mut tx = self.begin().await?;
                let due: Option<(Uuid, String, String)> = sqlx::query_as(
                    "SELECT e.id, t.name, e.name FROM environments e JOIN tenants t ON t.id = e.tenant_id
                     WHERE e.expire_time <= now() AND e.status NOT IN ('deleting', 'deleted')
                     ORDER BY e.expire_time LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id, tenant, name)) = due else { break };
                environments::mark_deleting(&mut tx, &ChangeContext::system("expiry"), id, "expired").await?;
                tx.commit().await?;
                tracing::info!(%tenant, env = %name, "environment expired; deletion requested");
                expired.push(format!("{tenant}/{name}"));
            }
            Ok(expired)
        })
        .await
    }
}

/// Applies one namespace's result of an acknowledged `revision`; returns the
/// creation-to-Ready time if this made the environment Ready for the first time.
async fn record_result(
    tx: &mut Transaction<'_, Postgres>,
    agent: &AgentIdentity,
    revision: i64,
    namespace: &str,
    report: &NamespaceReport,
    audits: &mut Vec<PendingAudit>,
) -> Result<Option<std::time::Duration>> {
    match report {
        NamespaceReport::Verified => {
            // now() is this transaction's start: a ready_time equal
            // to it was set just now, so this is the first Ready.
            let ready: Option<(bool, f64)> = sqlx::query_as(
                "UPDATE environments SET status = 'ready', reason = '', applied_revision = $3,
                        ready_time = COALESCE(ready_time, now())
                 WHERE cluster_id = $1 AND namespace = $2 AND revision <= $3
                   AND status IN ('pending', 'applying', 'failed', 'ready')
                 RETURNING ready_time = now(),
                           EXTRACT(EPOCH FROM ready_time - create_time)::float8",
            )
            .bind(agent.cluster_id)
            .bind(namespace)
            .bind(revision)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((true, seconds)) = ready {
                return Ok(Some(std::time::Duration::from_secs_f64(seconds.max(0.0))));
            }
        }
        NamespaceReport::Failed(reason) => {
            sqlx::query(
                "UPDATE environments SET status = 'failed', reason = $4
                 WHERE cluster_id = $1 AND namespace = $2 AND revision <= $3
                   AND status IN ('pending', 'applying', 'failed', 'ready')",
            )
            .bind(agent.cluster_id)
            .bind(namespace)
            .bind(revision)
            .bind(reason.chars().take(1000).collect::<String>())
            .execute(&mut **tx)
            .await?;
        }
        // Left alone by the agent; the session re-issues above the stamp.
        NamespaceReport::Superseded { .. } => {}
        NamespaceReport::Deleted => {
            let confirmed: Option<(String, String)> = sqlx::query_as(
                "UPDATE environments e
                 SET status = 'deleted', reason = 'deleted from the cluster', applied_revision = $3
                 FROM tenants t
                 WHERE t.id = e.tenant_id AND e.cluster_id = $1 AND e.namespace = $2
                   AND e.revision <= $3 AND e.status = 'deleting'
                 RETURNING t.name, e.name",
            )
            .bind(agent.cluster_id)
            .bind(namespace)
            .bind(revision)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((tenant, env)) = confirmed {
                audits.push(PendingAudit {
                    action: "environment.deleted",
                    target: format!("environment/{tenant}/{env}"),
                    tenant: Some(tenant),
                    details: json!({ "namespace": namespace, "revision": revision, "node": agent.node_name }),
                });
            } else if let Some(unclaimed) =
                unclaimed_deletion(tx, agent, revision, namespace).await?
            {
                audits.push(unclaimed);
            }
        }
    }
    Ok(None)
}

/// A namespace the agent says it deleted that no `deleting` environment of
/// this cluster owns (a prune of something the desired state does not
/// hold): audited per namespace, as the agent's claim, so that no deletion
/// on a cluster goes unrecorded. A repeat of an already confirmed deletion
/// (re-sent after a cut) is not audited twice.
async fn unclaimed_deletion(
    tx: &mut Transaction<'_, Postgres>,
    agent: &AgentIdentity,
    revision: i64,
    namespace: &str,
) -> Result<Option<PendingAudit>> {
    let owner: Option<(String, String, String)> = sqlx::query_as(
        "SELECT t.name, e.name, e.status FROM environments e JOIN tenants t ON t.id = e.tenant_id
         WHERE e.cluster_id = $1 AND e.namespace = $2
         ORDER BY e.create_time DESC LIMIT 1",
    )
    .bind(agent.cluster_id)
    .bind(namespace)
    .fetch_optional(&mut **tx)
    .await?;
    if matches!(&owner, Some((_, _, status)) if status == "deleted") {
        return Ok(None);
    }
    let (tenant, target) = match &owner {
        Some((t, e, _)) => (Some(t.clone()), format!("environment/{t}/{e}")),
        None => (None, format!("namespace/{}/{namespace}", agent.cluster)),
    };
    let details = json!({
        "namespace": namespace,
        "revision": revision,
        "node": agent.node_name,
        "status": owner.as_ref().map(|(_, _, s)| s.as_str()),
        "reported_by": "agent",
    });
    tracing::warn!(cluster = %agent.cluster, namespace, status = ?owner.as_ref().map(|o| &o.2), "the applier deleted a namespace no deleting environment owns");
    Ok(Some(PendingAudit {
        action: "namespace.deleted_by_agent",
        target,
        tenant,
        details,
    }))
}

/// An audit event an acknowledgement writes once its rows are updated.
struct PendingAudit {
    action: &'static str,
    target: String,
    tenant: Option<String>,
    details: serde_json::Value,
}

/// Most `namespace.deleted_by_agent` events one acknowledgement writes one
/// by one; the rest go into one event that lists them, so an agent cannot
/// turn one message into hundreds of writes on the shared audit chain.
const MAX_UNCLAIMED_EVENTS: usize = 20;

async fn append_audits(
    tx: &mut Transaction<'_, Postgres>,
    agent: &AgentIdentity,
    revision: i64,
    audits: Vec<PendingAudit>,
) -> Result<()> {
    let ctx = agent_context(agent);
    let mut unclaimed = 0;
    let mut rest = Vec::new();
    for a in audits {
        if a.action == "namespace.deleted_by_agent" {
            unclaimed += 1;
            if unclaimed > MAX_UNCLAIMED_EVENTS {
                rest.push(a.target);
                continue;
            }
        }
        audit::append(tx, &ctx, a.action, a.target, a.tenant.as_deref(), a.details).await?;
    }
    if !rest.is_empty() {
        let details = json!({
            "revision": revision,
            "node": agent.node_name,
            "targets": rest,
            "reported_by": "agent",
        });
        audit::append(
            tx,
            &ctx,
            "namespace.deleted_by_agent",
            format!("cluster/{}", agent.cluster),
            None,
            details,
        )
        .await?;
    }
    Ok(())
}

fn agent_context(agent: &AgentIdentity) -> ChangeContext {
    ChangeContext {
        actor: format!("agent:{}", agent.agent_id),
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}
