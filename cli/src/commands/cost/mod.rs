//! `mtp cost report` and `mtp cost chart`: what environments used and cost,
//! from `CostService.GetCostReport`. This module holds what both share: the
//! selection flags, the time range they resolve to, and the paging.

pub mod chart;
pub mod report;

use std::collections::HashSet;
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use clap::{Args, Subcommand, ValueEnum};
use mtp_proto::v1::{CostGrouping, CostReport, GetCostReportRequest};

use super::{Ctx, to_timestamp};
use crate::errors::CliError;
use crate::output::{Format, emit};

/// The `--help` after-text of the cost commands (units, the meaning of the
/// columns, rounding and scoping); a macro so `concat!` can extend it.
macro_rules! cost_help {
    () => {
        "\
Units:
  CPU in core-hours (one core for one hour); memory and storage in GiB-hours.
  Storage is priced per GiB-month, a month being 730 hours.
Requested, used, billed:
  billed = max(request, usage) per container per interval: a reservation is
  paid even when idle, and usage above the request is paid too.
  Eff. = used / requested over CPU and memory, weighted by cost.
Coverage:
  node-time with usage data / node-time expected, over the clusters a row
  draws on. Below 100 % (marked `*`) the costs rest on part of the time: the
  coverage gaps listed under the table are missing, not zero.
Money:
  exact amounts from the server, in the price book's currency. The table
  rounds half to even to 4 decimals, the chart to 2; -o json and -o csv give full
  precision (up to 9 decimals) as decimal strings without a currency symbol.
Scope:
  a tenant-owner token sees only its own tenant (--tenant is implied); idle
  capacity (allocatable, billed to no environment) is shown to platform
  admins only.
Time:
  all times are UTC. --window ends at the next whole hour (at the end of today
  with --step 1d) and starts that long before. --from is inclusive, --to
  exclusive: `--from 2026-11-01 --to 2026-12-01` is November."
    };
}

/// Units, billed, coverage, rounding and scoping, for every cost command.
pub const COST_HELP: &str = cost_help!();

const REPORT_HELP: &str = concat!(
    "\
Output (-o):
  table  the columns below, a TOTAL line, idle capacity, coverage gaps.
  json   {start_time, end_time, group_by, step_seconds, currency, rows[],
         idle[], gaps[], total}; a row is {start_time, end_time, tenant,
         environment, cluster (null unless grouped by it), cpu, memory,
         storage ({requested, used, billed, cost, efficiency}), total_cost,
         efficiency, coverage, network_receive_bytes, network_transmit_bytes};
         money as decimal strings, ratios in [0, 1].
  csv    a header, then one line per row (kind=row) and per idle row
         (kind=idle); money as decimal strings.

",
    cost_help!()
);

const CHART_HELP: &str = concat!(
    "\
Chart:
  the total cost of each step (default: days), stacked by group, the largest
  group first; beyond 8 groups the smallest are summed as `other`. In the
  terminal the longest bar fills the width (--width, $COLUMNS), each group
  has its own fill character (see the legend, with each group's total); a
  step whose coverage is below 100 % is marked `*`. When the data holds a
  single step (e.g. --window 1d) there is one bar per group. --out FILE.svg
  writes a standalone SVG (title with range and currency, money axis, one
  stacked bar per step, legend) instead.

",
    cost_help!()
);

#[derive(Debug, Subcommand)]
pub enum CostCmd {
    /// Usage and cost per tenant, environment or cluster, with idle capacity
    /// and coverage gaps.
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
    /// Cost as a bar chart: stacked per group and step in the terminal, or an
    /// SVG file with --out.
    #[command(after_help = CHART_HELP)]
    Chart(ChartArgs),
}

/// What to report on: the time range, the grouping and the filters.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// How far back, in whole hours or days (e.g. 24h, 7d, 30d) [default: 30d].
    #[arg(long, value_name = "DURATION", value_parser = parse_window, conflicts_with_all = ["from", "to"])]
    pub window: Option<Duration>,
    /// Start of the range (inclusive): RFC 3339 on a whole hour, or YYYY-MM-DD
    /// (00:00 UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_hour_time, requires = "to")]
    pub from: Option<DateTime<Utc>>,
    /// End of the range (exclusive), as --from.
    #[arg(long, value_name = "TIME", value_parser = parse_hour_time, requires = "from")]
    pub to: Option<DateTime<Utc>>,
    /// Group by tenant, by environment (tenant + environment) or by cluster.
    #[arg(long, value_enum, default_value_t = GroupBy::Tenant)]
    pub by: GroupBy,
    /// Only this tenant.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only this cluster.
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// One row per group and hour (1h) or day (1d) [default: one step for the
    /// whole range].
    #[arg(long, value_name = "STEP", value_parser = parse_step)]
    pub step: Option<Step>,
}

