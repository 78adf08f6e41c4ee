//! Assembling a cost report from the store's grouped reads: pricing each
//! cell with the version in force for its cluster and time, summing cells
//! into rows (rounded once per row, in core), coverage per cluster and step,
//! the gaps in the range, and idle capacity per cluster.
//!
//! Coverage of a row = node-seconds with data ÷ node-seconds expected, over
//! the clusters the row's usage comes from, in the row's step. A node is
//! expected to report from the earlier of its registration and its first
//! hour of data until it is revoked, and never beyond now.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use mtp_core::cost::{CostRow, PriceBook};
use mtp_core::usage::UsageTotals;
use mtp_store::{CostGrouping, NodeCell, ReportingNode, Rollup, Store, UsageQuery};
use uuid::Uuid;

use crate::api::error::ApiResult;

/// Most gaps one report lists (the rest are summed up in coverage).
const MAX_GAPS: usize = 1000;

/// What to report.
#[derive(Debug, Clone)]
pub(crate) struct ReportSpec {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// 0: one step for the whole range.
    pub step_seconds: i64,
    pub grouping: CostGrouping,
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    /// Idle rows (platform admins, no tenant filter).
    pub idle: bool,
    /// Gaps: `None` none; `Some(false)` of every cluster read; `Some(true)`
    /// only of clusters the rows draw on (tenant-bound callers).
    pub gaps: Option<bool>,
}

/// One row of a report.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tenant: Option<String>,
    pub environment: Option<String>,
    pub cluster: Option<String>,
    pub cost: CostRow,
    pub coverage: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    pub cluster: String,
    pub node: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub currency: Option<String>,
    pub rows: Vec<Row>,
    pub idle: Vec<Row>,
    pub gaps: Vec<Gap>,
    pub total: Row,
}

type RowKey = (i64, Option<String>, Option<String>, Option<String>);

/// Seconds of `[a0, a1)` ∩ `[b0, b1)`.
fn overlap(a0: DateTime<Utc>, a1: DateTime<Utc>, b0: DateTime<Utc>, b1: DateTime<Utc>) -> i64 {
    (a1.min(b1) - a0.max(b0)).num_seconds().max(0)
}

/// Whether a time is a UTC midnight.
pub(crate) fn is_midnight(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(86_400) == 0 && t.timestamp_subsec_nanos() == 0
}

/// Node-seconds with data and expected, per (cluster, step).
struct Coverage {
    covered: HashMap<(Uuid, i64), i64>,
    expected: HashMap<(Uuid, i64), i64>,
}

impl Coverage {
    /// Covered ÷ expected over the given (cluster, step) pairs, in [0, 1];
    /// 0 when nothing was expected and nothing came.
    fn of(&self, pairs: impl Iterator<Item = (Uuid, i64)>) -> f64 {
        let (mut have, mut want) = (0i64, 0i64);
        for key in pairs {
            have += self.covered.get(&key).copied().unwrap_or(0);
            want += self.expected.get(&key).copied().unwrap_or(0);
        }
        if want == 0 {
            if have > 0 { 1.0 } else { 0.0 }
        } else {
            (have as f64 / want as f64).clamp(0.0, 1.0)
        }
    }
}

struct Grid {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: i64,
    now: DateTime<Utc>,
}

impl Grid {
    fn bucket(&self, t: DateTime<Utc>) -> i64 {
        (t - self.from).num_seconds().div_euclid(self.step)
    }
    fn bounds(&self, bucket: i64) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.from + Duration::seconds(bucket * self.step);
        (start, (start + Duration::seconds(self.step)).min(self.to))
    }
    /// Seconds `node` is expected to report within `[t0, t1)`.
    fn expected(&self, node: &ReportingNode, t0: DateTime<Utc>, t1: DateTime<Utc>) -> i64 {
        let until = node.revoked.unwrap_or(self.now).min(self.now);
        overlap(t0, t1, node.since, until)
    }
}

