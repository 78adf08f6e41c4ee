//! Agents in PostgreSQL: the desired state of a cluster at a revision
//! (snapshot or changes since), and what agents report back (acknowledged
//! revisions, per-namespace results, drift). Identities are in `identities`.

use chrono::{DateTime, Utc};
use mtp_core::agents::{Agent, AgentIdentity, DesiredUpdate, NamespaceReport, NamespaceSpec};
use mtp_core::environments::EnvironmentStatus;
use mtp_core::profiles::Profile;
use mtp_core::tenants::Owners;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

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

    /// Records an applier's acknowledgement of `revision` with its results.
    /// A result only moves an environment whose latest change is covered by
    /// the acknowledged revision, so a stale ack never marks a newer change Ready.
    pub async fn record_ack(
        &self,
        agent: &AgentIdentity,
        revision: i64,
        results: &[(String, NamespaceReport)],
    ) -> Result<AckOutcome> {
        self.timed("record_ack", async {
            let mut outcome = AckOutcome::default();
            let mut tx = self.begin().await?;
            sqlx::query(
                "UPDATE agents SET acknowledged_revision = GREATEST(acknowledged_revision, $2), last_seen_time = now()
                 WHERE id = $1",
            )
            .bind(&agent.agent_id)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
            for (namespace, report) in results {
                if let Some(after) = record_result(&mut tx, agent, revision, namespace, report).await? {
                    outcome.first_ready.push(after);
                }
            }
            tx.commit().await?;
            Ok(outcome)
        })
        .await
    }

    /// Records a repaired drift in the audit log.
    pub async fn record_drift(
        &self,
        agent: &AgentIdentity,
        namespace: &str,
        object: &str,
        description: &str,
    ) -> Result<()> {
        self.timed("record_drift", async {
            let mut tx = self.begin().await?;
            let env: Option<(String, String)> = sqlx::query_as(
                "SELECT t.name, e.name FROM environments e JOIN tenants t ON t.id = e.tenant_id
                 WHERE e.cluster_id = $1 AND e.namespace = $2 AND e.status <> 'deleted'",
            )
            .bind(agent.cluster_id)
            .bind(namespace)
            .fetch_optional(&mut *tx)
            .await?;
            let (tenant, target) = match &env {
                Some((t, e)) => (Some(t.as_str()), format!("environment/{t}/{e}")),
                None => (None, format!("namespace/{}/{namespace}", agent.cluster)),
            };
            audit::append(
                &mut tx,
                &agent_context(agent),
                "environment.drift_repaired",
                target,
                tenant,
                json!({ "namespace": namespace, "object": object, "description": description, "node": agent.node_name }),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// An agent holds a revision above the cluster's: this database was
    /// restored from a backup, and the revisions it will issue next were
    /// already used, for other content. Every live environment is re-issued
    /// at a revision above anything the agents hold, so that their stored
    /// state and the revisions stamped on namespaces can never be mistaken
    /// for the new history. Returns the cluster revision afterwards; audited.
    pub async fn reissue_revisions(&self, agent: &AgentIdentity, above: i64) -> Result<i64> {
        self.timed("reissue_revisions", async {
            let mut tx = self.begin().await?;
            let current: i64 =
                sqlx::query_scalar("SELECT revision FROM clusters WHERE id = $1 FOR UPDATE")
                    .bind(agent.cluster_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if current > above {
                // Another session got there first.
                tx.rollback().await?;
                return Ok(current);
            }
            let revision = above + 1;
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
                    "agent_revision": above,
                    "revision": revision,
                    "environments": reissued,
                    "node": agent.node_name,
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
            Ok(revision)
        })
        .await
    }

    /// Updates an agent's liveness and role as seen by this replica.
    pub async fn agent_seen(
        &self,
        agent: &AgentIdentity,
        connected: bool,
        applier: bool,
        version: Option<&str>,
    ) -> Result<()> {
        self.timed("agent_seen", async {
            sqlx::query(
                "UPDATE agents SET connected = $2, applier = $3, last_seen_time = now(),
                        agent_version = COALESCE($4, agent_version)
                 WHERE id = $1",
            )
            .bind(&agent.agent_id)
            .bind(connected)
            .bind(applier && connected)
            .bind(version)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub async fn list_agents(&self, cluster: Option<&str>) -> Result<Vec<Agent>> {
        self.timed("list_agents", async {
            let rows: Vec<AgentRow> = sqlx::query_as(
                "SELECT a.id, c.name AS cluster, a.node_name, a.agent_version, a.register_time, a.last_seen_time,
                        a.acknowledged_revision, a.applier, a.connected
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
                let ctx = agent_context(agent);
                let details = json!({ "namespace": namespace, "revision": revision, "node": agent.node_name });
                audit::append(
                    tx,
                    &ctx,
                    "environment.deleted",
                    format!("environment/{tenant}/{env}"),
                    Some(&tenant),
                    details,
                )
                .await?;
            }
        }
    }
    Ok(None)
}

fn agent_context(agent: &AgentIdentity) -> ChangeContext {
    ChangeContext {
        actor: format!("agent:{}", agent.agent_id),
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}
