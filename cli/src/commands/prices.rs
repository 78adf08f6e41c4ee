//! `mtp price …`: the price book (`CostService.SetPrice`, `ListPrices`).

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use mtp_proto::v1::{ListPricesRequest, Price, SetPriceRequest};
use serde::Serialize;
use tonic::Code;

use super::{Ctx, to_timestamp};
use crate::errors::CliError;
use crate::money;
use crate::output::{self, Table, datetime, emit, emit_json};

const PRICE_HELP: &str = "\
Units:
  --cpu-hour is per core-hour (one core for one hour), --memory-gib-hour per
  GiB-hour, --storage-gib-month per GiB-month (730 hours): costs are billed
  on max(request, usage) per container per interval.
  Prices are exact decimals with at most 9 fractional digits.
Versions:
  a price holds from its --from day (00:00 UTC) until the next version of the
  same cluster; a cluster without its own price uses the default (no
  --cluster). Every price of the book has the same currency.
  Setting prices is for platform admins and is audited.
Plausibility:
  the server refuses a price far above what clouds charge, which is what a
  monthly price given as an hourly one looks like; --allow-high accepts it.";

#[derive(Debug, Subcommand)]
pub enum PriceCmd {
    /// Add a version of the price book (platform admins).
    #[command(after_help = PRICE_HELP)]
    Set(SetArgs),
    /// The price book, newest effective first.
    #[command(visible_alias = "ls", after_help = PRICE_HELP)]
    List {
        /// Only this cluster's versions [default: all, including the default].
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The cluster this price is for [default: every cluster without its own].
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
    /// Price of one core-hour, e.g. 0.031.
    #[arg(long, value_name = "DECIMAL", value_parser = parse_price, allow_negative_numbers = true)]
    pub cpu_hour: String,
    /// Price of one GiB-hour of memory, e.g. 0.004.
    #[arg(long, value_name = "DECIMAL", value_parser = parse_price, allow_negative_numbers = true)]
    pub memory_gib_hour: String,
    /// Price of one GiB-month (730 hours) of storage, e.g. 0.10.
    #[arg(long, value_name = "DECIMAL", value_parser = parse_price, allow_negative_numbers = true)]
    pub storage_gib_month: String,
    /// ISO 4217 currency code, e.g. EUR.
    #[arg(long, value_name = "CODE", value_parser = parse_currency)]
    pub currency: String,
    /// First day the price holds (00:00 UTC), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
    pub from: DateTime<Utc>,
    /// Accept a price far above what clouds charge.
    #[arg(long)]
    pub allow_high: bool,
}

/// A price: a non-negative decimal with at most 9 fractional digits, sent
/// as typed (trimmed) so the server sees exactly what the user wrote.
pub fn parse_price(s: &str) -> Result<String, String> {
    money::parse_decimal(s)?;
    Ok(s.trim().to_string())
}

/// Three ASCII letters, upper-cased.
pub fn parse_currency(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.len() == 3 && t.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(t.to_ascii_uppercase())
    } else {
        Err(format!(
            "{s:?} is not an ISO 4217 code (three letters, e.g. EUR)"
        ))
    }
}

/// `YYYY-MM-DD` as that day's 00:00 UTC.
pub fn parse_day(s: &str) -> Result<DateTime<Utc>, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
        .ok_or_else(|| format!("{s:?} is not a date (expected YYYY-MM-DD, e.g. 2026-12-01)"))
}

pub async fn run(cmd: PriceCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        PriceCmd::Set(a) => set(a, ctx).await,
        PriceCmd::List { cluster } => list(cluster, ctx).await,
    }
}

pub fn set_request(a: &SetArgs) -> SetPriceRequest {
    SetPriceRequest {
        price: Some(Price {
            cluster: a.cluster.clone().unwrap_or_default(),
            effective_time: Some(to_timestamp(a.from)),
            currency_code: a.currency.clone(),
            cpu_core_hour: a.cpu_hour.clone(),
            memory_gib_hour: a.memory_gib_hour.clone(),
            storage_gib_month: a.storage_gib_month.clone(),
            create_time: None,
            created_by: String::new(),
        }),
        allow_high: a.allow_high,
    }
}

/// The hint for a refused price: when the server's refusal reads like the
/// plausibility check and `--allow-high` was not given.
pub fn allow_high_hint(code: Code, message: &str, allow_high: bool) -> Option<&'static str> {
    if allow_high
        || !matches!(
            code,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange
        )
    {
        return None;
    }
    let m = message.to_ascii_lowercase();
    let looks_high = ["high", "implausib", "monthly"]
        .iter()
        .any(|w| m.contains(w));
    looks_high.then_some(
        "CPU and memory prices are per hour, storage per GiB-month; if this price is \
         really meant, repeat with --allow-high",
    )
}

