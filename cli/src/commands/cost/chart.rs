//! `mtp cost chart`: the report's total cost as bars, stacked per group, one
//! bar per step: drawn with block characters in the terminal, or written as
//! a standalone hand-made SVG.
//!
//! Amounts stay integer nanos; only the geometry (bar lengths, pixels) is
//! computed from them, and every label is printed exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mtp_proto::v1::CostReport;

use super::{GroupBy, Step, short_time};
use crate::money;
use crate::output::datetime;

/// Groups beyond this many are summed into one `other` group.
pub const MAX_GROUPS: usize = 8;

/// Empty steps are filled in up to this many (a year of days, a month of hours).
const MAX_STEPS: usize = 800;

/// Fill characters of the terminal chart, one per group (in legend order).
const FILLS: [char; MAX_GROUPS] = ['█', '▓', '▒', '░', '#', '=', '+', ':'];

/// Colors of the SVG chart, one per group.
const COLORS: [&str; MAX_GROUPS] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

/// The report reshaped for drawing: amounts per group and step.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub title: String,
    pub currency: String,
    /// Step starts, ascending (one entry when not stepped).
    pub steps: Vec<String>,
    /// Largest total first; at most `MAX_GROUPS` (the rest as `other`).
    pub groups: Vec<Group>,
    /// Per step: some row of it has coverage below 100 %.
    pub partial: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// Nanos per step, aligned with `Series::steps`.
    pub values: Vec<i128>,
    pub total: i128,
}

impl Series {
    pub fn from_report(r: &CostReport, by: GroupBy, step: Step) -> Series {
        let start = datetime(r.start_time.as_ref());
        let end = datetime(r.end_time.as_ref());
        let title = format!(
            "Cost by {}, {} to {} (UTC){}",
            by.name(),
            start.map(short_time).unwrap_or_default(),
            end.map(short_time).unwrap_or_default(),
            if r.currency_code.is_empty() {
                String::new()
            } else {
                format!(", {}", r.currency_code)
            }
        );
        // Steps in time order: keyed by the step start (the whole range when
        // rows carry no time).
        let mut step_keys: BTreeMap<Option<DateTime<Utc>>, bool> = BTreeMap::new();
        let mut by_group: BTreeMap<String, BTreeMap<Option<DateTime<Utc>>, i128>> = BTreeMap::new();
        for row in &r.rows {
            let at = if step == Step::Whole {
                None
            } else {
                datetime(row.start_time.as_ref())
            };
            *step_keys.entry(at).or_default() |= row.coverage < 1.0;
            let name = match by {
                GroupBy::Tenant => row.tenant.clone(),
                GroupBy::Environment => format!("{}/{}", row.tenant, row.environment),
                GroupBy::Cluster => row.cluster.clone(),
            };
            *by_group.entry(name).or_default().entry(at).or_default() +=
                money::nanos(row.total_cost.as_ref());
        }
        // Steps without any row still get their (empty) place on the axis.
        if let (Some(start), Some(end)) = (start, end)
            && step != Step::Whole
        {
            let len = chrono::Duration::seconds(i64::from(step.seconds()));
            let mut at = start;
            while at < end && step_keys.len() < MAX_STEPS {
                step_keys.entry(Some(at)).or_default();
                at += len;
            }
        }
        let keys: Vec<Option<DateTime<Utc>>> = step_keys.keys().copied().collect();
        let mut groups: Vec<Group> = by_group
            .into_iter()
            .map(|(name, m)| {
                let values: Vec<i128> = keys
                    .iter()
                    .map(|k| m.get(k).copied().unwrap_or(0))
                    .collect();
                Group {
                    name,
                    total: values.iter().sum(),
                    values,
                }
            })
            .collect();
        groups.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        if groups.len() > MAX_GROUPS {
            let rest = groups.split_off(MAX_GROUPS - 1);
            let mut other = Group {
                name: format!("other ({})", rest.len()),
                values: vec![0; keys.len()],
                total: 0,
            };
            for g in rest {
                for (o, v) in other.values.iter_mut().zip(g.values) {
                    *o += v;
                }
                other.total += g.total;
            }
            groups.push(other);
        }
        let steps = keys
            .iter()
            .map(|k| match k {
                Some(t) => short_time(*t),
                None => "total".to_string(),
            })
            .collect();
        Series {
            title,
            currency: r.currency_code.clone(),
            steps,
            groups,
            partial: step_keys.values().copied().collect(),
        }
    }

    /// One bar per step, or per group when there is a single step.
    fn per_group(&self) -> bool {
        self.steps.len() <= 1
    }

