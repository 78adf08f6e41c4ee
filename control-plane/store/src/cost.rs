//! The price book, budgets and their alerts, and the grouped reads of the
//! usage rollups that cost reports are made of.
//!
//! What is durable and why: price versions are append-only (one per cluster
//! and effective time; a report must give the same answer tomorrow), a
//! budget per tenant, and one `budget_alerts` row per tenant, month and
//! threshold — its key is what makes an alert fire once, however many
//! replicas evaluate budgets. Every change is audited in its transaction.
//!
//! Reports read rollups with one grouped query each (usage, node coverage),
//! never a query per environment, so a month over 10,000 environments is a
//! few hundred thousand rollup rows summed inside PostgreSQL.

use chrono::{DateTime, DurationRound, NaiveDate, Utc};
use mtp_core::Error as DomainError;
use mtp_core::cost::{BudgetSpec, PriceBook, PriceVersion, format_amount, parse_amount};
use mtp_core::usage::UsageTotals;
use serde_json::json;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::{ChangeContext, Error, Result, Store, audit};

/// A price version as stored, with who added it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrice {
    pub version: PriceVersion,
    pub create_time: DateTime<Utc>,
    pub created_by: String,
}

/// A tenant's budget as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBudget {
    pub tenant_id: Uuid,
    pub tenant: String,
    pub spec: BudgetSpec,
    pub update_time: DateTime<Utc>,
}

/// How usage cells are keyed besides cluster, step and price period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGrouping {
    Tenant,
    Environment,
    Cluster,
}

/// Which rollups a read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    Hourly,
    Daily,
}

impl Rollup {
    fn tables(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Rollup::Hourly => ("usage_hourly", "usage_node_hourly", "hour"),
            Rollup::Daily => ("usage_daily", "usage_node_daily", "day"),
        }
    }
}

/// A grouped read of usage over `[from, to)`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub rollup: Rollup,
    /// Bucket length in seconds (the whole range for one step).
    pub step_seconds: i64,
    pub grouping: CostGrouping,
    /// Only this tenant / cluster (by name).
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    /// Times within the range where some price takes effect (ascending):
    /// cells never straddle one, so each cell has one price per cluster.
    pub breaks: Vec<DateTime<Utc>>,
}

/// Usage summed per step, price period, group and cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCell {
    /// Index of the step from `from`.
    pub bucket: i64,
    /// Index of the price period (0: before the first break).
    pub period: i32,
    pub tenant: Option<String>,
    pub environment: Option<String>,
    pub cluster_id: Uuid,
    pub cluster: String,
    pub totals: UsageTotals,
}

/// One node's rollup row: seconds covered and allocatable capacity over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCell {
    pub time: DateTime<Utc>,
    pub agent_id: String,
    pub cluster_id: Uuid,
    pub covered_seconds: i64,
    pub cpu_millis_seconds: i64,
    pub memory_byte_seconds: i64,
}

/// A node expected to report: from when, until when (revoked), and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportingNode {
    pub agent_id: String,
    pub cluster_id: Uuid,
    pub cluster: String,
    pub node: String,
    /// The earlier of its registration and its first data.
    pub since: DateTime<Utc>,
    pub revoked: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    cluster: Option<String>,
    effective_time: DateTime<Utc>,
    currency: String,
    cpu_core_hour: String,
    memory_gib_hour: String,
    storage_gib_month: String,
    create_time: DateTime<Utc>,
    created_by: String,
}

impl PriceRow {
    fn into_stored(self) -> Result<StoredPrice> {
        let corrupt = |e: DomainError| Error::Corrupt(format!("stored price: {e}"));
        Ok(StoredPrice {
            version: PriceVersion {
                cluster: self.cluster,
                effective: self.effective_time,
                currency: self.currency,
                cpu_core_hour: parse_amount("cpu_core_hour", &self.cpu_core_hour)
                    .map_err(corrupt)?,
                memory_gib_hour: parse_amount("memory_gib_hour", &self.memory_gib_hour)
                    .map_err(corrupt)?,
                storage_gib_month: parse_amount("storage_gib_month", &self.storage_gib_month)
                    .map_err(corrupt)?,
            },
            create_time: self.create_time,
            created_by: self.created_by,
        })
    }
}

const PRICE_COLUMNS: &str = "c.name AS cluster, p.effective_time, p.currency, p.cpu_core_hour, \
    p.memory_gib_hour, p.storage_gib_month, p.create_time, p.created_by \
    FROM prices p LEFT JOIN clusters c ON c.id = p.cluster_id";

