//! Turns successive samples of the node into closed usage windows. Pure:
//! every time comes from the samples (the kubelet's clock), so a simulated
//! clock drives it in tests.
//!
//! Per interval (previous sample → this one), per container:
//! * running time: the container's runs (from the pod status) clipped to
//!   the interval, so a pod that lived 30 s between two samples is charged
//!   30 s even if no Summary listed it;
//! * requested = request × running time;
//! * CPU used = the delta of the cumulative `usageCoreNanoSeconds` (after a
//!   restart, the new counter from the new start; never negative);
//! * memory used = working set × running time;
//! * billed = max(requested, used) — per container and per piece of the
//!   interval in one window, then summed per namespace.
//!
//! An interval that crosses a window boundary is split exactly: each total
//! is divided by cumulative floors over the pieces, so the pieces add up to
//! the total. Storage (PVCs, once each) and network (pod counters) are
//! handled the same way. A window is closed when a sample passes its end;
//! its `covered_seconds` counts only time between two samples, so time the
//! agent could not sample shows as missing coverage, never as zero usage.

use std::collections::{BTreeMap, HashMap};

use mtp_proto::v1 as pb;

use super::sample::{NANOS_PER_SECOND, Nanos, PodStats, Sample, Span};

/// Most cores / bytes one node may claim for a namespace (as the control
/// plane bounds them): a window is clamped to them rather than refused.
const MAX_NODE_CORES: u64 = 4096;
const MAX_NODE_BYTES: u64 = 1 << 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerConfig {
    /// Window length (divides 3600, at least 10).
    pub window_seconds: u32,
    /// Samples further apart than this are not bridged: the time between
    /// them is not covered (the next sample starts over).
    pub max_interval: Nanos,
}

