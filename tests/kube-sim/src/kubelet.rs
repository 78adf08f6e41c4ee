//! Simulated kubelet: per-container usage curves set by tests, served as the
//! `stats/v1alpha1` Summary document (`/kubelet/{node}/stats/summary` and
//! `/api/v1/nodes/{node}/proxy/stats/summary`).
//!
//! Everything is exact integer math on the cluster's [`SimClock`]: a container's
//! cumulative counters are the integral of its piecewise-constant [`UsageCurve`] from the
//! container's `startedAt` (read from the pod status, so a restart resets them) to now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::clock::{self, SimClock};

/// Resource usage of one pod at one moment (split evenly over its containers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// CPU usage in nanocores (1 core = 1_000_000_000).
    pub cpu_nano_cores: u64,
    /// Memory working set in bytes.
    pub memory_working_set_bytes: u64,
}

/// Usage as a function of the time since the profile was set.
pub type UsageProfile = Arc<dyn Fn(Duration) -> PodUsage + Send + Sync>;

/// Resource usage of one container at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    /// CPU usage in nanocores (1 core = 1_000_000_000).
    pub cpu_nano_cores: u64,
    /// Memory working set in bytes (also reported as usage and RSS).
    pub memory_working_set_bytes: u64,
    /// Writable layer + logs (`rootfs.usedBytes`; pod `ephemeral-storage.usedBytes` sums them).
    pub ephemeral_storage_bytes: u64,
    /// Received bytes per second (integrated into the pod's `network.rxBytes`).
    pub network_receive_bytes_per_second: u64,
    /// Transmitted bytes per second (integrated into the pod's `network.txBytes`).
    pub network_transmit_bytes_per_second: u64,
}

/// A piecewise-constant usage curve: `(d, u)` means "from `d` after the container started,
/// usage is `u`" until the next step; the last step lasts forever. Before the first step
/// usage is zero (make the first step `Duration::ZERO`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageCurve(pub Vec<(Duration, ContainerUsage)>);

/// Cumulative counters of a curve over an interval (floored once, at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// `usageCoreNanoSeconds`: Σ nano_cores × nanos / 1e9.
    pub cpu_core_nano_seconds: u64,
    /// Bytes received: Σ bytes/s × nanos / 1e9.
    pub rx_bytes: u64,
    /// Bytes transmitted: Σ bytes/s × nanos / 1e9.
    pub tx_bytes: u64,
}

impl UsageCurve {
    /// A curve that is `u` from the start on.
    pub fn constant(u: ContainerUsage) -> Self {
        Self(vec![(Duration::ZERO, u)])
    }

    /// A curve from steps in any order (sorted by offset).
    pub fn new(mut steps: Vec<(Duration, ContainerUsage)>) -> Self {
        steps.sort_by_key(|(d, _)| *d);
        Self(steps)
    }

    fn sorted(&self) -> std::borrow::Cow<'_, [(Duration, ContainerUsage)]> {
        if self.0.windows(2).all(|w| w[0].0 <= w[1].0) {
            std::borrow::Cow::Borrowed(&self.0)
        } else {
            let mut v = self.0.clone();
            v.sort_by_key(|(d, _)| *d);
            std::borrow::Cow::Owned(v)
        }
    }

    /// The usage `elapsed` after the container started.
    pub fn at(&self, elapsed: Duration) -> ContainerUsage {
        self.sorted()
            .iter()
            .rev()
            .find(|(d, _)| *d <= elapsed)
            .map(|(_, u)| *u)
            .unwrap_or_default()
    }

    /// The exact integral from the container start to `elapsed` after it, in u128 integer
    /// math per piece (rate × nanoseconds), divided by 10⁹ and floored once at the end.
    pub fn totals(&self, elapsed: Duration) -> UsageTotals {
        let steps = self.sorted();
        let end = elapsed.as_nanos();
        let (mut cpu, mut rx, mut tx) = (0u128, 0u128, 0u128);
        for (i, (from, u)) in steps.iter().enumerate() {
            let from = from.as_nanos();
            if from >= end {
                break;
            }
            let to = steps
                .get(i + 1)
                .map(|(d, _)| d.as_nanos().min(end))
                .unwrap_or(end);
            let span = to - from;
            cpu += u.cpu_nano_cores as u128 * span;
            rx += u.network_receive_bytes_per_second as u128 * span;
            tx += u.network_transmit_bytes_per_second as u128 * span;
        }
        let g = |x: u128| u64::try_from(x / 1_000_000_000).unwrap_or(u64::MAX);
        UsageTotals {
            cpu_core_nano_seconds: g(cpu),
            rx_bytes: g(rx),
            tx_bytes: g(tx),
        }
    }
}

/// The legacy per-pod sources (`set_pod_usage*`).
enum PodSource {
    Fixed(PodUsage),
    Profile {
        since: DateTime<Utc>,
        f: UsageProfile,
        /// Σ nano_cores × nanos, sampled at each summary.
        cum: u128,
        last: DateTime<Utc>,
    },
}

