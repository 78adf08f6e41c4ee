//! Money, the price book and budgets: exact amounts (integer nanos, never
//! floats), versioned prices with explicit units, pricing of usage totals
//! rounded once per row, and budget thresholds.
//!
//! Units, stated once:
//! * CPU is priced per core-hour, memory per GiB-hour (2^30 bytes), storage
//!   per GiB-month, where **a month is 730 hours** (8760 / 12), the
//!   convention of cloud price lists. Usage arrives in core-nanoseconds and
//!   byte-seconds (see [`crate::usage`]).
//! * A cost is `billed × price`, computed as an exact rational and rounded
//!   **once per row, half to even, to the nano**: each resource's cost of a
//!   row from its exact sum over every cluster and day the row covers, and
//!   the row's total from the exact sum of the three (so it can differ from
//!   the sum of the three rounded costs by at most one nano).
//! * Usage with no price in force is reported, but the cost resting on it is
//!   *missing* (`None`), never zero and never a lower number.

use chrono::{DateTime, Timelike, Utc};

use crate::usage::UsageTotals;
use crate::{Error, Result};

/// Hours in the month storage is priced per (8760 / 12).
pub const HOURS_PER_MONTH: u128 = 730;
/// Nanos in one unit of a currency.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Fractional digits a price or amount may have.
pub const MAX_FRACTION_DIGITS: usize = 9;
/// Largest price or budget accepted, in units (even with `allow_high`): far
/// above any real price, and it keeps every product far inside `u128`.
pub const MAX_AMOUNT_UNITS: i128 = 1_000_000_000;

/// Above these a price is taken for a unit mistake unless `allow_high` is
/// set. Cloud list prices (2026) are about 0.03 per core-hour, 0.004 per
/// GiB-hour and 0.04–0.20 per GiB-month; the bounds leave 30–50× headroom
/// for dedicated hardware, and a monthly price given per hour (×730) lands
/// far above them.
pub const HIGH_CPU_CORE_HOUR_NANOS: i128 = NANOS_PER_UNIT; // 1 per core-hour
pub const HIGH_MEMORY_GIB_HOUR_NANOS: i128 = NANOS_PER_UNIT / 5; // 0.2 per GiB-hour
pub const HIGH_STORAGE_GIB_MONTH_NANOS: i128 = 2 * NANOS_PER_UNIT; // 2 per GiB-month

const CORE_NANOS_PER_CORE_HOUR: u128 = 1_000_000_000 * 3600;
const BYTE_SECONDS_PER_GIB_HOUR: u128 = (1 << 30) * 3600;
const BYTE_SECONDS_PER_GIB_MONTH: u128 = BYTE_SECONDS_PER_GIB_HOUR * HOURS_PER_MONTH;
/// The least common multiple of the three divisors above: every exact cost
/// is `nanos + frac / COMMON`, so costs of different resources add exactly.
/// 2^35 · 3^2 · 5^11 · 73 ≈ 1.1e21.
const COMMON: u128 = 34_359_738_368 * 9 * 48_828_125 * 73;

/// Parses a non-negative decimal (`"0.031611"`, `"12"`) into nanos. At most
/// nine fractional digits, no sign, no exponent; `field` names it on error.
pub fn parse_amount(field: &str, text: &str) -> Result<i128> {
    let bad = |why: &str| Error::invalid(field, format!("{text:?} {why}"));
    if text.is_empty() {
        return Err(Error::invalid(
            field,
            "is required (a decimal such as 0.25)",
        ));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "is not a decimal number (digits, an optional '.', at most 9 fractional digits)",
        ));
    }
    let fraction = fraction.unwrap_or("");
    if text.contains('.') && fraction.is_empty() {
        return Err(bad("has no digits after the '.'"));
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a decimal number"));
    }
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(bad(&format!(
            "has {} fractional digits; at most {MAX_FRACTION_DIGITS} (nanos) are kept exactly",
            fraction.len()
        )));
    }
    let trimmed = whole.trim_start_matches('0');
    if trimmed.len() > 10 {
        return Err(bad(&format!("is above {MAX_AMOUNT_UNITS}")));
    }
    let units: i128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().map_err(|_| bad("is not a number"))?
    };
    let mut nanos: i128 = 0;
    for (i, d) in fraction.bytes().enumerate() {
        nanos += i128::from(d - b'0') * 10i128.pow((MAX_FRACTION_DIGITS - 1 - i) as u32);
    }
    let total = units * NANOS_PER_UNIT + nanos;
    if total > MAX_AMOUNT_UNITS * NANOS_PER_UNIT {
        return Err(bad(&format!("is above {MAX_AMOUNT_UNITS}")));
    }
    Ok(total)
}