#[derive(sqlx::FromRow)]
struct BudgetRow {
    tenant_id: Uuid,
    tenant: String,
    monthly_amount: String,
    thresholds_percent: Vec<i32>,
    update_time: DateTime<Utc>,
}

impl BudgetRow {
    fn into_stored(self) -> Result<StoredBudget> {
        let thresholds: Vec<u32> = self
            .thresholds_percent
            .iter()
            .map(|t| u32::try_from(*t).unwrap_or(0))
            .collect();
        let spec = BudgetSpec::parse(
            "monthly_amount",
            &self.monthly_amount,
            "thresholds_percent",
            &thresholds,
        )
        .map_err(|e| Error::Corrupt(format!("stored budget of {}: {e}", self.tenant)))?;
        Ok(StoredBudget {
            tenant_id: self.tenant_id,
            tenant: self.tenant,
            spec,
            update_time: self.update_time,
        })
    }
}

const BUDGET_COLUMNS: &str = "b.tenant_id, t.name AS tenant, b.monthly_amount, b.thresholds_percent, \
    b.update_time FROM budgets b JOIN tenants t ON t.id = b.tenant_id";

impl Store {
    /// Adds a version to the price book (audited `price.set`). Versions
    /// never change: a second one for the same cluster and effective time
    /// is refused (`AlreadyExists`, naming the effective time), and one in
    /// another currency than the book's is refused naming the currency.
    /// Serialized by an advisory lock, so two first versions in different
    /// currencies cannot both get in.
    pub async fn set_price(
        &self,
        ctx: &ChangeContext,
        version: &PriceVersion,
    ) -> Result<StoredPrice> {
        self.timed("set_price", async {
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mtp_prices'))")
                .execute(&mut *tx)
                .await?;
            let cluster_id: Option<Uuid> = match &version.cluster {
                None => None,
                Some(name) => Some(
                    sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| DomainError::not_found("cluster", name))?,
                ),
            };
            let currency: Option<String> = sqlx::query_scalar("SELECT currency FROM prices LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(c) = currency
                && c != version.currency
            {
                return Err(DomainError::invalid(
                    "price.currency_code",
                    format!(
                        "{} differs from the price book's currency {c}; one currency for the whole book",
                        version.currency
                    ),
                )
                .into());
            }
            let now = Utc::now();
            let inserted = sqlx::query(
                "INSERT INTO prices (cluster_id, effective_time, currency, cpu_core_hour, memory_gib_hour, \
                   storage_gib_month, create_time, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(cluster_id)
            .bind(version.effective)
            .bind(&version.currency)
            .bind(format_amount(version.cpu_core_hour))
            .bind(format_amount(version.memory_gib_hour))
            .bind(format_amount(version.storage_gib_month))
            .bind(now)
            .bind(&ctx.actor)
            .execute(&mut *tx)
            .await;
            let scope = version.cluster.as_deref().unwrap_or("default");
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e, "prices_cluster_id_effective_time_key") => {
                    return Err(DomainError::already_exists(
                        "price version",
                        format!(
                            "{scope} at price.effective_time {}; versions never change, add one at another midnight",
                            version.effective.to_rfc3339()
                        ),
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
            audit::append(
                &mut tx,
                ctx,
                "price.set",
                format!("price/{scope}/{}", version.effective.date_naive()),
                None,
                json!({
                    "cluster": version.cluster,
                    "effective_time": version.effective.to_rfc3339(),
                    "currency": version.currency,
                    "cpu_core_hour": format_amount(version.cpu_core_hour),
                    "memory_gib_hour": format_amount(version.memory_gib_hour),
                    "storage_gib_month": format_amount(version.storage_gib_month),
                }),
            )
            .await?;
            tx.commit().await?;
            Ok(StoredPrice {
                version: version.clone(),
                create_time: now,
                created_by: ctx.actor.clone(),
            })
        })
        .await
    }

    /// Price versions, newest effective first; `cluster` only that
    /// cluster's own (`None`: all, the default included).
    pub async fn list_prices(&self, cluster: Option<&str>) -> Result<Vec<StoredPrice>> {
        self.timed("list_prices", async {
            let rows: Vec<PriceRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PRICE_COLUMNS} WHERE ($1::text IS NULL OR c.name = $1) \
                 ORDER BY p.effective_time DESC, c.name NULLS FIRST"
            )))
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(PriceRow::into_stored).collect()
        })
        .await
    }

    /// The whole price book.
    pub async fn price_book(&self) -> Result<PriceBook> {
        let prices = self.list_prices(None).await?;
        PriceBook::new(prices.into_iter().map(|p| p.version).collect()).map_err(Error::Domain)
    }

    /// Sets `tenant`'s budget (audited `budget.set`).
    pub async fn set_budget(
        &self,
        ctx: &ChangeContext,
        tenant: &str,
        spec: &BudgetSpec,
    ) -> Result<StoredBudget> {
        self.timed("set_budget", async {
            let mut tx = self.begin().await?;
            let tenant_id: Uuid = sqlx::query_scalar(
                "SELECT id FROM tenants WHERE name = $1 AND delete_time IS NULL",
            )
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| DomainError::not_found("tenant", tenant))?;
            let now = Utc::now();
            let thresholds: Vec<i32> = spec.thresholds.iter().map(|t| *t as i32).collect();
            sqlx::query(
                "INSERT INTO budgets (tenant_id, monthly_amount, thresholds_percent, update_time) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 monthly_amount = EXCLUDED.monthly_amount, thresholds_percent = EXCLUDED.thresholds_percent, \
                 update_time = EXCLUDED.update_time",
            )
            .bind(tenant_id)
            .bind(format_amount(spec.monthly_nanos))
            .bind(&thresholds)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            audit::append(
                &mut tx,
                ctx,
                "budget.set",
                format!("tenant/{tenant}/budget"),
                Some(tenant),
                json!({
                    "monthly_amount": format_amount(spec.monthly_nanos),
                    "thresholds_percent": spec.thresholds,
                }),
            )
            .await?;
            tx.commit().await?;
            Ok(StoredBudget {
                tenant_id,
                tenant: tenant.to_owned(),
                spec: spec.clone(),
                update_time: now,
            })
        })
        .await
    }

    /// `tenant`'s budget (`NotFound` without one).
    pub async fn get_budget(&self, tenant: &str) -> Result<StoredBudget> {
        self.timed("get_budget", async {
            let row: Option<BudgetRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {BUDGET_COLUMNS} WHERE t.name = $1 AND t.delete_time IS NULL"
            )))
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
            row.ok_or_else(|| DomainError::not_found("budget of tenant", tenant))?
                .into_stored()
        })
        .await
    }

    /// Every live tenant's budget.
    pub async fn list_budgets(&self) -> Result<Vec<StoredBudget>> {
        self.timed("list_budgets", async {
            let rows: Vec<BudgetRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {BUDGET_COLUMNS} WHERE t.delete_time IS NULL ORDER BY t.name"
            )))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(BudgetRow::into_stored).collect()
        })
        .await
    }

    /// Records that `budget`'s tenant crossed `crossed` thresholds in
    /// `month` at `cost_nanos`. Each threshold fires once per tenant and
    /// month: the `budget_alerts` key decides, so of two replicas doing
    /// this at once one inserts and audits `budget.threshold_crossed`, the
    /// other waits for it and finds the row. Returns the thresholds that
    /// fired now.
    pub async fn record_budget_alerts(
        &self,
        budget: &StoredBudget,
        month: NaiveDate,
        crossed: &[u32],
        cost_nanos: i128,
        currency: &str,
    ) -> Result<Vec<u32>> {
        if crossed.is_empty() {
            return Ok(vec![]);
        }
        self.timed("record_budget_alerts", async {
            let mut tx = self.begin().await?;
            let thresholds: Vec<i32> = crossed.iter().map(|t| *t as i32).collect();
            let now = Utc::now();
            let mut fired: Vec<i32> = sqlx::query_scalar(
                "INSERT INTO budget_alerts (tenant_id, month, threshold, cost, fire_time) \
                 SELECT $1, $2, t, $4, $5 FROM UNNEST($3::int[]) AS t \
                 ON CONFLICT DO NOTHING RETURNING threshold",
            )
            .bind(budget.tenant_id)
            .bind(month)
            .bind(&thresholds)
            .bind(format_amount(cost_nanos))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            fired.sort_unstable();
            let ctx = ChangeContext::system("budgets");
            for t in &fired {
                audit::append(
                    &mut tx,
                    &ctx,
                    "budget.threshold_crossed",
                    format!("tenant/{}/budget", budget.tenant),
                    Some(&budget.tenant),
                    json!({
                        "month": month.format("%Y-%m").to_string(),
                        "threshold_percent": t,
                        "month_to_date_cost": format_amount(cost_nanos),
                        "monthly_amount": format_amount(budget.spec.monthly_nanos),
                        "currency": currency,
                    }),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(fired.into_iter().map(|t| t as u32).collect())
        })
        .await
    }

    /// Usage summed per step, price period, group and cluster — one
    /// grouped query over the rollups, with the names joined after summing.
    pub async fn usage_cells(&self, q: &UsageQuery) -> Result<Vec<UsageCell>> {
        self.timed("usage_cells", async {
            // Tenant and cluster reports by day read the per-tenant rollup
            // (kept equal to usage_daily's sums by triggers, see 0005).
            let daily = if q.grouping == CostGrouping::Environment {
                "usage_daily"
            } else {
                "usage_tenant_daily"
            };
            let env_column = if q.grouping == CostGrouping::Environment {
                "environment_id"
            } else {
                "NULL::uuid"
            };
            const AMOUNTS: &str = "cpu_requested, cpu_used, cpu_billed, memory_requested, memory_used, \
                memory_billed, storage_requested, storage_used, storage_billed, network_receive, \
                network_transmit, container_seconds";
            let part = |table: &str, t: &str, from: &str, to: &str| {
                format!(
                    "SELECT {t} AS t, tenant_id, {env_column} AS environment_id, cluster_id, {AMOUNTS} \
                     FROM {table} WHERE {t} >= {from} AND {t} < {to}"
                )
            };
            // The rows to sum. Daily rollups are 24 times fewer than hourly
            // ones: a one-step report on whole hours (`--window 30d` ends at
            // the next hour) reads its whole days from them and only the
            // partial days at either end from the hourly rollups. Several
            // steps must not straddle a day, so they read one rollup.
            let midnight = |t: DateTime<Utc>, up: bool| {
                let day = t.duration_trunc(chrono::Duration::days(1)).unwrap_or(t);
                if up && day < t { day + chrono::Duration::days(1) } else { day }
            };
            let (first_day, last_day) = (midnight(q.from, true), midnight(q.to, false));
            let one_step = q.step_seconds >= (q.to - q.from).num_seconds();
            let source = match q.rollup {
                Rollup::Daily => part(daily, "day", "$4", "$5"),
                Rollup::Hourly if one_step && first_day < last_day => format!(
                    "{} UNION ALL {} UNION ALL {}",
                    part("usage_hourly", "hour", "$4", "$8"),
                    part(daily, "day", "$8", "$9"),
                    part("usage_hourly", "hour", "$9", "$5"),
                ),
                Rollup::Hourly => part("usage_hourly", "hour", "$4", "$5"),
            };
            let (keys, select) = match q.grouping {
                CostGrouping::Tenant => ("tenant_id", "tenant_id, NULL::uuid AS environment_id"),
                CostGrouping::Environment => (
                    "tenant_id, environment_id",
                    "tenant_id, environment_id",
                ),
                CostGrouping::Cluster => ("", "NULL::uuid AS tenant_id, NULL::uuid AS environment_id"),
            };
            let group_keys = if keys.is_empty() {
                String::new()
            } else {
                format!(", {keys}")
            };
            // Names and column lists are constants of this function, never input.
            let sql = format!(
                "WITH u AS ( \
                   SELECT (EXTRACT(EPOCH FROM t)::bigint - $1) / $2 AS bucket, \
                          width_bucket(t, $3::timestamptz[]) AS period, {select}, cluster_id, \
                          ARRAY[SUM(cpu_requested)::text, SUM(cpu_used)::text, SUM(cpu_billed)::text, \
                            SUM(memory_requested)::text, SUM(memory_used)::text, SUM(memory_billed)::text, \
                            SUM(storage_requested)::text, SUM(storage_used)::text, SUM(storage_billed)::text, \
                            SUM(network_receive)::text, SUM(network_transmit)::text, SUM(container_seconds)::text] AS sums \
                   FROM ({source}) AS src \
                   WHERE ($6::text IS NULL OR tenant_id IN (SELECT id FROM tenants WHERE name = $6)) \
                     AND ($7::text IS NULL OR cluster_id IN (SELECT id FROM clusters WHERE name = $7)) \
                   GROUP BY 1, 2{group_keys}, cluster_id) \
                 SELECT u.bucket, u.period, COALESCE(tn.name, u.tenant_id::text), \
                   COALESCE(en.name, u.environment_id::text), u.cluster_id, c.name, u.sums \
                 FROM u JOIN clusters c ON c.id = u.cluster_id \
                 LEFT JOIN tenants tn ON tn.id = u.tenant_id \
                 LEFT JOIN environments en ON en.id = u.environment_id \
                 ORDER BY u.bucket, tn.name, en.name, c.name, u.period"
            );
            type Row = (i64, i32, Option<String>, Option<String>, Uuid, String, Vec<String>);
            // A month of 10,000 environments is 300,000 daily rows to group:
            // with the default work_mem (4 MB) the sort spills to disk and
            // takes twice as long. Read-only, so the transaction only scopes
            // the setting.
            let mut tx = self.pool.begin().await?;
            sqlx::query("SET LOCAL work_mem = '64MB'")
                .execute(&mut *tx)
                .await?;
            let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(q.from.timestamp())
                .bind(q.step_seconds.max(1))
                .bind(&q.breaks)
                .bind(q.from)
                .bind(q.to)
                .bind(&q.tenant)
                .bind(&q.cluster)
                .bind(first_day)
                .bind(last_day)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            rows.into_iter()
                .map(|(bucket, period, tenant, environment, cluster_id, cluster, sums)| {
                    Ok(UsageCell {
                        bucket,
                        period,
                        tenant,
                        environment,
                        cluster_id,
                        cluster,
                        totals: crate::usage::totals_from_text(&sums)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Node rollup rows over `[from, to)` (of `cluster` only, by name).
    pub async fn node_cells(
        &self,
        rollup: Rollup,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cluster: Option<&str>,
    ) -> Result<Vec<NodeCell>> {
        self.timed("node_cells", async {
            let (_, table, t) = rollup.tables();
            let rows: Vec<(DateTime<Utc>, String, Uuid, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {t}, agent_id, cluster_id, covered_seconds, cpu_millis_seconds, memory_byte_seconds \
                 FROM {table} WHERE {t} >= $1 AND {t} < $2 \
                   AND ($3::text IS NULL OR cluster_id IN (SELECT id FROM clusters WHERE name = $3)) \
                 ORDER BY agent_id, {t}"
            )))
            .bind(from)
            .bind(to)
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(time, agent_id, cluster_id, covered, cpu, memory)| NodeCell {
                    time,
                    agent_id,
                    cluster_id,
                    covered_seconds: covered,
                    cpu_millis_seconds: cpu,
                    memory_byte_seconds: memory,
                })
                .collect())
        })
        .await
    }

    /// Hourly node rows of the given `(agent, day)` pairs: where a day came
    /// up short, which hours did.
    pub async fn node_hours_of_days(
        &self,
        days: &[(String, DateTime<Utc>)],
    ) -> Result<Vec<NodeCell>> {
        if days.is_empty() {
            return Ok(vec![]);
        }
        self.timed("node_hours_of_days", async {
            let agents: Vec<&str> = days.iter().map(|(a, _)| a.as_str()).collect();
            let starts: Vec<DateTime<Utc>> = days.iter().map(|(_, d)| *d).collect();
            let rows: Vec<(DateTime<Utc>, String, Uuid, i64, i64, i64)> = sqlx::query_as(
                "SELECT h.hour, h.agent_id, h.cluster_id, h.covered_seconds, h.cpu_millis_seconds, h.memory_byte_seconds \
                 FROM UNNEST($1::text[], $2::timestamptz[]) AS d(agent_id, day) \
                 JOIN usage_node_hourly h ON h.agent_id = d.agent_id \
                   AND h.hour >= d.day AND h.hour < d.day + interval '1 day' \
                 ORDER BY h.agent_id, h.hour",
            )
            .bind(&agents)
            .bind(&starts)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(time, agent_id, cluster_id, covered, cpu, memory)| NodeCell {
                    time,
                    agent_id,
                    cluster_id,
                    covered_seconds: covered,
                    cpu_millis_seconds: cpu,
                    memory_byte_seconds: memory,
                })
                .collect())
        })
        .await
    }

    /// The nodes expected to report (of `cluster` only, by name): every
    /// agent, from the earlier of its registration and its first hour of
    /// data, until it was revoked.
    pub async fn reporting_nodes(&self, cluster: Option<&str>) -> Result<Vec<ReportingNode>> {
        self.timed("reporting_nodes", async {
            type Row = (
                String,
                Uuid,
                String,
                String,
                DateTime<Utc>,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT a.id, a.cluster_id, c.name, a.node_name, a.register_time, a.revoke_time, \
                       (SELECT MIN(h.hour) FROM usage_node_hourly h WHERE h.agent_id = a.id) \
                     FROM agents a JOIN clusters c ON c.id = a.cluster_id \
                     WHERE ($1::text IS NULL OR c.name = $1) ORDER BY c.name, a.node_name",
            )
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(agent_id, cluster_id, cluster, node, registered, revoked, first)| {
                        ReportingNode {
                            agent_id,
                            cluster_id,
                            cluster,
                            node,
                            since: first.map_or(registered, |f| f.min(registered)),
                            revoked,
                        }
                    },
                )
                .collect())
        })
        .await
    }
}
