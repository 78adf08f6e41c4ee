//! `mtp budget …`: a tenant's monthly budget and its alert thresholds
//! (`CostService.SetBudget`, `GetBudget`), and the one-line summary
//! `mtp tenant get` shows.

use clap::Subcommand;
use mtp_proto::v1::{Budget, GetBudgetRequest, SetBudgetRequest};
use serde::Serialize;
use tonic::Code;

use super::Ctx;
use crate::errors::{CliError, code_name};
use crate::money;
use crate::output::{self, Details, emit, emit_json};

const BUDGET_HELP: &str = "\
The budget is a monthly amount in the price book's currency (exact decimal,
at most 9 fractional digits). Month to date is the tenant's cost in the
current UTC month so far; thresholds are percentages of the budget (default
50, 80, 100) and a crossed threshold is reported once per month.
Coverage below 100 % means usage data is missing for part of the month: the
month-to-date cost is then missing those stretches, it does not count them as
zero-cost. Setting budgets is for platform admins and is audited; a
tenant-owner token sees only its own tenant's budget.";

#[derive(Debug, Subcommand)]
pub enum BudgetCmd {
    /// Set a tenant's monthly budget and alert thresholds (platform admins).
    #[command(after_help = BUDGET_HELP)]
    Set {
        /// Tenant name.
        tenant: String,
        /// The monthly amount, e.g. 500 or 499.99.
        #[arg(long, value_name = "DECIMAL", value_parser = super::prices::parse_price, allow_negative_numbers = true)]
        monthly: String,
        /// Alert thresholds in percent of the budget, ascending [default: 50,80,100].
        #[arg(long, value_name = "P,P,...", value_parser = parse_thresholds)]
        thresholds: Option<Thresholds>,
    },
    /// Show a tenant's budget: month-to-date cost, % used, crossed thresholds.
    #[command(after_help = BUDGET_HELP)]
    Get {
        /// Tenant name.
        tenant: String,
    },
}

/// `--thresholds 50,80,100`: strictly ascending percentages in 1..=1000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds(pub Vec<u32>);

pub fn parse_thresholds(s: &str) -> Result<Thresholds, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p = part.trim().trim_end_matches('%');
        let v: u32 = p
            .parse()
            .map_err(|_| format!("{part:?} is not a whole percentage (e.g. 50,80,100)"))?;
        if v == 0 || v > 1000 {
            return Err(format!("{v} is out of range (1 to 1000 percent)"));
        }
        if out.last().is_some_and(|l| *l >= v) {
            return Err(format!(
                "{s:?}: thresholds must be ascending, without repeats"
            ));
        }
        out.push(v);
    }
    Ok(Thresholds(out))
}

pub async fn run(cmd: BudgetCmd, ctx: &Ctx) -> Result<(), CliError> {
    let b = match cmd {
        BudgetCmd::Set {
            tenant,
            monthly,
            thresholds,
        } => {
            ctx.api
                .call(
                    format!("set budget of tenant {tenant:?}"),
                    ctx.api.cost().set_budget(SetBudgetRequest {
                        tenant: tenant.clone(),
                        monthly_amount: monthly,
                        thresholds_percent: thresholds.map(|t| t.0).unwrap_or_default(),
                    }),
                )
                .await?
        }
        BudgetCmd::Get { tenant } => {
            ctx.api
                .call(
                    format!("get budget of tenant {tenant:?}"),
                    ctx.api.cost().get_budget(GetBudgetRequest {
                        tenant: tenant.clone(),
                    }),
                )
                .await?
        }
    };
    if ctx.json() {
        emit_json(&BudgetView::from(&b));
    } else {
        emit(&details(&b));
    }
    Ok(())
}

fn currency(b: &Budget) -> &str {
    if b.currency_code.is_empty() {
        b.month_to_date_cost
            .as_ref()
            .map(|m| m.currency_code.as_str())
            .unwrap_or("")
    } else {
        &b.currency_code
    }
}

fn percents(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join("/")
}

/// The monthly amount in nanos (None if the server sent something odd).
fn monthly_nanos(b: &Budget) -> Option<i128> {
    money::parse_decimal(&b.monthly_amount).ok()
}

fn amount(b: &Budget, nanos: i128) -> String {
    money::with_currency(currency(b), &money::format_2dp(nanos))
}

