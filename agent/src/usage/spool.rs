//! The usage spool: closed windows on disk, in batches, until the control
//! plane said it recorded them.
//!
//! In `<state dir>/usage-spool/`:
//! * `spool.meta`: the spool's epoch (chosen when the spool is created: ms
//!   since the Unix epoch), the last sequence used, the end of the newest
//!   window ever spooled (so a restarted agent never produces a window
//!   twice) and gaps not sent yet;
//! * one file per batch, `<epoch>-<sequence>-<first start>-<last end>.batch`
//!   (the encoded `UsageBatch`), written atomically before it is sent and
//!   deleted when `UsageRecorded` for it arrives;
//! * `corrupt/`: files that could not be read, moved aside (their span,
//!   from the name, is reported as a gap).
//!
//! Bounded by a number of windows: when full, the oldest batches are
//! dropped and their span recorded as a `spool-full` gap, sent with the next
//! batch. A spool without its meta file (wiped) starts a new epoch.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use mtp_proto::v1 as pb;
use prost::Message;

use crate::metrics::Metrics;

/// Most windows per batch (the control plane's bound).
pub const MAX_WINDOWS_PER_BATCH: usize = 200;
/// Most gaps per batch (the control plane's bound).
pub const MAX_GAPS_PER_BATCH: usize = 100;
/// Most bytes of windows per batch: the control plane takes 4 MiB per
/// batch; this leaves room for the gaps and the envelope.
pub const MAX_BATCH_BYTES: usize = 3 << 20;
/// The longest gap one record describes (the control plane takes 31 days).
const MAX_GAP_SECONDS: i64 = 30 * 86_400;

const META: &str = "spool.meta";
const CORRUPT: &str = "corrupt";
const SUFFIX: &str = ".batch";

pub const GAP_SPOOL_FULL: &str = "spool-full";
pub const GAP_CORRUPT: &str = "spool-corrupt";

/// A batch's identity: (spool epoch, sequence). Ordered as sent.
pub type BatchId = (u64, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: BatchId,
    windows: usize,
    /// Start of the first window and end of the last (seconds).
    start: i64,
    end: i64,
}

impl Entry {
    fn file_name(&self) -> String {
        format!(
            "{}-{:020}-{}-{}{SUFFIX}",
            self.id.0, self.id.1, self.start, self.end
        )
    }

    fn parse(name: &str) -> Option<Entry> {
        let stem = name.strip_suffix(SUFFIX)?;
        let mut parts = stem.split('-');
        let epoch = parts.next()?.parse().ok()?;
        let sequence = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let end = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Entry {
            id: (epoch, sequence),
            windows: 0,
            start,
            end,
        })
    }
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    epoch: u64,
    sequence: u64,
    closed_until: i64,
    entries: VecDeque<Entry>,
    windows: usize,
    gaps: Vec<pb::UsageGap>,
    limit: usize,
    metrics: Metrics,
}

fn gap(start: i64, end: i64, reason: &str) -> pb::UsageGap {
    pb::UsageGap {
        start: Some(prost_types::Timestamp {
            seconds: start,
            nanos: 0,
        }),
        end: Some(prost_types::Timestamp {
            seconds: end,
            nanos: 0,
        }),
        reason: reason.into(),
    }
}

/// How many of `windows` go into the next batch: at most
/// [`MAX_WINDOWS_PER_BATCH`] and [`MAX_BATCH_BYTES`], at least one.
fn batch_len(windows: &[pb::UsageWindow]) -> usize {
    let mut bytes = 0;
    for (i, w) in windows.iter().take(MAX_WINDOWS_PER_BATCH).enumerate() {
        // Field tag and length prefix: a few bytes more than the window.
        bytes += w.encoded_len() + 8;
        if bytes > MAX_BATCH_BYTES {
            return i.max(1);
        }
    }
    windows.len().min(MAX_WINDOWS_PER_BATCH)
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds)
}

fn window_end(w: &pb::UsageWindow) -> i64 {
    seconds(&w.start) + i64::from(w.duration_seconds)
}

