//! `mtp-usage-bench`: usage ingest into PostgreSQL through the store, as the
//! agent sessions do it (one transaction per batch, idempotent on the batch
//! id), on a throwaway PostgreSQL: namespace-windows stored per second with
//! several agents at once, the rollup time, and the storage one environment
//! costs per month (raw windows for the retention, hourly and daily rollups).
//!
//! `cargo run --release -p mtp-e2e --bin mtp-usage-bench -- --environments 10000`

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use clap::Parser;
use mtp_core::agents::{AgentIdentity, AgentRegistration, IssuedCertificate};
use mtp_core::clusters::NewCluster;
use mtp_core::quota::TenantQuota;
use mtp_core::tenants::{Owners, TenantSpec};
use mtp_core::usage::{NamespaceWindow, UsageAmounts, UsageBatchClaim, WindowClaim};
use mtp_store::{ChangeContext, Store, StoreConfig};

/// Usage ingest rate, rollup time and storage per environment-month.
#[derive(Debug, Parser)]
struct Args {
    /// Environments (namespaces) of the one cluster.
    #[arg(long, default_value_t = 10_000)]
    environments: usize,
    /// Agents (nodes) sending at once; each reports every namespace's share
    /// of its node, as real agents of one cluster do.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// One-minute windows each agent sends.
    #[arg(long, default_value_t = 30)]
    minutes: usize,
    /// Namespaces per batch (the wire allows at most 5000 per window).
    #[arg(long, default_value_t = 5000)]
    batch_namespaces: usize,
    /// Raw retention in days (the control plane's default is 3).
    #[arg(long, default_value_t = 3)]
    raw_retention_days: u64,
    /// Reports timed (each grouping) over 30 days of daily rollups of this
    /// many environments on two clusters, through GetCostReport on an
    /// in-process control plane. 0: skip.
    #[arg(long, default_value_t = 10_000)]
    report_environments: usize,
    /// Reports per grouping.
    #[arg(long, default_value_t = 21)]
    report_runs: usize,
}

const GI: u64 = 1 << 30;

fn amounts(k: u64) -> UsageAmounts {
    UsageAmounts {
        cpu_requested_core_nanos: 30_000_000_000,
        cpu_used_core_nanos: 12_000_000_000 + k,
        cpu_billed_core_nanos: 30_000_000_000,
        memory_requested_byte_seconds: 60 * GI,
        memory_used_byte_seconds: 90 * GI + k,
        memory_billed_byte_seconds: 90 * GI + k,
        storage_requested_byte_seconds: 600 * GI,
        storage_used_byte_seconds: 60 * GI,
        storage_billed_byte_seconds: 600 * GI,
        network_receive_bytes: 1000 + k,
        network_transmit_bytes: 10 + k,
        container_seconds: 60,
    }
}

