//! What one sample of the node is made of, independent of where it came
//! from: the kubelet Summary (counters and gauges per pod and container) and
//! the pods of the node from the apiserver (requests and running spans).
//! Parsing of both lives here too, so the sampler stays pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

/// Nanoseconds since the Unix epoch (the kubelet's and the pods' clock).
pub type Nanos = i64;

pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A container ran in `[start, end)`; `end: None` while it still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Nanos,
    pub end: Option<Nanos>,
}

/// One container of a pod as its spec and status say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub cpu_request_millis: u64,
    pub memory_request_bytes: u64,
    /// The runs the status knows of (the current one and the last one).
    pub spans: Vec<Span>,
}

/// One pod on the node (from the apiserver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<ContainerInfo>,
    /// Claim names of the PersistentVolumeClaims the pod mounts.
    pub claims: Vec<String>,
    /// The containers' `ephemeral-storage` requests, summed.
    pub ephemeral_request_bytes: u64,
}

/// One container in the kubelet's Summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub name: String,
    /// When the container (re)started: its counters count from here.
    pub start: Option<Nanos>,
    pub cpu_core_nanos: Option<u64>,
    pub working_set_bytes: Option<u64>,
}

/// One PVC mounted by a pod in the Summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub claim: String,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

/// One pod in the kubelet's Summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStats {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When pod-scoped stats (network) started counting.
    pub start: Option<Nanos>,
    pub containers: Vec<ContainerStats>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub volumes: Vec<VolumeStats>,
    /// `ephemeral-storage.usedBytes`: writable layers, logs and emptyDirs.
    pub ephemeral_used_bytes: Option<u64>,
}

/// One sample of the node at the kubelet's `time`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub time: Nanos,
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
    /// The pods of the node in managed namespaces.
    pub pods: Vec<PodInfo>,
    /// The Summary's pods (others are ignored: only `pods` are charged).
    pub stats: Vec<PodStats>,
}