/// Formats nanos as the shortest exact decimal (`31611000` → `"0.031611"`).
pub fn format_amount(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let units = abs / NANOS_PER_UNIT as u128;
    let frac = abs % NANOS_PER_UNIT as u128;
    if frac == 0 {
        format!("{sign}{units}")
    } else {
        let digits = format!("{frac:09}");
        format!("{sign}{units}.{}", digits.trim_end_matches('0'))
    }
}

/// Checks an ISO 4217 code: three upper-case ASCII letters.
pub fn parse_currency(field: &str, text: &str) -> Result<String> {
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(text.to_owned())
    } else {
        Err(Error::invalid(
            field,
            format!("{text:?} is not an ISO 4217 code (three upper-case letters, e.g. EUR)"),
        ))
    }
}

/// An exact amount of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// ISO 4217.
    pub currency: String,
    pub nanos: i128,
}

impl Money {
    /// `units + nanos / 1e9` with both parts of the same sign (as
    /// `google.type.Money`); `None` if the units do not fit an `i64`.
    pub fn units_and_nanos(&self) -> Option<(i64, i32)> {
        let units = i64::try_from(self.nanos / NANOS_PER_UNIT).ok()?;
        let nanos = (self.nanos % NANOS_PER_UNIT) as i32;
        Some((units, nanos))
    }
}

/// One version of the price book: in force for `cluster` (or, with `None`,
/// for every cluster without a version of its own) from `effective` (a UTC
/// midnight) until the next version's. Prices in nanos of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceVersion {
    pub cluster: Option<String>,
    pub effective: DateTime<Utc>,
    pub currency: String,
    pub cpu_core_hour: i128,
    pub memory_gib_hour: i128,
    pub storage_gib_month: i128,
}

impl PriceVersion {
    /// Parses and checks a version. `field` is the request path of the
    /// price (`price`). A price above its plausibility bound is refused
    /// (it most likely is a price per month given per hour) unless
    /// `allow_high`.
    pub fn parse(
        field: &str,
        cluster: Option<String>,
        effective: DateTime<Utc>,
        currency: &str,
        prices: [&str; 3],
        allow_high: bool,
    ) -> Result<Self> {
        let f = |name: &str| format!("{field}.{name}");
        let midnight = effective.hour() == 0
            && effective.minute() == 0
            && effective.second() == 0
            && effective.nanosecond() == 0;
        if !midnight {
            return Err(Error::invalid(
                f("effective_time"),
                format!(
                    "{} is not a UTC midnight; a version holds from the start of a day",
                    effective.to_rfc3339()
                ),
            ));
        }
        let currency = parse_currency(&f("currency_code"), currency)?;
        let cpu = parse_amount(&f("cpu_core_hour"), prices[0])?;
        let memory = parse_amount(&f("memory_gib_hour"), prices[1])?;
        let storage = parse_amount(&f("storage_gib_month"), prices[2])?;
        if !allow_high {
            check_plausible(
                &f("cpu_core_hour"),
                cpu,
                HIGH_CPU_CORE_HOUR_NANOS,
                "core-hour",
                "month",
                730,
            )?;
            check_plausible(
                &f("memory_gib_hour"),
                memory,
                HIGH_MEMORY_GIB_HOUR_NANOS,
                "GiB-hour",
                "month",
                730,
            )?;
            check_plausible(
                &f("storage_gib_month"),
                storage,
                HIGH_STORAGE_GIB_MONTH_NANOS,
                "GiB-month",
                "year",
                12,
            )?;
        }
        Ok(PriceVersion {
            cluster,
            effective,
            currency,
            cpu_core_hour: cpu,
            memory_gib_hour: memory,
            storage_gib_month: storage,
        })
    }
}

