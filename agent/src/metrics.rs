//! Prometheus metrics of the agent: session and role, the applied revision,
//! reconcile passes, drift repairs, held prune passes and the outbound queue.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
        let collectors: [Box<dyn Collector>; 8] = [
            Box::new(connected.clone()),
            Box::new(applier.clone()),
            Box::new(lease_held.clone()),
            Box::new(prune_held.clone()),
            Box::new(applied_revision.clone()),
            Box::new(pass_duration.clone()),
            Box::new(drift_repairs.clone()),
            Box::new(outbox_depth.clone()),
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}
