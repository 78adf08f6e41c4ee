//! Rendering: aligned tables and `key: value` blocks for humans, JSON for
//! scripts, plus the shared formatting of timestamps and durations.
//!
//! JSON goes out as one pretty-printed document per command; field names are
//! snake_case and timestamps RFC 3339 in UTC, so the shapes are a stable
//! interface (see the views in `commands::*`).

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// Output format selected by `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables and key/value blocks for humans.
    Table,
    /// One JSON document on stdout; errors as JSON on stderr.
    Json,
    /// Comma-separated values with a header line (`mtp cost report` only).
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Some(Format::Table),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Writes to stdout. A closed pipe (`mtp tenant list | head -1`) is a normal
/// way for a reader to stop, so it ends the process quietly instead of
/// panicking like `println!` would.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let res = out
        .write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = res
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Serializes a view as pretty JSON and writes it to stdout.
pub fn emit_json<T: Serialize>(value: &T) {
    // Serializing plain views of strings/numbers/maps cannot fail.
    emit(&serde_json::to_string_pretty(value).unwrap_or_default());
}

/// An aligned, space-separated table with an upper-case header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns are padded to their widest cell (counted in chars), separated
    /// by three spaces; the last column is not padded so lines carry no
    /// trailing spaces. Empty cells show as `-` so columns never collapse
    /// (which would break `awk '{print $3}'`).
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let cell = |r: &Vec<String>, i: usize| -> String {
            match r.get(i).map(|s| sanitize(s)) {
                Some(s) if !s.is_empty() => s,
                _ => "-".to_string(),
            }
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| (0..cols).map(|i| cell(r, i)).collect())
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cols {
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    let pad = widths[i] - c.chars().count() + 3;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.headers);
        for r in &rows {
            line(&mut out, r);
        }
        out
    }
}

/// A `Label:  value` block for single objects (`get`, `create`).
#[derive(Debug, Clone, Default)]
pub struct Details {
    fields: Vec<(String, String)>,
}

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn field(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.fields.push((label.to_string(), value.into()));
        self
    }

    pub fn render(&self) -> String {
        let w = self
            .fields
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (l, v) in &self.fields {
            let v = if v.is_empty() { "-" } else { v.as_str() };
            let pad = w - l.chars().count() + 2;
            out.push_str(l);
            out.push(':');
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

/// Keeps a cell on one line: a newline or tab from the server would break
/// the column alignment scripts rely on.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A protobuf timestamp as a UTC `DateTime` (None if unset or out of range).
pub fn datetime(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// RFC 3339 in UTC with a `Z` suffix, seconds precision (plus fraction only if
/// the server sent one), or None for JSON `null`.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    datetime(ts).map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// For tables: RFC 3339 or `-`.
pub fn rfc3339_or_dash(ts: Option<&prost_types::Timestamp>) -> String {
    rfc3339(ts).unwrap_or_else(|| "-".into())
}

/// The time since `ts`, compact (`45s`, `3m`, `5h`, `2d`), or `-`.
pub fn age(ts: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    match datetime(ts) {
        Some(t) => compact_duration((now - t).num_seconds().max(0)),
        None => "-".into(),
    }
}

/// Time until `ts` for expiries: `in 2h`, `expired`, or `-` when unset.
pub fn until(ts: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    match datetime(ts) {
        Some(t) if t > now => format!("in {}", compact_duration((t - now).num_seconds())),
        Some(_) => "expired".into(),
        None => "-".into(),
    }
}

/// `90` → `1m`, `7200` → `2h`, two units above an hour for precision
/// (`1h30m`, `2d4h`).
pub fn compact_duration(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// Optional count for tables: the number or `-`.
pub fn opt_count(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_aligned_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "CPU", "STATUS"]);
        t.row(vec!["team-a".into(), "8".into(), "ready".into()]);
        t.row(vec!["b".into(), "1500m".into(), "".into()]);
        let out = t.render();
        assert_eq!(
            out,
            "NAME     CPU     STATUS\n\
             team-a   8       ready\n\
             b        1500m   -\n"
        );
        for l in out.lines() {
            assert_eq!(l, l.trim_end());
        }
    }

    #[test]
    fn table_counts_chars_not_bytes_and_flattens_newlines() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["équipe".into(), "x\ny".into()]);
        t.row(vec!["ab".into(), "z".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l.chars().position(|c| c == 'x' || c == 'z' || c == 'B');
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].ends_with("x y"));
    }

    #[test]
    fn header_only_table_renders() {
        assert_eq!(Table::new(&["NAME", "X"]).render(), "NAME   X\n");
    }

    #[test]
    fn details_align_values() {
        let mut d = Details::new();
        d.field("Name", "team-a").field("Display name", "");
        assert_eq!(d.render(), "Name:          team-a\nDisplay name:  -\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&ts)).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(None), None);
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(rfc3339(Some(&ts)).unwrap(), "2023-11-14T22:13:20.500Z");
    }

    #[test]
    fn compact_durations() {
        assert_eq!(compact_duration(5), "5s");
        assert_eq!(compact_duration(90), "1m");
        assert_eq!(compact_duration(7200), "2h");
        assert_eq!(compact_duration(5400), "1h30m");
        assert_eq!(compact_duration(86_400 * 2), "2d");
        assert_eq!(compact_duration(86_400 + 3600 * 4 + 60), "1d4h");
    }

    #[test]
    fn age_and_until() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let ts = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        assert_eq!(age(Some(&ts(1_000_000 - 3600)), now), "1h");
        assert_eq!(until(Some(&ts(1_000_000 + 1800)), now), "in 30m");
        assert_eq!(until(Some(&ts(1_000_000 - 1)), now), "expired");
        assert_eq!(until(None, now), "-");
    }
}