pub(crate) async fn build(
    store: &Store,
    spec: &ReportSpec,
    now: DateTime<Utc>,
) -> ApiResult<Report> {
    let book = store.price_book().await?;
    let breaks = book.breaks(spec.from, spec.to);
    let daily = is_midnight(spec.from)
        && is_midnight(spec.to)
        && (spec.step_seconds == 0 || spec.step_seconds == 86_400);
    let rollup = if daily { Rollup::Daily } else { Rollup::Hourly };
    let step = if spec.step_seconds == 0 {
        (spec.to - spec.from).num_seconds().max(1)
    } else {
        spec.step_seconds
    };
    let grid = Grid {
        from: spec.from,
        to: spec.to,
        step,
        now,
    };
    let cells = store
        .usage_cells(&UsageQuery {
            from: spec.from,
            to: spec.to,
            rollup,
            step_seconds: step,
            grouping: spec.grouping,
            tenant: spec.tenant.clone(),
            cluster: spec.cluster.clone(),
            breaks: breaks.clone(),
        })
        .await?;
    // Period p (as `width_bucket` numbers them) starts at break p - 1.
    let period_start = |p: i32| -> DateTime<Utc> {
        usize::try_from(p - 1)
            .ok()
            .and_then(|i| breaks.get(i).copied())
            .map_or(spec.from, |b| b.max(spec.from))
    };

    // Rows, and what each draws on.
    let mut rows: BTreeMap<RowKey, (CostRow, BTreeSet<Uuid>)> = BTreeMap::new();
    // Billed per (bucket, period, cluster), for idle.
    let mut billed: HashMap<(i64, i32, Uuid), UsageTotals> = HashMap::new();
    let mut names: HashMap<Uuid, String> = HashMap::new();
    for cell in &cells {
        let (bucket_start, _) = grid.bounds(cell.bucket);
        let at = bucket_start.max(period_start(cell.period));
        let price = book.in_force(&cell.cluster, at);
        let key = (
            cell.bucket,
            cell.tenant.clone(),
            cell.environment.clone(),
            (spec.grouping == CostGrouping::Cluster).then(|| cell.cluster.clone()),
        );
        let (row, clusters) = rows.entry(key).or_default();
        row.add(&cell.totals, price)?;
        clusters.insert(cell.cluster_id);
        names.insert(cell.cluster_id, cell.cluster.clone());
        if spec.idle {
            billed
                .entry((cell.bucket, cell.period, cell.cluster_id))
                .or_default()
                .merge(&cell.totals)?;
        }
    }

    // Coverage per (cluster, bucket).
    let nodes = store.reporting_nodes(spec.cluster.as_deref()).await?;
    let node_cells = store
        .node_cells(rollup, spec.from, spec.to, spec.cluster.as_deref())
        .await?;
    let unit = match rollup {
        Rollup::Daily => Duration::days(1),
        Rollup::Hourly => Duration::hours(1),
    };
    let mut covered: HashMap<(Uuid, i64), i64> = HashMap::new();
    for c in &node_cells {
        *covered
            .entry((c.cluster_id, grid.bucket(c.time)))
            .or_default() += c.covered_seconds;
    }
    let buckets = (spec.to - spec.from).num_seconds().div_euclid(step)
        + i64::from((spec.to - spec.from).num_seconds().rem_euclid(step) != 0);
    let mut expected: HashMap<(Uuid, i64), i64> = HashMap::new();
    for node in &nodes {
        names.insert(node.cluster_id, node.cluster.clone());
        for b in 0..buckets {
            let (t0, t1) = grid.bounds(b);
            let e = grid.expected(node, t0, t1);
            if e > 0 {
                *expected.entry((node.cluster_id, b)).or_default() += e;
            }
        }
    }
    let coverage = Coverage { covered, expected };

    let mut out_rows = Vec::with_capacity(rows.len());
    let mut total = CostRow::default();
    let mut drawn: BTreeSet<(Uuid, i64)> = BTreeSet::new();
    for ((bucket, tenant, environment, cluster), (row, clusters)) in rows {
        let (start, end) = grid.bounds(bucket);
        total.merge(&row)?;
        drawn.extend(clusters.iter().map(|c| (*c, bucket)));
        out_rows.push(Row {
            start,
            end,
            tenant,
            environment,
            cluster,
            coverage: coverage.of(clusters.iter().map(|c| (*c, bucket))),
            cost: row,
        });
    }
    let total_row = Row {
        start: spec.from,
        end: spec.to,
        tenant: spec.tenant.clone(),
        environment: None,
        cluster: spec.cluster.clone(),
        coverage: coverage.of(drawn.iter().copied()),
        cost: total,
    };

    let idle = if spec.idle {
        idle_rows(
            &grid,
            &book,
            &breaks,
            &node_cells,
            &billed,
            &names,
            &coverage,
        )?
    } else {
        vec![]
    };

    let gaps = match spec.gaps {
        None => vec![],
        Some(only_drawn) => {
            let clusters: Option<BTreeSet<Uuid>> =
                only_drawn.then(|| drawn.iter().map(|(c, _)| *c).collect());
            let nodes: Vec<&ReportingNode> = nodes
                .iter()
                .filter(|n| clusters.as_ref().is_none_or(|c| c.contains(&n.cluster_id)))
                .collect();
            gaps(store, &grid, rollup, unit, &nodes, &node_cells).await?
        }
    };

    Ok(Report {
        currency: book.currency().map(str::to_owned),
        rows: out_rows,
        idle,
        gaps,
        total: total_row,
    })
}