async fn agent(store: &Store, ctx: &ChangeContext, node: &str) -> anyhow::Result<AgentIdentity> {
    let (secret, _) = store
        .create_join_token(ctx, "bench", TimeDelta::hours(1), 0)
        .await?;
    let registration = AgentRegistration::new(secret, node, "bench".into())?;
    let serial = format!("{:032x}", Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let (identity, _, ()) = store
        .register_agent(&registration, "bench", |_| {
            Ok((
                IssuedCertificate {
                    serial,
                    expire_time: Utc::now() + TimeDelta::hours(1),
                },
                (),
            ))
        })
        .await?;
    Ok(identity)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn relation_bytes(pool: &sqlx::PgPool, like: &str) -> anyhow::Result<i64> {
    let bytes: Option<i64> = sqlx::query_scalar(
        "SELECT SUM(pg_total_relation_size(c.oid))::bigint FROM pg_class c
         WHERE c.relkind = 'r' AND c.relname LIKE $1",
    )
    .bind(like)
    .fetch_one(pool)
    .await?;
    Ok(bytes.unwrap_or(0))
}

async fn rows(pool: &sqlx::PgPool, table: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=5000).contains(&args.batch_namespaces),
        "--batch-namespaces must be in 1..=5000"
    );
    let db = mtp_pg_harness::fresh_database().await;
    let store = Store::connect(&StoreConfig::new(db.url())).await?;
    store.migrate().await?;
    let pool = sqlx::PgPool::connect(db.url()).await?;
    let ctx = ChangeContext::system("bench");
    store
        .create_cluster(
            &ctx,
            &NewCluster {
                name: "bench".into(),
                labels: Default::default(),
                ingress_namespace: "kube-system".into(),
            },
        )
        .await?;
    store
        .create_tenant(
            &ctx,
            &TenantSpec {
                name: "team-a".into(),
                display_name: String::new(),
                owners: Owners::default(),
                quota: TenantQuota {
                    cpu_millis: 1000,
                    memory_bytes: GI,
                    storage_bytes: GI,
                    pods: 10,
                    max_environments: 1,
                },
                allowed_profiles: Vec::new(),
            },
        )
        .await?;
    // The environments are inserted directly: this measures ingest, not
    // environment creation.
    sqlx::query(
        "INSERT INTO environments (id, tenant_id, name, cluster_id, profile, namespace,
                cpu_millis, memory_bytes, storage_bytes, pods, services, persistent_volume_claims,
                status, reason, revision, create_time)
         SELECT gen_random_uuid(), t.id, 'env-' || g, c.id, 'small', 'team-a-env-' || g,
                1, 1, 1, 1, 1, 1, 'ready', '', 1, now() - interval '40 days'
         FROM tenants t, clusters c, generate_series(1, $1) g",
    )
    .bind(args.environments as i64)
    .execute(&pool)
    .await?;
    let mut agents = Vec::new();
    for i in 0..args.agents {
        agents.push(agent(&store, &ctx, &format!("node-{i}")).await?);
    }
    let start = Utc::now().duration_trunc(TimeDelta::hours(1))? - TimeDelta::hours(2);
    let days: BTreeSet<_> = (0..3)
        .map(|d| (start + TimeDelta::days(d)).date_naive())
        .collect();
    store.ensure_usage_partitions(&days).await?;

    println!(
        "ingest: {} environments, {} agents × {} one-minute windows, {} namespaces per batch",
        args.environments, args.agents, args.minutes, args.batch_namespaces
    );
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (a, identity) in agents.iter().cloned().enumerate() {
        let store = store.clone();
        let args_envs = args.environments;
        let per_batch = args.batch_namespaces;
        let minutes = args.minutes;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut stored = 0u64;
            let mut sequence = 0u64;
            for m in 0..minutes {
                let window_start: DateTime<Utc> = start + TimeDelta::minutes(m as i64);
                for chunk in (1..=args_envs).collect::<Vec<_>>().chunks(per_batch) {
                    sequence += 1;
                    let window = WindowClaim {
                        start: window_start,
                        duration_seconds: 60,
                        covered_seconds: 60,
                        node_cpu_millis: 8000,
                        node_memory_bytes: (32 * GI) as i64,
                        namespaces: chunk
                            .iter()
                            .map(|i| NamespaceWindow {
                                namespace: format!("team-a-env-{i}"),
                                amounts: amounts((*i + a) as u64),
                            })
                            .collect(),
                    };
                    let now = Utc::now();
                    let claim = UsageBatchClaim::new(
                        a as u64 + 1,
                        sequence,
                        vec![window],
                        vec![],
                        now,
                        now - TimeDelta::days(2),
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let t = Instant::now();
                    let record = store.record_usage(&identity, &claim, now).await?;
                    latencies.push(t.elapsed());
                    stored += record.namespace_windows;
                }
            }
            anyhow::Ok((stored, latencies))
        });
    }
    let mut stored = 0u64;
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (s, l) = done??;
        stored += s;
        latencies.extend(l);
    }
    let elapsed = began.elapsed();
    latencies.sort();
    println!(
        "  {stored} namespace-windows in {:.2} s: {:.0} namespace-windows/s; batch latency p50 {:?} p99 {:?} ({} batches)",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len(),
    );

    let began = Instant::now();
    let mut hours = 0;
    loop {
        let n = store.roll_up_usage(48).await?;
        hours += n;
        if n == 0 {
            break;
        }
    }
    println!(
        "rollup: {hours} dirty hours recomputed in {:.2} s",
        began.elapsed().as_secs_f64()
    );

    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let raw_rows = rows(&pool, "usage_windows").await?;
    let raw_bytes = relation_bytes(&pool, "usage_windows_p%").await?;
    let hourly_rows = rows(&pool, "usage_hourly").await?;
    let hourly_bytes = relation_bytes(&pool, "usage_hourly").await?;
    let daily_rows = rows(&pool, "usage_daily").await?;
    let daily_bytes = relation_bytes(&pool, "usage_daily").await?;
    let per = |bytes: i64, rows: i64| {
        if rows > 0 {
            bytes as f64 / rows as f64
        } else {
            0.0
        }
    };
    let raw_per_row = per(raw_bytes, raw_rows);
    let hourly_per_row = per(hourly_bytes, hourly_rows);
    let daily_per_row = per(daily_bytes, daily_rows);
    println!(
        "storage (tables + indexes): raw {raw_per_row:.0} B per namespace-window ({raw_rows} rows), hourly {hourly_per_row:.0} B per row ({hourly_rows}), daily {daily_per_row:.0} B per row ({daily_rows})"
    );
    // One node per environment-minute; an environment spread over n nodes
    // has n raw rows per minute (one per agent), but one rollup row per hour.
    let raw_kept = raw_per_row * 1440.0 * args.raw_retention_days as f64;
    let rollups_month = hourly_per_row * 720.0 + daily_per_row * 30.0;
    println!(
        "per environment (one node): raw windows kept {:.1} MB (steady, {} days of 1-min windows), rollups {:.1} KB per month kept",
        raw_kept / 1e6,
        args.raw_retention_days,
        rollups_month / 1e3,
    );
    if args.report_environments > 0 {
        reports(args.report_environments, args.report_runs).await?;
    }
    Ok(())
}

