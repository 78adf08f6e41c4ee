//! `CostService`: cost reports over the usage rollups, the price book and
//! budgets, and the budget evaluation the usage loop runs.
//!
//! Access: anyone authenticated reads the price book; platform admins set
//! prices and budgets. A tenant-bound token sees only its own tenant's cost
//! and budget: asking for another tenant is PERMISSION_DENIED whether that
//! tenant exists or not (so the answer tells nothing about other tenants).
//! Idle cost — capacity no environment was billed for — is for platform
//! admins only, and only in reports not narrowed to a tenant (it is the
//! cluster's, not a tenant's).

mod convert;
pub(crate) mod report;

use chrono::{DateTime, Datelike, Duration, DurationRound, TimeZone, Utc};
use mtp_core::access::Principal;
use mtp_core::cost::PriceVersion;
use mtp_core::names::validate_tenant_name;
use mtp_proto::v1 as pb;
use mtp_proto::v1::cost_service_server::CostService;
use mtp_store::{CostGrouping, Store};
use tonic::{Request, Response, Status};

use self::report::{ReportSpec, build};
use super::Api;
use super::convert::{from_timestamp, non_empty};
use super::error::ApiResult;
use crate::metrics::Metrics;

/// The tenant a caller's cost request is confined to: its own for a
/// tenant-bound token (another one is refused), else the one asked for.
fn cost_scope(principal: &Principal, requested: Option<String>) -> ApiResult<Option<String>> {
    if let Some(t) = &requested {
        validate_tenant_name("tenant", t)?;
    }
    match principal.tenant_scope() {
        Some(own) => match requested {
            Some(t) if t != own => Err(mtp_core::Error::PermissionDenied(format!(
                "this token is bound to tenant {own:?} and sees only its cost"
            ))
            .into()),
            _ => Ok(Some(own.to_owned())),
        },
        None => Ok(requested),
    }
}

/// The start of the UTC month `t` is in, and of the next day.
fn month_to_date(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    let tomorrow = t.duration_trunc(Duration::days(1)).expect("days truncate") + Duration::days(1);
    (start, tomorrow)
}

impl Api {
    async fn get_cost_report_inner(
        &self,
        request: Request<pb::GetCostReportRequest>,
    ) -> ApiResult<pb::CostReport> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let tenant = cost_scope(&caller.principal, non_empty(r.tenant.clone()))?;
        let parsed = convert::report_request(&r)?;
        let spec = ReportSpec {
            from: parsed.from,
            to: parsed.to,
            step_seconds: parsed.step_seconds,
            grouping: parsed.grouping,
            tenant: tenant.clone(),
            cluster: non_empty(r.cluster),
            idle: caller.principal.is_admin() && tenant.is_none(),
            gaps: Some(caller.principal.tenant_scope().is_some()),
        };
        let report = build(&self.store, &spec, Utc::now()).await?;
        convert::report_to_pb(report, parsed.page_size, parsed.offset)
    }

    async fn set_price_inner(&self, request: Request<pb::SetPriceRequest>) -> ApiResult<pb::Price> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("setting prices")?;
        let r = request.into_inner();
        let p = r
            .price
            .ok_or_else(|| mtp_core::Error::invalid("price", "is required"))?;
        let effective = from_timestamp(
            "price.effective_time",
            p.effective_time
                .as_ref()
                .ok_or_else(|| mtp_core::Error::invalid("price.effective_time", "is required"))?,
        )?;
        let version = PriceVersion::parse(
            "price",
            non_empty(p.cluster),
            effective,
            &p.currency_code,
            [&p.cpu_core_hour, &p.memory_gib_hour, &p.storage_gib_month],
            r.allow_high,
        )?;
        let stored = self.store.set_price(&caller.ctx, &version).await?;
        tracing::info!(cluster = ?version.cluster, effective = %version.effective, "price version added");
        Ok(convert::price_to_pb(&stored))
    }

    async fn list_prices_inner(
        &self,
        request: Request<pb::ListPricesRequest>,
    ) -> ApiResult<pb::ListPricesResponse> {
        let _caller = self.caller(&request).await?;
        let cluster = non_empty(request.into_inner().cluster);
        let prices = self.store.list_prices(cluster.as_deref()).await?;
        Ok(pb::ListPricesResponse {
            prices: prices.iter().map(convert::price_to_pb).collect(),
        })
    }

    async fn set_budget_inner(
        &self,
        request: Request<pb::SetBudgetRequest>,
    ) -> ApiResult<pb::Budget> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("setting budgets")?;
        let r = request.into_inner();
        validate_tenant_name("tenant", &r.tenant)?;
        let spec = mtp_core::cost::BudgetSpec::parse(
            "monthly_amount",
            &r.monthly_amount,
            "thresholds_percent",
            &r.thresholds_percent,
        )?;
        self.store.set_budget(&caller.ctx, &r.tenant, &spec).await?;
        tracing::info!(tenant = %r.tenant, "budget set");
        budget_with_cost(&self.store, &r.tenant, Utc::now()).await
    }

    async fn get_budget_inner(
        &self,
        request: Request<pb::GetBudgetRequest>,
    ) -> ApiResult<pb::Budget> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        validate_tenant_name("tenant", &r.tenant)?;
        cost_scope(&caller.principal, Some(r.tenant.clone()))?;
        budget_with_cost(&self.store, &r.tenant, Utc::now()).await
    }
}