#[derive(Debug, Clone, Copy)]
struct ContainerPrev {
    start: Option<Nanos>,
    cpu: Option<u64>,
    working_set: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct PodPrev {
    start: Option<Nanos>,
    rx: Option<u64>,
    tx: Option<u64>,
    ephemeral: Option<u64>,
}

/// What the previous sample said (counters to take deltas from).
#[derive(Debug, Default)]
struct Prev {
    time: Nanos,
    containers: HashMap<(String, String), ContainerPrev>,
    pods: HashMap<String, PodPrev>,
    volumes: HashMap<(String, String), (u64, u64)>,
}

impl Prev {
    fn of(sample: &Sample) -> Prev {
        let mut prev = Prev {
            time: sample.time,
            ..Prev::default()
        };
        for pod in &sample.stats {
            prev.pods.insert(
                pod.uid.clone(),
                PodPrev {
                    start: pod.start,
                    rx: pod.rx_bytes,
                    tx: pod.tx_bytes,
                    ephemeral: pod.ephemeral_used_bytes,
                },
            );
            for c in &pod.containers {
                prev.containers.insert(
                    (pod.uid.clone(), c.name.clone()),
                    ContainerPrev {
                        start: c.start,
                        cpu: c.cpu_core_nanos,
                        working_set: c.working_set_bytes,
                    },
                );
            }
            for v in &pod.volumes {
                prev.volumes.insert(
                    (pod.namespace.clone(), v.claim.clone()),
                    (v.used_bytes, v.capacity_bytes),
                );
            }
        }
        prev
    }
}

#[derive(Debug, Default)]
struct OpenWindow {
    covered: Nanos,
    node_cpu_millis: i64,
    node_memory_bytes: i64,
    namespaces: BTreeMap<String, pb::NamespaceUsage>,
    /// Nanoseconds containers ran, per namespace (`container_seconds` is
    /// taken from the sum, so fractions of seconds are not lost per interval).
    running: BTreeMap<String, u128>,
}

/// One piece of an interval: the part in one window.
#[derive(Debug, Clone, Copy)]
struct Piece {
    window: i64,
    start: Nanos,
    end: Nanos,
}

impl Piece {
    fn len(&self) -> Nanos {
        self.end - self.start
    }
}

#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    prev: Option<Prev>,
    /// Open windows by start (seconds since the epoch).
    open: BTreeMap<i64, OpenWindow>,
    /// Windows ending at or before this (seconds) were produced already.
    floor: i64,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler {
            config,
            prev: None,
            open: BTreeMap::new(),
            floor: i64::MIN,
        }
    }

    /// Windows ending at or before `end_seconds` were produced before (by an
    /// earlier run): none of them is produced again.
    pub fn set_floor(&mut self, end_seconds: i64) {
        self.floor = self.floor.max(end_seconds);
    }

    fn window_nanos(&self) -> Nanos {
        i64::from(self.config.window_seconds) * NANOS_PER_SECOND
    }

    /// Takes one sample in; returns the windows it closed, oldest first.
    pub fn observe(&mut self, sample: &Sample) -> Vec<pb::UsageWindow> {
        let t1 = sample.time;
        match self.prev.take() {
            Some(prev) if t1 <= prev.time => {
                // A stale (cached) or backwards Summary: nothing to learn.
                self.prev = Some(prev);
                return Vec::new();
            }
            Some(prev) if t1 - prev.time <= self.config.max_interval => {
                self.interval(&prev, sample);
            }
            // The first sample, or one after a long silence: a new baseline;
            // the time before it is not covered.
            _ => {}
        }
        self.prev = Some(Prev::of(sample));
        self.close_until(t1)
    }

    /// Closes the windows that end at or before `t`.
    fn close_until(&mut self, t: Nanos) -> Vec<pb::UsageWindow> {
        let w = i64::from(self.config.window_seconds);
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            if (start + w) * NANOS_PER_SECOND > t {
                break;
            }
            let open = entry.remove();
            self.floor = self.floor.max(start + w);
            closed.push(self.finish(start, open));
        }
        closed
    }

    fn finish(&self, start: i64, open: OpenWindow) -> pb::UsageWindow {
        let d = self.config.window_seconds;
        let covered = u32::try_from(open.covered / NANOS_PER_SECOND)
            .unwrap_or(u32::MAX)
            .min(d);
        let cpu_max = MAX_NODE_CORES * NANOS_PER_SECOND as u64 * u64::from(d);
        let bytes_max = MAX_NODE_BYTES * u64::from(d);
        let mut namespaces = open.namespaces;
        for (namespace, nanos) in open.running {
            namespaces.entry(namespace).or_default().container_seconds =
                u64::try_from(nanos / NANOS_PER_SECOND as u128).unwrap_or(u64::MAX);
        }
        let namespaces = namespaces
            .into_iter()
            .filter(|(_, u)| *u != pb::NamespaceUsage::default())
            .map(|(namespace, mut u)| {
                // Clamping all three keeps max(req, used) <= billed <= req + used.
                for v in [
                    &mut u.cpu_requested_core_nanos,
                    &mut u.cpu_used_core_nanos,
                    &mut u.cpu_billed_core_nanos,
                ] {
                    *v = (*v).min(cpu_max);
                }
                for v in [
                    &mut u.memory_requested_byte_seconds,
                    &mut u.memory_used_byte_seconds,
                    &mut u.memory_billed_byte_seconds,
                    &mut u.storage_requested_byte_seconds,
                    &mut u.storage_used_byte_seconds,
                    &mut u.storage_billed_byte_seconds,
                ] {
                    *v = (*v).min(bytes_max);
                }
                pb::NamespaceUsage { namespace, ..u }
            })
            .collect();
        pb::UsageWindow {
            start: Some(prost_types::Timestamp {
                seconds: start,
                nanos: 0,
            }),
            duration_seconds: d,
            covered_seconds: covered,
            node_cpu_millis: open.node_cpu_millis,
            node_memory_bytes: open.node_memory_bytes,
            namespaces,
        }
    }

    /// The pieces of `[t0, t1)`, one per window it touches.
    fn pieces(&self, t0: Nanos, t1: Nanos) -> Vec<Piece> {
        let w = self.window_nanos();
        let mut out = Vec::new();
        let mut start = t0;
        while start < t1 {
            let window = start.div_euclid(w) * w;
            let end = (window + w).min(t1);
            out.push(Piece {
                window: window / NANOS_PER_SECOND,
                start,
                end,
            });
            start = end;
        }
        out
    }

    /// Accounts the interval from `prev` to `sample`.
    fn interval(&mut self, prev: &Prev, sample: &Sample) {
        let (t0, t1) = (prev.time, sample.time);
        let pieces = self.pieces(t0, t1);
        let lengths: Vec<u128> = pieces.iter().map(|p| p.len() as u128).collect();
        // Amounts per piece, per namespace.
        let mut acc: Vec<BTreeMap<String, pb::NamespaceUsage>> =
            vec![BTreeMap::new(); pieces.len()];
        let mut ran: Vec<BTreeMap<String, u128>> = vec![BTreeMap::new(); pieces.len()];
        let stats: HashMap<&str, &PodStats> =
            sample.stats.iter().map(|p| (p.uid.as_str(), p)).collect();
        // PVC → (namespace, time mounted by a running pod per piece).
        let mut claims: BTreeMap<(String, String), Vec<u128>> = BTreeMap::new();

        for pod in &sample.pods {
            let now = stats.get(pod.uid.as_str()).copied();
            let mut pod_running = vec![0u128; pieces.len()];
            for c in &pod.containers {
                let running: Vec<u128> = pieces
                    .iter()
                    .map(|p| running_in(&c.spans, p.start, p.end, t1))
                    .collect();
                let total: u128 = running.iter().sum();
                for (p, r) in pod_running.iter_mut().zip(&running) {
                    *p = (*p).max(*r);
                }
                let cur = now.and_then(|s| s.containers.iter().find(|x| x.name == c.name));
                let before = prev.containers.get(&(pod.uid.clone(), c.name.clone()));
                let cpu_used = delta(
                    cur.and_then(|x| x.cpu_core_nanos),
                    cur.and_then(|x| x.start),
                    before.map(|b| (b.cpu, b.start)),
                    t0,
                    t1,
                )
                .min(MAX_NODE_CORES * (t1 - t0) as u64);
                let working_set = cur
                    .and_then(|x| x.working_set_bytes)
                    .or_else(|| before.and_then(|b| b.working_set))
                    .unwrap_or(0);
                let nanos = NANOS_PER_SECOND as u128;
                let cpu_req = shares(u128::from(c.cpu_request_millis) * total / 1000, &running);
                let mem_req = shares(u128::from(c.memory_request_bytes) * total / nanos, &running);
                let mem_used = shares(u128::from(working_set) * total / nanos, &running);
                // CPU used where the container ran (by the piece lengths if
                // the status knows of no run).
                let weights = if total > 0 { &running } else { &lengths };
                let cpu_used = shares(u128::from(cpu_used), weights);
                for (i, slot) in acc.iter_mut().enumerate() {
                    if running[i] == 0 && cpu_used[i] == 0 {
                        continue;
                    }
                    let u = slot.entry(pod.namespace.clone()).or_default();
                    add(&mut u.cpu_requested_core_nanos, cpu_req[i]);
                    add(&mut u.cpu_used_core_nanos, cpu_used[i]);
                    add(&mut u.cpu_billed_core_nanos, cpu_req[i].max(cpu_used[i]));
                    add(&mut u.memory_requested_byte_seconds, mem_req[i]);
                    add(&mut u.memory_used_byte_seconds, mem_used[i]);
                    add(
                        &mut u.memory_billed_byte_seconds,
                        mem_req[i].max(mem_used[i]),
                    );
                    *ran[i].entry(pod.namespace.clone()).or_default() += running[i];
                }
            }
            // Network: the pod's counters, spread over the interval.
            if let Some(now) = now {
                let before = prev.pods.get(&pod.uid);
                let rx = delta(
                    now.rx_bytes,
                    now.start,
                    before.map(|b| (b.rx, b.start)),
                    t0,
                    t1,
                );
                let tx = delta(
                    now.tx_bytes,
                    now.start,
                    before.map(|b| (b.tx, b.start)),
                    t0,
                    t1,
                );
                let (rx, tx) = (shares(rx.into(), &lengths), shares(tx.into(), &lengths));
                for (i, slot) in acc.iter_mut().enumerate() {
                    if rx[i] == 0 && tx[i] == 0 {
                        continue;
                    }
                    let u = slot.entry(pod.namespace.clone()).or_default();
                    add(&mut u.network_receive_bytes, rx[i]);
                    add(&mut u.network_transmit_bytes, tx[i]);
                }
            }
            // Ephemeral storage: the pod's, for the time it ran.
            let ephemeral_used = now
                .and_then(|s| s.ephemeral_used_bytes)
                .or_else(|| prev.pods.get(&pod.uid).and_then(|b| b.ephemeral))
                .unwrap_or(0);
            if ephemeral_used > 0 || pod.ephemeral_request_bytes > 0 {
                let total: u128 = pod_running.iter().sum();
                let nanos = NANOS_PER_SECOND as u128;
                let req = shares(
                    u128::from(pod.ephemeral_request_bytes) * total / nanos,
                    &pod_running,
                );
                let used = shares(u128::from(ephemeral_used) * total / nanos, &pod_running);
                for (i, slot) in acc.iter_mut().enumerate() {
                    if pod_running[i] == 0 {
                        continue;
                    }
                    let u = slot.entry(pod.namespace.clone()).or_default();
                    add(&mut u.storage_requested_byte_seconds, req[i]);
                    add(&mut u.storage_used_byte_seconds, used[i]);
                    add(&mut u.storage_billed_byte_seconds, req[i].max(used[i]));
                }
            }
            for claim in &pod.claims {
                let time = claims
                    .entry((pod.namespace.clone(), claim.clone()))
                    .or_insert_with(|| vec![0; pieces.len()]);
                for (t, r) in time.iter_mut().zip(&pod_running) {
                    *t = (*t).max(*r);
                }
            }
        }

        // Storage: each PVC once, for the time a pod mounting it ran.
        let mut volumes: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        for pod in &sample.stats {
            for v in &pod.volumes {
                volumes.insert(
                    (pod.namespace.as_str(), v.claim.as_str()),
                    (v.used_bytes, v.capacity_bytes),
                );
            }
        }
        for ((namespace, claim), time) in &claims {
            let Some((used, capacity)) = volumes
                .get(&(namespace.as_str(), claim.as_str()))
                .copied()
                .or_else(|| {
                    prev.volumes
                        .get(&(namespace.clone(), claim.clone()))
                        .copied()
                })
            else {
                continue;
            };
            let total: u128 = time.iter().sum();
            let nanos = NANOS_PER_SECOND as u128;
            let req = shares(u128::from(capacity) * total / nanos, time);
            let used = shares(u128::from(used) * total / nanos, time);
            for (i, slot) in acc.iter_mut().enumerate() {
                if time[i] == 0 {
                    continue;
                }
                let u = slot.entry(namespace.clone()).or_default();
                add(&mut u.storage_requested_byte_seconds, req[i]);
                add(&mut u.storage_used_byte_seconds, used[i]);
                add(&mut u.storage_billed_byte_seconds, req[i].max(used[i]));
            }
        }

        for ((piece, amounts), ran) in pieces.iter().zip(acc).zip(ran) {
            if piece.window + i64::from(self.config.window_seconds) <= self.floor {
                // Produced already (by an earlier run): never twice.
                continue;
            }
            let open = self.open.entry(piece.window).or_default();
            open.covered += piece.len();
            open.node_cpu_millis = sample.node_cpu_millis;
            open.node_memory_bytes = sample.node_memory_bytes;
            for (namespace, u) in amounts {
                let into = open.namespaces.entry(namespace).or_default();
                merge(into, &u);
            }
            for (namespace, nanos) in ran {
                *open.running.entry(namespace).or_default() += nanos;
            }
        }
    }
}