async fn set(a: SetArgs, ctx: &Ctx) -> Result<(), CliError> {
    let target = match &a.cluster {
        Some(c) => format!("cluster {c:?}"),
        None => "the default".to_string(),
    };
    let res = ctx
        .api
        .call(
            format!("set price for {target}"),
            ctx.api.cost().set_price(set_request(&a)),
        )
        .await;
    let p = match res {
        Ok(p) => p,
        Err(CliError::Call(mut e)) => {
            e.hint = allow_high_hint(e.code, &e.message, a.allow_high).or(e.hint);
            return Err(CliError::Call(e));
        }
        Err(e) => return Err(e),
    };
    if ctx.json() {
        emit_json(&PriceView::from(&p));
    } else {
        emit(&list_table(std::slice::from_ref(&p)).render());
    }
    Ok(())
}

async fn list(cluster: Option<String>, ctx: &Ctx) -> Result<(), CliError> {
    let resp = ctx
        .api
        .call(
            "list prices",
            ctx.api.cost().list_prices(ListPricesRequest {
                cluster: cluster.unwrap_or_default(),
            }),
        )
        .await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct L {
            prices: Vec<PriceView>,
        }
        emit_json(&L {
            prices: resp.prices.iter().map(PriceView::from).collect(),
        });
    } else if resp.prices.is_empty() {
        emit("No prices yet: costs are all zero until `mtp price set` (see --help).");
    } else {
        emit(&list_table(&resp.prices).render());
    }
    Ok(())
}

fn day(ts: Option<&prost_types::Timestamp>) -> String {
    datetime(ts)
        .map(super::cost::short_time)
        .unwrap_or_default()
}

pub fn list_table(prices: &[Price]) -> Table {
    let mut t = Table::new(&[
        "CLUSTER",
        "FROM",
        "CURRENCY",
        "CPU/CORE-HOUR",
        "MEMORY/GIB-HOUR",
        "STORAGE/GIB-MONTH",
        "CREATED",
        "BY",
    ]);
    for p in prices {
        t.row(vec![
            if p.cluster.is_empty() {
                "(default)".into()
            } else {
                p.cluster.clone()
            },
            day(p.effective_time.as_ref()),
            p.currency_code.clone(),
            money::display_decimal(&p.cpu_core_hour),
            money::display_decimal(&p.memory_gib_hour),
            money::display_decimal(&p.storage_gib_month),
            output::rfc3339_or_dash(p.create_time.as_ref()),
            p.created_by.clone(),
        ]);
    }
    t
}

/// JSON shape of a price version; prices are the server's decimal strings.
#[derive(Debug, Serialize)]
pub struct PriceView {
    /// null for the default of every cluster without its own price.
    pub cluster: Option<String>,
    pub effective_time: Option<String>,
    pub currency: String,
    pub cpu_core_hour: String,
    pub memory_gib_hour: String,
    pub storage_gib_month: String,
    pub create_time: Option<String>,
    pub created_by: String,
}