/// `EUR 123.45 of EUR 500.00 this month (24.7 %), thresholds 50/80/100`,
/// then the crossed thresholds and partial coverage when there are any.
pub fn budget_line(b: &Budget) -> String {
    let mtd = money::nanos(b.month_to_date_cost.as_ref());
    let mut s = match monthly_nanos(b) {
        Some(m) => {
            let pct = money::percent_1dp(mtd, m)
                .map(|p| format!(" ({p} %)"))
                .unwrap_or_default();
            format!("{} of {} this month{pct}", amount(b, mtd), amount(b, m))
        }
        None => format!(
            "{} of {} this month",
            amount(b, mtd),
            money::with_currency(currency(b), &b.monthly_amount)
        ),
    };
    if !b.thresholds_percent.is_empty() {
        s.push_str(&format!(", thresholds {}", percents(&b.thresholds_percent)));
    }
    if !b.crossed_percent.is_empty() {
        s.push_str(&format!(", crossed {}", percents(&b.crossed_percent)));
    }
    if b.coverage < 1.0 {
        s.push_str(&format!(
            " (coverage {}: part of the usage is missing)",
            coverage_pct(b.coverage)
        ));
    }
    s
}

fn coverage_pct(c: f64) -> String {
    format!("{:.1} %", (c * 1000.0).floor() / 10.0)
}

/// The `Budget:` value of `mtp tenant get`: the budget line, `none`, or
/// `unavailable (…)` when the cost service cannot answer; never an error,
/// so a control plane without a cost service still shows its tenants.
pub fn summary(res: Result<Budget, CliError>) -> String {
    match res {
        Ok(b) => budget_line(&b),
        Err(CliError::Call(e)) if e.code == Code::NotFound => "none".into(),
        Err(CliError::Call(e)) => {
            let why = match e.code {
                Code::Unimplemented => "this control plane has no cost service".to_string(),
                _ if e.message.trim().is_empty() => code_name(e.code).to_string(),
                _ => format!("{}: {}", code_name(e.code), e.message.trim()),
            };
            format!("unavailable ({why})")
        }
        Err(e) => format!(
            "unavailable ({})",
            e.render_human().trim_start_matches("error: ")
        ),
    }
}

/// Fetches the summary for `mtp tenant get`, with a short deadline of its
/// own: a slow cost service must not hold up the tenant.
pub async fn fetch_summary(ctx: &Ctx, tenant: &str) -> String {
    let mut req = tonic::Request::new(GetBudgetRequest {
        tenant: tenant.to_string(),
    });
    req.set_timeout(std::time::Duration::from_secs(10));
    summary(
        ctx.api
            .call(
                format!("get budget of tenant {tenant:?}"),
                ctx.api.cost().get_budget(req),
            )
            .await,
    )
}

fn details(b: &Budget) -> String {
    let mtd = money::nanos(b.month_to_date_cost.as_ref());
    let used = monthly_nanos(b)
        .and_then(|m| money::percent_1dp(mtd, m))
        .map(|p| format!(" ({p} % of the budget)"))
        .unwrap_or_default();
    let mut d = Details::new();
    d.field("Tenant", &b.tenant)
        .field(
            "Monthly budget",
            match monthly_nanos(b) {
                Some(m) => amount(b, m),
                None => b.monthly_amount.clone(),
            },
        )
        .field("Month to date", format!("{}{used}", amount(b, mtd)))
        .field(
            "Thresholds",
            if b.thresholds_percent.is_empty() {
                String::new()
            } else {
                format!("{} %", percents(&b.thresholds_percent))
            },
        )
        .field(
            "Crossed",
            if b.crossed_percent.is_empty() {
                "none".to_string()
            } else {
                format!("{} %", percents(&b.crossed_percent))
            },
        )
        .field(
            "Coverage",
            if b.coverage < 1.0 {
                format!(
                    "{} (usage data missing for part of the month: not counted, not zero)",
                    coverage_pct(b.coverage)
                )
            } else {
                coverage_pct(b.coverage)
            },
        )
        .field("Updated", output::rfc3339_or_dash(b.update_time.as_ref()));
    d.render()
}

/// JSON shape of a budget: money as exact decimal strings.
#[derive(Debug, Serialize)]
pub struct BudgetView {
    pub tenant: String,
    pub monthly_amount: String,
    pub currency: String,
    pub thresholds_percent: Vec<u32>,
    pub month_to_date_cost: String,
    /// Month to date ÷ monthly amount, in percent with one decimal (null
    /// for a zero budget).
    pub used_percent: Option<String>,
    pub crossed_percent: Vec<u32>,
    pub coverage: f64,
    pub update_time: Option<String>,
}

