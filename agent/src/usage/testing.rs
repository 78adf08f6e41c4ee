//! Test helpers: building samples by hand, and the control plane's own
//! validation of what the agent would send.

use chrono::{DateTime, Utc};
use mtp_proto::v1 as pb;

use super::sample::{
    ContainerInfo, ContainerStats, NANOS_PER_SECOND, Nanos, PodInfo, PodStats, Sample, Span,
};

/// 2026-01-01T00:00:00Z: aligned to every window length.
pub const BASE: i64 = 1_767_225_600;

/// `s` seconds after [`BASE`], in nanoseconds.
pub fn at(s: i64) -> Nanos {
    (BASE + s) * NANOS_PER_SECOND
}

/// `ms` milliseconds after [`BASE`], in nanoseconds.
pub fn at_ms(ms: i64) -> Nanos {
    BASE * NANOS_PER_SECOND + ms * 1_000_000
}

pub fn running(from: Nanos) -> Span {
    Span {
        start: from,
        end: None,
    }
}

pub fn ran(from: Nanos, to: Nanos) -> Span {
    Span {
        start: from,
        end: Some(to),
    }
}

pub fn container(name: &str, cpu_millis: u64, memory: u64, spans: Vec<Span>) -> ContainerInfo {
    ContainerInfo {
        name: name.into(),
        cpu_request_millis: cpu_millis,
        memory_request_bytes: memory,
        spans,
    }
}

pub fn pod(namespace: &str, uid: &str, containers: Vec<ContainerInfo>) -> PodInfo {
    PodInfo {
        namespace: namespace.into(),
        name: uid.into(),
        uid: uid.into(),
        containers,
        claims: vec![],
        ephemeral_request_bytes: 0,
    }
}

/// A container in the Summary: started at `start`, its CPU counter, its
/// working set.
pub fn stat(name: &str, start: Nanos, cpu: u64, working_set: u64) -> ContainerStats {
    ContainerStats {
        name: name.into(),
        start: Some(start),
        cpu_core_nanos: Some(cpu),
        working_set_bytes: Some(working_set),
    }
}

pub fn stats(namespace: &str, uid: &str, containers: Vec<ContainerStats>) -> PodStats {
    PodStats {
        namespace: namespace.into(),
        name: uid.into(),
        uid: uid.into(),
        start: containers.iter().filter_map(|c| c.start).min(),
        containers,
        ..PodStats::default()
    }
}

pub fn sample(time: Nanos, pods: Vec<PodInfo>, stats: Vec<PodStats>) -> Sample {
    Sample {
        time,
        node_cpu_millis: 4000,
        node_memory_bytes: 8 << 30,
        pods,
        stats,
    }
}

/// The control plane's verdict on a batch (its own conversion and
/// `UsageBatchClaim::new`), with its clock at `now`.
pub fn validate(batch: &pb::UsageBatch, now: DateTime<Utc>) -> Result<(), String> {
    mtp_control_plane::api::convert::usage_batch(
        batch.clone(),
        now,
        DateTime::from_timestamp(0, 0).unwrap(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Windows as one batch, validated with the control plane's clock a
/// minute after the last window's end.
pub fn assert_valid(windows: &[pb::UsageWindow]) {
    let end = windows
        .iter()
        .map(|w| w.start.unwrap().seconds + i64::from(w.duration_seconds))
        .max()
        .unwrap_or(BASE);
    let batch = pb::UsageBatch {
        spool_epoch: 1,
        sequence: 1,
        windows: windows.to_vec(),
        gaps: vec![],
    };
    let now = DateTime::from_timestamp(end + 60, 0).unwrap();
    if let Err(e) = validate(&batch, now) {
        panic!("the control plane would refuse this batch: {e}\n{windows:#?}");
    }
}