/// Write to a temporary file, fsync, rename (as `StateDir` does).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `limit`
    /// windows. `now_ms` picks the epoch of a new spool. Unreadable batch
    /// files are moved aside and become gaps; only a directory that cannot
    /// be used at all is an error.
    pub fn open(
        dir: impl Into<PathBuf>,
        limit: usize,
        now_ms: u64,
        metrics: Metrics,
    ) -> std::io::Result<Spool> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let meta = match std::fs::read_to_string(dir.join(META)) {
            Ok(text) => parse_meta(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut spool = Spool {
            dir,
            epoch: 0,
            sequence: 0,
            closed_until: i64::MIN,
            entries: VecDeque::new(),
            windows: 0,
            gaps: Vec::new(),
            limit: limit.max(1),
            metrics,
        };
        spool.scan()?;
        match meta {
            Some(meta) => {
                spool.epoch = meta.epoch;
                spool.sequence = meta.sequence;
                spool.closed_until = meta.closed_until;
                spool.gaps.extend(meta.gaps);
            }
            None => {
                // New (or wiped): an epoch above every one still on disk, so
                // its sequences never collide with theirs.
                let newest = spool.entries.iter().map(|e| e.id.0).max().unwrap_or(0);
                spool.epoch = now_ms.max(newest + 1).max(1);
                tracing::info!(epoch = spool.epoch, dir = %spool.dir.display(), "new usage spool");
            }
        }
        for e in &spool.entries {
            if e.id.0 == spool.epoch {
                spool.sequence = spool.sequence.max(e.id.1);
            }
            spool.closed_until = spool.closed_until.max(e.end);
        }
        spool.save_meta()?;
        spool.publish();
        Ok(spool)
    }

    /// Reads every batch file: the good ones are indexed in order, the bad
    /// ones moved aside (a gap each, if their name tells the span).
    fn scan(&mut self) -> std::io::Result<()> {
        let mut found = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if !name.ends_with(SUFFIX) || name.starts_with('.') {
                continue;
            }
            let entry = Entry::parse(&name);
            let batch = std::fs::read(item.path())
                .ok()
                .and_then(|b| pb::UsageBatch::decode(b.as_slice()).ok());
            match (entry, batch) {
                (Some(mut e), Some(b)) if (b.spool_epoch, b.sequence) == e.id => {
                    e.windows = b.windows.len();
                    found.push(e);
                }
                (entry, _) => self.move_aside(&name, entry.as_ref()),
            }
        }
        found.sort_by_key(|e| e.id);
        self.windows = found.iter().map(|e| e.windows).sum();
        self.entries = found.into();
        Ok(())
    }

    fn move_aside(&mut self, name: &str, entry: Option<&Entry>) {
        let aside = self.dir.join(CORRUPT);
        let moved = std::fs::create_dir_all(&aside)
            .and_then(|()| std::fs::rename(self.dir.join(name), aside.join(name)));
        if let Err(e) = moved {
            tracing::error!(file = name, error = %e, "could not move a corrupt usage batch aside; deleting it");
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        match entry {
            Some(e) if e.end > e.start => {
                tracing::error!(
                    file = name,
                    "corrupt usage batch moved aside; its span is reported as a gap"
                );
                self.add_gap(e.start, e.end, GAP_CORRUPT);
            }
            _ => tracing::error!(
                file = name,
                "corrupt usage batch moved aside (its span is unknown)"
            ),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The end (seconds) of the newest window ever spooled.
    pub fn closed_until(&self) -> Option<i64> {
        (self.closed_until != i64::MIN).then_some(self.closed_until)
    }

    /// Windows held.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The batches held, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = BatchId> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    pub fn contains(&self, id: BatchId) -> bool {
        self.position(id).is_some()
    }

    fn position(&self, id: BatchId) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// The first batch after `after` (the first of all with `None`).
    pub fn next_after(&self, after: Option<BatchId>) -> Option<BatchId> {
        let i = match after {
            None => 0,
            Some(id) => self.entries.partition_point(|e| e.id <= id),
        };
        self.entries.get(i).map(|e| e.id)
    }

    /// Records a gap to send with the next batch (merged with the last one
    /// when they touch and say the same).
    fn add_gap(&mut self, start: i64, end: i64, reason: &str) {
        if let Some(last) = self.gaps.last_mut()
            && last.reason == reason
            && seconds(&last.end) >= start
            && seconds(&last.start) <= start
            && end - seconds(&last.start) <= MAX_GAP_SECONDS
        {
            let merged = seconds(&last.end).max(end);
            last.end = Some(prost_types::Timestamp {
                seconds: merged,
                nanos: 0,
            });
            return;
        }
        self.gaps.push(gap(start, end, reason));
    }

    /// Spools closed windows (oldest first) as batches of at most
    /// [`MAX_WINDOWS_PER_BATCH`], making room by dropping the oldest batches
    /// (a gap for them). Returns the new batches.
    pub fn push(&mut self, mut windows: Vec<pb::UsageWindow>) -> std::io::Result<Vec<BatchId>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut dropped = 0usize;
        if windows.len() > self.limit {
            let excess: Vec<_> = windows.drain(..windows.len() - self.limit).collect();
            dropped += excess.len();
            let (start, end) = (
                seconds(&excess[0].start),
                excess.iter().map(window_end).max().unwrap_or(0),
            );
            self.add_gap(start, end, GAP_SPOOL_FULL);
        }
        while self.windows + windows.len() > self.limit {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.windows -= oldest.windows;
            dropped += oldest.windows;
            let _ = std::fs::remove_file(self.dir.join(oldest.file_name()));
            tracing::warn!(
                windows = oldest.windows,
                start = oldest.start,
                end = oldest.end,
                "usage spool full: dropped its oldest batch (reported as a gap)"
            );
            self.add_gap(oldest.start, oldest.end, GAP_SPOOL_FULL);
        }
        if dropped > 0 {
            self.metrics.usage_windows_dropped(dropped);
        }
        let mut ids = Vec::new();
        let mut rest = windows;
        while !rest.is_empty() {
            let tail = rest.split_off(batch_len(&rest));
            let chunk = std::mem::replace(&mut rest, tail);
            let gaps: Vec<_> = self
                .gaps
                .drain(..self.gaps.len().min(MAX_GAPS_PER_BATCH))
                .collect();
            let entry = Entry {
                id: (self.epoch, self.sequence + 1),
                windows: chunk.len(),
                start: chunk.iter().map(|w| seconds(&w.start)).min().unwrap_or(0),
                end: chunk.iter().map(window_end).max().unwrap_or(0),
            };
            let batch = pb::UsageBatch {
                spool_epoch: entry.id.0,
                sequence: entry.id.1,
                windows: chunk,
                gaps,
            };
            if let Err(e) = write_atomically(&self.dir, &entry.file_name(), &batch.encode_to_vec())
            {
                // The gaps go with the next batch.
                let mut gaps = batch.gaps;
                gaps.append(&mut self.gaps);
                self.gaps = gaps;
                return Err(e);
            }
            self.sequence = entry.id.1;
            self.closed_until = self.closed_until.max(entry.end);
            self.windows += entry.windows;
            ids.push(entry.id);
            self.entries.push_back(entry);
        }
        self.save_meta()?;
        self.publish();
        Ok(ids)
    }

    /// The batch `id`, read from disk. One that cannot be read is moved
    /// aside (a gap) and forgotten: `None`.
    pub fn read(&mut self, id: BatchId) -> Option<pb::UsageBatch> {
        let i = self.position(id)?;
        let name = self.entries[i].file_name();
        let batch = std::fs::read(self.dir.join(&name))
            .ok()
            .and_then(|b| pb::UsageBatch::decode(b.as_slice()).ok())
            .filter(|b| (b.spool_epoch, b.sequence) == id);
        if batch.is_none()
            && let Some(entry) = self.entries.remove(i)
        {
            self.windows -= entry.windows;
            self.move_aside(&name, Some(&entry));
            let _ = self.save_meta();
            self.publish();
        }
        batch
    }

    /// The control plane recorded `id`: deleted. False if it is not held
    /// (an unknown id, or one already deleted).
    pub fn recorded(&mut self, id: BatchId) -> bool {
        let Some(i) = self.position(id) else {
            return false;
        };
        let Some(entry) = self.entries.remove(i) else {
            return false;
        };
        self.windows -= entry.windows;
        if let Err(e) = std::fs::remove_file(self.dir.join(entry.file_name())) {
            tracing::warn!(error = %e, "could not delete a recorded usage batch (it would be sent again after a restart; the control plane stores it once)");
        }
        self.publish();
        true
    }

    fn save_meta(&self) -> std::io::Result<()> {
        let mut text = format!(
            "epoch {}\nsequence {}\nclosed-until {}\n",
            self.epoch, self.sequence, self.closed_until
        );
        for g in &self.gaps {
            text.push_str(&format!(
                "gap {} {} {}\n",
                seconds(&g.start),
                seconds(&g.end),
                g.reason
            ));
        }
        write_atomically(&self.dir, META, text.as_bytes())
    }

    fn publish(&self) {
        self.metrics.set_usage_spool_windows(self.windows);
    }
}

