//! Rendering of a `CostReport`: the human table (with its TOTAL line, idle
//! capacity and coverage gaps), the JSON view and the CSV lines.
//!
//! Money never goes through a float: `Money` is read as an integer count of
//! nanos (`crate::money`) and printed from that, rounded half to even to 2
//! decimals in the table, in full in JSON and CSV.

use mtp_proto::v1::{CostReport, CostRow, CoverageGap, Money, ResourceCost};
use serde::Serialize;

use super::{GroupBy, Step, short_time};
use crate::money;
use crate::output::{self, Table, datetime};

/// Quantities (core-hours, GiB-hours) in the table: two decimals.
fn qty(v: f64) -> String {
    format!("{v:.2}")
}

/// A ratio in [0, 1] as a percentage with one decimal.
fn pct(ratio: f64) -> String {
    format!("{:.1}", ratio * 100.0)
}

/// Coverage as a percentage, rounded *down* to one decimal so that anything
/// short of full coverage never shows as 100.0, and marked `*` when below 1.
pub fn coverage_cell(coverage: f64) -> String {
    let tenths = (coverage * 1000.0).floor();
    let s = format!("{:.1}", tenths / 10.0);
    if coverage < 1.0 { format!("{s}*") } else { s }
}

/// Money decimals in the table: a small environment's day is a fraction of
/// a cent, which 2 decimals would show as 0.00.
pub(super) const MONEY_DECIMALS: u32 = 4;

/// A money cell: `EUR 12.3457` (4 decimals, half to even).
fn money_cell(m: Option<&Money>, currency: &str) -> String {
    let cur = m
        .map(|m| m.currency_code.as_str())
        .filter(|c| !c.is_empty())
        .unwrap_or(currency);
    money::with_currency(cur, &money::format_dp(money::nanos(m), MONEY_DECIMALS))
}

/// Full-precision decimal string for JSON and CSV.
fn money_full(m: Option<&Money>) -> String {
    money::format_full(money::nanos(m))
}

fn resource(r: Option<&ResourceCost>) -> ResourceCost {
    r.cloned().unwrap_or_default()
}

/// The grouping columns of a row.
fn key_cells(r: &CostRow, by: GroupBy) -> Vec<String> {
    match by {
        GroupBy::Tenant => vec![r.tenant.clone()],
        GroupBy::Environment => vec![r.tenant.clone(), r.environment.clone()],
        GroupBy::Cluster => vec![r.cluster.clone()],
    }
}

fn key_headers(by: GroupBy) -> Vec<&'static str> {
    match by {
        GroupBy::Tenant => vec!["TENANT"],
        GroupBy::Environment => vec!["TENANT", "ENVIRONMENT"],
        GroupBy::Cluster => vec!["CLUSTER"],
    }
}

fn step_cell(r: &CostRow) -> String {
    datetime(r.start_time.as_ref())
        .map(short_time)
        .unwrap_or_default()
}

/// The columns after the key (and step) columns of a report row.
fn value_cells(r: &CostRow, currency: &str) -> Vec<String> {
    let (cpu, mem, sto) = (
        resource(r.cpu.as_ref()),
        resource(r.memory.as_ref()),
        resource(r.storage.as_ref()),
    );
    vec![
        qty(cpu.requested),
        qty(cpu.used),
        qty(cpu.billed),
        qty(mem.requested),
        qty(mem.used),
        qty(mem.billed),
        qty(sto.billed),
        money_cell(cpu.cost.as_ref(), currency),
        money_cell(mem.cost.as_ref(), currency),
        money_cell(sto.cost.as_ref(), currency),
        money_cell(r.total_cost.as_ref(), currency),
        pct(r.efficiency),
        coverage_cell(r.coverage),
    ]
}

const VALUE_HEADERS: [&str; 13] = [
    "CPU REQ",
    "CPU USED",
    "CPU BILLED",
    "MEM REQ",
    "MEM USED",
    "MEM BILLED",
    "STORAGE BILLED",
    "CPU COST",
    "MEM COST",
    "STORAGE COST",
    "TOTAL",
    "EFF %",
    "COVERAGE %",
];

fn range_text(r: &CostReport) -> String {
    let t = |ts| datetime(ts).map(short_time).unwrap_or_else(|| "?".into());
    format!(
        "{} to {} (UTC)",
        t(r.start_time.as_ref()),
        t(r.end_time.as_ref())
    )
}