#[derive(Default)]
struct State {
    containers: HashMap<(String, String, String), UsageCurve>,
    pods: HashMap<(String, String), PodSource>,
    volumes: HashMap<(String, String), (u64, u64)>,
}

/// Usage state of every container of one cluster.
pub struct Kubelet {
    state: Mutex<State>,
    clock: SimClock,
    started: DateTime<Utc>,
}

impl Default for Kubelet {
    fn default() -> Self {
        Self::new(SimClock::real())
    }
}

fn nanos_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

fn key2(ns: &str, pod: &str) -> (String, String) {
    (ns.to_string(), pod.to_string())
}

impl Kubelet {
    /// A kubelet reading `clock` (its node `startTime` is the clock's time now).
    pub fn new(clock: SimClock) -> Self {
        Self {
            state: Mutex::new(State::default()),
            started: clock.now(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a constant usage for a pod, split evenly over its containers (replaces any
    /// per-container curves of the pod).
    pub fn set_usage(&self, ns: &str, pod: &str, usage: PodUsage) {
        let mut s = self.lock();
        s.containers.retain(|k, _| !(k.0 == ns && k.1 == pod));
        s.pods.insert(key2(ns, pod), PodSource::Fixed(usage));
    }

    /// Sets a usage profile (a function of the time since now) for a pod, split evenly
    /// over its containers. Its CPU counter is integrated from samples (each summary).
    pub fn set_profile(&self, ns: &str, pod: &str, f: UsageProfile) {
        let now = self.clock.now();
        let mut s = self.lock();
        s.containers.retain(|k, _| !(k.0 == ns && k.1 == pod));
        s.pods.insert(
            key2(ns, pod),
            PodSource::Profile {
                since: now,
                f,
                cum: 0,
                last: now,
            },
        );
    }

    /// Sets the usage curve of one container (overrides the pod-level usage for it).
    pub fn set_container_curve(&self, ns: &str, pod: &str, container: &str, curve: UsageCurve) {
        let curve = UsageCurve::new(curve.0);
        self.lock()
            .containers
            .insert((ns.into(), pod.into(), container.into()), curve);
    }

    /// Sets the used and total bytes reported for a PVC in the pods mounting it.
    pub fn set_volume_usage(&self, ns: &str, pvc: &str, used: u64, capacity: u64) {
        self.lock().volumes.insert(key2(ns, pvc), (used, capacity));
    }

    /// The current pod-level usage set by `set_pod_usage*` (zero when never set).
    pub fn usage(&self, ns: &str, pod: &str) -> PodUsage {
        let now = self.clock.now();
        let s = self.lock();
        match s.pods.get(&key2(ns, pod)) {
            Some(PodSource::Fixed(u)) => *u,
            Some(PodSource::Profile { since, f, .. }) => f(nanos_between(*since, now)),
            None => PodUsage::default(),
        }
    }

    /// Builds the Summary document for `node` from the (running) pods scheduled on it.
    pub fn summary(&self, node: &str, pods: &[Arc<Value>]) -> Value {
        let now = self.clock.now();
        let ts = clock::rfc3339(now);
        let started = clock::rfc3339(self.started);
        let mut s = self.lock();
        let mut node_cpu = 0u64;
        let mut node_mem = 0u64;
        let mut node_cum = 0u64;
        let mut node_fs = 0u64;
        let (mut node_rx, mut node_tx) = (0u64, 0u64);
        let mut out = Vec::new();
        for pod in pods {
            let str_at = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("");
            let ns = str_at("/metadata/namespace");
            let name = str_at("/metadata/name");
            let uid = str_at("/metadata/uid");
            let pod_start = clock::parse(str_at("/status/startTime"))
                .or_else(|| clock::parse(str_at("/metadata/creationTimestamp")))
                .unwrap_or(self.started);
            let names: Vec<String> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let n = names.len().max(1) as u64;
            // Legacy profile: sample once per summary and integrate.
            let profile = match s.pods.get_mut(&key2(ns, name)) {
                Some(PodSource::Profile {
                    since,
                    f,
                    cum,
                    last,
                }) => {
                    let u = f(nanos_between(*since, now));
                    *cum += u.cpu_nano_cores as u128 * nanos_between(*last, now).as_nanos();
                    *last = now.max(*last);
                    Some((u, u64::try_from(*cum / 1_000_000_000).unwrap_or(u64::MAX)))
                }
                _ => None,
            };
            let fixed = match s.pods.get(&key2(ns, name)) {
                Some(PodSource::Fixed(u)) => Some(*u),
                _ => None,
            };
            let (mut p_cpu, mut p_mem, mut p_cum, mut p_fs, mut p_rx, mut p_tx) =
                (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            let mut containers = Vec::new();
            for c in &names {
                let c_start = pod
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|st| st.get("name").and_then(Value::as_str) == Some(c))
                    })
                    .and_then(|st| st.pointer("/state/running/startedAt"))
                    .and_then(Value::as_str)
                    .and_then(clock::parse)
                    .unwrap_or(pod_start);
                let elapsed = nanos_between(c_start, now);
                let (u, t) =
                    if let Some(curve) = s.containers.get(&(ns.into(), name.into(), c.clone())) {
                        (curve.at(elapsed), curve.totals(elapsed))
                    } else if let Some((pu, cum)) = profile {
                        let u = ContainerUsage {
                            cpu_nano_cores: pu.cpu_nano_cores / n,
                            memory_working_set_bytes: pu.memory_working_set_bytes / n,
                            ..Default::default()
                        };
                        let t = UsageTotals {
                            cpu_core_nano_seconds: cum / n,
                            ..Default::default()
                        };
                        (u, t)
                    } else if let Some(pu) = fixed {
                        let curve = UsageCurve::constant(ContainerUsage {
                            cpu_nano_cores: pu.cpu_nano_cores / n,
                            memory_working_set_bytes: pu.memory_working_set_bytes / n,
                            ..Default::default()
                        });
                        (curve.at(elapsed), curve.totals(elapsed))
                    } else {
                        (ContainerUsage::default(), UsageTotals::default())
                    };
                p_cpu += u.cpu_nano_cores;
                p_mem += u.memory_working_set_bytes;
                p_fs += u.ephemeral_storage_bytes;
                p_cum += t.cpu_core_nano_seconds;
                p_rx += t.rx_bytes;
                p_tx += t.tx_bytes;
                containers.push(json!({
                    "name": c,
                    "startTime": clock::rfc3339(c_start),
                    "cpu": cpu(&ts, u.cpu_nano_cores, t.cpu_core_nano_seconds),
                    "memory": memory(&ts, u.memory_working_set_bytes),
                    "rootfs": {
                        "time": ts,
                        "usedBytes": u.ephemeral_storage_bytes,
                        "capacityBytes": FS_CAPACITY,
                        "availableBytes": FS_CAPACITY.saturating_sub(u.ephemeral_storage_bytes),
                    },
                }));
            }
            let volumes: Vec<Value> = pod
                .pointer("/spec/volumes")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| {
                            let claim = v.pointer("/persistentVolumeClaim/claimName")?.as_str()?;
                            let (used, cap) = s.volumes.get(&key2(ns, claim))?;
                            Some(json!({
                                "time": ts,
                                "name": v.get("name").cloned().unwrap_or(Value::Null),
                                "usedBytes": used,
                                "capacityBytes": cap,
                                "availableBytes": cap.saturating_sub(*used),
                                "pvcRef": { "name": claim, "namespace": ns },
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default();
            node_cpu += p_cpu;
            node_mem += p_mem;
            node_cum += p_cum;
            node_fs += p_fs;
            node_rx += p_rx;
            node_tx += p_tx;
            out.push(json!({
                "podRef": { "name": name, "namespace": ns, "uid": uid },
                "startTime": clock::rfc3339(pod_start),
                "containers": containers,
                "cpu": cpu(&ts, p_cpu, p_cum),
                "memory": memory(&ts, p_mem),
                "network": network(&ts, p_rx, p_tx),
                "volume": volumes,
                "ephemeral-storage": {
                    "time": ts,
                    "usedBytes": p_fs,
                    "capacityBytes": FS_CAPACITY,
                    "availableBytes": FS_CAPACITY.saturating_sub(p_fs),
                },
            }));
        }
        json!({
            "node": {
                "nodeName": node,
                "startTime": started,
                "cpu": cpu(&ts, node_cpu, node_cum),
                "memory": memory(&ts, node_mem),
                "network": network(&ts, node_rx, node_tx),
                "fs": {
                    "time": ts,
                    "usedBytes": node_fs,
                    "capacityBytes": FS_CAPACITY,
                    "availableBytes": FS_CAPACITY.saturating_sub(node_fs),
                },
                "systemContainers": [],
            },
            "pods": out,
        })
    }
}

/// Capacity reported for node and container filesystems (100 GiB).
const FS_CAPACITY: u64 = 100 << 30;

fn cpu(ts: &str, nano_cores: u64, cum: u64) -> Value {
    json!({ "time": ts, "usageNanoCores": nano_cores, "usageCoreNanoSeconds": cum })
}

fn memory(ts: &str, ws: u64) -> Value {
    json!({
        "time": ts,
        "usageBytes": ws,
        "workingSetBytes": ws,
        "rssBytes": ws,
        "pageFaults": 0,
        "majorPageFaults": 0,
    })
}

fn network(ts: &str, rx: u64, tx: u64) -> Value {
    json!({
        "time": ts,
        "name": "eth0",
        "rxBytes": rx,
        "rxErrors": 0,
        "txBytes": tx,
        "txErrors": 0,
        "interfaces": [{ "name": "eth0", "rxBytes": rx, "rxErrors": 0, "txBytes": tx, "txErrors": 0 }],
    })
}
