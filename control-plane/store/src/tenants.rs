//! Tenants in PostgreSQL, with their live usage summed from their environments.

use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::quota::{TenantQuota, TenantUsage};
use mtp_core::tenants::{Owners, Tenant, TenantSpec, TenantUpdate};
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::{ChangeContext, Error, Result, Store, audit, environments, from_db, to_db};

/// A `tenants` row with the sums of its live environments.
#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    name: String,
    display_name: String,
    owners: sqlx::types::Json<Owners>,
    cpu_millis: i64,
    memory_bytes: i64,
    storage_bytes: i64,
    pods: i64,
    max_environments: i64,
    allowed_profiles: Vec<String>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    used_cpu_millis: i64,
    used_memory_bytes: i64,
    used_storage_bytes: i64,
    used_pods: i64,
    used_environments: i64,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: r.id,
            spec: TenantSpec {
                name: r.name,
                display_name: r.display_name,
                owners: r.owners.0,
                quota: TenantQuota {
                    cpu_millis: from_db(r.cpu_millis),
                    memory_bytes: from_db(r.memory_bytes),
                    storage_bytes: from_db(r.storage_bytes),
                    pods: from_db(r.pods),
                    max_environments: from_db(r.max_environments),
                },
                allowed_profiles: r.allowed_profiles,
            },
            usage: TenantUsage {
                cpu_millis: from_db(r.used_cpu_millis),
                memory_bytes: from_db(r.used_memory_bytes),
                storage_bytes: from_db(r.used_storage_bytes),
                pods: from_db(r.used_pods),
                environments: from_db(r.used_environments),
            },
            create_time: r.create_time,
            update_time: r.update_time,
        }
    }
}

/// A live tenant with the sum of its live environments. `FOR UPDATE OF t`
/// (when asked) locks the tenant row: every change to a tenant's environments
/// takes this lock first, which is what makes quota admission race-free.
fn select_tenant(lock: bool) -> String {
    format!(
        "SELECT t.id, t.name, t.display_name, t.owners, t.cpu_millis, t.memory_bytes, t.storage_bytes,
                t.pods, t.max_environments, t.allowed_profiles, t.create_time, t.update_time,
                COALESCE(u.cpu, 0)::BIGINT AS used_cpu_millis, COALESCE(u.mem, 0)::BIGINT AS used_memory_bytes,
                COALESCE(u.sto, 0)::BIGINT AS used_storage_bytes, COALESCE(u.pods, 0)::BIGINT AS used_pods,
                COALESCE(u.n, 0)::BIGINT AS used_environments
         FROM tenants t
         LEFT JOIN LATERAL (
             SELECT SUM(e.cpu_millis) AS cpu, SUM(e.memory_bytes) AS mem, SUM(e.storage_bytes) AS sto,
                    SUM(e.pods) AS pods, COUNT(*) AS n
             FROM environments e WHERE e.tenant_id = t.id AND e.status <> 'deleted'
         ) u ON TRUE
         WHERE t.delete_time IS NULL {{filter}}
         ORDER BY t.name {}",
        if lock { "FOR UPDATE OF t" } else { "" }
    )
}

pub(crate) async fn lock_tenant(tx: &mut Transaction<'_, Postgres>, name: &str) -> Result<Tenant> {
    // Lock the row first, then sum: the sum must see every environment committed
    // before we got the lock.
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM tenants WHERE name = $1 AND delete_time IS NULL FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    let id = id.ok_or_else(|| DomainError::not_found("tenant", name))?;
    let row: TenantRow = sqlx::query_as(AssertSqlSafe(
        select_tenant(false).replace("{filter}", "AND t.id = $1"),
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.into())
}

async fn check_profiles_exist(
    tx: &mut Transaction<'_, Postgres>,
    profiles: &[String],
) -> Result<()> {
    for (i, p) in profiles.iter().enumerate() {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM profiles WHERE name = $1")
            .bind(p)
            .fetch_optional(&mut **tx)
            .await?;
        if found.is_none() {
            return Err(DomainError::invalid(
                format!("allowed_profiles[{i}]"),
                format!("unknown profile {p:?}"),
            )
            .into());
        }
    }
    Ok(())
}

/// Binds `$1` (id) to `$10` (the change time): the columns a tenant's insert
/// and update both write, in that order.
fn bind_spec<'q>(
    query: Query<'q, Postgres, PgArguments>,
    id: Uuid,
    spec: &'q TenantSpec,
    time: DateTime<Utc>,
) -> Query<'q, Postgres, PgArguments> {
    let q = &spec.quota;
    query
        .bind(id)
        .bind(&spec.display_name)
        .bind(sqlx::types::Json(&spec.owners))
        .bind(to_db(q.cpu_millis))
        .bind(to_db(q.memory_bytes))
        .bind(to_db(q.storage_bytes))
        .bind(to_db(q.pods))
        .bind(to_db(q.max_environments))
        .bind(&spec.allowed_profiles)
        .bind(time)
}

