//! Environments in PostgreSQL: admission against the tenant's quota, namespace
//! assignment, and the cluster revision bump that tells agents to act.

use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::environments::{Environment, EnvironmentStatus, NewEnvironment};
use mtp_core::names::namespace_candidates;
use mtp_core::profiles::Profile;
use mtp_core::quota::EnvironmentQuota;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::revisions::bump_cluster_revision;
use crate::{ChangeContext, Error, Result, Store, audit, from_db, tenants, to_db};

#[derive(Debug, Clone, Default)]
pub struct EnvironmentFilter {
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    pub include_deleted: bool,
}

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    tenant: String,
    name: String,
    cluster: String,
    profile: String,
    namespace: String,
    #[sqlx(flatten)]
    quota: QuotaColumns,
    status: String,
    reason: String,
    create_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
    delete_time: Option<DateTime<Utc>>,
    revision: i64,
    applied_revision: i64,
    ready_time: Option<DateTime<Utc>>,
}

/// The quota columns of an `environments` row, as every query selects them.
#[derive(sqlx::FromRow)]
pub(crate) struct QuotaColumns {
    cpu_millis: i64,
    memory_bytes: i64,
    storage_bytes: i64,
    pods: i64,
    services: i64,
    persistent_volume_claims: i64,
}

impl From<QuotaColumns> for EnvironmentQuota {
    fn from(q: QuotaColumns) -> Self {
        EnvironmentQuota {
            cpu_millis: from_db(q.cpu_millis),
            memory_bytes: from_db(q.memory_bytes),
            storage_bytes: from_db(q.storage_bytes),
            pods: from_db(q.pods),
            services: from_db(q.services),
            persistent_volume_claims: from_db(q.persistent_volume_claims),
        }
    }
}

impl TryFrom<EnvironmentRow> for Environment {
    type Error = Error;
    fn try_from(r: EnvironmentRow) -> Result<Self> {
        let status = EnvironmentStatus::parse(&r.status)
            .ok_or_else(|| Error::Corrupt(format!("unknown environment status {:?}", r.status)))?;
        Ok(Environment {
            tenant: r.tenant,
            name: r.name,
            cluster: r.cluster,
            profile: r.profile,
            namespace: r.namespace,
            quota: r.quota.into(),
            status,
            reason: r.reason,
            create_time: r.create_time,
            expire_time: r.expire_time,
            delete_time: r.delete_time,
            revision: r.revision,
            applied_revision: r.applied_revision,
            ready_time: r.ready_time,
        })
    }
}

const SELECT_ENVIRONMENT: &str = "
    SELECT t.name AS tenant, e.name, c.name AS cluster, e.profile, e.namespace, e.cpu_millis, e.memory_bytes,
           e.storage_bytes, e.pods, e.services, e.persistent_volume_claims, e.status, e.reason,
           e.create_time, e.expire_time, e.delete_time, e.revision, e.applied_revision, e.ready_time
    FROM environments e JOIN tenants t ON t.id = e.tenant_id JOIN clusters c ON c.id = e.cluster_id";