/// Refuses a price above `high` as a likely unit mistake: a price per
/// `longer` period given where one per `unit` is meant.
fn check_plausible(
    field: &str,
    nanos: i128,
    high: i128,
    unit: &str,
    longer: &str,
    factor: i128,
) -> Result<()> {
    if nanos <= high {
        return Ok(());
    }
    let shorter = if longer == "month" { "hour" } else { "month" };
    Err(Error::invalid(
        field,
        format!(
            "{} per {unit} is above {} per {unit}, far above what clouds charge; it looks like a price per {longer} where per {shorter} is meant (÷{factor} gives {}). Set allow_high to keep it",
            format_amount(nanos),
            format_amount(high),
            format_amount(round_half_even_div(nanos, factor)),
        ),
    ))
}

fn round_half_even_div(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 != 0 => q + 1,
        _ => q,
    }
}

/// Every version of the book (one currency for all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBook {
    versions: Vec<PriceVersion>,
}

impl PriceBook {
    /// A book from stored versions; refuses a book mixing currencies.
    pub fn new(mut versions: Vec<PriceVersion>) -> Result<Self> {
        if let Some(first) = versions.first()
            && let Some(other) = versions.iter().find(|v| v.currency != first.currency)
        {
            return Err(Error::FailedPrecondition(format!(
                "the price book mixes currencies ({} and {})",
                first.currency, other.currency
            )));
        }
        versions.sort_by_key(|v| std::cmp::Reverse(v.effective));
        Ok(PriceBook { versions })
    }

    /// The currency of every price, `None` while the book is empty.
    pub fn currency(&self) -> Option<&str> {
        self.versions.first().map(|v| v.currency.as_str())
    }

    /// The version in force for `cluster` at `t`: the cluster's own newest
    /// version effective at or before `t`, else the default's, else none.
    pub fn in_force(&self, cluster: &str, t: DateTime<Utc>) -> Option<&PriceVersion> {
        let newest = |own: bool| {
            self.versions.iter().find(|v| {
                v.effective <= t
                    && match &v.cluster {
                        Some(c) => own && c == cluster,
                        None => !own,
                    }
            })
        };
        newest(true).or_else(|| newest(false))
    }

    /// The times in `(from, to)` at which some version takes effect: within
    /// each stretch between them every cluster's price is constant.
    pub fn breaks(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut b: Vec<_> = self
            .versions
            .iter()
            .map(|v| v.effective)
            .filter(|t| *t > from && *t < to)
            .collect();
        b.sort();
        b.dedup();
        b
    }

    pub fn versions(&self) -> &[PriceVersion] {
        &self.versions
    }
}

/// An exact, non-negative cost: `nanos + frac / COMMON` nanos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactCost {
    nanos: u128,
    frac: u128,
}

impl ExactCost {
    /// `amount / divisor × price_nanos`, exactly. `divisor` divides COMMON.
    fn of(field: &str, amount: u128, price_nanos: i128, divisor: u128) -> Result<Self> {
        let price = u128::try_from(price_nanos)
            .map_err(|_| Error::invalid(field, "a price is never negative"))?;
        let n = amount
            .checked_mul(price)
            .ok_or_else(|| Error::invalid(field, "usage × price overflows"))?;
        Ok(ExactCost {
            nanos: n / divisor,
            frac: (n % divisor) * (COMMON / divisor),
        })
    }

    pub fn add(&mut self, other: ExactCost) {
        self.nanos += other.nanos;
        self.frac += other.frac;
        if self.frac >= COMMON {
            self.nanos += self.frac / COMMON;
            self.frac %= COMMON;
        }
    }

    /// Rounded half to even to the nano.
    pub fn rounded(&self) -> i128 {
        let up = match (2 * self.frac).cmp(&COMMON) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => self.nanos % 2 == 1,
            std::cmp::Ordering::Less => false,
        };
        let n = self.nanos + u128::from(up);
        i128::try_from(n).unwrap_or(i128::MAX)
    }

    /// As a float, for weights and ratios only (never money).
    pub fn approx(&self) -> f64 {
        self.nanos as f64 + self.frac as f64 / COMMON as f64
    }
}