    /// The bars to draw: label, segments (group index, nanos), partial.
    fn bars(&self) -> Vec<Bar> {
        if self.per_group() {
            let partial = self.partial.first().copied().unwrap_or(false);
            self.groups
                .iter()
                .enumerate()
                .map(|(i, g)| (g.name.clone(), vec![(i, g.total)], partial))
                .collect()
        } else {
            self.steps
                .iter()
                .enumerate()
                .map(|(s, label)| {
                    let segs = self
                        .groups
                        .iter()
                        .enumerate()
                        .map(|(i, g)| (i, g.values[s]))
                        .collect();
                    (label.clone(), segs, self.partial[s])
                })
                .collect()
        }
    }

    fn amount(&self, nanos: i128) -> String {
        money::with_currency(&self.currency, &money::format_2dp(nanos))
    }
}

/// One bar: its label, its segments (group index, nanos), and whether some
/// of it rests on partial coverage.
type Bar = (String, Vec<(usize, i128)>, bool);

/// `value` of `max` on a scale of `width` cells, rounded to the nearest cell
/// (negative amounts draw nothing). `max` itself is exactly `width`.
pub fn scale(value: i128, max: i128, width: usize) -> usize {
    if max <= 0 || value <= 0 {
        return 0;
    }
    let w = width as i128;
    let v = value.min(max);
    usize::try_from((2 * v * w + max) / (2 * max)).unwrap_or(0)
}

/// Cell counts of stacked segments: cumulative boundaries are scaled, so the
/// segments add up to the bar of the sum (no rounding drift).
pub fn stack(values: &[i128], max: i128, width: usize) -> Vec<usize> {
    let mut cum = 0i128;
    let mut prev = 0usize;
    values
        .iter()
        .map(|v| {
            cum += (*v).max(0);
            let b = scale(cum, max, width);
            let n = b.saturating_sub(prev);
            prev = b.max(prev);
            n
        })
        .collect()
}

/// The terminal chart, `width` columns wide: one line per bar (label, bar,
/// amount), the largest bar filling the room left by labels and amounts,
/// then the legend with each group's total, and the overall total.
pub fn render_terminal(s: &Series, width: usize) -> String {
    let mut out = format!("{}\n\n", s.title);
    if s.groups.is_empty() {
        out.push_str("No usage in this range.\n");
        return out;
    }
    let bars = s.bars();
    let sums: Vec<i128> = bars
        .iter()
        .map(|(_, segs, _)| segs.iter().map(|(_, v)| (*v).max(0)).sum())
        .collect();
    let max = sums.iter().copied().max().unwrap_or(0);
    let values: Vec<String> = sums.iter().map(|sum| s.amount(*sum)).collect();
    let lw = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(0);
    let vw = values.iter().map(|v| v.chars().count()).max().unwrap_or(0);
    let any_partial = bars.iter().any(|b| b.2);
    // label, " │", bar, " ", amount, " *" where coverage is partial
    let bar_w = width
        .saturating_sub(lw + 3 + vw + if any_partial { 2 } else { 0 })
        .max(10);
    for ((label, segs, partial), value) in bars.iter().zip(&values) {
        let amounts: Vec<i128> = segs.iter().map(|(_, v)| *v).collect();
        let cells = stack(&amounts, max, bar_w);
        let mut bar = String::new();
        for ((g, _), n) in segs.iter().zip(cells) {
            bar.extend(std::iter::repeat_n(FILLS[*g % FILLS.len()], n));
        }
        let pad = bar_w - bar.chars().count();
        let mark = if *partial { " *" } else { "" };
        out.push_str(&format!(
            "{label:<lw$} │{bar}{} {value:>vw$}{mark}\n",
            " ".repeat(pad)
        ));
    }
    if max == 0 {
        out.push_str("(every amount is zero)\n");
    }
    out.push('\n');
    let nw = s
        .groups
        .iter()
        .map(|g| g.name.chars().count())
        .max()
        .unwrap_or(0);
    for (i, g) in s.groups.iter().enumerate() {
        let fill = if s.per_group() {
            FILLS[0]
        } else {
            FILLS[i % FILLS.len()]
        };
        out.push_str(&format!("{fill} {:<nw$}  {}\n", g.name, s.amount(g.total)));
    }
    let total: i128 = s.groups.iter().map(|g| g.total).sum();
    out.push_str(&format!("Total: {}\n", s.amount(total)));
    if s.partial.iter().any(|p| *p) {
        out.push_str("* coverage below 100 %: costs of that step are partly missing, not zero.\n");
    }
    out
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A round axis step (1, 2 or 5 × 10^k nanos) giving at most 5 ticks up to
/// `max`, and the axis top (a multiple of it, ≥ max).
pub fn axis(max: i128) -> (i128, i128) {
    if max <= 0 {
        return (money_unit(), money_unit());
    }
    let raw = (max + 4) / 5; // at most 5 intervals
    let mut mag: i128 = 1;
    while mag * 10 <= raw {
        mag *= 10;
    }
    let step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10 * mag);
    let top = (max + step - 1) / step * step;
    (step, top)
}