/// The human report: a title line, the rows with a TOTAL line, a legend of
/// units, then idle capacity per cluster and the coverage gaps.
pub fn render_table(r: &CostReport, by: GroupBy, step: Step) -> String {
    let cur = r.currency_code.as_str();
    let stepped = step != Step::Whole;
    let mut out = format!("Cost by {}, {}", by.name(), range_text(r));
    if cur.is_empty() {
        out.push_str(", no prices set yet (see `mtp price set`)\n\n");
    } else {
        out.push_str(&format!(", in {cur}\n\n"));
    }

    let mut headers = key_headers(by);
    if stepped {
        headers.push("START");
    }
    headers.extend(VALUE_HEADERS);
    let mut table = Table::new(&headers);
    let mut partial = false;
    for row in &r.rows {
        let mut cells = key_cells(row, by);
        if stepped {
            cells.push(step_cell(row));
        }
        cells.extend(value_cells(row, cur));
        partial |= row.coverage < 1.0;
        table.row(cells);
    }
    if r.rows.is_empty() {
        out.push_str("No usage in this range.\n");
    } else {
        if let Some(total) = &r.total {
            let mut cells = vec!["TOTAL".to_string()];
            cells.extend(std::iter::repeat_n(
                String::new(),
                key_headers(by).len() - 1 + usize::from(stepped),
            ));
            cells.extend(value_cells(total, cur));
            partial |= total.coverage < 1.0;
            table.row(cells);
        }
        out.push_str(&table.render());
        out.push_str(
            "\nCPU in core-hours, memory and storage in GiB-hours; billed = max(request, usage).\n\
             Money rounded half to even to 4 decimals (-o json or -o csv for full precision).\n",
        );
        if partial {
            out.push_str(
                "* coverage below 100 %: these costs rest on part of the time (see the gaps below).\n",
            );
        }
    }

    if !r.idle.is_empty() {
        out.push_str("\nIdle capacity (allocatable, billed to no environment):\n");
        let mut h = vec!["CLUSTER"];
        if stepped {
            h.push("START");
        }
        h.extend([
            "CPU CORE-H",
            "MEM GIB-H",
            "STORAGE GIB-H",
            "CPU COST",
            "MEM COST",
            "STORAGE COST",
            "TOTAL",
            "COVERAGE %",
        ]);
        let mut t = Table::new(&h);
        for row in &r.idle {
            let (cpu, mem, sto) = (
                resource(row.cpu.as_ref()),
                resource(row.memory.as_ref()),
                resource(row.storage.as_ref()),
            );
            let mut cells = vec![row.cluster.clone()];
            if stepped {
                cells.push(step_cell(row));
            }
            cells.extend([
                qty(cpu.billed),
                qty(mem.billed),
                qty(sto.billed),
                money_cell(cpu.cost.as_ref(), cur),
                money_cell(mem.cost.as_ref(), cur),
                money_cell(sto.cost.as_ref(), cur),
                money_cell(row.total_cost.as_ref(), cur),
                coverage_cell(row.coverage),
            ]);
            t.row(cells);
        }
        out.push_str(&t.render());
    }

    if !r.gaps.is_empty() {
        out.push_str(&format!(
            "\nCoverage gaps ({}): costs in these stretches are missing, not zero.\n",
            r.gaps.len()
        ));
        out.push_str(&gaps_table(&r.gaps).render());
    }
    out
}

fn gaps_table(gaps: &[CoverageGap]) -> Table {
    let mut t = Table::new(&["CLUSTER", "NODE", "FROM", "TO", "LENGTH", "REASON"]);
    for g in gaps {
        let (s, e) = (
            datetime(g.start_time.as_ref()),
            datetime(g.end_time.as_ref()),
        );
        let len = match (s, e) {
            (Some(s), Some(e)) if e > s => output::compact_duration((e - s).num_seconds()),
            _ => String::new(),
        };
        t.row(vec![
            g.cluster.clone(),
            g.node.clone(),
            s.map(short_time).unwrap_or_default(),
            e.map(short_time).unwrap_or_default(),
            len,
            g.reason.clone(),
        ]);
    }
    t
}

/// JSON shape of `mtp cost report -o json` (documented in `--help`).
#[derive(Debug, Serialize)]
pub struct ReportView {
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub group_by: &'static str,
    /// 0 for one step over the whole range, else 3600 or 86400.
    pub step_seconds: u32,
    /// ISO 4217 code of every amount ("" while the price book is empty).
    pub currency: String,
    pub rows: Vec<RowView>,
    /// Idle capacity per cluster (platform admins only).
    pub idle: Vec<RowView>,
    /// Stretches without usage data: costs there are missing, not zero.
    pub gaps: Vec<GapView>,
    pub total: Option<RowView>,
}

