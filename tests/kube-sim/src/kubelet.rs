//! Simulated kubelet usage: per-pod CPU/memory set by tests, served as the
//! `stats/v1alpha1` Summary document under `/api/v1/nodes/{node}/proxy/stats/summary`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Resource usage of one pod at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// CPU usage in nanocores (1 core = 1_000_000_000).
    pub cpu_nano_cores: u64,
    /// Memory working set in bytes.
    pub memory_working_set_bytes: u64,
}

/// Usage as a function of the time since the profile was set.
pub type UsageProfile = Arc<dyn Fn(Duration) -> PodUsage + Send + Sync>;

enum Source {
    Fixed(PodUsage),
    Profile { since: Instant, f: UsageProfile },
}

struct PodState {
    source: Source,
    cpu_core_nanos: f64,
    last: Instant,
}

impl PodState {
    fn current(&self) -> PodUsage {
        match &self.source {
            Source::Fixed(u) => *u,
            Source::Profile { since, f } => f(since.elapsed()),
        }
    }
}

/// Usage state of every pod of one cluster.
pub struct Kubelet {
    pods: Mutex<HashMap<(String, String), PodState>>,
    started: chrono::DateTime<chrono::Utc>,
}

impl Default for Kubelet {
    fn default() -> Self {
        Self {
            pods: Mutex::new(HashMap::new()),
            started: chrono::Utc::now(),
        }
    }
}

impl Kubelet {
    fn set(&self, ns: &str, pod: &str, source: Source) {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let st = pods.entry((ns.into(), pod.into())).or_insert(PodState {
            source: Source::Fixed(PodUsage::default()),
            cpu_core_nanos: 0.0,
            last: now,
        });
        st.source = source;
        st.last = now;
    }

    /// Sets a constant usage for a pod.
    pub fn set_usage(&self, ns: &str, pod: &str, usage: PodUsage) {
        self.set(ns, pod, Source::Fixed(usage));
    }

    /// Sets a usage profile (a function of time since now) for a pod.
    pub fn set_profile(&self, ns: &str, pod: &str, f: UsageProfile) {
        self.set(
            ns,
            pod,
            Source::Profile {
                since: Instant::now(),
                f,
            },
        );
    }

    /// The current usage of a pod (zero when never set).
    pub fn usage(&self, ns: &str, pod: &str) -> PodUsage {
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.get(&(ns.to_string(), pod.to_string()))
            .map(PodState::current)
            .unwrap_or_default()
    }

    /// Builds the Summary document for `node` from the pods scheduled on it.
    pub fn summary(&self, node: &str, pods: &[Arc<Value>]) -> Value {
        let now = chrono::Utc::now();
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let started = self
            .started
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut guard = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut node_cpu = 0u64;
        let mut node_mem = 0u64;
        let mut node_cum = 0u64;
        let mut out = Vec::new();
        for pod in pods {
            let ns = pod
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let uid = pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            let pod_start = pod
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or(&started);
            let (usage, cum) = match guard.get_mut(&(ns.to_string(), name.to_string())) {
                Some(st) => {
                    // Integrate CPU so `usageCoreNanoSeconds` grows like a real counter.
                    let u = st.current();
                    st.cpu_core_nanos += u.cpu_nano_cores as f64 * st.last.elapsed().as_secs_f64();
                    st.last = Instant::now();
                    (u, st.cpu_core_nanos as u64)
                }
                None => (PodUsage::default(), 0),
            };
            node_cpu += usage.cpu_nano_cores;
            node_mem += usage.memory_working_set_bytes;
            node_cum += cum;
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
            let containers: Vec<Value> = names
                .iter()
                .map(|c| {
                    json!({
                        "name": c,
                        "startTime": pod_start,
                        "cpu": cpu(&ts, usage.cpu_nano_cores / n, cum / n),
                        "memory": memory(&ts, usage.memory_working_set_bytes / n),
                    })
                })
                .collect();
            out.push(json!({
                "podRef": { "name": name, "namespace": ns, "uid": uid },
                "startTime": pod_start,
                "containers": containers,
                "cpu": cpu(&ts, usage.cpu_nano_cores, cum),
                "memory": memory(&ts, usage.memory_working_set_bytes),
            }));
        }
        json!({
            "node": {
                "nodeName": node,
                "startTime": started,
                "cpu": cpu(&ts, node_cpu, node_cum),
                "memory": memory(&ts, node_mem),
                "systemContainers": [],
            },
            "pods": out,
        })
    }
}

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