/// Nanoseconds of `[from, to)` during which one of `spans` ran (a run
/// still going ends at `now`).
fn running_in(spans: &[Span], from: Nanos, to: Nanos, now: Nanos) -> u128 {
    spans
        .iter()
        .map(|s| {
            let start = s.start.max(from);
            let end = s.end.unwrap_or(now).min(to);
            u128::try_from(end - start).unwrap_or(0)
        })
        .sum()
}

/// How much a cumulative counter grew between `t0` and `t1`. Same start and
/// not smaller: the difference. Otherwise the counter (re)started: if it
/// started within the interval, all of it; if earlier (it was not seen at
/// `t0`), the interval's share of it. Never negative.
fn delta(
    now: Option<u64>,
    now_start: Option<Nanos>,
    before: Option<(Option<u64>, Option<Nanos>)>,
    t0: Nanos,
    t1: Nanos,
) -> u64 {
    let Some(now) = now else { return 0 };
    if let Some((Some(before), before_start)) = before
        && before_start == now_start
        && now >= before
    {
        return now - before;
    }
    match now_start {
        Some(s) if s >= t0 => now,
        Some(s) if s < t1 => {
            let share = u128::from(now) * (t1 - t0) as u128 / (t1 - s) as u128;
            u64::try_from(share).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// `total` divided over pieces in proportion to `weights`, exactly: piece
/// i gets ⌊total·cᵢ/W⌋ − ⌊total·cᵢ₋₁/W⌋ (cᵢ the cumulative weight), so the
/// pieces add up to `total`. No weight: nothing.
fn shares(total: u128, weights: &[u128]) -> Vec<u64> {
    let sum: u128 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut out = Vec::with_capacity(weights.len());
    let (mut cum, mut given) = (0u128, 0u128);
    for w in weights {
        cum += w;
        let upto = total.saturating_mul(cum) / sum;
        out.push(u64::try_from(upto - given).unwrap_or(u64::MAX));
        given = upto;
    }
    out
}

fn add(into: &mut u64, v: u64) {
    *into = into.saturating_add(v);
}

fn merge(into: &mut pb::NamespaceUsage, u: &pb::NamespaceUsage) {
    add(
        &mut into.cpu_requested_core_nanos,
        u.cpu_requested_core_nanos,
    );
    add(&mut into.cpu_used_core_nanos, u.cpu_used_core_nanos);
    add(&mut into.cpu_billed_core_nanos, u.cpu_billed_core_nanos);
    add(
        &mut into.memory_requested_byte_seconds,
        u.memory_requested_byte_seconds,
    );
    add(
        &mut into.memory_used_byte_seconds,
        u.memory_used_byte_seconds,
    );
    add(
        &mut into.memory_billed_byte_seconds,
        u.memory_billed_byte_seconds,
    );
    add(
        &mut into.storage_requested_byte_seconds,
        u.storage_requested_byte_seconds,
    );
    add(
        &mut into.storage_used_byte_seconds,
        u.storage_used_byte_seconds,
    );
    add(
        &mut into.storage_billed_byte_seconds,
        u.storage_billed_byte_seconds,
    );
    add(&mut into.network_receive_bytes, u.network_receive_bytes);
    add(&mut into.network_transmit_bytes, u.network_transmit_bytes);
    add(&mut into.container_seconds, u.container_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::testing::*;

    const CORE: u64 = 1_000_000_000; // core-nanoseconds per second of one core
    const S: Nanos = NANOS_PER_SECOND;

    fn sampler() -> Sampler {
        Sampler::new(SamplerConfig {
            window_seconds: 60,
            max_interval: 120 * S,
        })
    }

    fn run(sampler: &mut Sampler, samples: &[Sample]) -> Vec<pb::UsageWindow> {
        let windows: Vec<_> = samples.iter().flat_map(|s| sampler.observe(s)).collect();
        assert_valid(&windows);
        windows
    }

    fn ns<'a>(w: &'a pb::UsageWindow, name: &str) -> &'a pb::NamespaceUsage {
        w.namespaces
            .iter()
            .find(|n| n.namespace == name)
            .unwrap_or_else(|| panic!("{name} in {w:#?}"))
    }

    #[test]
    fn cpu_is_billed_per_container_per_interval_above_and_below_its_request() {
        // "hot" asks for 500m and uses a whole core throughout; "bursty"
        // asks for 500m, uses a core in the first 10 s and nothing after.
        let pods = || {
            vec![pod(
                "team-a",
                "p1",
                vec![
                    container("hot", 500, 0, vec![running(at(0))]),
                    container("bursty", 500, 0, vec![running(at(0))]),
                ],
            )]
        };
        let samples: Vec<Sample> = (0..=6)
            .map(|i| {
                let t = i * 10;
                let bursty = if i == 0 { 0 } else { 10 * CORE };
                sample(
                    at(t),
                    pods(),
                    vec![stats(
                        "team-a",
                        "p1",
                        vec![
                            stat("hot", at(0), t as u64 * CORE, 0),
                            stat("bursty", at(0), bursty, 0),
                        ],
                    )],
                )
            })
            .collect();
        let mut s = sampler();
        let windows = run(&mut s, &samples);
        assert_eq!(windows.len(), 1, "the window closes at its end");
        let w = &windows[0];
        assert_eq!(w.start.unwrap().seconds, BASE);
        assert_eq!((w.duration_seconds, w.covered_seconds), (60, 60));
        assert_eq!((w.node_cpu_millis, w.node_memory_bytes), (4000, 8 << 30));
        let u = ns(w, "team-a");
        // Requested: 2 × 0.5 core × 60 s.
        assert_eq!(u.cpu_requested_core_nanos, 60 * CORE);
        // Used: 60 core-seconds (hot) + 10 (bursty).
        assert_eq!(u.cpu_used_core_nanos, 70 * CORE);
        // Billed: hot 60 (above its 30); bursty max(5, 10) in the first
        // interval, then its request 5 in each of the other five: 35.
        // (max over the whole window would give 30.)
        assert_eq!(u.cpu_billed_core_nanos, 60 * CORE + 35 * CORE);
        assert_eq!(u.container_seconds, 120);
    }

    #[test]
    fn memory_is_byte_seconds_of_the_working_set_and_the_request() {
        let gib: u64 = 1 << 30;
        let pods = vec![pod(
            "m",
            "p",
            vec![
                container("big", 0, gib / 2, vec![running(at(0))]),
                container("small", 0, gib, vec![running(at(0))]),
            ],
        )];
        let at_t = |t: i64| {
            sample(
                at(t),
                pods.clone(),
                vec![stats(
                    "m",
                    "p",
                    vec![stat("big", at(0), 0, gib), stat("small", at(0), 0, gib / 4)],
                )],
            )
        };
        let windows = run(&mut sampler(), &[at_t(0), at_t(30), at_t(60)]);
        let u = ns(&windows[0], "m");
        assert_eq!(u.memory_requested_byte_seconds, 60 * (gib / 2 + gib));
        assert_eq!(u.memory_used_byte_seconds, 60 * (gib + gib / 4));
        // big: its working set; small: its request.
        assert_eq!(u.memory_billed_byte_seconds, 60 * gib + 60 * gib);
    }

    #[test]
    fn a_restart_between_samples_counts_the_new_counter_from_the_new_start() {
        let first = vec![pod(
            "r",
            "p",
            vec![container("c", 1000, 0, vec![running(at(0))])],
        )];
        // Crashed at 14, running again from 16.
        let restarted = vec![pod(
            "r",
            "p",
            vec![container(
                "c",
                1000,
                0,
                vec![ran(at(0), at(14)), running(at(16))],
            )],
        )];
        let samples = [
            sample(
                at(0),
                first.clone(),
                vec![stats("r", "p", vec![stat("c", at(0), 0, 0)])],
            ),
            sample(
                at(10),
                first,
                vec![stats("r", "p", vec![stat("c", at(0), 5 * CORE, 0)])],
            ),
            // The new counter: 4 s at half a core since 16.
            sample(
                at(20),
                restarted.clone(),
                vec![stats("r", "p", vec![stat("c", at(16), 2 * CORE, 0)])],
            ),
            sample(
                at(60),
                restarted,
                vec![stats("r", "p", vec![stat("c", at(16), 12 * CORE, 0)])],
            ),
        ];
        let windows = run(&mut sampler(), &samples);
        let u = ns(&windows[0], "r");
        // 5 (0..10) + 2 (the new counter, not 2 - 5) + 10 (20..60).
        assert_eq!(u.cpu_used_core_nanos, 17 * CORE);
        // Ran 0..14 and 16..60: 58 s at one core requested.
        assert_eq!(u.cpu_requested_core_nanos, 58 * CORE);
        assert_eq!(u.container_seconds, 58);
        assert_eq!(u.cpu_billed_core_nanos, 58 * CORE);
    }

    #[test]
    fn a_counter_that_went_down_under_the_same_start_is_never_negative() {
        let pods = vec![pod(
            "r",
            "p",
            vec![container("c", 0, 0, vec![running(at(0))])],
        )];
        let s = |t, cpu| {
            sample(
                at(t),
                pods.clone(),
                vec![stats("r", "p", vec![stat("c", at(0), cpu, 0)])],
            )
        };
        let windows = run(
            &mut sampler(),
            &[s(0, 0), s(30, 30 * CORE), s(40, CORE), s(60, 3 * CORE)],
        );
        let u = ns(&windows[0], "r");
        // 30, then the reset counter prorated over its 40 s (1 × 10/40 →
        // 0.25), then 2.
        assert_eq!(u.cpu_used_core_nanos, 30 * CORE + CORE / 4 + 2 * CORE);
    }

    #[test]
    fn a_30_second_pod_no_summary_listed_is_charged_from_its_status() {
        let mut s = Sampler::new(SamplerConfig {
            window_seconds: 60,
            max_interval: 120 * S,
        });
        let short = pod(
            "batch",
            "job",
            vec![container("c", 200, 100 << 20, vec![ran(at(10), at(40))])],
        );
        let windows = run(
            &mut s,
            &[
                sample(at(0), vec![], vec![]),
                sample(at(60), vec![short], vec![]),
            ],
        );
        let u = ns(&windows[0], "batch");
        assert_eq!(u.cpu_requested_core_nanos, 30 * CORE / 5);
        assert_eq!(u.cpu_billed_core_nanos, 30 * CORE / 5);
        assert_eq!(u.cpu_used_core_nanos, 0);
        assert_eq!(u.memory_requested_byte_seconds, 30 * (100 << 20));
        assert_eq!(u.memory_billed_byte_seconds, 30 * (100 << 20));
        assert_eq!(u.container_seconds, 30);
        // And never again.
        let later = s.observe(&sample(
            at(120),
            vec![pod(
                "batch",
                "job",
                vec![container("c", 200, 100 << 20, vec![ran(at(10), at(40))])],
            )],
            vec![],
        ));
        assert!(later[0].namespaces.is_empty(), "{later:#?}");
    }

    #[test]
    fn an_interval_across_a_window_boundary_is_split_exactly() {
        // Samples at 0, 52.5 s, 67.5 s, 120 s; the container asks for 300m
        // and its counter grows by an odd amount in the crossing interval.
        let pods = vec![pod(
            "x",
            "p",
            vec![container("c", 300, 1000, vec![running(at(0))])],
        )];
        let odd = 7 * CORE + 1;
        let st = |t, cpu, rx| {
            let mut p = stats("x", "p", vec![stat("c", at(0), cpu, 1000)]);
            p.rx_bytes = Some(rx);
            p.tx_bytes = Some(0);
            sample(t, pods.clone(), vec![p])
        };
        let samples = [
            st(at(0), 0, 0),
            st(at_ms(52_500), CORE, 100),
            st(at_ms(67_500), CORE + odd, 100 + 3001),
            st(at(120), CORE + odd + 5 * CORE, 3101),
        ];
        let windows = run(&mut sampler(), &samples);
        assert_eq!(windows.len(), 2);
        let (a, b) = (ns(&windows[0], "x"), ns(&windows[1], "x"));
        // The crossing interval: 7.5 s before the boundary, 7.5 after.
        assert_eq!(a.cpu_used_core_nanos, CORE + odd / 2);
        assert_eq!(b.cpu_used_core_nanos, odd - odd / 2 + 5 * CORE);
        assert_eq!(
            a.cpu_used_core_nanos + b.cpu_used_core_nanos,
            CORE + odd + 5 * CORE
        );
        // 0.3 core × 60 s each side.
        assert_eq!(a.cpu_requested_core_nanos, 18 * CORE);
        assert_eq!(b.cpu_requested_core_nanos, 18 * CORE);
        // Billed per piece: 0..52.5 used 1 core-s under its 15.75; the
        // first 7.5 s of the crossing interval used 3.5 over its 2.25.
        assert_eq!(a.cpu_billed_core_nanos, 15_750_000_000 + odd / 2);
        assert_eq!(a.memory_used_byte_seconds, 60_000);
        assert_eq!(b.memory_used_byte_seconds, 60_000);
        assert_eq!(a.container_seconds + b.container_seconds, 120);
        assert_eq!(a.network_receive_bytes + b.network_receive_bytes, 3101);
        assert_eq!(a.network_receive_bytes, 100 + 1500);
        assert_eq!(
            (windows[0].covered_seconds, windows[1].covered_seconds),
            (60, 60)
        );
    }

    #[test]
    fn unsampled_time_is_not_covered_and_a_stale_summary_changes_nothing() {
        let pods = vec![pod(
            "x",
            "p",
            vec![container("c", 1000, 0, vec![running(at(0))])],
        )];
        let st = |t| {
            sample(
                t,
                pods.clone(),
                vec![stats("x", "p", vec![stat("c", at(0), 0, 0)])],
            )
        };
        let mut s = Sampler::new(SamplerConfig {
            window_seconds: 60,
            max_interval: 30 * S,
        });
        // 0, 20, 30, then the kubelet is silent until 100: not bridged.
        // A repeated (cached) Summary at 20 and one from the past (10)
        // change nothing.
        let samples: Vec<Sample> = [0, 20, 20, 10, 30, 100, 120, 140, 160, 180, 190]
            .into_iter()
            .map(|t| st(at(t)))
            .collect();
        let windows = run(&mut s, &samples);
        assert_eq!(windows.len(), 3, "{windows:#?}");
        assert_eq!(windows[0].covered_seconds, 30);
        assert_eq!(ns(&windows[0], "x").cpu_requested_core_nanos, 30 * CORE);
        assert_eq!(windows[1].start.unwrap().seconds, BASE + 60);
        assert_eq!(windows[1].covered_seconds, 20, "100..120 only");
        assert_eq!(windows[2].covered_seconds, 60);
        assert!(s.open.contains_key(&(BASE + 180)));
    }

    #[test]
    fn storage_counts_each_claim_once_and_network_is_the_pod_counters_delta() {
        let mut a = pod("s", "a", vec![container("c", 0, 0, vec![running(at(0))])]);
        a.claims = vec!["data".into()];
        let mut b = pod("s", "b", vec![container("c", 0, 0, vec![running(at(30))])]);
        b.claims = vec!["data".into()];
        let vol = super::super::sample::VolumeStats {
            claim: "data".into(),
            used_bytes: 10,
            capacity_bytes: 100,
        };
        b.ephemeral_request_bytes = 1000;
        let st = |uid: &str, start, rx: u64| {
            let mut p = stats("s", uid, vec![stat("c", start, 0, 0)]);
            p.volumes = vec![vol.clone()];
            // b writes 3000 bytes over its request of 1000.
            p.ephemeral_used_bytes = Some(if uid == "b" { 3000 } else { 0 });
            p.rx_bytes = Some(rx);
            p.tx_bytes = Some(rx * 2);
            p
        };
        let windows = run(
            &mut sampler(),
            &[
                sample(at(0), vec![a.clone()], vec![st("a", at(0), 1000)]),
                sample(
                    at(60),
                    vec![a, b],
                    vec![st("a", at(0), 1500), st("b", at(30), 70)],
                ),
            ],
        );
        let u = ns(&windows[0], "s");
        // The claim once (both pods mount it) for the minute; b's
        // ephemeral storage for its 30 s.
        assert_eq!(u.storage_requested_byte_seconds, 100 * 60 + 1000 * 30);
        assert_eq!(u.storage_used_byte_seconds, 10 * 60 + 3000 * 30);
        assert_eq!(u.storage_billed_byte_seconds, 100 * 60 + 3000 * 30);
        // a: 500 more; b: new since 30, all of its 70.
        assert_eq!(u.network_receive_bytes, 570);
        assert_eq!(u.network_transmit_bytes, 1140);
    }

    #[test]
    fn a_floor_keeps_windows_an_earlier_run_produced_from_coming_back() {
        let mut s = sampler();
        s.set_floor(BASE + 60);
        let windows = run(
            &mut s,
            &[
                sample(at(30), vec![], vec![]),
                sample(at(90), vec![], vec![]),
                sample(at(120), vec![], vec![]),
            ],
        );
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].start.unwrap().seconds, BASE + 60);
        assert_eq!(windows[0].covered_seconds, 60);
    }

    #[test]
    fn a_namespace_beyond_any_machine_is_clamped_to_what_the_control_plane_accepts() {
        // Three containers whose counters each claim 4000 cores: the
        // window would say 12000; the control plane takes at most 4096.
        let names = ["a", "b", "c"];
        let pods = vec![pod(
            "x",
            "p",
            names
                .iter()
                .map(|n| container(n, 0, 0, vec![running(at(0))]))
                .collect(),
        )];
        let st = |t: i64, cpu: u64| {
            sample(
                at(t),
                pods.clone(),
                vec![stats(
                    "x",
                    "p",
                    names.iter().map(|n| stat(n, at(0), cpu, 0)).collect(),
                )],
            )
        };
        let windows = run(&mut sampler(), &[st(0, 0), st(60, 4000 * 60 * CORE)]);
        let u = ns(&windows[0], "x");
        assert_eq!(u.cpu_used_core_nanos, 4096 * 60 * CORE);
        assert_eq!(u.cpu_billed_core_nanos, 4096 * 60 * CORE);
    }

    #[test]
    fn shares_add_up_to_the_total() {
        assert_eq!(shares(10, &[1, 1, 1]), [3, 3, 4]);
        assert_eq!(shares(7, &[0, 5, 0]), [0, 7, 0]);
        assert_eq!(shares(7, &[0, 0]), [0, 0]);
        assert_eq!(
            shares(u128::from(u64::MAX), &[3, 7])
                .iter()
                .map(|&x| u128::from(x))
                .sum::<u128>(),
            u128::from(u64::MAX)
        );
    }
}
