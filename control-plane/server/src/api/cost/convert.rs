//! Cost wire types ↔ domain values: report requests validated once (every
//! error names its field), reports, prices and budgets rendered.

use chrono::{DateTime, Utc};
use mtp_core::cost::{Money, core_hours, format_amount, gib_hours, ratio};
use mtp_core::{Error, Result};
use mtp_proto::v1 as pb;
use mtp_store::{CostGrouping, StoredBudget, StoredPrice};

use super::report::{Report, Row};
use crate::api::convert::{from_timestamp, timestamp};
use crate::api::error::ApiResult;

/// Longest report range.
const MAX_RANGE_DAYS: i64 = 400;
/// Most steps of a report in hourly steps (31 days of hours).
const MAX_HOURLY_STEPS: i64 = 31 * 24;
const DEFAULT_PAGE_SIZE: usize = 500;
const MAX_PAGE_SIZE: usize = 5000;
const PAGE_TOKEN_PREFIX: &str = "rows:";

/// A report request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReportRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step_seconds: i64,
    pub grouping: CostGrouping,
    pub page_size: usize,
    pub offset: usize,
}

fn whole_hour(field: &str, t: &Option<prost_types::Timestamp>) -> Result<DateTime<Utc>> {
    let t = t
        .as_ref()
        .ok_or_else(|| Error::invalid(field, "is required"))?;
    let t = from_timestamp(field, t)?;
    if t.timestamp().rem_euclid(3600) != 0 || t.timestamp_subsec_nanos() != 0 {
        return Err(Error::invalid(
            field,
            format!("{} is not on a whole UTC hour", t.to_rfc3339()),
        ));
    }
    Ok(t)
}

pub(super) fn report_request(r: &pb::GetCostReportRequest) -> Result<ReportRequest> {
    let from = whole_hour("start_time", &r.start_time)?;
    let to = whole_hour("end_time", &r.end_time)?;
    if to <= from {
        return Err(Error::invalid("end_time", "must be after start_time"));
    }
    if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::invalid(
            "end_time",
            format!("a report spans at most {MAX_RANGE_DAYS} days"),
        ));
    }
    let grouping = match pb::CostGrouping::try_from(r.group_by) {
        Ok(pb::CostGrouping::Tenant) => CostGrouping::Tenant,
        Ok(pb::CostGrouping::Environment) => CostGrouping::Environment,
        Ok(pb::CostGrouping::Cluster) => CostGrouping::Cluster,
        _ => {
            return Err(Error::invalid(
                "group_by",
                "must be COST_GROUPING_TENANT, COST_GROUPING_ENVIRONMENT or COST_GROUPING_CLUSTER",
            ));
        }
    };
    let step_seconds = match r.step_seconds {
        0 => 0,
        3600 => {
            if (to - from).num_hours() > MAX_HOURLY_STEPS {
                return Err(Error::invalid(
                    "step_seconds",
                    format!("hourly steps cover at most {MAX_HOURLY_STEPS} hours; use 86400 or 0"),
                ));
            }
            3600
        }
        86_400 => 86_400,
        other => {
            return Err(Error::invalid(
                "step_seconds",
                format!("{other} is not 0 (one step), 3600 (hourly) or 86400 (daily)"),
            ));
        }
    };
    let page_size = match r.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 || n as usize > MAX_PAGE_SIZE => {
            return Err(Error::invalid(
                "page_size",
                format!("{n} is not in 0..={MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})"),
            ));
        }
        n => n as usize,
    };
    let offset = if r.page_token.is_empty() {
        0
    } else {
        r.page_token
            .strip_prefix(PAGE_TOKEN_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid("page_token", "is not a token this service gave"))?
    };
    Ok(ReportRequest {
        from,
        to,
        step_seconds,
        grouping,
        page_size,
        offset,
    })
}

pub(super) fn money(currency: Option<&str>, nanos: Option<i128>) -> Option<pb::Money> {
    let m = Money {
        currency: currency?.to_owned(),
        nanos: nanos?,
    };
    let (units, nanos) = m.units_and_nanos()?;
    Some(pb::Money {
        currency_code: m.currency,
        units,
        nanos,
    })
}

fn row_to_pb(row: &Row, currency: Option<&str>) -> pb::CostRow {
    let c = &row.cost;
    let u = &c.usage;
    let resource =
        |i: usize, requested: f64, used: f64, billed: f64, r: u128, ud: u128| pb::ResourceCost {
            requested,
            used,
            billed,
            cost: money(currency, c.cost(i)),
            efficiency: ratio(ud, r),
        };
    // Storage is shown in GiB-hours like memory (its price is per GiB-month).
    pb::CostRow {
        start_time: Some(timestamp(row.start)),
        end_time: Some(timestamp(row.end)),
        tenant: row.tenant.clone().unwrap_or_default(),
        environment: row.environment.clone().unwrap_or_default(),
        cluster: row.cluster.clone().unwrap_or_default(),
        cpu: Some(resource(
            0,
            core_hours(u.cpu_requested_core_nanos),
            core_hours(u.cpu_used_core_nanos),
            core_hours(u.cpu_billed_core_nanos),
            u.cpu_requested_core_nanos,
            u.cpu_used_core_nanos,
        )),
        memory: Some(resource(
            1,
            gib_hours(u.memory_requested_byte_seconds),
            gib_hours(u.memory_used_byte_seconds),
            gib_hours(u.memory_billed_byte_seconds),
            u.memory_requested_byte_seconds,
            u.memory_used_byte_seconds,
        )),
        storage: Some(resource(
            2,
            gib_hours(u.storage_requested_byte_seconds),
            gib_hours(u.storage_used_byte_seconds),
            gib_hours(u.storage_billed_byte_seconds),
            u.storage_requested_byte_seconds,
            u.storage_used_byte_seconds,
        )),
        total_cost: money(currency, c.total()),
        efficiency: c.efficiency(),
        coverage: row.coverage,
        network_receive_bytes: u64::try_from(u.network_receive_bytes).unwrap_or(u64::MAX),
        network_transmit_bytes: u64::try_from(u.network_transmit_bytes).unwrap_or(u64::MAX),
    }
}