/// Times 30-day reports over `environments` environments (daily rollups
/// written directly: this is about reading them) through the API.
async fn reports(environments: usize, runs: usize) -> anyhow::Result<()> {
    use mtp_proto::v1 as pb;
    let db = mtp_pg_harness::fresh_database().await;
    let plane = mtp_e2e::TestPlane::start_on(db.url().to_owned()).await;
    let mut admin = plane
        .admin_with(
            &[("team-a", mtp_e2e::quota("100", "400Gi", "4Ti", 100, 10))],
            &["k3s-1", "k3s-2"],
        )
        .await;
    let from = Utc::now().duration_trunc(TimeDelta::days(1))? - TimeDelta::days(31);
    let ts = |t: DateTime<Utc>| {
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    };
    admin
        .cost
        .set_price(pb::SetPriceRequest {
            price: Some(pb::Price {
                effective_time: ts(from),
                currency_code: "EUR".into(),
                cpu_core_hour: "0.031".into(),
                memory_gib_hour: "0.0042".into(),
                storage_gib_month: "0.04".into(),
                ..Default::default()
            }),
            allow_high: false,
        })
        .await?;
    let sql = plane.sql().await;
    sqlx::query(
        "INSERT INTO environments (id, tenant_id, name, cluster_id, profile, namespace,
                cpu_millis, memory_bytes, storage_bytes, pods, services, persistent_volume_claims,
                status, reason, revision, create_time)
         SELECT gen_random_uuid(), t.id, 'env-' || g, c.id, 'small', 'team-a-env-' || g,
                1, 1, 1, 1, 1, 1, 'ready', '', 1, now() - interval '40 days'
         FROM tenants t, generate_series(1, $1) g,
              LATERAL (SELECT id FROM clusters ORDER BY name OFFSET (g % 2) LIMIT 1) c",
    )
    .bind(environments as i64)
    .execute(&sql)
    .await?;
    // Daily rollups of every environment for 30 days.
    sqlx::query(
        "INSERT INTO usage_daily (day, environment_id, cluster_id, tenant_id, cpu_requested, cpu_used, \
           cpu_billed, memory_requested, memory_used, memory_billed, storage_requested, storage_used, \
           storage_billed, network_receive, network_transmit, container_seconds) \
         SELECT d.day, e.id, e.cluster_id, e.tenant_id, \
           43200000000000, 21600000000000, 43200000000000, 92771293593600, 46385646796800, 92771293593600, \
           0, 0, 0, 1000, 10, 86400 \
         FROM generate_series($1::timestamptz, $1::timestamptz + interval '29 days', interval '1 day') AS d(day), \
              environments e",
    )
    .bind(from)
    .execute(&sql)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&sql).await?;
    let to = from + TimeDelta::days(30);
    println!("report: 30 days × {environments} environments on 2 clusters, {runs} runs each");
    // `--window 30d` ends at the next whole hour: whole days from the daily
    // rollups, the two partial days from the hourly ones.
    let shifted = TimeDelta::hours(5);
    for (group, what, shift) in [
        (pb::CostGrouping::Tenant, "tenant", TimeDelta::zero()),
        (pb::CostGrouping::Tenant, "tenant, on whole hours", shifted),
        (pb::CostGrouping::Cluster, "cluster", TimeDelta::zero()),
        (
            pb::CostGrouping::Environment,
            "environment (every page)",
            TimeDelta::zero(),
        ),
    ] {
        let (from, to) = (from + shift, to + shift);
        let mut times = Vec::with_capacity(runs);
        let mut rows = 0;
        for _ in 0..runs {
            let began = Instant::now();
            let mut token = String::new();
            rows = 0;
            loop {
                let page = admin
                    .cost
                    .get_cost_report(pb::GetCostReportRequest {
                        start_time: ts(from),
                        end_time: ts(to),
                        group_by: group as i32,
                        page_size: 5000,
                        page_token: token.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                rows += page.rows.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            times.push(began.elapsed());
        }
        times.sort();
        println!(
            "  by {what}: {rows} rows, p50 {:.1} ms, p90 {:.1} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.9).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