/// Per cluster and step: allocatable capacity minus what environments were
/// billed, priced in each period (never below zero: a node overcommitted
/// has no idle capacity).
fn idle_rows(
    grid: &Grid,
    book: &PriceBook,
    breaks: &[DateTime<Utc>],
    node_cells: &[NodeCell],
    billed: &HashMap<(i64, i32, Uuid), UsageTotals>,
    names: &HashMap<Uuid, String>,
    coverage: &Coverage,
) -> ApiResult<Vec<Row>> {
    let period_of = |t: DateTime<Utc>| breaks.iter().filter(|b| **b <= t).count() as i32;
    let mut capacity: BTreeMap<(i64, Uuid, i32), (u128, u128)> = BTreeMap::new();
    for c in node_cells {
        let entry = capacity
            .entry((grid.bucket(c.time), c.cluster_id, period_of(c.time)))
            .or_default();
        entry.0 += u128::try_from(c.cpu_millis_seconds).unwrap_or(0) * 1_000_000;
        entry.1 += u128::try_from(c.memory_byte_seconds).unwrap_or(0);
    }
    let mut rows: BTreeMap<(i64, String, Uuid), CostRow> = BTreeMap::new();
    for ((bucket, cluster_id, period), (cpu, memory)) in capacity {
        let used = billed
            .get(&(bucket, period, cluster_id))
            .copied()
            .unwrap_or_default();
        let idle = UsageTotals {
            cpu_billed_core_nanos: cpu.saturating_sub(used.cpu_billed_core_nanos),
            memory_billed_byte_seconds: memory.saturating_sub(used.memory_billed_byte_seconds),
            ..UsageTotals::default()
        };
        let name = names.get(&cluster_id).cloned().unwrap_or_default();
        let (start, _) = grid.bounds(bucket);
        let at = usize::try_from(period - 1)
            .ok()
            .and_then(|i| breaks.get(i).copied())
            .map_or(start, |b| start.max(b));
        rows.entry((bucket, name.clone(), cluster_id))
            .or_default()
            .add(&idle, book.in_force(&name, at))?;
    }
    Ok(rows
        .into_iter()
        .map(|((bucket, cluster, id), cost)| {
            let (start, end) = grid.bounds(bucket);
            Row {
                start,
                end,
                tenant: None,
                environment: None,
                cluster: Some(cluster),
                coverage: coverage.of(std::iter::once((id, bucket))),
                cost,
            }
        })
        .collect())
}