#[derive(Debug, Args)]
pub struct ChartArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// One bar per hour (1h) or day (1d).
    #[arg(long, value_name = "STEP", value_parser = parse_step, default_value = "1d")]
    pub step: Step,
    /// Write a standalone SVG file instead of drawing in the terminal.
    #[arg(long, value_name = "FILE.svg")]
    pub out: Option<PathBuf>,
    /// Terminal width to fill [default: $COLUMNS, else 100].
    #[arg(long, value_name = "COLUMNS", value_parser = clap::value_parser!(u16).range(40..))]
    pub width: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    Tenant,
    Environment,
    Cluster,
}

impl GroupBy {
    pub fn proto(self) -> CostGrouping {
        match self {
            GroupBy::Tenant => CostGrouping::Tenant,
            GroupBy::Environment => CostGrouping::Environment,
            GroupBy::Cluster => CostGrouping::Cluster,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Tenant => "tenant",
            GroupBy::Environment => "environment",
            GroupBy::Cluster => "cluster",
        }
    }
}

/// The length of one row's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One step for the whole range.
    Whole,
    Hour,
    Day,
}

impl Step {
    pub fn seconds(self) -> u32 {
        match self {
            Step::Whole => 0,
            Step::Hour => 3600,
            Step::Day => 86_400,
        }
    }
}

/// `--step`: `1h` or `1d` (also `hour`/`hourly`, `day`/`daily`).
pub fn parse_step(s: &str) -> Result<Step, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1h" | "hour" | "hourly" | "3600" => Ok(Step::Hour),
        "1d" | "24h" | "day" | "daily" | "86400" => Ok(Step::Day),
        _ => Err(format!("{s:?}: expected 1h or 1d")),
    }
}

/// `--window`: a duration (`30d`, `24h`, `1d12h`) of whole hours.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = super::parse_duration(s)?;
    if d.num_seconds() % 3600 != 0 {
        return Err(format!(
            "{s:?} is not a whole number of hours (costs are kept per hour), e.g. 24h, 7d"
        ));
    }
    Ok(d)
}

/// `--from`/`--to`: `YYYY-MM-DD` (00:00 UTC) or RFC 3339 on a whole UTC hour.
pub fn parse_hour_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    let at = if t.len() == 10 && !t.contains('T') {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map_err(|e| format!("invalid date {s:?}: {e} (expected YYYY-MM-DD)"))?
            .and_hms_opt(0, 0, 0)
            .map(|n| n.and_utc())
            .ok_or_else(|| format!("invalid date {s:?}"))?
    } else {
        super::parse_rfc3339(t)?
    };
    if !is_whole_hour(at) {
        return Err(format!(
            "{s:?} is not on a whole UTC hour (costs are kept per hour), e.g. 2026-11-01T13:00:00Z"
        ));
    }
    Ok(at)
}

fn is_whole_hour(t: DateTime<Utc>) -> bool {
    t.minute() == 0 && t.second() == 0 && t.nanosecond() == 0
}

fn is_midnight(t: DateTime<Utc>) -> bool {
    is_whole_hour(t) && t.hour() == 0
}

/// The `[start, end)` the selection means at `now`: --from/--to as given
/// (checked against each other and the step), or --window (default 30 days)
/// ending at the next whole hour, or at the end of today for daily steps.
pub fn resolve_range(
    sel: &Selection,
    step: Step,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), CliError> {
    if let (Some(from), Some(to)) = (sel.from, sel.to) {
        if from >= to {
            return Err(CliError::usage(format!(
                "--to {} must be after --from {}",
                short_time(to),
                short_time(from)
            )));
        }
        if step == Step::Day {
            for (flag, t) in [("--from", from), ("--to", to)] {
                if !is_midnight(t) {
                    return Err(CliError::usage(format!(
                        "{flag} {}: with --step 1d the range must be whole UTC days (give YYYY-MM-DD)",
                        short_time(t)
                    )));
                }
            }
        }
        return Ok((from, to));
    }
    if sel.from.is_some() || sel.to.is_some() {
        return Err(CliError::usage("--from and --to go together"));
    }
    let window = sel.window.unwrap_or_else(|| Duration::days(30));
    let secs = window.num_seconds();
    if secs <= 0 || secs % 3600 != 0 {
        return Err(CliError::usage(
            "--window: must be a whole number of hours, e.g. 24h, 7d",
        ));
    }
    let end = if step == Step::Day {
        if secs % 86_400 != 0 {
            return Err(CliError::usage(format!(
                "--window {}h: with --step 1d the window must be whole days, e.g. 7d",
                secs / 3600
            )));
        }
        let today = now.date_naive();
        (today + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .map(|n| n.and_utc())
            .ok_or_else(|| CliError::usage("--window: the date is out of range"))?
    } else {
        ceil_hour(now)
    };
    let start = end
        .checked_sub_signed(window)
        .ok_or_else(|| CliError::usage("--window: too long"))?;
    Ok((start, end))
}

/// `now` rounded up to a whole UTC hour (unchanged if already on one).
fn ceil_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    let floor = now
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(now);
    if floor == now {
        now
    } else {
        floor + Duration::hours(1)
    }
}