/// The exact costs of one resource: billed (what is charged), and
/// requested and used at the same price (the weights of efficiency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceCost {
    pub requested: ExactCost,
    pub used: ExactCost,
    pub billed: ExactCost,
}

impl ResourceCost {
    fn of(field: &str, r: u128, u: u128, b: u128, price: i128, divisor: u128) -> Result<Self> {
        Ok(ResourceCost {
            requested: ExactCost::of(field, r, price, divisor)?,
            used: ExactCost::of(field, u, price, divisor)?,
            billed: ExactCost::of(field, b, price, divisor)?,
        })
    }

    fn add(&mut self, o: &ResourceCost) {
        self.requested.add(o.requested);
        self.used.add(o.used);
        self.billed.add(o.billed);
    }
}

/// Usage totals priced at one version, exactly (nothing rounded yet).
pub fn price_usage(usage: &UsageTotals, price: &PriceVersion) -> Result<[ResourceCost; 3]> {
    let u = usage;
    Ok([
        ResourceCost::of(
            "cpu",
            u.cpu_requested_core_nanos,
            u.cpu_used_core_nanos,
            u.cpu_billed_core_nanos,
            price.cpu_core_hour,
            CORE_NANOS_PER_CORE_HOUR,
        )?,
        ResourceCost::of(
            "memory",
            u.memory_requested_byte_seconds,
            u.memory_used_byte_seconds,
            u.memory_billed_byte_seconds,
            price.memory_gib_hour,
            BYTE_SECONDS_PER_GIB_HOUR,
        )?,
        ResourceCost::of(
            "storage",
            u.storage_requested_byte_seconds,
            u.storage_used_byte_seconds,
            u.storage_billed_byte_seconds,
            price.storage_gib_month,
            BYTE_SECONDS_PER_GIB_MONTH,
        )?,
    ])
}

/// One row of a report being summed: usage and its exact cost over every
/// cluster and day it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostRow {
    pub usage: UsageTotals,
    /// CPU, memory, storage.
    pub costs: [ResourceCost; 3],
    /// Some usage of the row had no price in force: its cost is missing.
    pub unpriced: bool,
}

impl CostRow {
    /// Adds usage priced at `price` (`None`: no version in force).
    pub fn add(&mut self, usage: &UsageTotals, price: Option<&PriceVersion>) -> Result<()> {
        match price {
            Some(p) => {
                let costs = price_usage(usage, p)?;
                for (mine, theirs) in self.costs.iter_mut().zip(&costs) {
                    mine.add(theirs);
                }
            }
            None => {
                if *usage != UsageTotals::default() {
                    self.unpriced = true;
                }
            }
        }
        self.usage.merge(usage)
    }

    /// Adds another row (report totals).
    pub fn merge(&mut self, other: &CostRow) -> Result<()> {
        for (mine, theirs) in self.costs.iter_mut().zip(&other.costs) {
            mine.add(theirs);
        }
        self.unpriced |= other.unpriced;
        self.usage.merge(&other.usage)
    }

    /// The billed cost of resource `i` (0 CPU, 1 memory, 2 storage),
    /// rounded once; `None` when some of it had no price.
    pub fn cost(&self, i: usize) -> Option<i128> {
        (!self.unpriced).then(|| self.costs[i].billed.rounded())
    }

    /// The row's total, rounded once from the exact sum of its resources.
    pub fn total(&self) -> Option<i128> {
        (!self.unpriced).then(|| self.priced_total())
    }

    /// The total of the usage that had a price, rounded once: the whole
    /// cost when nothing is missing, else a lower bound of it (what a
    /// budget alert may rest on: a threshold crossed by part of the cost
    /// is crossed).
    pub fn priced_total(&self) -> i128 {
        let mut sum = ExactCost::default();
        for c in &self.costs {
            sum.add(c.billed);
        }
        sum.rounded()
    }