/// One page of a report; idle rows, gaps and the total on the last page.
pub(super) fn report_to_pb(
    report: Report,
    page_size: usize,
    offset: usize,
) -> ApiResult<pb::CostReport> {
    if offset > report.rows.len() {
        return Err(Error::invalid("page_token", "is past the end of this report").into());
    }
    let currency = report.currency.as_deref();
    let end = (offset + page_size).min(report.rows.len());
    let last = end == report.rows.len();
    Ok(pb::CostReport {
        start_time: Some(timestamp(report.total.start)),
        end_time: Some(timestamp(report.total.end)),
        currency_code: currency.unwrap_or_default().to_owned(),
        rows: report.rows[offset..end]
            .iter()
            .map(|r| row_to_pb(r, currency))
            .collect(),
        idle: if last {
            report.idle.iter().map(|r| row_to_pb(r, currency)).collect()
        } else {
            vec![]
        },
        gaps: if last {
            report
                .gaps
                .iter()
                .map(|g| pb::CoverageGap {
                    cluster: g.cluster.clone(),
                    node: g.node.clone(),
                    start_time: Some(timestamp(g.start)),
                    end_time: Some(timestamp(g.end)),
                    reason: g.reason.clone(),
                })
                .collect()
        } else {
            vec![]
        },
        next_page_token: if last {
            String::new()
        } else {
            format!("{PAGE_TOKEN_PREFIX}{end}")
        },
        total: last.then(|| row_to_pb(&report.total, currency)),
    })
}

pub(super) fn price_to_pb(p: &StoredPrice) -> pb::Price {
    let v = &p.version;
    pb::Price {
        cluster: v.cluster.clone().unwrap_or_default(),
        effective_time: Some(timestamp(v.effective)),
        currency_code: v.currency.clone(),
        cpu_core_hour: format_amount(v.cpu_core_hour),
        memory_gib_hour: format_amount(v.memory_gib_hour),
        storage_gib_month: format_amount(v.storage_gib_month),
        create_time: Some(timestamp(p.create_time)),
        created_by: p.created_by.clone(),
    }
}

pub(super) fn budget_to_pb(
    b: &StoredBudget,
    currency: Option<&str>,
    month_to_date: Option<i128>,
    crossed: Vec<u32>,
    coverage: f64,
) -> pb::Budget {
    pb::Budget {
        tenant: b.tenant.clone(),
        monthly_amount: format_amount(b.spec.monthly_nanos),
        currency_code: currency.unwrap_or_default().to_owned(),
        thresholds_percent: b.spec.thresholds.clone(),
        month_to_date_cost: money(currency, month_to_date),
        crossed_percent: crossed,
        coverage,
        update_time: Some(timestamp(b.update_time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn request() -> pb::GetCostReportRequest {
        pb::GetCostReportRequest {
            start_time: at(1_700_006_400),
            end_time: at(1_700_006_400 + 86_400),
            group_by: pb::CostGrouping::Tenant as i32,
            ..Default::default()
        }
    }

    fn field(r: pb::GetCostReportRequest) -> String {
        match report_request(&r).unwrap_err() {
            Error::Invalid { field, .. } => field,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn report_requests_are_checked_naming_the_field() {
        assert!(report_request(&request()).is_ok());
        assert_eq!(
            field(pb::GetCostReportRequest {
                start_time: at(1_700_006_401),
                ..request()
            }),
            "start_time"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                end_time: None,
                ..request()
            }),
            "end_time"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                end_time: at(1_700_006_400),
                ..request()
            }),
            "end_time"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                group_by: 0,
                ..request()
            }),
            "group_by"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                step_seconds: 60,
                ..request()
            }),
            "step_seconds"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                page_size: -1,
                ..request()
            }),
            "page_size"
        );
        assert_eq!(
            field(pb::GetCostReportRequest {
                page_token: "x".into(),
                ..request()
            }),
            "page_token"
        );
        let long = pb::GetCostReportRequest {
            end_time: at(1_700_006_400 + 40 * 86_400),
            step_seconds: 3600,
            ..request()
        };
        assert_eq!(field(long), "step_seconds");
    }

    #[test]
    fn money_keeps_one_sign_and_is_missing_without_a_price() {
        assert_eq!(
            money(Some("EUR"), Some(1_250_000_001)),
            Some(pb::Money {
                currency_code: "EUR".into(),
                units: 1,
                nanos: 250_000_001
            })
        );
        assert_eq!(money(Some("EUR"), None), None);
        assert_eq!(money(None, Some(5)), None);
    }
}
