//! Usage storage: batches stored at most once, daily raw partitions, rollups
//! recomputed from the level below, gaps, and partition retention.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use mtp_core::agents::AgentIdentity;
use mtp_core::usage::{FIELD_NAMES, UsageAmounts, UsageBatchClaim, UsageTotals};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::{Error, Result, Store};

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The batch id was stored before: nothing changed.
    pub duplicate: bool,
    /// Namespace windows stored (a window already stored under another
    /// batch id is not stored again).
    pub namespace_windows: u64,
    /// Namespaces that are no environment of the agent's cluster (ignored).
    pub unknown_namespaces: u64,
}

/// Usage of one environment summed over a range of days (from the rollups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentUsage {
    pub environment_id: Uuid,
    pub cluster_id: Uuid,
    pub tenant_id: Uuid,
    pub totals: UsageTotals,
}

/// The UTC day a time falls in.
fn day_of(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("whole hours exist")
}

fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

fn to_i64(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::Domain(mtp_core::Error::invalid(
            field,
            format!("{value} does not fit a stored amount"),
        ))
    })
}

/// An environment a namespace may belong to: id, tenant, creation time.
type Candidate = (Uuid, Uuid, DateTime<Utc>);

const RAW_TABLES: [&str; 2] = ["usage_windows", "usage_node_windows"];