impl Store {
    /// Creates a tenant (validated by the caller) whose allowed profiles exist.
    pub async fn create_tenant(&self, ctx: &ChangeContext, spec: &TenantSpec) -> Result<Tenant> {
        self.timed("create_tenant", async {
            let mut tx = self.begin().await?;
            check_profiles_exist(&mut tx, &spec.allowed_profiles).await?;
            let now = Utc::now();
            let id = Uuid::new_v4();
            let inserted = bind_spec(
                sqlx::query(
                    "INSERT INTO tenants (id, display_name, owners, cpu_millis, memory_bytes, storage_bytes, pods,
                                          max_environments, allowed_profiles, create_time, update_time, name)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
                ),
                id,
                spec,
                now,
            )
            .bind(&spec.name)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e, "tenants_live_name") => {
                    return Err(DomainError::already_exists("tenant", &spec.name).into());
                }
                other => other?,
            };
            audit::append(
                &mut tx,
                ctx,
                "tenant.create",
                format!("tenant/{}", spec.name),
                Some(&spec.name),
                json!({ "display_name": spec.display_name, "quota": spec.quota, "owners": spec.owners,
                        "allowed_profiles": spec.allowed_profiles }),
            )
            .await?;
            let tenant = lock_tenant(&mut tx, &spec.name).await?;
            tx.commit().await?;
            Ok(tenant)
        })
        .await
    }

    pub async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        self.timed("get_tenant", async {
            let row: Option<TenantRow> = sqlx::query_as(AssertSqlSafe(
                select_tenant(false).replace("{filter}", "AND t.name = $1"),
            ))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
            row.map(Tenant::from)
                .ok_or_else(|| DomainError::not_found("tenant", name).into())
        })
        .await
    }

    /// Live tenants; `scope` confines the list to one tenant (tenant-bound callers).
    pub async fn list_tenants(&self, scope: Option<&str>) -> Result<Vec<Tenant>> {
        self.timed("list_tenants", async {
            let rows: Vec<TenantRow> = sqlx::query_as(AssertSqlSafe(
                select_tenant(false).replace("{filter}", "AND ($1::text IS NULL OR t.name = $1)"),
            ))
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Tenant::from).collect())
        })
        .await
    }

    /// Applies a validated update; a new quota must still cover the tenant's
    /// usage, checked under the tenant lock.
    pub async fn update_tenant(
        &self,
        ctx: &ChangeContext,
        name: &str,
        update: &TenantUpdate,
    ) -> Result<Tenant> {
        self.timed("update_tenant", async {
            let mut tx = self.begin().await?;
            let current = lock_tenant(&mut tx, name).await?;
            let mut spec = current.spec.clone();
            if let Some(d) = &update.display_name {
                spec.display_name = d.clone();
            }
            if let Some(o) = &update.owners {
                spec.owners = o.clone();
            }
            if let Some(q) = update.quota {
                q.covers(&current.usage)?;
                spec.quota = q;
            }
            if let Some(p) = &update.allowed_profiles {
                spec.allowed_profiles = p.clone();
            }
            check_profiles_exist(&mut tx, &spec.allowed_profiles).await?;
            bind_spec(
                sqlx::query(
                    "UPDATE tenants SET display_name = $2, owners = $3, cpu_millis = $4, memory_bytes = $5,
                            storage_bytes = $6, pods = $7, max_environments = $8, allowed_profiles = $9, update_time = $10
                     WHERE id = $1",
                ),
                current.id,
                &spec,
                Utc::now(),
            )
            .execute(&mut *tx)
            .await?;
            // Owners feed the RoleBindings of every namespace of the tenant, so an
            // owner change is a change to what its clusters should run.
            if update.owners.is_some() {
                environments::touch_tenant_environments(&mut tx, current.id).await?;
            }
            audit::append(
                &mut tx,
                ctx,
                "tenant.update",
                format!("tenant/{name}"),
                Some(name),
                json!({ "display_name": update.display_name, "owners": update.owners, "quota": update.quota,
                        "allowed_profiles": update.allowed_profiles }),
            )
            .await?;
            let tenant = lock_tenant(&mut tx, name).await?;
            tx.commit().await?;
            Ok(tenant)
        })
        .await
    }

    /// Deletes a tenant. With live environments it is refused unless `cascade`,
    /// which marks them for deletion in the same transaction. The tenant's
    /// tokens are revoked with it. Returns the environments deleted.
    pub async fn delete_tenant(
        &self,
        ctx: &ChangeContext,
        name: &str,
        cascade: bool,
    ) -> Result<Vec<String>> {
        self.timed("delete_tenant", async {
            let mut tx = self.begin().await?;
            let tenant = lock_tenant(&mut tx, name).await?;
            let live: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT id, name FROM environments WHERE tenant_id = $1 AND status NOT IN ('deleted', 'deleting')
                 ORDER BY cluster_id, name",
            )
            .bind(tenant.id)
            .fetch_all(&mut *tx)
            .await?;
            if !live.is_empty() && !cascade {
                let names: Vec<&str> = live.iter().map(|(_, n)| n.as_str()).collect();
                return Err(Error::Domain(DomainError::FailedPrecondition(format!(
                    "tenant {name:?} still has {} environment(s) ({}); delete them first or delete with cascade",
                    live.len(),
                    names.join(", ")
                ))));
            }
            for (id, _) in &live {
                environments::mark_deleting(&mut tx, ctx, *id, "tenant deleted").await?;
            }
            let now = Utc::now();
            sqlx::query("UPDATE tenants SET delete_time = $2 WHERE id = $1")
                .bind(tenant.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let revoked = sqlx::query("UPDATE api_tokens SET revoke_time = $2 WHERE tenant_id = $1 AND revoke_time IS NULL")
                .bind(tenant.id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Rows were locked in cluster order (deadlock-free against other
            // cascades); report them by name.
            let mut deleted: Vec<String> = live.into_iter().map(|(_, n)| n).collect();
            deleted.sort();
            audit::append(
                &mut tx,
                ctx,
                "tenant.delete",
                format!("tenant/{name}"),
                Some(name),
                json!({ "cascade": cascade, "deleted_environments": deleted, "revoked_tokens": revoked }),
            )
            .await?;
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }
}