impl From<&Price> for PriceView {
    fn from(p: &Price) -> Self {
        PriceView {
            cluster: (!p.cluster.is_empty()).then(|| p.cluster.clone()),
            effective_time: output::rfc3339(p.effective_time.as_ref()),
            currency: p.currency_code.clone(),
            cpu_core_hour: p.cpu_core_hour.clone(),
            memory_gib_hour: p.memory_gib_hour.clone(),
            storage_gib_month: p.storage_gib_month.clone(),
            create_time: output::rfc3339(p.create_time.as_ref()),
            created_by: p.created_by.clone(),
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
        cmd: PriceCmd,
    }

    fn parse(args: &[&str]) -> Result<PriceCmd, String> {
        T::try_parse_from([&["price"], args].concat())
            .map(|t| t.cmd)
            .map_err(|e| e.to_string())
    }

    const OK: [&str; 11] = [
        "set",
        "--cpu-hour",
        "0.031",
        "--memory-gib-hour",
        "0.004",
        "--storage-gib-month",
        "0.10",
        "--currency",
        "eur",
        "--from",
        "2026-12-01",
    ];

    fn with(flag: &str, value: &str) -> Vec<String> {
        let mut v: Vec<String> = OK.iter().map(|s| s.to_string()).collect();
        let i = v.iter().position(|a| a == flag).unwrap();
        v[i + 1] = value.to_string();
        v
    }

    fn parse_owned(v: &[String]) -> Result<PriceCmd, String> {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        parse(&refs)
    }

    #[test]
    fn set_builds_the_request_as_typed() {
        let PriceCmd::Set(a) = parse(&OK).unwrap() else {
            panic!("not set")
        };
        let r = set_request(&a);
        let p = r.price.unwrap();
        assert_eq!(p.cluster, "");
        assert_eq!(p.currency_code, "EUR");
        assert_eq!(p.cpu_core_hour, "0.031");
        assert_eq!(p.storage_gib_month, "0.10");
        assert_eq!(
            p.effective_time.unwrap().seconds,
            parse_day("2026-12-01").unwrap().timestamp()
        );
        assert!(!r.allow_high);
        let mut v: Vec<&str> = OK.to_vec();
        v.extend(["--cluster", "eu-1", "--allow-high"]);
        let PriceCmd::Set(a) = parse(&v).unwrap() else {
            panic!("not set")
        };
        let r = set_request(&a);
        assert!(r.allow_high);
        assert_eq!(r.price.unwrap().cluster, "eu-1");
    }

    #[test]
    fn bad_prices_name_the_flag() {
        let e = parse_owned(&with("--cpu-hour", "-1")).unwrap_err();
        assert!(e.contains("--cpu-hour") && e.contains("negative"), "{e}");
        let e = parse_owned(&with("--memory-gib-hour", "0.0000000001")).unwrap_err();
        assert!(
            e.contains("--memory-gib-hour") && e.contains("more than 9 decimal places"),
            "{e}"
        );
        let e = parse_owned(&with("--storage-gib-month", "1,5")).unwrap_err();
        assert!(e.contains("--storage-gib-month"), "{e}");
        let e = parse_owned(&with("--currency", "euro")).unwrap_err();
        assert!(e.contains("--currency") && e.contains("ISO 4217"), "{e}");
        let e = parse_owned(&with("--from", "2026-12-01T00:00:00Z")).unwrap_err();
        assert!(e.contains("--from") && e.contains("YYYY-MM-DD"), "{e}");
        let e = parse(&OK[..9]).unwrap_err();
        assert!(e.contains("--from"), "{e}");
    }

    #[test]
    fn an_implausible_price_refusal_gets_the_allow_high_hint() {
        let h = allow_high_hint(
            Code::InvalidArgument,
            "cpu_core_hour 22.63 is implausibly high (set allow_high)",
            false,
        );
        assert!(h.unwrap().contains("--allow-high"));
        assert!(allow_high_hint(Code::InvalidArgument, "price too high", true).is_none());
        assert!(allow_high_hint(Code::PermissionDenied, "too high", false).is_none());
        assert!(allow_high_hint(Code::InvalidArgument, "currency must match USD", false).is_none());
        // The hint shows under the server's own message.
        let err = CliError::Call(crate::errors::CallError {
            action: "set price for the default".into(),
            code: Code::InvalidArgument,
            message: "cpu_core_hour 22.63 looks like a monthly price".into(),
            request_id: None,
            addr: "http://x".into(),
            hint: allow_high_hint(
                Code::InvalidArgument,
                "cpu_core_hour 22.63 looks like a monthly price",
                false,
            ),
        });
        assert_eq!(
            err.render_human(),
            "error: set price for the default: cpu_core_hour 22.63 looks like a monthly price\n  \
             hint: CPU and memory prices are per hour, storage per GiB-month; if this price is \
             really meant, repeat with --allow-high"
        );
    }

    #[test]
    fn list_shows_the_default_and_exact_prices() {
        let p = Price {
            cluster: String::new(),
            effective_time: Some(prost_types::Timestamp {
                seconds: parse_day("2026-12-01").unwrap().timestamp(),
                nanos: 0,
            }),
            currency_code: "EUR".into(),
            cpu_core_hour: "0.031".into(),
            memory_gib_hour: "0.0042".into(),
            storage_gib_month: "1".into(),
            create_time: None,
            created_by: "admin".into(),
        };
        let out = list_table(std::slice::from_ref(&p)).render();
        let row = out.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "(default)",
                "2026-12-01",
                "EUR",
                "0.031",
                "0.0042",
                "1.00",
                "-",
                "admin"
            ]
        );
        let v = serde_json::to_value(PriceView::from(&p)).unwrap();
        assert!(v["cluster"].is_null());
        assert_eq!(v["effective_time"], "2026-12-01T00:00:00Z");
        assert_eq!(v["storage_gib_month"], "1");
    }
}