impl From<&Budget> for BudgetView {
    fn from(b: &Budget) -> Self {
        let mtd = money::nanos(b.month_to_date_cost.as_ref());
        BudgetView {
            tenant: b.tenant.clone(),
            monthly_amount: b.monthly_amount.clone(),
            currency: currency(b).to_string(),
            thresholds_percent: b.thresholds_percent.clone(),
            month_to_date_cost: money::format_full(mtd),
            used_percent: monthly_nanos(b).and_then(|m| money::percent_1dp(mtd, m)),
            crossed_percent: b.crossed_percent.clone(),
            coverage: b.coverage,
            update_time: output::rfc3339(b.update_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mtp_proto::v1::Money;

    use super::*;
    use crate::errors::CallError;

    fn budget() -> Budget {
        Budget {
            tenant: "team-a".into(),
            monthly_amount: "500".into(),
            currency_code: "EUR".into(),
            thresholds_percent: vec![50, 80, 100],
            month_to_date_cost: Some(Money {
                currency_code: "EUR".into(),
                units: 123,
                nanos: 450_000_000,
            }),
            crossed_percent: vec![],
            coverage: 1.0,
            update_time: None,
        }
    }

    fn call_err(code: Code, msg: &str) -> CliError {
        CliError::Call(CallError {
            action: "get budget of tenant \"team-a\"".into(),
            code,
            message: msg.into(),
            request_id: None,
            addr: "http://x".into(),
            hint: None,
        })
    }

    #[test]
    fn budget_line_text() {
        assert_eq!(
            budget_line(&budget()),
            "EUR 123.45 of EUR 500.00 this month (24.7 %), thresholds 50/80/100"
        );
        let mut b = budget();
        b.month_to_date_cost.as_mut().unwrap().units = 410;
        b.crossed_percent = vec![50, 80];
        b.coverage = 0.9731;
        assert_eq!(
            budget_line(&b),
            "EUR 410.45 of EUR 500.00 this month (82.1 %), thresholds 50/80/100, crossed 50/80 \
             (coverage 97.3 %: part of the usage is missing)"
        );
        let mut b = budget();
        b.monthly_amount = "0".into();
        assert_eq!(
            budget_line(&b),
            "EUR 123.45 of EUR 0.00 this month, thresholds 50/80/100"
        );
    }

    #[test]
    fn tenant_get_summary_survives_a_missing_cost_service() {
        assert_eq!(
            summary(Ok(budget())),
            "EUR 123.45 of EUR 500.00 this month (24.7 %), thresholds 50/80/100"
        );
        assert_eq!(summary(Err(call_err(Code::NotFound, "no budget"))), "none");
        assert_eq!(
            summary(Err(call_err(Code::Unimplemented, ""))),
            "unavailable (this control plane has no cost service)"
        );
        assert_eq!(
            summary(Err(call_err(Code::Unavailable, ""))),
            "unavailable (UNAVAILABLE)"
        );
        assert_eq!(
            summary(Err(call_err(Code::Unavailable, "connection refused"))),
            "unavailable (UNAVAILABLE: connection refused)"
        );
    }

    #[test]
    fn get_details_and_json() {
        let mut b = budget();
        b.crossed_percent = vec![50];
        let s = details(&b);
        assert!(
            s.contains("Month to date:   EUR 123.45 (24.7 % of the budget)\n"),
            "{s}"
        );
        assert!(s.contains("Thresholds:      50/80/100 %\n"), "{s}");
        assert!(s.contains("Crossed:         50 %\n"), "{s}");
        assert!(s.contains("Coverage:        100.0 %\n"), "{s}");
        let v = serde_json::to_value(BudgetView::from(&b)).unwrap();
        assert_eq!(v["month_to_date_cost"], "123.45");
        assert_eq!(v["monthly_amount"], "500");
        assert_eq!(v["used_percent"], "24.7");
        assert_eq!(v["crossed_percent"][0], 50);
    }

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: BudgetCmd,
    }

    #[test]
    fn set_flags_are_validated_and_name_the_flag() {
        let p = |args: &[&str]| {
            T::try_parse_from([&["budget"], args].concat())
                .map(|t| t.cmd)
                .map_err(|e| e.to_string())
        };
        let BudgetCmd::Set {
            monthly,
            thresholds,
            ..
        } = p(&[
            "set",
            "team-a",
            "--monthly",
            "500",
            "--thresholds",
            "50,80,100",
        ])
        .unwrap()
        else {
            panic!("not set")
        };
        assert_eq!(monthly, "500");
        assert_eq!(thresholds, Some(Thresholds(vec![50, 80, 100])));
        let e = p(&["set", "team-a", "--monthly", "-5"]).unwrap_err();
        assert!(e.contains("--monthly") && e.contains("negative"), "{e}");
        let e = p(&["set", "team-a", "--monthly", "5", "--thresholds", "80,50"]).unwrap_err();
        assert!(e.contains("--thresholds") && e.contains("ascending"), "{e}");
        let e = p(&["set", "team-a", "--monthly", "5", "--thresholds", "50,x"]).unwrap_err();
        assert!(e.contains("--thresholds"), "{e}");
        assert!(p(&["set", "team-a"]).is_err());
        assert_eq!(
            parse_thresholds("50%, 90").unwrap(),
            Thresholds(vec![50, 90])
        );
        assert!(parse_thresholds("0").is_err());
    }
}