/// A time for tables and messages: `2026-11-01` at midnight, else
/// `2026-11-01T13:00Z`.
pub fn short_time(t: DateTime<Utc>) -> String {
    if is_midnight(t) {
        t.format("%Y-%m-%d").to_string()
    } else if t.second() == 0 && t.nanosecond() == 0 {
        t.format("%Y-%m-%dT%H:%MZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// The first page's request.
pub fn request(
    sel: &Selection,
    step: Step,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> GetCostReportRequest {
    GetCostReportRequest {
        start_time: Some(to_timestamp(start)),
        end_time: Some(to_timestamp(end)),
        group_by: sel.by.proto() as i32,
        tenant: sel.tenant.clone().unwrap_or_default(),
        cluster: sel.cluster.clone().unwrap_or_default(),
        step_seconds: step.seconds(),
        page_size: PAGE_SIZE,
        page_token: String::new(),
    }
}

/// Rows per page asked for (the contract's maximum: fewer round trips).
const PAGE_SIZE: i32 = 5000;
/// A server that keeps handing out tokens is broken; stop rather than loop.
const MAX_PAGES: usize = 10_000;

/// Folds the pages of one report into one: rows in order; idle, gaps and the
/// total from whichever page carried them (the last, per the contract).
pub fn merge(pages: Vec<CostReport>) -> CostReport {
    let mut out = CostReport::default();
    for p in pages {
        if out.start_time.is_none() {
            out.start_time = p.start_time;
        }
        if out.end_time.is_none() {
            out.end_time = p.end_time;
        }
        if out.currency_code.is_empty() {
            out.currency_code = p.currency_code;
        }
        out.rows.extend(p.rows);
        out.idle.extend(p.idle);
        out.gaps.extend(p.gaps);
        if p.total.is_some() {
            out.total = p.total;
        }
    }
    out
}

/// Every page of the report the selection means.
pub async fn fetch(
    ctx: &Ctx,
    sel: &Selection,
    step: Step,
    now: DateTime<Utc>,
) -> Result<CostReport, CliError> {
    let (start, end) = resolve_range(sel, step, now)?;
    let mut req = request(sel, step, start, end);
    let mut pages = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let page = ctx
            .api
            .call(
                format!("get cost report by {}", sel.by.name()),
                ctx.api.cost().get_cost_report(req.clone()),
            )
            .await?;
        let next = page.next_page_token.clone();
        pages.push(page);
        if next.is_empty() {
            break;
        }
        if !seen.insert(next.clone()) || pages.len() >= MAX_PAGES {
            return Err(CliError::Other(anyhow::anyhow!(
                "get cost report: the server repeated page token {next:?}; giving up"
            )));
        }
        req.page_token = next;
    }
    let mut r = merge(pages);
    if r.start_time.is_none() {
        r.start_time = Some(to_timestamp(start));
    }
    if r.end_time.is_none() {
        r.end_time = Some(to_timestamp(end));
    }
    Ok(r)
}

pub async fn run(cmd: CostCmd, ctx: &Ctx) -> Result<(), CliError> {
    let now = Utc::now();
    match cmd {
        CostCmd::Report(a) => {
            let step = a.step.unwrap_or(Step::Whole);
            let r = fetch(ctx, &a.sel, step, now).await?;
            match ctx.format {
                Format::Json => crate::output::emit_json(&report::json_view(&r, a.sel.by, step)),
                Format::Csv => emit(&report::render_csv(&r)),
                Format::Table => emit(&report::render_table(&r, a.sel.by, step)),
            }
            Ok(())
        }
        CostCmd::Chart(a) => {
            if ctx.format != Format::Table && a.out.is_none() {
                return Err(CliError::usage(
                    "cost chart draws pictures: -o json/csv is for `mtp cost report`",
                ));
            }
            let r = fetch(ctx, &a.sel, a.step, now).await?;
            let series = chart::Series::from_report(&r, a.sel.by, a.step);
            match &a.out {
                Some(path) => {
                    let svg = chart::render_svg(&series);
                    std::fs::write(path, svg).map_err(|e| {
                        CliError::Other(anyhow::anyhow!("writing {}: {e}", path.display()))
                    })?;
                    if ctx.json() {
                        #[derive(serde::Serialize)]
                        struct Wrote {
                            svg: String,
                        }
                        crate::output::emit_json(&Wrote {
                            svg: path.display().to_string(),
                        });
                    } else {
                        emit(&format!("wrote {}", path.display()));
                    }
                }
                None => {
                    let width = a
                        .width
                        .map(usize::from)
                        .or_else(|| {
                            std::env::var("COLUMNS")
                                .ok()
                                .and_then(|c| c.trim().parse().ok())
                        })
                        .unwrap_or(100);
                    emit(&chart::render_terminal(&series, width));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: CostCmd,
    }

    fn parse(args: &[&str]) -> Result<CostCmd, String> {
        T::try_parse_from([&["cost"], args].concat())
            .map(|t| t.cmd)
            .map_err(|e| e.to_string())
    }

    fn report_args(args: &[&str]) -> ReportArgs {
        match parse(&[&["report"], args].concat()).unwrap() {
            CostCmd::Report(a) => a,
            CostCmd::Chart(_) => panic!("not a report"),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn default_window_is_30_days_to_the_next_whole_hour() {
        let a = report_args(&[]);
        assert_eq!(a.sel.by, GroupBy::Tenant);
        assert_eq!(a.step, None);
        let (s, e) = resolve_range(&a.sel, Step::Whole, at("2026-12-02T13:29:44Z")).unwrap();
        assert_eq!(e, at("2026-12-02T14:00:00Z"));
        assert_eq!(s, at("2026-11-02T14:00:00Z"));
        // Already on the hour: that hour is the end.
        let (_, e) = resolve_range(&a.sel, Step::Whole, at("2026-12-02T14:00:00Z")).unwrap();
        assert_eq!(e, at("2026-12-02T14:00:00Z"));
    }

    #[test]
    fn daily_steps_end_at_the_end_of_today() {
        let a = report_args(&["--window", "7d", "--step", "1d"]);
        assert_eq!(a.step, Some(Step::Day));
        let (s, e) = resolve_range(&a.sel, Step::Day, at("2026-12-02T13:29:44Z")).unwrap();
        assert_eq!(e, at("2026-12-03T00:00:00Z"));
        assert_eq!(s, at("2026-11-26T00:00:00Z"));
        let a = report_args(&["--window", "36h", "--step", "1d"]);
        let err = resolve_range(&a.sel, Step::Day, at("2026-12-02T13:29:44Z"))
            .unwrap_err()
            .render_human();
        assert!(err.contains("--window 36h"), "{err}");
        assert!(err.contains("whole days"), "{err}");
    }

    #[test]
    fn window_must_be_whole_hours_and_names_the_flag() {
        let e = parse(&["report", "--window", "90m"]).unwrap_err();
        assert!(e.contains("--window"), "{e}");
        assert!(e.contains("whole number of hours"), "{e}");
        let e = parse(&["report", "--window", "30"]).unwrap_err();
        assert!(e.contains("--window"), "{e}");
        assert_eq!(
            report_args(&["--window", "24h"]).sel.window,
            Some(Duration::hours(24))
        );
    }

    #[test]
    fn from_and_to_accept_dates_and_whole_hours() {
        let a = report_args(&["--from", "2026-11-01", "--to", "2026-12-01T00:00:00Z"]);
        let (s, e) = resolve_range(&a.sel, Step::Day, Utc::now()).unwrap();
        assert_eq!(s, at("2026-11-01T00:00:00Z"));
        assert_eq!(e, at("2026-12-01T00:00:00Z"));
        let a = report_args(&[
            "--from",
            "2026-11-01T13:00:00+01:00",
            "--to",
            "2026-11-01T18:00:00Z",
        ]);
        assert_eq!(a.sel.from, Some(at("2026-11-01T12:00:00Z")));
    }

    #[test]
    fn from_and_to_errors_name_the_flag() {
        let e = parse(&[
            "report",
            "--from",
            "2026-11-01T13:30:00Z",
            "--to",
            "2026-11-02",
        ])
        .unwrap_err();
        assert!(e.contains("--from"), "{e}");
        assert!(e.contains("whole UTC hour"), "{e}");
        let e = parse(&["report", "--from", "2026-11-01", "--to", "2026-13-01"]).unwrap_err();
        assert!(e.contains("--to"), "{e}");
        let e = parse(&["report", "--from", "2026-11-01"]).unwrap_err();
        assert!(e.contains("--to"), "{e}");
        let e = parse(&[
            "report",
            "--window",
            "7d",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
        ])
        .unwrap_err();
        assert!(
            e.contains("--window") && e.contains("cannot be used"),
            "{e}"
        );

        let a = report_args(&["--from", "2026-11-02", "--to", "2026-11-01"]);
        let e = resolve_range(&a.sel, Step::Whole, Utc::now())
            .unwrap_err()
            .render_human();
        assert_eq!(e, "error: --to 2026-11-01 must be after --from 2026-11-02");
        let a = report_args(&["--from", "2026-11-01", "--to", "2026-11-01"]);
        assert!(resolve_range(&a.sel, Step::Whole, Utc::now()).is_err());

        let a = report_args(&["--from", "2026-11-01", "--to", "2026-11-02T13:00:00Z"]);
        assert!(resolve_range(&a.sel, Step::Hour, Utc::now()).is_ok());
        let e = resolve_range(&a.sel, Step::Day, Utc::now())
            .unwrap_err()
            .render_human();
        assert!(
            e.starts_with("error: --to 2026-11-02T13:00Z: with --step 1d"),
            "{e}"
        );
    }

    #[test]
    fn step_and_grouping_values() {
        assert_eq!(report_args(&["--step", "1h"]).step, Some(Step::Hour));
        assert_eq!(report_args(&["--step", "daily"]).step, Some(Step::Day));
        let e = parse(&["report", "--step", "1w"]).unwrap_err();
        assert!(
            e.contains("--step") && e.contains("expected 1h or 1d"),
            "{e}"
        );
        assert_eq!(
            report_args(&["--by", "environment"]).sel.by,
            GroupBy::Environment
        );
        assert!(parse(&["report", "--by", "node"]).is_err());
        match parse(&["chart"]).unwrap() {
            CostCmd::Chart(c) => assert_eq!(c.step, Step::Day),
            CostCmd::Report(_) => panic!("not a chart"),
        }
        assert!(parse(&["chart", "--width", "10"]).is_err());
    }

    #[test]
    fn request_carries_the_selection() {
        let a = report_args(&[
            "--by",
            "cluster",
            "--tenant",
            "team-a",
            "--cluster",
            "eu-1",
            "--step",
            "1h",
        ]);
        let (s, e) = (at("2026-11-01T00:00:00Z"), at("2026-11-02T00:00:00Z"));
        let r = request(&a.sel, Step::Hour, s, e);
        assert_eq!(r.group_by, CostGrouping::Cluster as i32);
        assert_eq!(r.tenant, "team-a");
        assert_eq!(r.cluster, "eu-1");
        assert_eq!(r.step_seconds, 3600);
        assert_eq!(r.start_time.unwrap().seconds, s.timestamp());
        assert_eq!(r.end_time.unwrap().seconds, e.timestamp());
        assert!(r.page_token.is_empty());
    }

    #[test]
    fn pages_merge_rows_in_order_and_keep_the_last_pages_extras() {
        use mtp_proto::v1::{CostRow, CoverageGap};
        let row = |t: &str| CostRow {
            tenant: t.into(),
            ..Default::default()
        };
        let p1 = CostReport {
            currency_code: "EUR".into(),
            rows: vec![row("a"), row("b")],
            next_page_token: "p2".into(),
            ..Default::default()
        };
        let p2 = CostReport {
            currency_code: "EUR".into(),
            rows: vec![row("c")],
            idle: vec![CostRow {
                cluster: "eu-1".into(),
                ..Default::default()
            }],
            gaps: vec![CoverageGap::default()],
            total: Some(row("")),
            ..Default::default()
        };
        let m = merge(vec![p1, p2]);
        let names: Vec<&str> = m.rows.iter().map(|r| r.tenant.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m.idle.len(), 1);
        assert_eq!(m.gaps.len(), 1);
        assert!(m.total.is_some());
        assert_eq!(m.currency_code, "EUR");
    }
}