    /// used ÷ requested over CPU and memory, weighted by cost (the cost of
    /// what was used over the cost of what was requested); without prices,
    /// the mean of the two resources' efficiencies. 0 when nothing was
    /// requested.
    pub fn efficiency(&self) -> f64 {
        let [cpu, memory, _] = &self.costs;
        let requested = cpu.requested.approx() + memory.requested.approx();
        if requested > 0.0 {
            return (cpu.used.approx() + memory.used.approx()) / requested;
        }
        let effs: Vec<f64> = [
            (
                self.usage.cpu_used_core_nanos,
                self.usage.cpu_requested_core_nanos,
            ),
            (
                self.usage.memory_used_byte_seconds,
                self.usage.memory_requested_byte_seconds,
            ),
        ]
        .into_iter()
        .filter(|(_, r)| *r > 0)
        .map(|(u, r)| ratio(u, r))
        .collect();
        if effs.is_empty() {
            0.0
        } else {
            effs.iter().sum::<f64>() / effs.len() as f64
        }
    }
}

/// `a ÷ b` as a float, 0 when `b` is 0.
pub fn ratio(a: u128, b: u128) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// CPU core-nanoseconds as core-hours.
pub fn core_hours(core_nanos: u128) -> f64 {
    core_nanos as f64 / CORE_NANOS_PER_CORE_HOUR as f64
}

/// Byte-seconds as GiB-hours.
pub fn gib_hours(byte_seconds: u128) -> f64 {
    byte_seconds as f64 / BYTE_SECONDS_PER_GIB_HOUR as f64
}

/// Default budget thresholds, in percent of the monthly amount.
pub const DEFAULT_THRESHOLDS: [u32; 3] = [50, 80, 100];
/// Most thresholds one budget may have.
pub const MAX_THRESHOLDS: usize = 10;

/// A tenant's monthly budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    /// Nanos of the price book's currency per UTC month.
    pub monthly_nanos: i128,
    /// Percentages, strictly ascending, each in 1..=1000.
    pub thresholds: Vec<u32>,
}

impl BudgetSpec {
    /// Parses a budget as a request gives it; empty thresholds mean the default.
    pub fn parse(
        amount_field: &str,
        amount: &str,
        thresholds_field: &str,
        thresholds: &[u32],
    ) -> Result<Self> {
        let monthly_nanos = parse_amount(amount_field, amount)?;
        if monthly_nanos == 0 {
            return Err(Error::invalid(amount_field, "must be greater than zero"));
        }
        let thresholds = if thresholds.is_empty() {
            DEFAULT_THRESHOLDS.to_vec()
        } else {
            thresholds.to_vec()
        };
        if thresholds.len() > MAX_THRESHOLDS {
            return Err(Error::invalid(
                thresholds_field,
                format!(
                    "at most {MAX_THRESHOLDS} thresholds (got {})",
                    thresholds.len()
                ),
            ));
        }
        for (i, t) in thresholds.iter().enumerate() {
            if !(1..=1000).contains(t) {
                return Err(Error::invalid(
                    format!("{thresholds_field}[{i}]"),
                    format!("{t} is not a percentage in 1..=1000"),
                ));
            }
            if i > 0 && thresholds[i - 1] >= *t {
                return Err(Error::invalid(
                    format!("{thresholds_field}[{i}]"),
                    format!(
                        "{t} is not above {}; thresholds go strictly ascending",
                        thresholds[i - 1]
                    ),
                ));
            }
        }
        Ok(BudgetSpec {
            monthly_nanos,
            thresholds,
        })
    }