/// A budget with its month-to-date cost, crossed thresholds and coverage.
async fn budget_with_cost(
    store: &Store,
    tenant: &str,
    now: DateTime<Utc>,
) -> ApiResult<pb::Budget> {
    let budget = store.get_budget(tenant).await?;
    let (from, to) = month_to_date(now);
    let report = build(
        store,
        &ReportSpec {
            from,
            to,
            step_seconds: 0,
            grouping: CostGrouping::Tenant,
            tenant: Some(tenant.to_owned()),
            cluster: None,
            idle: false,
            gaps: None,
        },
        now,
    )
    .await?;
    let total = &report.total;
    let crossed = budget.spec.crossed(total.cost.priced_total());
    Ok(convert::budget_to_pb(
        &budget,
        report.currency.as_deref(),
        total.cost.total(),
        crossed,
        total.coverage,
    ))
}

/// After a rollup pass: the month-to-date cost of every tenant (for
/// `/metrics`), and each budget threshold crossed recorded once per tenant
/// and month, audited in the same transaction (the `budget_alerts` key is
/// the guard, so every replica may run this). A threshold counts as crossed
/// by the priced part of the cost, a lower bound when some usage has no
/// price. With `environments`, the per-environment series too (a read of
/// every environment's rollups, so the caller does it less often).
pub(crate) async fn evaluate_budgets(
    store: &Store,
    metrics: &Metrics,
    now: DateTime<Utc>,
    environments: bool,
) -> ApiResult<u64> {
    let (from, to) = month_to_date(now);
    let spec = |grouping| ReportSpec {
        from,
        to,
        step_seconds: 0,
        grouping,
        tenant: None,
        cluster: None,
        idle: false,
        gaps: None,
    };
    let report = build(store, &spec(CostGrouping::Tenant), now).await?;
    let currency = report.currency.clone().unwrap_or_default();
    let tenants: std::collections::BTreeMap<String, i128> = report
        .rows
        .iter()
        .map(|r| (r.tenant.clone().unwrap_or_default(), r.cost.priced_total()))
        .collect();
    let budgets = store.list_budgets().await?;
    let month = from.date_naive();
    let mut fired = 0u64;
    let mut crossed_gauges = Vec::new();
    for budget in &budgets {
        let cost = tenants.get(&budget.tenant).copied().unwrap_or(0);
        let crossed = budget.spec.crossed(cost);
        let new = store
            .record_budget_alerts(budget, month, &crossed, cost, &currency)
            .await?;
        for t in &new {
            tracing::warn!(tenant = %budget.tenant, threshold = t, "budget threshold crossed");
        }
        fired += new.len() as u64;
        for t in &budget.spec.thresholds {
            crossed_gauges.push((budget.tenant.clone(), *t, crossed.contains(t)));
        }
    }
    let tenant_costs: Vec<(String, i128)> = tenants.into_iter().collect();
    let budget_amounts: Vec<(String, i128)> = budgets
        .iter()
        .map(|b| (b.tenant.clone(), b.spec.monthly_nanos))
        .collect();
    metrics.set_cost(&currency, &tenant_costs, &budget_amounts, &crossed_gauges);
    if environments {
        let report = build(store, &spec(CostGrouping::Environment), now).await?;
        let environments: Vec<(String, String, i128)> = report
            .rows
            .iter()
            .map(|r| {
                (
                    r.tenant.clone().unwrap_or_default(),
                    r.environment.clone().unwrap_or_default(),
                    r.cost.priced_total(),
                )
            })
            .collect();
        metrics.set_environment_cost(&currency, &environments);
    }
    Ok(fired)
}

#[tonic::async_trait]
impl CostService for Api {
    async fn get_cost_report(
        &self,
        request: Request<pb::GetCostReportRequest>,
    ) -> Result<Response<pb::CostReport>, Status> {
        Ok(Response::new(self.get_cost_report_inner(request).await?))
    }

    async fn set_price(
        &self,
        request: Request<pb::SetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        Ok(Response::new(self.set_price_inner(request).await?))
    }

    async fn list_prices(
        &self,
        request: Request<pb::ListPricesRequest>,
    ) -> Result<Response<pb::ListPricesResponse>, Status> {
        Ok(Response::new(self.list_prices_inner(request).await?))
    }

    async fn set_budget(
        &self,
        request: Request<pb::SetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        Ok(Response::new(self.set_budget_inner(request).await?))
    }

    async fn get_budget(
        &self,
        request: Request<pb::GetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        Ok(Response::new(self.get_budget_inner(request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtp_core::access::Role;

    fn principal(role: Role, tenant: Option<&str>) -> Principal {
        Principal {
            token_id: "t".into(),
            role,
            tenant: tenant.map(Into::into),
        }
    }

    #[test]
    fn tenant_tokens_see_only_their_own_cost() {
        let owner = principal(Role::TenantOwner, Some("team-a"));
        assert_eq!(cost_scope(&owner, None).unwrap(), Some("team-a".into()));
        assert_eq!(
            cost_scope(&owner, Some("team-a".into())).unwrap(),
            Some("team-a".into())
        );
        let e = Status::from(cost_scope(&owner, Some("team-b".into())).unwrap_err());
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let admin = principal(Role::PlatformAdmin, None);
        assert_eq!(cost_scope(&admin, None).unwrap(), None);
        assert_eq!(
            cost_scope(&admin, Some("team-b".into())).unwrap(),
            Some("team-b".into())
        );
    }

    #[test]
    fn month_to_date_starts_on_the_first_and_ends_tomorrow() {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 13, 45, 0).unwrap();
        let (from, to) = month_to_date(t);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap());
    }
}