/// Stretches of the range with no (or partial) data per node, from the
/// rollups (a day short of data is looked at hour by hour), and the gaps
/// agents reported. Hours not yet over are not gaps.
async fn gaps(
    store: &Store,
    grid: &Grid,
    rollup: Rollup,
    unit: Duration,
    nodes: &[&ReportingNode],
    node_cells: &[NodeCell],
) -> ApiResult<Vec<Gap>> {
    let mut have: HashMap<(&str, DateTime<Utc>), i64> = HashMap::new();
    for c in node_cells {
        have.insert((c.agent_id.as_str(), c.time), c.covered_seconds);
    }
    let units = (grid.to - grid.from).num_seconds() / unit.num_seconds().max(1);
    // Units (days or hours) that came up short, per node.
    let mut short: Vec<(String, DateTime<Utc>)> = Vec::new();
    for node in nodes {
        for i in 0..units {
            let t0 = grid.from + unit * i as i32;
            let t1 = t0 + unit;
            if t1 > grid.now {
                break;
            }
            let want = grid.expected(node, t0, t1);
            if want > 0
                && have
                    .get(&(node.agent_id.as_str(), t0))
                    .copied()
                    .unwrap_or(0)
                    < want
            {
                short.push((node.agent_id.clone(), t0));
            }
        }
    }
    // Hours short of data, per node.
    let mut hours: BTreeMap<&str, Vec<(DateTime<Utc>, bool)>> = BTreeMap::new();
    let by_agent: HashMap<&str, &ReportingNode> =
        nodes.iter().map(|n| (n.agent_id.as_str(), *n)).collect();
    let hourly_have: HashMap<(String, DateTime<Utc>), i64> = match rollup {
        Rollup::Hourly => HashMap::new(),
        Rollup::Daily => store
            .node_hours_of_days(&short)
            .await?
            .into_iter()
            .map(|c| ((c.agent_id, c.time), c.covered_seconds))
            .collect(),
    };
    for (agent, t0) in &short {
        let Some(node) = by_agent.get(agent.as_str()) else {
            continue;
        };
        let per_unit = match rollup {
            Rollup::Hourly => 1,
            Rollup::Daily => 24,
        };
        for h in 0..per_unit {
            let h0 = *t0 + Duration::hours(h);
            let h1 = h0 + Duration::hours(1);
            if h1 > grid.now {
                break;
            }
            let want = grid.expected(node, h0, h1);
            let got = match rollup {
                Rollup::Hourly => have.get(&(agent.as_str(), h0)).copied().unwrap_or(0),
                Rollup::Daily => hourly_have.get(&(agent.clone(), h0)).copied().unwrap_or(0),
            };
            if want > 0 && got < want {
                hours
                    .entry(node.agent_id.as_str())
                    .or_default()
                    .push((h0, got == 0));
            }
        }
    }
    let mut out = Vec::new();
    for (agent, list) in hours {
        let node = by_agent[agent];
        let mut i = 0;
        while i < list.len() {
            let (start, empty) = list[i];
            let mut end = start + Duration::hours(1);
            let mut j = i + 1;
            while j < list.len() && list[j].0 == end && list[j].1 == empty {
                end += Duration::hours(1);
                j += 1;
            }
            out.push(Gap {
                cluster: node.cluster.clone(),
                node: node.node.clone(),
                start,
                end,
                reason: if empty { "no-data" } else { "partial-data" }.into(),
            });
            i = j;
        }
    }
    // What the agents said.
    for (agent, start, end, reason) in store.usage_gaps(grid.from, grid.to).await? {
        if let Some(node) = by_agent.get(agent.as_str()) {
            out.push(Gap {
                cluster: node.cluster.clone(),
                node: node.node.clone(),
                start: start.max(grid.from),
                end: end.min(grid.to),
                reason,
            });
        }
    }
    out.sort_by(|a, b| (a.start, &a.cluster, &a.node).cmp(&(b.start, &b.cluster, &b.node)));
    out.truncate(MAX_GAPS);
    Ok(out)
}