    /// The thresholds crossed at cost `cost_nanos`: those with
    /// `cost ≥ threshold % × budget`, exactly.
    pub fn crossed(&self, cost_nanos: i128) -> Vec<u32> {
        self.thresholds
            .iter()
            .copied()
            .filter(|t| cost_nanos.saturating_mul(100) >= self.monthly_nanos * i128::from(*t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap()
    }

    fn version(cluster: Option<&str>, effective: DateTime<Utc>, cpu: &str) -> PriceVersion {
        PriceVersion::parse(
            "price",
            cluster.map(Into::into),
            effective,
            "EUR",
            [cpu, "0.004", "0.1"],
            false,
        )
        .unwrap()
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("not Invalid: {other}"),
        }
    }

    #[test]
    fn amounts_parse_exactly_and_name_the_field() {
        assert_eq!(parse_amount("p", "0.031611"), Ok(31_611_000));
        assert_eq!(parse_amount("p", "12"), Ok(12 * NANOS_PER_UNIT));
        assert_eq!(parse_amount("p", "0.000000001"), Ok(1));
        assert_eq!(parse_amount("p", "007.5"), Ok(7_500_000_000));
        for bad in [
            "",
            "-1",
            "1e3",
            ".5",
            "5.",
            "1.0000000001",
            "1,5",
            " 1",
            "0x10",
            "+1",
        ] {
            assert_eq!(
                field_of(parse_amount("p.cpu", bad).unwrap_err()),
                "p.cpu",
                "{bad:?}"
            );
        }
        let e = parse_amount("p", "0.1234567891").unwrap_err();
        assert!(e.to_string().contains("10 fractional digits"), "{e}");
        assert!(parse_amount("p", "1000000000").is_ok());
        assert!(parse_amount("p", "1000000000.000000001").is_err());
        assert!(parse_amount("p", "99999999999999999999999999").is_err());
        assert_eq!(format_amount(31_611_000), "0.031611");
        assert_eq!(format_amount(12 * NANOS_PER_UNIT), "12");
        assert_eq!(format_amount(-1_500_000_000), "-1.5");
        assert_eq!(format_amount(0), "0");
    }

    #[test]
    fn money_splits_into_units_and_nanos_of_one_sign() {
        let m = |n| {
            Money {
                currency: "EUR".into(),
                nanos: n,
            }
            .units_and_nanos()
        };
        assert_eq!(m(1_500_000_000), Some((1, 500_000_000)));
        assert_eq!(m(-1_500_000_000), Some((-1, -500_000_000)));
        assert_eq!(m(i128::MAX), None);
    }

    #[test]
    fn a_monthly_price_given_per_hour_is_refused_naming_the_field() {
        let parse = |prices: [&str; 3], allow| {
            PriceVersion::parse("price", None, day(1), "EUR", prices, allow)
        };
        // €25 per core-month typed as per core-hour.
        let e = parse(["25", "0.004", "0.1"], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "price.cpu_core_hour: 25 per core-hour is above 1 per core-hour, far above what clouds charge; it looks like a price per month where per hour is meant (÷730 gives 0.034246575). Set allow_high to keep it"
        );
        let e = parse(["0.03", "3", "0.1"], false).unwrap_err();
        assert_eq!(field_of(e), "price.memory_gib_hour");
        let e = parse(["0.03", "0.004", "24"], false).unwrap_err();
        assert!(
            e.to_string().starts_with("price.storage_gib_month: "),
            "{e}"
        );
        assert!(e.to_string().contains("per year where per month"), "{e}");
        // At the bounds, and above them with allow_high.
        assert!(parse(["1", "0.2", "2"], false).is_ok());
        assert!(parse(["25", "3", "24"], true).is_ok());
        let e = PriceVersion::parse(
            "price",
            None,
            day(1) + chrono::Duration::hours(1),
            "EUR",
            ["1", "0", "0"],
            false,
        )
        .unwrap_err();
        assert_eq!(field_of(e), "price.effective_time");
        let e =
            PriceVersion::parse("price", None, day(1), "eur", ["1", "0", "0"], false).unwrap_err();
        assert_eq!(field_of(e), "price.currency_code");
    }

    #[test]
    fn the_cluster_version_in_force_wins_else_the_default() {
        let book = PriceBook::new(vec![
            version(None, day(1), "0.03"),
            version(Some("k3s-1"), day(10), "0.05"),
            version(None, day(20), "0.04"),
        ])
        .unwrap();
        let cpu = |c: &str, t| book.in_force(c, t).map(|v| v.cpu_core_hour);
        assert_eq!(cpu("k3s-1", day(5)), Some(30_000_000));
        assert_eq!(cpu("k3s-1", day(10)), Some(50_000_000));
        assert_eq!(
            cpu("k3s-1", day(25)),
            Some(50_000_000),
            "own version beats a newer default"
        );
        assert_eq!(cpu("k3s-2", day(19)), Some(30_000_000));
        assert_eq!(cpu("k3s-2", day(20)), Some(40_000_000));
        assert_eq!(cpu("k3s-2", day(1) - chrono::Duration::seconds(1)), None);
        assert_eq!(book.breaks(day(1), day(30)), vec![day(10), day(20)]);
        assert_eq!(book.currency(), Some("EUR"));

        let mut usd = version(None, day(2), "0.03");
        usd.currency = "USD".into();
        assert!(PriceBook::new(vec![version(None, day(1), "0.03"), usd]).is_err());
    }

    fn usage(cpu_billed: u128, mem_billed: u128, storage_billed: u128) -> UsageTotals {
        UsageTotals {
            cpu_requested_core_nanos: cpu_billed / 2,
            cpu_used_core_nanos: cpu_billed / 4,
            cpu_billed_core_nanos: cpu_billed,
            memory_requested_byte_seconds: mem_billed,
            memory_used_byte_seconds: mem_billed / 2,
            memory_billed_byte_seconds: mem_billed,
            storage_billed_byte_seconds: storage_billed,
            ..UsageTotals::default()
        }
    }

    #[test]
    fn costs_are_exact_and_rounded_once_per_row() {
        let p = version(None, day(1), "0.031611");
        // 2 cores for 10 hours = 20 core-hours × 0.031611 = 0.63222.
        let mut row = CostRow::default();
        row.add(&usage(2 * 36_000 * 1_000_000_000, 0, 0), Some(&p))
            .unwrap();
        assert_eq!(row.cost(0), Some(632_220_000));
        // 1 GiB for 1 hour at 0.004 = 0.004; 730 GiB-hours of storage = 1 GiB-month at 0.1.
        let mut row = CostRow::default();
        row.add(
            &usage(0, (1 << 30) * 3600, (1 << 30) * 3600 * 730),
            Some(&p),
        )
        .unwrap();
        assert_eq!(row.cost(1), Some(4_000_000));
        assert_eq!(row.cost(2), Some(100_000_000));
        assert_eq!(row.total(), Some(104_000_000));
        // One core-millisecond at 0.031611/h = 8.78083… nanos; three of them in
        // one row are 26.3425 nanos, rounded once: 26 (not 3 × 9 = 27).
        let mut row = CostRow::default();
        for _ in 0..3 {
            row.add(&usage(1_000_000, 0, 0), Some(&p)).unwrap();
        }
        assert_eq!(row.cost(0), Some(26));
        // Half to even: 0.5 nano → 0, 1.5 → 2, 2.5 → 2.
        let half = ExactCost {
            nanos: 0,
            frac: COMMON / 2,
        };
        assert_eq!(half.rounded(), 0);
        assert_eq!(
            ExactCost {
                nanos: 1,
                frac: COMMON / 2
            }
            .rounded(),
            2
        );
        assert_eq!(
            ExactCost {
                nanos: 2,
                frac: COMMON / 2
            }
            .rounded(),
            2
        );
        assert_eq!(
            ExactCost {
                nanos: 2,
                frac: COMMON / 2 + 1
            }
            .rounded(),
            3
        );
    }

    #[test]
    fn usage_without_a_price_has_a_missing_cost_not_zero() {
        let p = version(None, day(1), "0.03");
        let mut row = CostRow::default();
        row.add(&usage(3_600_000_000_000, 0, 0), Some(&p)).unwrap();
        row.add(&usage(3_600_000_000_000, 0, 0), None).unwrap();
        assert_eq!(row.cost(0), None);
        assert_eq!(row.total(), None);
        assert_eq!(
            row.usage.cpu_billed_core_nanos, 7_200_000_000_000,
            "usage still reported"
        );
        // No usage and no price: nothing is missing.
        let mut empty = CostRow::default();
        empty.add(&UsageTotals::default(), None).unwrap();
        assert_eq!(empty.total(), Some(0));
    }

    #[test]
    fn efficiency_is_used_over_requested_weighted_by_cost() {
        let p = version(None, day(1), "0.03");
        let mut row = CostRow::default();
        // CPU: used 1/4 of billed, requested 1/2 → 0.5; memory 0.5.
        row.add(&usage(4_000_000_000_000, 4 << 30, 0), Some(&p))
            .unwrap();
        assert!(
            (row.efficiency() - 0.5).abs() < 1e-12,
            "{}",
            row.efficiency()
        );
        let mut unpriced = CostRow::default();
        unpriced
            .add(&usage(4_000_000_000_000, 4 << 30, 0), None)
            .unwrap();
        assert!((unpriced.efficiency() - 0.5).abs() < 1e-12);
        assert_eq!(CostRow::default().efficiency(), 0.0);
    }

    #[test]
    fn budgets_parse_and_cross_thresholds_exactly() {
        let b = BudgetSpec::parse("monthly_amount", "1000", "thresholds_percent", &[]).unwrap();
        assert_eq!(b.thresholds, vec![50, 80, 100]);
        let euro = NANOS_PER_UNIT;
        assert_eq!(b.crossed(500 * euro - 1), Vec::<u32>::new());
        assert_eq!(b.crossed(500 * euro), vec![50]);
        assert_eq!(b.crossed(999 * euro), vec![50, 80]);
        assert_eq!(b.crossed(1000 * euro), vec![50, 80, 100]);
        let e = |amount: &str, t: &[u32]| {
            field_of(
                BudgetSpec::parse("monthly_amount", amount, "thresholds_percent", t).unwrap_err(),
            )
        };
        assert_eq!(e("0", &[]), "monthly_amount");
        assert_eq!(e("-5", &[]), "monthly_amount");
        assert_eq!(e("10", &[50, 50]), "thresholds_percent[1]");
        assert_eq!(e("10", &[80, 50]), "thresholds_percent[1]");
        assert_eq!(e("10", &[0]), "thresholds_percent[0]");
        assert_eq!(e("10", &[50, 1001]), "thresholds_percent[1]");
        assert_eq!(e("10", &(1..=11).collect::<Vec<_>>()), "thresholds_percent");
        assert!(BudgetSpec::parse("m", "10", "t", &[1, 1000]).is_ok());
    }

    proptest! {
        #[test]
        fn splitting_a_period_never_changes_the_unrounded_total(
            parts in prop::collection::vec((0u64..1 << 50, 0u64..1 << 55, 0u64..1 << 55), 1..20),
            cpu in 0i128..5_000_000_000,
            mem in 0i128..200_000_000,
            sto in 0i128..2_000_000_000,
        ) {
            let p = PriceVersion {
                cluster: None,
                effective: day(1),
                currency: "EUR".into(),
                cpu_core_hour: cpu,
                memory_gib_hour: mem,
                storage_gib_month: sto,
            };
            let mut split = CostRow::default();
            let mut whole = UsageTotals::default();
            for (c, m, s) in &parts {
                let u = usage(u128::from(*c), u128::from(*m), u128::from(*s));
                split.add(&u, Some(&p)).unwrap();
                whole.merge(&u).unwrap();
            }
            let mut once = CostRow::default();
            once.add(&whole, Some(&p)).unwrap();
            prop_assert_eq!(split.costs, once.costs);
            prop_assert_eq!(split.total(), once.total());
        }

        #[test]
        fn rounding_is_off_by_at_most_half_a_nano(nanos in 0u128..1 << 50, frac in 0u128..COMMON) {
            let c = ExactCost { nanos, frac };
            let r = c.rounded() as u128;
            // |r - (nanos + frac/COMMON)| ≤ 1/2, in units of 1/COMMON.
            let exact = nanos * COMMON + frac;
            let diff = (r * COMMON).abs_diff(exact);
            prop_assert!(2 * diff <= COMMON);
        }

        #[test]
        fn amounts_round_trip(nanos in 0i128..=MAX_AMOUNT_UNITS * NANOS_PER_UNIT) {
            let text = format_amount(nanos);
            prop_assert_eq!(parse_amount("p", &text), Ok(nanos));
            prop_assert_eq!(format_amount(parse_amount("p", &text).unwrap()), text);
        }
    }
}