fn money_unit() -> i128 {
    1_000_000_000
}

/// A standalone SVG: title, y axis with money ticks, one stacked bar per
/// step (or one bar per group for a single step), x labels, legend with
/// totals. Every bar segment is a `<rect class="bar">` with a tooltip.
pub fn render_svg(s: &Series) -> String {
    const W: f64 = 960.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 100.0;
    const RIGHT: f64 = 240.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bars = s.bars();
    let max = bars
        .iter()
        .map(|(_, segs, _)| segs.iter().map(|(_, v)| (*v).max(0)).sum::<i128>())
        .max()
        .unwrap_or(0);
    let (tick, top) = axis(max);
    let y_of = |v: i128| TOP + plot_h - plot_h * (v as f64 / top as f64);

    let mut o = String::new();
    o.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    o.push_str(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n"
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        LEFT,
        xml_escape(&s.title)
    ));
    // Y axis: grid lines and money ticks.
    let mut v = 0i128;
    while v <= top {
        let y = y_of(v);
        o.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/>\n",
            LEFT + plot_w
        ));
        o.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 6.0,
            y + 4.0,
            xml_escape(&money::format_full(v))
        ));
        v += tick;
    }
    o.push_str(&format!(
        "<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">{}</text>\n",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        xml_escape(&if s.currency.is_empty() {
            "cost".to_string()
        } else {
            format!("cost ({})", s.currency)
        })
    ));
    o.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#333333\"/>\n",
        TOP + plot_h
    ));
    o.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>\n",
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h
    ));
    // Bars.
    let n = bars.len().max(1);
    let slot = plot_w / n as f64;
    let bw = (slot * 0.8).max(1.0);
    // At most 12 x labels, and never closer than their own width (~6 px a char).
    let label_chars = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(1);
    let label_every = n
        .div_ceil(12)
        .max((label_chars as f64 * 6.0 / slot).ceil() as usize)
        .max(1);
    for (i, (label, segs, partial)) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bw) / 2.0;
        let mut cum = 0i128;
        for (g, val) in segs {
            if *val <= 0 {
                continue;
            }
            let (y0, y1) = (y_of(cum), y_of(cum + val));
            cum += val;
            let name = &s.groups[*g].name;
            o.push_str(&format!(
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}</title></rect>\n",
                (y0 - y1).max(0.0),
                COLORS[*g % COLORS.len()],
                xml_escape(&format!("{name}, {label}: {}", s.amount(*val)))
            ));
        }
        if *partial {
            o.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c00000\">*</text>\n",
                x + bw / 2.0,
                y_of(cum) - 4.0
            ));
        }
        if i % label_every == 0 {
            o.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                x + bw / 2.0,
                TOP + plot_h + 16.0,
                xml_escape(label)
            ));
        }
    }
    // Legend.
    let lx = LEFT + plot_w + 20.0;
    for (i, g) in s.groups.iter().enumerate() {
        let y = TOP + 20.0 * i as f64;
        o.push_str(&format!(
            "<rect class=\"legend\" x=\"{lx:.1}\" y=\"{y:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n",
            COLORS[i % COLORS.len()]
        ));
        o.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            lx + 18.0,
            y + 10.0,
            xml_escape(&format!("{}: {}", g.name, s.amount(g.total)))
        ));
    }
    let total: i128 = s.groups.iter().map(|g| g.total).sum();
    let mut foot = format!("Total {}", s.amount(total));
    if s.partial.iter().any(|p| *p) {
        foot.push_str("; * coverage below 100 %: costs partly missing, not zero");
    }
    if s.groups.is_empty() {
        foot = "No usage in this range".to_string();
    }
    o.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"{:.1}\">{}</text>\n",
        H - 16.0,
        xml_escape(&foot)
    ));
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use mtp_proto::v1::CostRow;

    use super::super::report::tests::{eur, report, ts};
    use super::*;

    fn daily(rows: &[(&str, &str, i64)]) -> CostReport {
        CostReport {
            start_time: ts("2026-11-01T00:00:00Z"),
            end_time: ts("2026-11-04T00:00:00Z"),
            currency_code: "EUR".into(),
            rows: rows
                .iter()
                .map(|(tenant, day, units)| CostRow {
                    tenant: tenant.to_string(),
                    start_time: ts(day),
                    total_cost: eur(*units, 0),
                    coverage: 1.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn three_days() -> Series {
        Series::from_report(
            &daily(&[
                ("a", "2026-11-01T00:00:00Z", 10),
                ("b", "2026-11-01T00:00:00Z", 30),
                ("a", "2026-11-02T00:00:00Z", 20),
                ("b", "2026-11-03T00:00:00Z", 5),
            ]),
            GroupBy::Tenant,
            Step::Day,
        )
    }

    #[test]
    fn scaling_is_proportional_and_the_largest_fills_the_width() {
        assert_eq!(scale(40, 40, 50), 50);
        assert_eq!(scale(20, 40, 50), 25);
        assert_eq!(scale(0, 40, 50), 0);
        assert_eq!(scale(-5, 40, 50), 0);
        assert_eq!(scale(5, 0, 50), 0);
        // Segments add up to the bar of their sum.
        let segs = stack(&[1, 1, 1], 3, 10);
        assert_eq!(segs.iter().sum::<usize>(), 10);
        assert_eq!(segs, [3, 4, 3]);
    }

    #[test]
    fn series_are_per_step_and_sorted_by_total() {
        let s = three_days();
        assert_eq!(s.steps, ["2026-11-01", "2026-11-02", "2026-11-03"]);
        assert_eq!(s.groups[0].name, "b");
        assert_eq!(s.groups[0].values, [30 * 1_000_000_000, 0, 5_000_000_000]);
        assert_eq!(s.groups[1].values, [10 * 1_000_000_000, 20_000_000_000, 0]);
        assert_eq!(
            s.title,
            "Cost by tenant, 2026-11-01 to 2026-11-04 (UTC), EUR"
        );
    }

    #[test]
    fn steps_without_rows_are_filled_in() {
        let s = Series::from_report(
            &daily(&[
                ("a", "2026-11-01T00:00:00Z", 1),
                ("a", "2026-11-03T00:00:00Z", 2),
            ]),
            GroupBy::Tenant,
            Step::Day,
        );
        assert_eq!(s.steps, ["2026-11-01", "2026-11-02", "2026-11-03"]);
        assert_eq!(s.groups[0].values, [1_000_000_000, 0, 2_000_000_000]);
    }

    #[test]
    fn terminal_chart_largest_bar_fills_the_width() {
        let s = three_days();
        let out = render_terminal(&s, 60);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], s.title);
        let bar_lines = &lines[2..5];
        for l in bar_lines {
            assert_eq!(l.chars().count(), 60, "{l:?}");
        }
        // label (10) + " │" + bar + " " + amount (9): bar is 60 - 10 - 3 - 9 = 38.
        assert_eq!(
            lines[2],
            format!("2026-11-01 │{}{} EUR 40.00", "█".repeat(29), "▓".repeat(9))
        );
        assert_eq!(
            lines[3],
            format!("2026-11-02 │{}{} EUR 20.00", "▓".repeat(19), " ".repeat(19))
        );
        assert!(lines[4].starts_with(&format!("2026-11-03 │{} ", "█".repeat(5))));
        assert!(
            out.contains("\n█ b  EUR 35.00\n▓ a  EUR 30.00\nTotal: EUR 65.00\n"),
            "{out}"
        );
    }

    #[test]
    fn terminal_chart_with_zero_values_and_one_group() {
        let s = Series::from_report(
            &daily(&[
                ("a", "2026-11-01T00:00:00Z", 0),
                ("a", "2026-11-02T00:00:00Z", 0),
            ]),
            GroupBy::Tenant,
            Step::Day,
        );
        let out = render_terminal(&s, 50);
        let lines: Vec<&str> = out.lines().collect();
        // Width 50 - label 10 - " │" - " " - amount 8 = 29 empty cells.
        assert_eq!(lines[2], format!("2026-11-01 │{} EUR 0.00", " ".repeat(29)));
        assert_eq!(lines[3], format!("2026-11-02 │{} EUR 0.00", " ".repeat(29)));
        // A day without rows still has its (empty) place.
        assert_eq!(lines[4], format!("2026-11-03 │{} EUR 0.00", " ".repeat(29)));
        assert!(out.contains("(every amount is zero)"), "{out}");
        // One group, one step: one bar per group, full width.
        let s = Series::from_report(
            &daily(&[("only", "2026-11-01T00:00:00Z", 7)]),
            GroupBy::Tenant,
            Step::Whole,
        );
        let out = render_terminal(&s, 40);
        let bar = out.lines().nth(2).unwrap();
        assert_eq!(bar, format!("only │{} EUR 7.00", "█".repeat(25)));
        let empty = Series::from_report(&daily(&[]), GroupBy::Tenant, Step::Day);
        assert!(render_terminal(&empty, 80).contains("No usage in this range."));
    }

    #[test]
    fn many_groups_fold_into_other() {
        let rows: Vec<(String, i64)> = (0..10).map(|i| (format!("t{i}"), 10 - i)).collect();
        let rows: Vec<(&str, &str, i64)> = rows
            .iter()
            .map(|(n, v)| (n.as_str(), "2026-11-01T00:00:00Z", *v))
            .collect();
        let s = Series::from_report(&daily(&rows), GroupBy::Tenant, Step::Day);
        assert_eq!(s.groups.len(), MAX_GROUPS);
        let other = s.groups.last().unwrap();
        assert_eq!(other.name, "other (3)");
        assert_eq!(other.total, (3 + 2 + 1) * 1_000_000_000);
    }

    #[test]
    fn partial_coverage_is_marked() {
        let s = Series::from_report(&report(), GroupBy::Tenant, Step::Whole);
        let out = render_terminal(&s, 80);
        assert!(out.contains("EUR 56.11 *"), "{out}");
        assert!(out.contains("coverage below 100 %"), "{out}");
    }

    /// A tiny well-formedness check: tags balance, the root is `<svg>`.
    fn check_xml(s: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s.trim();
        if !rest.starts_with("<svg") {
            return Err("does not start with <svg".into());
        }
        let mut roots = 0;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            if text.contains('<') || text.contains('>') {
                return Err(format!("stray bracket in {text:?}"));
            }
            for (j, _) in text.match_indices('&') {
                let ent = &text[j..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e))
                {
                    return Err(format!("bad entity in {text:?}"));
                }
            }
            let end = rest[i..].find('>').ok_or("unclosed tag")? + i;
            let tag = &rest[i + 1..end];
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("").to_string();
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(name);
            } else if stack.is_empty() {
                return Err("element outside the root".into());
            }
            rest = &rest[end + 1..];
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 || !rest.trim().is_empty() {
            return Err("not exactly one root".into());
        }
        Ok(())
    }

    #[test]
    fn svg_is_well_formed_with_a_rect_per_bar() {
        let s = three_days();
        let svg = render_svg(&s);
        check_xml(&svg).unwrap();
        // Non-zero segments: day 1 (a, b), day 2 (a), day 3 (b).
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 4, "{svg}");
        assert_eq!(svg.matches("<rect class=\"legend\"").count(), 2);
        assert!(svg.contains("Cost by tenant, 2026-11-01 to 2026-11-04 (UTC), EUR"));
        assert!(svg.contains(">b: EUR 35.00</text>"));
        assert!(svg.contains(">2026-11-02</text>"));
        assert!(svg.contains("Total EUR 65.00"));
        // The tallest bar (EUR 40) reaches the axis top (EUR 40, ticks of 10).
        assert_eq!(axis(40_000_000_000), (10_000_000_000, 40_000_000_000));
        assert!(svg.contains(">40.00</text>"), "{svg}");
    }

    #[test]
    fn svg_escapes_names_and_the_checker_catches_breakage() {
        let mut r = daily(&[("a<b>&c", "2026-11-01T00:00:00Z", 3)]);
        r.currency_code = "EUR".into();
        let svg = render_svg(&Series::from_report(&r, GroupBy::Tenant, Step::Whole));
        check_xml(&svg).unwrap();
        assert!(svg.contains("a&lt;b&gt;&amp;c"));
        assert!(check_xml("<svg><rect></svg>").is_err());
        assert!(check_xml("<svg>a & b</svg>").is_err());
        assert!(check_xml("<g></g>").is_err());
        let empty = render_svg(&Series::from_report(
            &daily(&[]),
            GroupBy::Tenant,
            Step::Day,
        ));
        check_xml(&empty).unwrap();
        assert_eq!(empty.matches("class=\"bar\"").count(), 0);
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis(7_000_000_000), (2_000_000_000, 8_000_000_000));
        assert_eq!(axis(1), (1, 1));
        assert_eq!(axis(0), (1_000_000_000, 1_000_000_000));
        assert_eq!(axis(123_000_000_000), (50_000_000_000, 150_000_000_000));
    }
}