/// Marks one environment for deletion, bumping its cluster's revision, with its
/// audit event. The namespace and quota stay held until an agent confirms.
pub(crate) async fn mark_deleting(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &ChangeContext,
    id: Uuid,
    why: &str,
) -> Result<Environment> {
    let (cluster_id, tenant, name): (Uuid, String, String) = sqlx::query_as(
        "SELECT e.cluster_id, t.name, e.name FROM environments e JOIN tenants t ON t.id = e.tenant_id
         WHERE e.id = $1 FOR UPDATE OF e",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let revision = bump_cluster_revision(tx, cluster_id).await?;
    sqlx::query(
        "UPDATE environments SET status = 'deleting', reason = $2, revision = $3, delete_time = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(why)
    .bind(revision)
    .bind(Utc::now())
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        ctx,
        "environment.delete",
        format!("environment/{tenant}/{name}"),
        Some(&tenant),
        json!({ "reason": why, "revision": revision }),
    )
    .await?;
    fetch_by_id(tx, id).await
}

/// Re-issues every live environment of a tenant at a new revision of its
/// cluster (their rendered objects depend on tenant settings such as owners).
pub(crate) async fn touch_tenant_environments(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
) -> Result<()> {
    let clusters: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT cluster_id FROM environments WHERE tenant_id = $1 AND status <> 'deleted' ORDER BY cluster_id",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?;
    for cluster_id in clusters {
        let revision = bump_cluster_revision(tx, cluster_id).await?;
        sqlx::query(
            "UPDATE environments SET revision = $3 WHERE tenant_id = $1 AND cluster_id = $2 AND status <> 'deleted'",
        )
        .bind(tenant_id)
        .bind(cluster_id)
        .bind(revision)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn fetch_by_id(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Environment> {
    let row: EnvironmentRow = sqlx::query_as(AssertSqlSafe(format!(
        "{SELECT_ENVIRONMENT} WHERE e.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    row.try_into()
}

/// A create that passed admission: what its row is written with.
struct Admitted {
    tenant_id: Uuid,
    cluster_id: Uuid,
    quota: EnvironmentQuota,
}

impl Store {
    /// Creates an environment if it fits the tenant's quota
    /// (docs/architecture.md, invariant 1).
    ///
    /// The tenant row lock serialises all creates of one tenant: each sees the
    /// sum left by the ones committed before it, so concurrent creates can
    /// never jointly pass the quota.
    pub async fn create_environment(
        &self,
        ctx: &ChangeContext,
        new: &NewEnvironment,
    ) -> Result<Environment> {
        self.timed("create_environment", async {
            let mut tx = self.begin().await?;
            let Admitted { tenant_id, cluster_id, quota } = self.admit(&mut tx, new).await?;
            let namespace = self.free_namespace(&mut tx, &new.tenant, &new.name).await?;
            let revision = bump_cluster_revision(&mut tx, cluster_id).await?;
            let id = Uuid::new_v4();
            let inserted = sqlx::query(
                "INSERT INTO environments (id, tenant_id, name, cluster_id, profile, namespace, cpu_millis, memory_bytes,
                     storage_bytes, pods, services, persistent_volume_claims, status, revision, create_time, expire_time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14, $15)",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(&new.name)
            .bind(cluster_id)
            .bind(&new.profile)
            .bind(&namespace)
            .bind(to_db(quota.cpu_millis))
            .bind(to_db(quota.memory_bytes))
            .bind(to_db(quota.storage_bytes))
            .bind(to_db(quota.pods))
            .bind(to_db(quota.services))
            .bind(to_db(quota.persistent_volume_claims))
            .bind(revision)
            .bind(Utc::now())
            .bind(new.expire_time)
            .execute(&mut *tx)
            .await;
            match inserted {
                // A concurrent create of another tenant took the same readable
                // namespace between our check and insert; the caller may retry.
                Err(e) if is_unique_violation(&e, "environments_live_namespace") => {
                    return Err(DomainError::FailedPrecondition(format!(
                        "namespace {namespace:?} was taken concurrently; retry the request"
                    ))
                    .into());
                }
                other => other?,
            };
            audit::append(
                &mut tx,
                ctx,
                "environment.create",
                format!("environment/{}/{}", new.tenant, new.name),
                Some(&new.tenant),
                json!({ "cluster": new.cluster, "profile": new.profile, "namespace": namespace, "quota": quota,
                        "expire_time": new.expire_time, "revision": revision }),
            )
            .await?;
            let env = fetch_by_id(&mut tx, id).await?;
            tx.commit().await?;
            tracing::info!(tenant = %new.tenant, env = %new.name, cluster = %new.cluster, %namespace, revision, "environment created");
            Ok(env)
        })
        .await
    }

    /// Everything that may refuse a create, under the tenant lock (taken
    /// first): the profile, the cluster, the name, and the quota.
    async fn admit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        new: &NewEnvironment,
    ) -> Result<Admitted> {
        let tenant = tenants::lock_tenant(tx, &new.tenant).await?;
        if !tenant.spec.allows_profile(&new.profile) {
            return Err(DomainError::invalid(
                "profile",
                format!(
                    "tenant {:?} may only use profiles {}",
                    new.tenant,
                    tenant.spec.allowed_profiles.join(", ")
                ),
            )
            .into());
        }
        let profile = self.profile_in(tx, &new.profile).await?.ok_or_else(|| {
            DomainError::invalid("profile", format!("unknown profile {:?}", new.profile))
        })?;
        let quota = quota_for(&profile, new)?;
        let cluster_id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
                .bind(&new.cluster)
                .fetch_optional(&mut **tx)
                .await?;
        let cluster_id = cluster_id.ok_or_else(|| {
            DomainError::invalid("cluster", format!("unknown cluster {:?}", new.cluster))
        })?;
        let exists: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM environments WHERE tenant_id = $1 AND name = $2 AND status <> 'deleted'")
                    .bind(tenant.id)
                    .bind(&new.name)
                    .fetch_optional(&mut **tx)
                    .await?;
        if exists.is_some() {
            return Err(DomainError::already_exists(
                "environment",
                format!("{}/{}", new.tenant, new.name),
            )
            .into());
        }
        tenant
            .spec
            .quota
            .admit(&new.tenant, &tenant.usage, &quota)?;

        Ok(Admitted {
            tenant_id: tenant.id,
            cluster_id,
            quota,
        })
    }

    async fn free_namespace(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tenant: &str,
        env: &str,
    ) -> Result<String> {
        for candidate in namespace_candidates(tenant, env) {
            let taken: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM environments WHERE namespace = $1 AND status <> 'deleted'",
            )
            .bind(&candidate)
            .fetch_optional(&mut **tx)
            .await?;
            if taken.is_none() {
                return Ok(candidate);
            }
        }
        Err(Error::Corrupt(format!(
            "no free namespace for {tenant}/{env}"
        )))
    }

    pub async fn get_environment(&self, tenant: &str, name: &str) -> Result<Environment> {
        self.timed("get_environment", async {
            // The live one if any, else the most recently deleted (so a caller
            // polling after a delete sees `Deleted`, not "not found").
            let row: Option<EnvironmentRow> = sqlx::query_as(AssertSqlSafe(format!(
                "{SELECT_ENVIRONMENT} WHERE t.name = $1 AND e.name = $2 AND t.delete_time IS NULL
                 ORDER BY (e.status = 'deleted'), e.create_time DESC LIMIT 1"
            )))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
            row.ok_or_else(|| {
                DomainError::not_found("environment", format!("{tenant}/{name}")).into()
            })
            .and_then(Environment::try_from)
        })
        .await
    }

    pub async fn list_environments(&self, filter: &EnvironmentFilter) -> Result<Vec<Environment>> {
        self.timed("list_environments", async {
            let rows: Vec<EnvironmentRow> = sqlx::query_as(AssertSqlSafe(format!(
                "{SELECT_ENVIRONMENT}
                 WHERE ($1::text IS NULL OR t.name = $1) AND ($2::text IS NULL OR c.name = $2)
                   AND ($3 OR e.status <> 'deleted')
                 ORDER BY t.name, e.name, e.create_time"
            )))
            .bind(&filter.tenant)
            .bind(&filter.cluster)
            .bind(filter.include_deleted)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(Environment::try_from).collect()
        })
        .await
    }

    /// Requests deletion; the agent's confirmation (a later step) makes it `Deleted`.
    pub async fn delete_environment(
        &self,
        ctx: &ChangeContext,
        tenant: &str,
        name: &str,
    ) -> Result<Environment> {
        self.timed("delete_environment", async {
            let mut tx = self.begin().await?;
            let t = tenants::lock_tenant(&mut tx, tenant).await?;
            let found: Option<(Uuid, String)> = sqlx::query_as(
                "SELECT id, status FROM environments WHERE tenant_id = $1 AND name = $2 AND status <> 'deleted'",
            )
            .bind(t.id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, status) = found.ok_or_else(|| DomainError::not_found("environment", format!("{tenant}/{name}")))?;
            if status == EnvironmentStatus::Deleting.as_str() {
                // Idempotent: deleting twice is not an error and writes nothing new.
                let env = fetch_by_id(&mut tx, id).await?;
                tx.commit().await?;
                return Ok(env);
            }
            let env = mark_deleting(&mut tx, ctx, id, "deletion requested").await?;
            tx.commit().await?;
            Ok(env)
        })
        .await
    }
}

fn quota_for(profile: &Profile, new: &NewEnvironment) -> Result<EnvironmentQuota> {
    Ok(profile
        .quota
        .with_overrides(&new.quota_override, &profile.max_quota)?)
}
