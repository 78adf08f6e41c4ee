//! Prometheus metrics of the agent: session and role, the applied revision,
//! reconcile passes, drift repairs, held prune passes, the outbound queue,
//! and usage (samples, the spool, batches sent and acknowledged).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const PASS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Cheap to clone: every clone updates the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connected: IntGauge,
    applier: IntGauge,
    lease_held: IntGauge,
    prune_held: IntGauge,
    applied_revision: IntGauge,
    pass_duration: HistogramVec,
    drift_repairs: IntCounter,
    outbox_depth: IntGaugeVec,
    usage_samples: IntCounterVec,
    usage_last_sample: IntGauge,
    usage_spool_windows: IntGauge,
    usage_windows_dropped: IntCounter,
    usage_batches_sent: IntCounter,
    usage_batches_acknowledged: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let connected = gauge(
            "mtp_agent_connected",
            "1 while a session to the control plane is established",
        );
        let applier = gauge(
            "mtp_agent_applier",
            "1 while this agent applies: it holds its cluster's applier lease and the control plane granted it the role",
        );
        let lease_held = gauge(
            "mtp_agent_lease_held",
            "1 while this agent holds its cluster's applier lease (its candidacy)",
        );
        let prune_held = gauge(
            "mtp_agent_prune_held_revision",
            "The revision of a prune pass held for `mtp cluster confirm-prune` (0: none held)",
        );
        let applied_revision = gauge(
            "mtp_agent_applied_revision",
            "The desired-state revision this agent last applied completely as applier (0: none)",
        );
        let pass_duration = HistogramVec::new(
            HistogramOpts::new(
                "mtp_agent_reconcile_pass_duration_seconds",
                "Duration of reconcile passes: delta (an update or a new role) or resync (full read-back)",
            )
            .buckets(PASS_BUCKETS.to_vec()),
            &["pass"],
        )
        .expect("static metric definition");
        let drift_repairs = IntCounter::new(
            "mtp_agent_drift_repairs_total",
            "Managed objects found drifted and put right",
        )
        .expect("static metric definition");
        let outbox_depth = IntGaugeVec::new(
            Opts::new(
                "mtp_agent_outbox_depth",
                "Reports waiting to be sent to the control plane, by kind",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let usage_samples = IntCounterVec::new(
            Opts::new(
                "mtp_agent_usage_samples_total",
                "Samples of the kubelet Summary API of this node, by result (ok, error)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let usage_last_sample = gauge(
            "mtp_agent_usage_last_sample_timestamp_seconds",
            "The kubelet's time of the last successful usage sample (seconds since the Unix epoch; 0: none)",
        );
        let usage_spool_windows = gauge(
            "mtp_agent_usage_spool_windows",
            "Usage windows in the spool on disk, waiting for the control plane to record them",
        );
        let usage_windows_dropped = IntCounter::new(
            "mtp_agent_usage_windows_dropped_total",
            "Usage windows dropped because the spool was full (reported as gaps)",
        )
        .expect("static metric definition");
        let usage_batches_sent = IntCounter::new(
            "mtp_agent_usage_batches_sent_total",
            "Usage batches sent to the control plane (re-sends included)",
        )
        .expect("static metric definition");
        let usage_batches_acknowledged = IntCounter::new(
            "mtp_agent_usage_batches_acknowledged_total",
            "Usage batches the control plane recorded (and the agent deleted from its spool)",
        )
        .expect("static metric definition");
        for result in ["ok", "error"] {
            usage_samples.with_label_values(&[result]);
        }
        let collectors: [Box<dyn Collector>; 14] = [
            Box::new(connected.clone()),
            Box::new(applier.clone()),
            Box::new(lease_held.clone()),
            Box::new(prune_held.clone()),
            Box::new(applied_revision.clone()),
            Box::new(pass_duration.clone()),
            Box::new(drift_repairs.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(usage_samples.clone()),
            Box::new(usage_last_sample.clone()),
            Box::new(usage_spool_windows.clone()),
            Box::new(usage_windows_dropped.clone()),
            Box::new(usage_batches_sent.clone()),
            Box::new(usage_batches_acknowledged.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            connected,
            applier,
            lease_held,
            prune_held,
            applied_revision,
            pass_duration,
            drift_repairs,
            outbox_depth,
            usage_samples,
            usage_last_sample,
            usage_spool_windows,
            usage_windows_dropped,
            usage_batches_sent,
            usage_batches_acknowledged,
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub fn set_applier(&self, applier: bool) {
        self.applier.set(i64::from(applier));
    }

    pub fn set_lease_held(&self, held: bool) {
        self.lease_held.set(i64::from(held));
    }

    /// The revision of the held prune pass, if one is held.
    pub fn set_prune_held(&self, revision: Option<i64>) {
        self.prune_held.set(revision.unwrap_or(0));
    }

    pub fn set_applied_revision(&self, revision: i64) {
        self.applied_revision.set(revision);
    }

    /// `pass` is `delta` or `resync`.
    pub fn observe_pass(&self, pass: &str, elapsed: Duration) {
        self.pass_duration
            .with_label_values(&[pass])
            .observe(elapsed.as_secs_f64());
    }

    pub fn drift_repaired(&self, objects: usize) {
        self.drift_repairs
            .inc_by(u64::try_from(objects).unwrap_or(u64::MAX));
    }

    pub fn set_outbox_depth(&self, kind: &str, depth: usize) {
        self.outbox_depth
            .with_label_values(&[kind])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A usage sample succeeded (at the kubelet's `time`, seconds) or failed.
    pub fn usage_sample(&self, ok: Option<i64>) {
        let result = if ok.is_some() { "ok" } else { "error" };
        self.usage_samples.with_label_values(&[result]).inc();
        if let Some(time) = ok {
            self.usage_last_sample.set(time);
        }
    }

    pub fn set_usage_spool_windows(&self, windows: usize) {
        self.usage_spool_windows
            .set(i64::try_from(windows).unwrap_or(i64::MAX));
    }

    pub fn usage_windows_dropped(&self, windows: usize) {
        self.usage_windows_dropped
            .inc_by(u64::try_from(windows).unwrap_or(u64::MAX));
    }

    pub fn usage_batch_sent(&self) {
        self.usage_batches_sent.inc();
    }

    pub fn usage_batch_acknowledged(&self) {
        self.usage_batches_acknowledged.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}