#[derive(Debug, Serialize)]
pub struct RowView {
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub tenant: Option<String>,
    pub environment: Option<String>,
    pub cluster: Option<String>,
    /// Core-hours.
    pub cpu: ResourceView,
    /// GiB-hours.
    pub memory: ResourceView,
    /// GiB-hours (priced per GiB-month of 730 hours).
    pub storage: ResourceView,
    /// Decimal string, full precision.
    pub total_cost: String,
    pub efficiency: f64,
    pub coverage: f64,
    pub network_receive_bytes: u64,
    pub network_transmit_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ResourceView {
    pub requested: f64,
    pub used: f64,
    pub billed: f64,
    /// Decimal string, full precision.
    pub cost: String,
    pub efficiency: f64,
}

#[derive(Debug, Serialize)]
pub struct GapView {
    pub cluster: String,
    pub node: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub reason: String,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl From<&CostRow> for RowView {
    fn from(r: &CostRow) -> Self {
        let res = |x: Option<&ResourceCost>| {
            let x = resource(x);
            ResourceView {
                requested: x.requested,
                used: x.used,
                billed: x.billed,
                cost: money_full(x.cost.as_ref()),
                efficiency: x.efficiency,
            }
        };
        RowView {
            start_time: output::rfc3339(r.start_time.as_ref()),
            end_time: output::rfc3339(r.end_time.as_ref()),
            tenant: non_empty(&r.tenant),
            environment: non_empty(&r.environment),
            cluster: non_empty(&r.cluster),
            cpu: res(r.cpu.as_ref()),
            memory: res(r.memory.as_ref()),
            storage: res(r.storage.as_ref()),
            total_cost: money_full(r.total_cost.as_ref()),
            efficiency: r.efficiency,
            coverage: r.coverage,
            network_receive_bytes: r.network_receive_bytes,
            network_transmit_bytes: r.network_transmit_bytes,
        }
    }
}

pub fn json_view(r: &CostReport, by: GroupBy, step: Step) -> ReportView {
    ReportView {
        start_time: output::rfc3339(r.start_time.as_ref()),
        end_time: output::rfc3339(r.end_time.as_ref()),
        group_by: by.name(),
        step_seconds: step.seconds(),
        currency: r.currency_code.clone(),
        rows: r.rows.iter().map(RowView::from).collect(),
        idle: r.idle.iter().map(RowView::from).collect(),
        gaps: r
            .gaps
            .iter()
            .map(|g| GapView {
                cluster: g.cluster.clone(),
                node: g.node.clone(),
                start_time: output::rfc3339(g.start_time.as_ref()),
                end_time: output::rfc3339(g.end_time.as_ref()),
                reason: g.reason.clone(),
            })
            .collect(),
        total: r.total.as_ref().map(RowView::from),
    }
}

/// The CSV columns, always all of them whatever the grouping, so a script
/// can rely on their positions.
pub const CSV_HEADER: &str = "kind,tenant,environment,cluster,start_time,end_time,\
cpu_requested_core_hours,cpu_used_core_hours,cpu_billed_core_hours,\
memory_requested_gib_hours,memory_used_gib_hours,memory_billed_gib_hours,\
storage_billed_gib_hours,cpu_cost,memory_cost,storage_cost,total_cost,currency,\
efficiency,coverage";

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `-o csv`: the header, then one line per row (`kind` = `row`) and per idle
/// row (`kind` = `idle`). Money as full-precision decimal strings, quantities
/// and ratios as plain numbers, times RFC 3339.
pub fn render_csv(r: &CostReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let rows = r
        .rows
        .iter()
        .map(|x| ("row", x))
        .chain(r.idle.iter().map(|x| ("idle", x)));
    for (kind, row) in rows {
        let (cpu, mem, sto) = (
            resource(row.cpu.as_ref()),
            resource(row.memory.as_ref()),
            resource(row.storage.as_ref()),
        );
        let fields = [
            kind.to_string(),
            row.tenant.clone(),
            row.environment.clone(),
            row.cluster.clone(),
            output::rfc3339(row.start_time.as_ref()).unwrap_or_default(),
            output::rfc3339(row.end_time.as_ref()).unwrap_or_default(),
            cpu.requested.to_string(),
            cpu.used.to_string(),
            cpu.billed.to_string(),
            mem.requested.to_string(),
            mem.used.to_string(),
            mem.billed.to_string(),
            sto.billed.to_string(),
            money_full(cpu.cost.as_ref()),
            money_full(mem.cost.as_ref()),
            money_full(sto.cost.as_ref()),
            money_full(row.total_cost.as_ref()),
            r.currency_code.clone(),
            row.efficiency.to_string(),
            row.coverage.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ts(s: &str) -> Option<prost_types::Timestamp> {
        let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    }

    pub fn eur(units: i64, nanos: i32) -> Option<Money> {
        Some(Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        })
    }

    fn res(req: f64, used: f64, billed: f64, cost: Option<Money>) -> Option<ResourceCost> {
        Some(ResourceCost {
            requested: req,
            used,
            billed,
            cost,
            efficiency: if req > 0.0 { used / req } else { 0.0 },
        })
    }

    /// Two tenants over November, one with partial coverage, an idle row and a gap.
    pub fn report() -> CostReport {
        let row = |tenant: &str, cpu_cost, mem_cost, total, cov| CostRow {
            start_time: ts("2026-11-01T00:00:00Z"),
            end_time: ts("2026-12-01T00:00:00Z"),
            tenant: tenant.into(),
            cpu: res(1440.0, 360.5, 1450.25, cpu_cost),
            memory: res(2880.0, 2000.0, 2900.0, mem_cost),
            storage: res(0.0, 0.0, 7300.0, eur(1, 0)),
            total_cost: total,
            efficiency: 0.4567,
            coverage: cov,
            ..Default::default()
        };
        CostReport {
            start_time: ts("2026-11-01T00:00:00Z"),
            end_time: ts("2026-12-01T00:00:00Z"),
            currency_code: "EUR".into(),
            rows: vec![
                row(
                    "team-a",
                    eur(43, 507_500_000),
                    eur(11, 600_000_000),
                    eur(56, 107_500_000),
                    1.0,
                ),
                row(
                    "team-b",
                    eur(0, 125_000_000),
                    eur(0, 5_000_000),
                    eur(1, 130_000_001),
                    0.9996,
                ),
            ],
            idle: vec![CostRow {
                start_time: ts("2026-11-01T00:00:00Z"),
                end_time: ts("2026-12-01T00:00:00Z"),
                cluster: "eu-1".into(),
                cpu: res(0.0, 0.0, 100.0, eur(3, 0)),
                memory: res(0.0, 0.0, 400.0, eur(1, 600_000_000)),
                storage: res(0.0, 0.0, 0.0, None),
                total_cost: eur(4, 600_000_000),
                coverage: 1.0,
                ..Default::default()
            }],
            gaps: vec![CoverageGap {
                cluster: "eu-1".into(),
                node: "node-2".into(),
                start_time: ts("2026-11-03T02:00:00Z"),
                end_time: ts("2026-11-03T05:30:00Z"),
                reason: "no-data".into(),
            }],
            next_page_token: String::new(),
            total: Some(CostRow {
                cpu: res(2880.0, 721.0, 2900.5, eur(43, 632_500_000)),
                memory: res(5760.0, 4000.0, 5800.0, eur(11, 605_000_000)),
                storage: res(0.0, 0.0, 14_600.0, eur(2, 0)),
                total_cost: eur(57, 237_500_001),
                efficiency: 0.4567,
                coverage: 0.9998,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn table_golden() {
        let got = render_table(&report(), GroupBy::Tenant, Step::Whole);
        let want = "\
Cost by tenant, 2026-11-01 to 2026-12-01 (UTC), in EUR

TENANT   CPU REQ   CPU USED   CPU BILLED   MEM REQ   MEM USED   MEM BILLED   STORAGE BILLED   CPU COST      MEM COST      STORAGE COST   TOTAL         EFF %   COVERAGE %
team-a   1440.00   360.50     1450.25      2880.00   2000.00    2900.00      7300.00          EUR 43.5075   EUR 11.6000   EUR 1.0000     EUR 56.1075   45.7    100.0
team-b   1440.00   360.50     1450.25      2880.00   2000.00    2900.00      7300.00          EUR 0.1250    EUR 0.0050    EUR 1.0000     EUR 1.1300    45.7    99.9*
TOTAL    2880.00   721.00     2900.50      5760.00   4000.00    5800.00      14600.00         EUR 43.6325   EUR 11.6050   EUR 2.0000     EUR 57.2375   45.7    99.9*

CPU in core-hours, memory and storage in GiB-hours; billed = max(request, usage).
Money rounded half to even to 4 decimals (-o json or -o csv for full precision).
* coverage below 100 %: these costs rest on part of the time (see the gaps below).

Idle capacity (allocatable, billed to no environment):
CLUSTER   CPU CORE-H   MEM GIB-H   STORAGE GIB-H   CPU COST     MEM COST     STORAGE COST   TOTAL        COVERAGE %
eu-1      100.00       400.00      0.00            EUR 3.0000   EUR 1.6000   EUR 0.0000     EUR 4.6000   100.0

Coverage gaps (1): costs in these stretches are missing, not zero.
CLUSTER   NODE     FROM                TO                  LENGTH   REASON
eu-1      node-2   2026-11-03T02:00Z   2026-11-03T05:30Z   3h30m    no-data
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn stepped_environment_table_has_both_keys_and_a_step_column() {
        let mut r = report();
        r.rows[0].environment = "dev".into();
        r.rows[0].start_time = ts("2026-11-02T00:00:00Z");
        r.idle.clear();
        r.gaps.clear();
        let got = render_table(&r, GroupBy::Environment, Step::Day);
        let lines: Vec<&str> = got.lines().collect();
        assert!(
            lines[2].starts_with("TENANT   ENVIRONMENT   START        CPU REQ"),
            "{got}"
        );
        assert!(
            lines[3].starts_with("team-a   dev           2026-11-02   1440.00"),
            "{got}"
        );
        assert!(
            lines[4].starts_with("team-b   -             2026-11-01   "),
            "{got}"
        );
        assert!(
            lines[5].starts_with("TOTAL    -             -            2880.00"),
            "{got}"
        );
        assert!(!got.contains("Idle capacity") && !got.contains("Coverage gaps"));
    }

    #[test]
    fn full_coverage_is_not_marked_and_empty_reports_say_so() {
        let mut r = report();
        for row in &mut r.rows {
            row.coverage = 1.0;
        }
        r.total.as_mut().unwrap().coverage = 1.0;
        let got = render_table(&r, GroupBy::Tenant, Step::Whole);
        assert!(!got.contains('*'), "{got}");
        assert_eq!(coverage_cell(0.9999), "99.9*");
        assert_eq!(coverage_cell(1.0), "100.0");
        assert_eq!(coverage_cell(0.0), "0.0*");

        let empty = CostReport {
            start_time: ts("2026-11-01T00:00:00Z"),
            end_time: ts("2026-11-01T13:00:00Z"),
            ..Default::default()
        };
        let got = render_table(&empty, GroupBy::Cluster, Step::Whole);
        assert_eq!(
            got,
            "Cost by cluster, 2026-11-01 to 2026-11-01T13:00Z (UTC), no prices set yet (see `mtp price set`)\n\n\
             No usage in this range.\n"
        );
    }

    #[test]
    fn json_shape_is_stable_and_money_is_exact() {
        let v = serde_json::to_value(json_view(&report(), GroupBy::Tenant, Step::Whole)).unwrap();
        assert_eq!(v["currency"], "EUR");
        assert_eq!(v["group_by"], "tenant");
        assert_eq!(v["step_seconds"], 0);
        assert_eq!(v["start_time"], "2026-11-01T00:00:00Z");
        assert_eq!(v["rows"].as_array().unwrap().len(), 2);
        let b = &v["rows"][1];
        assert_eq!(b["tenant"], "team-b");
        assert!(b["environment"].is_null());
        assert_eq!(b["total_cost"], "1.130000001");
        assert_eq!(b["cpu"]["cost"], "0.125");
        assert_eq!(b["cpu"]["billed"], 1450.25);
        assert_eq!(b["coverage"], 0.9996);
        assert_eq!(v["idle"][0]["cluster"], "eu-1");
        assert_eq!(v["idle"][0]["storage"]["cost"], "0.00");
        assert_eq!(v["gaps"][0]["node"], "node-2");
        assert_eq!(v["gaps"][0]["end_time"], "2026-11-03T05:30:00Z");
        assert_eq!(v["total"]["total_cost"], "57.237500001");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "currency",
                "end_time",
                "gaps",
                "group_by",
                "idle",
                "rows",
                "start_time",
                "step_seconds",
                "total"
            ]
        );
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let got = render_csv(&report());
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 4, "{got}");
        assert_eq!(lines[0], CSV_HEADER);
        let cols = CSV_HEADER.split(',').count();
        assert_eq!(cols, 20);
        for l in &lines {
            assert_eq!(l.split(',').count(), cols, "{l}");
        }
        assert_eq!(
            lines[2],
            "row,team-b,,,2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,1440,360.5,1450.25,\
             2880,2000,2900,7300,0.125,0.005,1.00,1.130000001,EUR,0.4567,0.9996"
        );
        assert!(lines[3].starts_with("idle,,,eu-1,"), "{}", lines[3]);
        assert!(!got.contains("EUR 1"), "no currency inside numbers");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
