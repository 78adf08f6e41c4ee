//! Clusters in PostgreSQL, with the revision counter agents follow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::claims::HeldPrune;
use mtp_core::clusters::{Cluster, ClusterSummary, NewCluster};
use mtp_core::environments::EnvironmentStatus;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::{ChangeContext, Error, Result, Store, audit, from_db};

/// A `clusters` row.
#[derive(sqlx::FromRow)]
struct ClusterRow {
    id: Uuid,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    ingress_namespace: String,
    revision: i64,
    create_time: DateTime<Utc>,
    applier_agent_id: Option<String>,
    applier_epoch: i64,
    held_prune: Option<Json<HeldPrune>>,
}

/// A cluster with its applier fence.
const SELECT_CLUSTER: &str =
    "SELECT c.id, c.name, c.labels, c.ingress_namespace, c.revision, c.create_time,
        f.agent_id AS applier_agent_id, COALESCE(f.epoch, 0) AS applier_epoch, c.held_prune
 FROM clusters c LEFT JOIN cluster_appliers f ON f.cluster_id = c.id";

impl From<ClusterRow> for Cluster {
    fn from(r: ClusterRow) -> Self {
        Cluster {
            id: r.id,
            name: r.name,
            labels: r.labels.0,
            ingress_namespace: r.ingress_namespace,
            revision: r.revision,
            create_time: r.create_time,
            applier_agent_id: r.applier_agent_id,
            applier_epoch: r.applier_epoch,
            held_prune: r.held_prune.map(|j| j.0),
        }
    }
}

impl Store {
    /// Registers a cluster (validated by the caller) at revision 0.
    pub async fn create_cluster(&self, ctx: &ChangeContext, new: &NewCluster) -> Result<Cluster> {
        self.timed("create_cluster", async {
            let mut tx = self.begin().await?;
            let inserted: Result<ClusterRow, sqlx::Error> = sqlx::query_as(
                "INSERT INTO clusters (id, name, labels, ingress_namespace, revision, create_time)
                 VALUES ($1, $2, $3, $4, 0, $5)
                 RETURNING id, name, labels, ingress_namespace, revision, create_time,
                           NULL::text AS applier_agent_id, 0::bigint AS applier_epoch, held_prune",
            )
            .bind(Uuid::new_v4())
            .bind(&new.name)
            .bind(Json(&new.labels))
            .bind(&new.ingress_namespace)
            .bind(Utc::now())
            .fetch_one(&mut *tx)
            .await;
            let cluster = match inserted {
                Err(e) if is_unique_violation(&e, "clusters_name_key") => {
                    return Err(DomainError::already_exists("cluster", &new.name).into());
                }
                other => other?,
            };
            audit::append(
                &mut tx,
                ctx,
                "cluster.create",
                format!("cluster/{}", new.name),
                None,
                json!({ "labels": new.labels, "ingress_namespace": new.ingress_namespace }),
            )
            .await?;
            tx.commit().await?;
            Ok(cluster.into())
        })
        .await
    }

    pub async fn get_cluster(&self, name: &str) -> Result<Cluster> {
        self.timed("get_cluster", async {
            let row: Option<ClusterRow> =
                sqlx::query_as(AssertSqlSafe(format!("{SELECT_CLUSTER} WHERE c.name = $1")))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(Cluster::from)
                .ok_or_else(|| DomainError::not_found("cluster", name).into())
        })
        .await
    }

    /// An operator lets the applier carry out the prune pass it held at
    /// `revision` (the held pass must be that one: a confirmation never
    /// covers a pass nobody has looked at). Audited; the applier's session
    /// passes it on.
    pub async fn confirm_prune(
        &self,
        ctx: &ChangeContext,
        cluster: &str,
        revision: i64,
    ) -> Result<Cluster> {
        self.timed("confirm_prune", async {
            let mut tx = self.begin().await?;
            let held: Option<(Uuid, Option<Json<HeldPrune>>)> =
                sqlx::query_as("SELECT id, held_prune FROM clusters WHERE name = $1 FOR UPDATE")
                    .bind(cluster)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (id, held) = held.ok_or_else(|| DomainError::not_found("cluster", cluster))?;
            let Some(Json(mut held)) = held else {
                return Err(DomainError::FailedPrecondition(format!(
                    "cluster {cluster:?} has no held prune pass to confirm"
                ))
                .into());
            };
            if held.revision != revision {
                return Err(DomainError::invalid(
                    "revision",
                    format!("the held prune pass is at revision {}, not {revision}", held.revision),
                )
                .into());
            }
            held.confirmed_revision = revision;
            sqlx::query("UPDATE clusters SET held_prune = $2 WHERE id = $1")
                .bind(id)
                .bind(Json(&held))
                .execute(&mut *tx)
                .await?;
            audit::append(
                &mut tx,
                ctx,
                "cluster.prune_confirmed",
                format!("cluster/{cluster}"),
                None,
                json!({ "revision": revision, "would_delete": held.would_delete, "managed": held.managed }),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(cluster, revision, would_delete = held.would_delete, "held prune pass confirmed by an operator");
            self.get_cluster(cluster).await
        })
        .await
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        self.timed("list_clusters", async {
            let rows: Vec<ClusterRow> =
                sqlx::query_as(AssertSqlSafe(format!("{SELECT_CLUSTER} ORDER BY c.name")))
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.into_iter().map(Cluster::from).collect())
        })
        .await
    }

    /// Every cluster's revisions and live environments by status: two
    /// aggregate queries, cheap enough to run every few seconds.
    pub async fn cluster_summaries(&self) -> Result<Vec<ClusterSummary>> {
        self.timed("cluster_summaries", async {
            let clusters: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
                "SELECT c.id, c.name, c.revision, COALESCE(MAX(a.acknowledged_revision), 0)::BIGINT
                 FROM clusters c LEFT JOIN agents a ON a.cluster_id = c.id
                 GROUP BY c.id ORDER BY c.name",
            )
            .fetch_all(&self.pool)
            .await?;
            let counts: Vec<(Uuid, String, i64)> = sqlx::query_as(
                "SELECT cluster_id, status, COUNT(*) FROM environments
                 WHERE status <> 'deleted' GROUP BY cluster_id, status ORDER BY cluster_id, status",
            )
            .fetch_all(&self.pool)
            .await?;
            let mut summaries = Vec::with_capacity(clusters.len());
            for (id, cluster, revision, acknowledged_revision) in clusters {
                let mut environments = Vec::new();
                for (_, status, n) in counts.iter().filter(|(c, _, _)| *c == id) {
                    let status = EnvironmentStatus::parse(status).ok_or_else(|| {
                        Error::Corrupt(format!("unknown environment status {status:?}"))
                    })?;
                    environments.push((status, from_db(*n)));
                }
                summaries.push(ClusterSummary {
                    cluster,
                    revision,
                    acknowledged_revision,
                    environments,
                });
            }
            Ok(summaries)
        })
        .await
    }
}