// ---- the kubelet Summary (stats/v1alpha1), only the fields used ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSummary {
    node: RawNode,
    #[serde(default)]
    pods: Vec<RawPod>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNode {
    cpu: Option<RawCpu>,
    memory: Option<RawMemory>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCpu {
    time: Option<Time>,
    usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMemory {
    time: Option<Time>,
    working_set_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPodRef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPod {
    pod_ref: RawPodRef,
    start_time: Option<Time>,
    #[serde(default)]
    containers: Vec<RawContainer>,
    network: Option<RawNetwork>,
    #[serde(default)]
    volume: Vec<RawVolume>,
    #[serde(rename = "ephemeral-storage")]
    ephemeral_storage: Option<RawFs>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFs {
    used_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    #[serde(default)]
    name: String,
    start_time: Option<Time>,
    cpu: Option<RawCpu>,
    memory: Option<RawMemory>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetwork {
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVolume {
    used_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
    pvc_ref: Option<RawPvcRef>,
}

#[derive(Debug, Deserialize)]
struct RawPvcRef {
    #[serde(default)]
    name: String,
}

fn nanos(t: &Time) -> Nanos {
    i64::try_from(t.0.as_nanosecond()).unwrap_or(i64::MAX)
}

/// The Summary's time and pods. The time is the node's CPU stats time (the
/// kubelet's clock when it collected them), else its memory stats time.
pub fn parse_summary(body: &[u8]) -> Result<(Option<Nanos>, Vec<PodStats>), serde_json::Error> {
    let raw: RawSummary = serde_json::from_slice(body)?;
    let time = raw
        .node
        .cpu
        .as_ref()
        .and_then(|c| c.time.as_ref())
        .or_else(|| raw.node.memory.as_ref().and_then(|m| m.time.as_ref()))
        .map(nanos);
    let pods = raw
        .pods
        .into_iter()
        .map(|p| PodStats {
            namespace: p.pod_ref.namespace,
            name: p.pod_ref.name,
            uid: p.pod_ref.uid,
            start: p.start_time.as_ref().map(nanos),
            containers: p
                .containers
                .into_iter()
                .map(|c| ContainerStats {
                    name: c.name,
                    start: c.start_time.as_ref().map(nanos),
                    cpu_core_nanos: c.cpu.and_then(|c| c.usage_core_nano_seconds),
                    working_set_bytes: c.memory.and_then(|m| m.working_set_bytes),
                })
                .collect(),
            ephemeral_used_bytes: p.ephemeral_storage.as_ref().and_then(|e| e.used_bytes),
            rx_bytes: p.network.as_ref().and_then(|n| n.rx_bytes),
            tx_bytes: p.network.as_ref().and_then(|n| n.tx_bytes),
            volumes: p
                .volume
                .into_iter()
                .filter_map(|v| {
                    let claim = v.pvc_ref?.name;
                    Some(VolumeStats {
                        claim,
                        used_bytes: v.used_bytes.unwrap_or(0),
                        capacity_bytes: v.capacity_bytes.unwrap_or(0),
                    })
                })
                .collect(),
        })
        .collect();
    Ok((time, pods))
}

// ---- pods from the apiserver ----

/// What the sampler needs of a pod: requests, running spans, claims.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let meta = &pod.metadata;
    let statuses: BTreeMap<&str, &ContainerStatus> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| (c.name.as_str(), c)).collect())
        .unwrap_or_default();
    let spec = pod.spec.as_ref();
    let mut ephemeral_request_bytes = 0u64;
    let containers: Vec<ContainerInfo> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let request = |key: &str, parse: fn(&str) -> Option<u64>| {
                requests
                    .and_then(|r| r.get(key))
                    .and_then(|Quantity(q)| parse(q))
                    .unwrap_or(0)
            };
            ephemeral_request_bytes =
                ephemeral_request_bytes.saturating_add(request("ephemeral-storage", parse_bytes));
            ContainerInfo {
                name: c.name.clone(),
                cpu_request_millis: request("cpu", parse_cpu_millis),
                memory_request_bytes: request("memory", parse_bytes),
                spans: statuses
                    .get(c.name.as_str())
                    .map(|s| spans(s))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let claims = spec
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone())
                .collect()
        })
        .unwrap_or_default();
    PodInfo {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        containers,
        claims,
        ephemeral_request_bytes,
    }
}

/// The runs a container status knows of: `state` (running or terminated)
/// and `lastState.terminated` (the run before a restart).
fn spans(status: &ContainerStatus) -> Vec<Span> {
    let terminated = |t: &ContainerStateTerminated| {
        let start = t.started_at.as_ref().map(nanos)?;
        let end = t.finished_at.as_ref().map(nanos)?;
        (end > start).then_some(Span {
            start,
            end: Some(end),
        })
    };
    let mut out = Vec::new();
    if let Some(last) = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(terminated)
    {
        out.push(last);
    }
    if let Some(state) = &status.state {
        if let Some(start) = state
            .running
            .as_ref()
            .and_then(|r| r.started_at.as_ref())
            .map(nanos)
        {
            out.push(Span { start, end: None });
        } else if let Some(t) = state.terminated.as_ref().and_then(terminated) {
            // The same run may be both `state` and (after a restart that
            // has not started yet) `lastState`: once only.
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// A Kubernetes quantity as a whole number of units (of millis with
/// `scale_to_milli`), rounded up as the apiserver does for requests.
fn parse_quantity(text: &str, scale_to_milli: bool) -> Option<u64> {
    let (mut num, den) = crate::quantity::exact(text)?;
    if scale_to_milli {
        num = num.checked_mul(1000)?;
    }
    u64::try_from(num.div_ceil(den)).ok()
}

/// CPU in millicores (`500m`, `2`, `0.25`).
pub fn parse_cpu_millis(text: &str) -> Option<u64> {
    parse_quantity(text, true)
}

/// Memory or storage in bytes (`128Mi`, `1G`, `1e9`).
pub fn parse_bytes(text: &str) -> Option<u64> {
    parse_quantity(text, false)
}

/// Allocatable CPU (millis) and memory (bytes) of a node object.
pub fn node_allocatable(node: &k8s_openapi::api::core::v1::Node) -> (i64, i64) {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |key: &str, parse: fn(&str) -> Option<u64>| {
        alloc
            .and_then(|a| a.get(key))
            .and_then(|Quantity(q)| parse(q))
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(0)
    };
    (get("cpu", parse_cpu_millis), get("memory", parse_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_the_apiserver_rounds_them() {
        assert_eq!(parse_cpu_millis("500m"), Some(500));
        assert_eq!(parse_cpu_millis("2"), Some(2000));
        assert_eq!(parse_cpu_millis("0.25"), Some(250));
        assert_eq!(parse_cpu_millis("1.0005"), Some(1001), "rounded up");
        assert_eq!(parse_bytes("128Mi"), Some(128 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("3Zi"), None);
    }

    #[test]
    fn a_summary_parses_to_counters_gauges_and_claims() {
        let body = serde_json::json!({
            "node": { "nodeName": "n1", "cpu": { "time": "2026-01-01T00:00:10Z", "usageNanoCores": 5, "usageCoreNanoSeconds": 9 } },
            "pods": [{
                "podRef": { "name": "p", "namespace": "ns", "uid": "u1" },
                "startTime": "2026-01-01T00:00:00Z",
                "containers": [{
                    "name": "c", "startTime": "2026-01-01T00:00:01.5Z",
                    "cpu": { "time": "2026-01-01T00:00:10Z", "usageCoreNanoSeconds": 1234 },
                    "memory": { "workingSetBytes": 77 }
                }],
                "network": { "rxBytes": 10, "txBytes": 20 },
                "ephemeral-storage": { "usedBytes": 4096 },
                "volume": [
                    { "name": "data", "usedBytes": 5, "capacityBytes": 50, "pvcRef": { "name": "claim", "namespace": "ns" } },
                    { "name": "tmp", "usedBytes": 1 }
                ]
            }]
        });
        let (time, pods) = parse_summary(body.to_string().as_bytes()).unwrap();
        let t0 = 1_767_225_600 * NANOS_PER_SECOND;
        assert_eq!(time, Some(t0 + 10 * NANOS_PER_SECOND));
        assert_eq!(
            pods,
            [PodStats {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u1".into(),
                start: Some(t0),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start: Some(t0 + 1_500_000_000),
                    cpu_core_nanos: Some(1234),
                    working_set_bytes: Some(77),
                }],
                rx_bytes: Some(10),
                tx_bytes: Some(20),
                ephemeral_used_bytes: Some(4096),
                volumes: vec![VolumeStats {
                    claim: "claim".into(),
                    used_bytes: 5,
                    capacity_bytes: 50
                }],
            }]
        );
    }

    #[test]
    fn a_pod_gives_requests_and_every_run_it_knows_of() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u" },
            "spec": {
                "containers": [
                    { "name": "a", "resources": { "requests": { "cpu": "250m", "memory": "64Mi", "ephemeral-storage": "1Gi" } } },
                    { "name": "b", "resources": { "requests": { "ephemeral-storage": "1Mi" } } }
                ],
                "volumes": [ { "name": "d", "persistentVolumeClaim": { "claimName": "data" } }, { "name": "e", "emptyDir": {} } ]
            },
            "status": { "containerStatuses": [
                { "name": "a", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                  "state": { "running": { "startedAt": "2026-01-01T00:00:20Z" } },
                  "lastState": { "terminated": { "exitCode": 1, "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:15Z" } } },
                { "name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                  "state": { "terminated": { "exitCode": 0, "startedAt": "2026-01-01T00:00:05Z", "finishedAt": "2026-01-01T00:00:35Z" } } }
            ] }
        }))
        .unwrap();
        let info = pod_info(&pod);
        let t = |s: i64| (1_767_225_600 + s) * NANOS_PER_SECOND;
        assert_eq!(info.claims, ["data"]);
        assert_eq!(info.ephemeral_request_bytes, (1 << 30) + (1 << 20));
        assert_eq!(
            info.containers,
            [
                ContainerInfo {
                    name: "a".into(),
                    cpu_request_millis: 250,
                    memory_request_bytes: 64 << 20,
                    spans: vec![
                        Span {
                            start: t(0),
                            end: Some(t(15))
                        },
                        Span {
                            start: t(20),
                            end: None
                        }
                    ],
                },
                ContainerInfo {
                    name: "b".into(),
                    cpu_request_millis: 0,
                    memory_request_bytes: 0,
                    spans: vec![Span {
                        start: t(5),
                        end: Some(t(35))
                    }],
                },
            ]
        );
    }
}