impl Store {
    /// Creates the daily raw partitions for `days` that do not exist yet.
    /// Serialized by an advisory lock: concurrent `CREATE TABLE … PARTITION
    /// OF` from two replicas would otherwise fail on the catalog.
    pub async fn ensure_usage_partitions(&self, days: &BTreeSet<NaiveDate>) -> Result<()> {
        if days.is_empty() {
            return Ok(());
        }
        self.timed("ensure_usage_partitions", async {
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mtp_usage_partitions'))")
                .execute(&mut *tx)
                .await?;
            for day in days {
                let from = day_start(*day);
                let to = from + Duration::days(1);
                for table in RAW_TABLES {
                    // Names and bounds come from dates formatted here, never
                    // from input text.
                    let sql = format!(
                        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} \
                         FOR VALUES FROM ('{from}') TO ('{to}')",
                        name = partition_name(table, *day),
                        from = from.to_rfc3339(),
                        to = to.to_rfc3339(),
                    );
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            self.known_partitions().extend(days.iter().copied());
            Ok(())
        })
        .await
    }

    fn known_partitions(&self) -> std::sync::MutexGuard<'_, BTreeSet<NaiveDate>> {
        self.usage_partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a validated batch from `identity`'s agent exactly once: the
    /// batch id goes into the ledger in the same transaction as its windows,
    /// so a batch sent again (lost acknowledgement, restart, two replicas)
    /// changes nothing, and a window sent again under another id is kept
    /// once by the raw key. Windows of namespaces that are no environment of
    /// the agent's cluster are ignored (counted).
    pub async fn record_usage(
        &self,
        identity: &AgentIdentity,
        batch: &UsageBatchClaim,
        now: DateTime<Utc>,
    ) -> Result<UsageRecord> {
        let days: BTreeSet<NaiveDate> = {
            let known = self.known_partitions();
            batch
                .windows
                .iter()
                .map(|w| day_of(w.start))
                .filter(|d| !known.contains(d))
                .collect()
        };
        self.ensure_usage_partitions(&days).await?;
        self.timed("record_usage", async {
            let mut tx = self.begin().await?;
            let fresh = sqlx::query(
                "INSERT INTO usage_batches (agent_id, spool_epoch, sequence, cluster_id, receive_time, windows) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&identity.agent_id)
            .bind(to_i64("spool_epoch", batch.spool_epoch)?)
            .bind(to_i64("sequence", batch.sequence)?)
            .bind(identity.cluster_id)
            .bind(now)
            .bind(batch.windows.len() as i32)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                tx.rollback().await?;
                return Ok(UsageRecord {
                    duplicate: true,
                    namespace_windows: 0,
                    unknown_namespaces: 0,
                });
            }

            // The environment behind each namespace at each window: the
            // newest created before the window ended (a namespace name can
            // be reused after its environment was deleted, so deleted ones
            // count too). A join, not `= ANY($2)`: with thousands of names
            // that is compared row by row (0.4 s for 5,000 names).
            let names: BTreeSet<&str> = batch
                .windows
                .iter()
                .flat_map(|w| w.namespaces.iter().map(|n| n.namespace.as_str()))
                .collect();
            let names: Vec<&str> = names.into_iter().collect();
            let candidates: Vec<(String, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
                "SELECT e.namespace, e.id, e.tenant_id, e.create_time FROM environments e \
                 JOIN UNNEST($2::text[]) AS n(namespace) ON n.namespace = e.namespace \
                 WHERE e.cluster_id = $1 ORDER BY e.create_time DESC",
            )
            .bind(identity.cluster_id)
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?;
            let mut by_name: HashMap<&str, Vec<Candidate>> = HashMap::new();
            for (ns, id, tenant, created) in &candidates {
                by_name
                    .entry(ns.as_str())
                    .or_default()
                    .push((*id, *tenant, *created));
            }

            let mut raw = RawColumns::default();
            let mut unknown = 0u64;
            let mut hours = BTreeSet::new();
            for w in &batch.windows {
                let end = w.start + Duration::seconds(i64::from(w.duration_seconds));
                hours.insert(hour_of(w.start));
                for n in &w.namespaces {
                    // Before the oldest environment of that name the
                    // namespace did not exist: such a window can only come
                    // from a clock set behind, and belongs to that one.
                    let env = by_name.get(n.namespace.as_str()).and_then(|c| {
                        c.iter()
                            .find(|(_, _, created)| *created < end)
                            .or_else(|| c.last())
                    });
                    let Some((env, tenant, _)) = env else {
                        unknown += 1;
                        continue;
                    };
                    raw.push(w.start, &n.namespace, *env, *tenant, w.duration_seconds, &n.amounts)?;
                }
            }
            let mut insert = sqlx::query(
                "INSERT INTO usage_windows (window_start, agent_id, namespace, cluster_id, environment_id, tenant_id, \
                   duration_seconds, cpu_requested, cpu_used, cpu_billed, memory_requested, memory_used, memory_billed, \
                   storage_requested, storage_used, storage_billed, network_receive, network_transmit, container_seconds) \
                 SELECT s, $1, ns, $2, e, t, d, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12 \
                 FROM UNNEST($3::timestamptz[], $4::text[], $5::uuid[], $6::uuid[], $7::int[], \
                   $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], \
                   $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[]) \
                   AS u(s, ns, e, t, d, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&identity.agent_id)
            .bind(identity.cluster_id)
            .bind(&raw.starts)
            .bind(&raw.namespaces)
            .bind(&raw.environments)
            .bind(&raw.tenants)
            .bind(&raw.durations);
            for column in &raw.amounts {
                insert = insert.bind(column);
            }
            let stored = insert.execute(&mut *tx).await?.rows_affected();

            let starts: Vec<DateTime<Utc>> = batch.windows.iter().map(|w| w.start).collect();
            let durations: Vec<i32> = batch.windows.iter().map(|w| w.duration_seconds as i32).collect();
            let covered: Vec<i32> = batch.windows.iter().map(|w| w.covered_seconds as i32).collect();
            let cpu: Vec<i64> = batch.windows.iter().map(|w| w.node_cpu_millis).collect();
            let memory: Vec<i64> = batch.windows.iter().map(|w| w.node_memory_bytes).collect();
            sqlx::query(
                "INSERT INTO usage_node_windows (window_start, agent_id, cluster_id, duration_seconds, covered_seconds, \
                   node_cpu_millis, node_memory_bytes) \
                 SELECT s, $1, $2, d, c, m, b FROM UNNEST($3::timestamptz[], $4::int[], $5::int[], $6::bigint[], $7::bigint[]) \
                   AS u(s, d, c, m, b) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&identity.agent_id)
            .bind(identity.cluster_id)
            .bind(&starts)
            .bind(&durations)
            .bind(&covered)
            .bind(&cpu)
            .bind(&memory)
            .execute(&mut *tx)
            .await?;

            for gap in &batch.gaps {
                sqlx::query(
                    "INSERT INTO usage_gaps (agent_id, cluster_id, start_time, end_time, reason) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&identity.agent_id)
                .bind(identity.cluster_id)
                .bind(gap.start)
                .bind(gap.end)
                .bind(&gap.reason)
                .execute(&mut *tx)
                .await?;
            }

            // Last, and as an update of an existing row: the row lock makes
            // a concurrent rollup pass either wait for this batch or skip the
            // hour, never read the hour without it and then forget it.
            let hours: Vec<DateTime<Utc>> = hours.into_iter().collect();
            sqlx::query(
                "INSERT INTO usage_dirty_hours (hour, touch_time) SELECT h, $2 FROM UNNEST($1::timestamptz[]) AS h \
                 ON CONFLICT (hour) DO UPDATE SET touch_time = EXCLUDED.touch_time",
            )
            .bind(&hours)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(UsageRecord {
                duplicate: false,
                namespace_windows: stored,
                unknown_namespaces: unknown,
            })
        })
        .await
    }

    /// Recomputes the rollups of up to `max_hours` hours marked dirty (the
    /// hourly rows from the raw windows, then the days they fall in from the
    /// hourly rows), each hour in its own transaction. Hours locked by
    /// another replica or an ingest are skipped for the next pass. Returns
    /// the hours rolled up.
    pub async fn roll_up_usage(&self, max_hours: i64) -> Result<u64> {
        self.timed("roll_up_usage", async {
            let mut done = 0u64;
            for _ in 0..max_hours {
                let mut tx = self.begin().await?;
                let hour: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT hour FROM usage_dirty_hours ORDER BY hour LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(hour) = hour else {
                    tx.rollback().await?;
                    break;
                };
                sqlx::query("DELETE FROM usage_dirty_hours WHERE hour = $1")
                    .bind(hour)
                    .execute(&mut *tx)
                    .await?;
                roll_up_hour(&mut tx, hour).await?;
                tx.commit().await?;
                done += 1;
            }
            Ok(done)
        })
        .await
    }

    /// Drops the raw partitions of days before `keep_from` (the rollups stay)
    /// and the batch ledger of the same age. Returns the partitions dropped.
    pub async fn drop_usage_partitions_before(&self, keep_from: NaiveDate) -> Result<Vec<String>> {
        self.timed("drop_usage_partitions", async {
            let mut dropped = Vec::new();
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mtp_usage_partitions'))")
                .execute(&mut *tx)
                .await?;
            for table in RAW_TABLES {
                let children: Vec<String> = sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
                )
                .bind(table)
                .fetch_all(&mut *tx)
                .await?;
                for child in children {
                    let Some(day) = child
                        .strip_prefix(&format!("{table}_p"))
                        .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
                    else {
                        continue;
                    };
                    if day < keep_from {
                        sqlx::query(AssertSqlSafe(format!("DROP TABLE {child}")))
                            .execute(&mut *tx)
                            .await?;
                        dropped.push(child);
                    }
                }
            }
            // Hours past retention can no longer be recomputed from raw
            // windows: recomputing one would erase its rollup.
            sqlx::query("DELETE FROM usage_dirty_hours WHERE hour < $1")
                .bind(day_start(keep_from))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM usage_batches WHERE receive_time < $1")
                .bind(day_start(keep_from))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            // Another replica's cache may still name these days; harmless:
            // no window that old is accepted any more.
            self.known_partitions().retain(|d| *d >= keep_from);
            dropped.sort();
            Ok(dropped)
        })
        .await
    }

    /// Usage per environment over `[from, to)` whole days, from the daily rollups.
    pub async fn environment_usage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<EnvironmentUsage>> {
        self.timed("environment_usage", async {
            let rows: Vec<(Uuid, Uuid, Uuid, Vec<String>)> = sqlx::query_as(
                "SELECT environment_id, cluster_id, tenant_id, ARRAY[ \
                   SUM(cpu_requested)::text, SUM(cpu_used)::text, SUM(cpu_billed)::text, \
                   SUM(memory_requested)::text, SUM(memory_used)::text, SUM(memory_billed)::text, \
                   SUM(storage_requested)::text, SUM(storage_used)::text, SUM(storage_billed)::text, \
                   SUM(network_receive)::text, SUM(network_transmit)::text, SUM(container_seconds)::text] \
                 FROM usage_daily WHERE day >= $1 AND day < $2 \
                 GROUP BY environment_id, cluster_id, tenant_id ORDER BY environment_id, cluster_id",
            )
            .bind(day_start(from))
            .bind(day_start(to))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|(environment_id, cluster_id, tenant_id, sums)| {
                    Ok(EnvironmentUsage {
                        environment_id,
                        cluster_id,
                        tenant_id,
                        totals: totals_from_text(&sums)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Seconds of node coverage per agent over `[from, to)` whole days.
    pub async fn node_coverage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(String, Uuid, i64)>> {
        self.timed("node_coverage", async {
            Ok(sqlx::query_as(
                "SELECT agent_id, cluster_id, SUM(covered_seconds)::bigint FROM usage_node_daily \
                 WHERE day >= $1 AND day < $2 GROUP BY agent_id, cluster_id ORDER BY agent_id",
            )
            .bind(day_start(from))
            .bind(day_start(to))
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// The gaps agents reported that overlap `[from, to)`.
    pub async fn usage_gaps(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>, String)>> {
        self.timed("usage_gaps", async {
            Ok(sqlx::query_as(
                "SELECT agent_id, start_time, end_time, reason FROM usage_gaps \
                 WHERE start_time < $2 AND end_time > $1 ORDER BY start_time, agent_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }
}

/// One hour's rollups, recomputed whole: hourly rows from the raw windows,
/// then the hour's day from the hourly rows.
async fn roll_up_hour(tx: &mut sqlx::PgConnection, hour: DateTime<Utc>) -> Result<()> {
    let end = hour + Duration::hours(1);
    let day = day_start(day_of(hour));
    let day_end = day + Duration::days(1);
    const SUMS: &str = "SUM(cpu_requested), SUM(cpu_used), SUM(cpu_billed), SUM(memory_requested), \
        SUM(memory_used), SUM(memory_billed), SUM(storage_requested), SUM(storage_used), SUM(storage_billed), \
        SUM(network_receive), SUM(network_transmit), SUM(container_seconds)";
    // Hours of one day recomputed by two replicas at once would both
    // rewrite that day's rows: the second's insert would collide with the
    // first's. One day at a time (the lock goes with the transaction).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mtp_usage_rollup_day'), $1)")
        .bind((day.timestamp() / 86_400) as i32)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM usage_hourly WHERE hour = $1")
        .bind(hour)
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO usage_hourly SELECT $1, environment_id, cluster_id, tenant_id, {SUMS} \
         FROM usage_windows WHERE window_start >= $1 AND window_start < $2 \
         GROUP BY environment_id, cluster_id, tenant_id"
    )))
    .bind(hour)
    .bind(end)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM usage_node_hourly WHERE hour = $1")
        .bind(hour)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO usage_node_hourly SELECT $1, agent_id, cluster_id, SUM(covered_seconds), \
           SUM(node_cpu_millis * covered_seconds), SUM(node_memory_bytes * covered_seconds) \
         FROM usage_node_windows WHERE window_start >= $1 AND window_start < $2 GROUP BY agent_id, cluster_id",
    )
    .bind(hour)
    .bind(end)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM usage_daily WHERE day = $1")
        .bind(day)
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO usage_daily SELECT $1, environment_id, cluster_id, tenant_id, {SUMS} \
         FROM usage_hourly WHERE hour >= $1 AND hour < $2 GROUP BY environment_id, cluster_id, tenant_id"
    )))
    .bind(day)
    .bind(day_end)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM usage_node_daily WHERE day = $1")
        .bind(day)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO usage_node_daily SELECT $1, agent_id, cluster_id, SUM(covered_seconds), \
           SUM(cpu_millis_seconds), SUM(memory_byte_seconds) \
         FROM usage_node_hourly WHERE hour >= $1 AND hour < $2 GROUP BY agent_id, cluster_id",
    )
    .bind(day)
    .bind(day_end)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) fn totals_from_text(sums: &[String]) -> Result<UsageTotals> {
    let parsed: Vec<u128> = sums
        .iter()
        .map(|s| {
            s.parse::<u128>()
                .map_err(|_| Error::Corrupt(format!("usage sum {s:?} is not a count")))
        })
        .collect::<Result<_>>()?;
    let sums: [u128; 12] = parsed
        .try_into()
        .map_err(|_| Error::Corrupt("usage sums incomplete".into()))?;
    Ok(UsageTotals::from_array(sums))
}

/// Raw window rows as column arrays for one UNNEST insert.
#[derive(Default)]
struct RawColumns {
    starts: Vec<DateTime<Utc>>,
    namespaces: Vec<String>,
    environments: Vec<Uuid>,
    tenants: Vec<Uuid>,
    durations: Vec<i32>,
    amounts: [Vec<i64>; 12],
}

impl RawColumns {
    fn push(
        &mut self,
        start: DateTime<Utc>,
        namespace: &str,
        environment: Uuid,
        tenant: Uuid,
        duration: u32,
        a: &UsageAmounts,
    ) -> Result<()> {
        self.starts.push(start);
        self.namespaces.push(namespace.to_owned());
        self.environments.push(environment);
        self.tenants.push(tenant);
        self.durations.push(duration as i32);
        for ((column, field), v) in self.amounts.iter_mut().zip(FIELD_NAMES).zip(a.to_array()) {
            column.push(to_i64(field, v)?);
        }
        Ok(())
    }
}