struct Meta {
    epoch: u64,
    sequence: u64,
    closed_until: i64,
    gaps: Vec<pb::UsageGap>,
}

/// The meta file; `None` (a new epoch) if it has no usable epoch.
fn parse_meta(text: &str) -> Option<Meta> {
    let mut meta = Meta {
        epoch: 0,
        sequence: 0,
        closed_until: i64::MIN,
        gaps: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("epoch") => meta.epoch = words.next()?.parse().ok()?,
            Some("sequence") => {
                meta.sequence = words.next().and_then(|s| s.parse().ok()).unwrap_or(0)
            }
            Some("closed-until") => {
                meta.closed_until = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(i64::MIN)
            }
            Some("gap") => {
                let start = words.next().and_then(|s| s.parse().ok());
                let end = words.next().and_then(|s| s.parse().ok());
                let reason = words.next().unwrap_or(GAP_CORRUPT);
                if let (Some(start), Some(end)) = (start, end)
                    && end > start
                {
                    meta.gaps.push(gap(start, end, reason));
                }
            }
            _ => {}
        }
    }
    (meta.epoch > 0).then_some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::testing::{BASE, validate};

    fn window(i: i64) -> pb::UsageWindow {
        pb::UsageWindow {
            start: Some(prost_types::Timestamp {
                seconds: BASE + 60 * i,
                nanos: 0,
            }),
            duration_seconds: 60,
            covered_seconds: 60,
            node_cpu_millis: 1000,
            node_memory_bytes: 1 << 30,
            namespaces: vec![pb::NamespaceUsage {
                namespace: "team-a".into(),
                container_seconds: 60,
                ..Default::default()
            }],
        }
    }

    fn open(dir: &Path, limit: usize) -> Spool {
        Spool::open(dir, limit, 1_767_225_600_000, Metrics::new()).unwrap()
    }

    fn starts(spool: &mut Spool) -> Vec<Vec<i64>> {
        let ids: Vec<_> = spool.ids().collect();
        ids.into_iter()
            .map(|id| {
                let b = spool.read(id).unwrap();
                let now = chrono::DateTime::from_timestamp(BASE + 86_400 * 30, 0).unwrap();
                validate(&b, now).unwrap();
                b.windows
                    .iter()
                    .map(|w| (seconds(&w.start) - BASE) / 60)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_reopened_spool_keeps_unacknowledged_batches_in_order_and_an_ack_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = open(tmp.path(), 100);
        let epoch = spool.epoch();
        assert_eq!(spool.push(vec![window(0)]).unwrap(), [(epoch, 1)]);
        assert_eq!(
            spool.push(vec![window(1), window(2)]).unwrap(),
            [(epoch, 2)]
        );
        assert_eq!(spool.push(vec![window(3)]).unwrap(), [(epoch, 3)]);
        assert!(spool.recorded((epoch, 2)));
        assert!(!spool.recorded((epoch, 2)), "already deleted");
        assert!(!spool.recorded((epoch + 1, 1)), "unknown");
        drop(spool);

        let mut spool = open(tmp.path(), 100);
        assert_eq!(spool.epoch(), epoch, "the epoch is kept");
        assert_eq!(spool.ids().collect::<Vec<_>>(), [(epoch, 1), (epoch, 3)]);
        assert_eq!(starts(&mut spool), [vec![0], vec![3]]);
        assert_eq!(spool.windows(), 2);
        assert_eq!(spool.closed_until(), Some(BASE + 240));
        assert_eq!(spool.next_after(None), Some((epoch, 1)));
        assert_eq!(spool.next_after(Some((epoch, 1))), Some((epoch, 3)));
        assert_eq!(spool.next_after(Some((epoch, 3))), None);
        // Sequences go on; recorded batches stay deleted.
        assert!(spool.recorded((epoch, 3)));
        assert!(spool.recorded((epoch, 1)));
        drop(spool);
        let mut spool = open(tmp.path(), 100);
        assert_eq!(spool.ids().count(), 0);
        assert_eq!(spool.push(vec![window(4)]).unwrap(), [(epoch, 4)]);
        assert_eq!(
            std::fs::read_dir(tmp.path())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(SUFFIX))
                .count(),
            1
        );
    }

    #[test]
    fn a_full_spool_drops_its_oldest_and_sends_a_spool_full_gap_with_the_next_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut spool = Spool::open(tmp.path(), 4, 1, metrics.clone()).unwrap();
        spool.push(vec![window(0), window(1)]).unwrap();
        spool.push(vec![window(2)]).unwrap();
        spool.push(vec![window(3)]).unwrap();
        assert_eq!(spool.windows(), 4);
        // Two more: the oldest batch (two windows, 0..2) goes.
        let ids = spool.push(vec![window(4), window(5)]).unwrap();
        assert_eq!(spool.windows(), 4);
        assert_eq!(starts(&mut spool), [vec![2], vec![3], vec![4, 5]]);
        let batch = spool.read(ids[0]).unwrap();
        assert_eq!(batch.gaps, [gap(BASE, BASE + 120, GAP_SPOOL_FULL)]);
        assert!(
            metrics
                .render()
                .contains("mtp_agent_usage_windows_dropped_total 2")
        );
        assert!(metrics.render().contains("mtp_agent_usage_spool_windows 4"));
        // The next drops merge into one gap when they touch.
        spool.push(vec![window(6)]).unwrap();
        let ids = spool.push(vec![window(7)]).unwrap();
        let batch = spool.read(ids[0]).unwrap();
        assert_eq!(
            batch.gaps,
            [gap(BASE + 180, BASE + 240, GAP_SPOOL_FULL)],
            "3 dropped for 7 (2 went with the batch of 6)"
        );
        assert_eq!(starts(&mut spool), [vec![4, 5], vec![6], vec![7]]);
        // More windows at once than the spool holds: only the newest stay.
        let ids = spool.push((10..16).map(window).collect()).unwrap();
        assert_eq!(starts(&mut spool), [vec![12, 13, 14, 15]]);
        assert_eq!(
            spool.read(ids[0]).unwrap().gaps,
            [
                gap(BASE + 600, BASE + 720, GAP_SPOOL_FULL),
                gap(BASE + 240, BASE + 480, GAP_SPOOL_FULL)
            ]
        );
    }

    #[test]
    fn a_batch_holds_at_most_200_windows() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = open(tmp.path(), 1440);
        let ids = spool.push((0..450).map(window).collect()).unwrap();
        assert_eq!(ids.len(), 3);
        let sizes: Vec<usize> = starts(&mut spool).iter().map(Vec::len).collect();
        assert_eq!(sizes, [200, 200, 50]);
    }

    #[test]
    fn a_batch_stays_below_the_control_planes_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = open(tmp.path(), 1440);
        // 400 namespaces a window: about 60 windows fit in 3 MiB.
        let wide = |i| pb::UsageWindow {
            namespaces: (0..400)
                .map(|n| pb::NamespaceUsage {
                    namespace: format!("tenant-{n:0>40}"),
                    cpu_requested_core_nanos: u64::MAX / 2,
                    cpu_used_core_nanos: u64::MAX / 2,
                    cpu_billed_core_nanos: u64::MAX / 2,
                    memory_requested_byte_seconds: u64::MAX / 2,
                    ..Default::default()
                })
                .collect(),
            ..window(i)
        };
        let ids = spool.push((0..200).map(wide).collect()).unwrap();
        assert!(ids.len() > 1, "{ids:?}");
        let mut total = 0;
        for id in ids {
            let b = spool.read(id).unwrap();
            assert!(b.encoded_len() <= 4 << 20, "{} bytes", b.encoded_len());
            total += b.windows.len();
        }
        assert_eq!(total, 200);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_becomes_a_gap() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = open(tmp.path(), 100);
        let epoch = spool.epoch();
        spool.push(vec![window(0)]).unwrap();
        spool.push(vec![window(1), window(2)]).unwrap();
        spool.push(vec![window(3)]).unwrap();
        drop(spool);
        let name = format!("{epoch}-{:020}-{}-{}{SUFFIX}", 2, BASE + 60, BASE + 180);
        std::fs::write(tmp.path().join(&name), b"\xff\xffnot a batch").unwrap();
        std::fs::write(tmp.path().join("junk.batch"), b"x").unwrap();

        let spool = open(tmp.path(), 100);
        assert_eq!(spool.ids().collect::<Vec<_>>(), [(epoch, 1), (epoch, 3)]);
        assert!(tmp.path().join(CORRUPT).join(&name).exists());
        assert!(tmp.path().join(CORRUPT).join("junk.batch").exists());
        // Kept across a restart until sent.
        drop(spool);
        let mut spool = open(tmp.path(), 100);
        let ids = spool.push(vec![window(4)]).unwrap();
        assert_eq!(ids, [(epoch, 4)]);
        assert_eq!(
            spool.read(ids[0]).unwrap().gaps,
            [gap(BASE + 60, BASE + 180, GAP_CORRUPT)]
        );
        // One that goes bad while held: dropped when read, a gap too.
        std::fs::write(
            tmp.path().join(format!(
                "{epoch}-{:020}-{}-{}{SUFFIX}",
                3,
                BASE + 180,
                BASE + 240
            )),
            b"",
        )
        .unwrap();
        assert!(spool.read((epoch, 3)).is_none());
        assert!(!spool.contains((epoch, 3)));
        let ids = spool.push(vec![window(5)]).unwrap();
        assert_eq!(
            spool.read(ids[0]).unwrap().gaps,
            [gap(BASE + 180, BASE + 240, GAP_CORRUPT)]
        );
    }

    #[test]
    fn a_wiped_spool_starts_a_new_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = open(tmp.path(), 100);
        let epoch = spool.epoch();
        spool.push(vec![window(0)]).unwrap();
        drop(spool);
        // Only the meta file lost: the batches stay, under their epoch.
        std::fs::remove_file(tmp.path().join(META)).unwrap();
        let mut spool = open(tmp.path(), 100);
        assert!(spool.epoch() > epoch, "{} > {epoch}", spool.epoch());
        assert_eq!(spool.ids().collect::<Vec<_>>(), [(epoch, 1)]);
        let newer = spool.epoch();
        assert_eq!(spool.push(vec![window(1)]).unwrap(), [(newer, 1)]);
        drop(spool);
        // All gone.
        std::fs::remove_dir_all(tmp.path()).unwrap();
        let spool = Spool::open(tmp.path(), 100, 1_900_000_000_000, Metrics::new()).unwrap();
        assert_eq!(spool.epoch(), 1_900_000_000_000);
        assert_eq!(spool.ids().count(), 0);
        assert_eq!(spool.closed_until(), None);
    }
}
