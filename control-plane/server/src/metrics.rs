//! Prometheus metrics of the control plane: per-RPC counts and latencies,
//! PostgreSQL latency per store operation, and what an operator alerts on —
//! environments by status, agents and appliers connected, revision lag,
//! time to Ready, drift repairs and expiries, per cluster.
//!
//! Gauges from agent sessions count this replica's sessions (sum them across
//! replicas); the fleet gauges come from PostgreSQL and are the same on every
//! replica (take one, e.g. `max`).

use std::time::Duration;

use mtp_core::clusters::ClusterSummary;
use mtp_core::environments::EnvironmentStatus;
use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Creation to Ready spans a scheduling, an apply and a verification by an
/// agent: from well under a second to minutes on a busy cluster.
const READY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    rpc_requests: IntCounterVec,
    rpc_duration: HistogramVec,
    db_duration: HistogramVec,
    environments: IntGaugeVec,
    revision_lag: IntGaugeVec,
    agents_connected: IntGaugeVec,
    appliers: IntGaugeVec,
    time_to_ready: HistogramVec,
    drift_repairs: IntCounterVec,
    reports_ignored: IntCounterVec,
    usage_batches: IntCounterVec,
    usage_windows: IntCounterVec,
    usage_rollup_hours: IntCounterVec,
    sessions_ended: IntCounterVec,
    expiries: IntCounter,
    tenant_cost: GaugeVec,
    environment_cost: GaugeVec,
    tenant_budget: GaugeVec,
    budget_crossed: IntGaugeVec,
    budget_alerts: IntCounter,
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

/// Registers each metric once as it is defined; the definitions are static,
/// so a failure is a bug caught by every test.
struct Definer(Registry);

impl Definer {
    fn add<C: Collector + Clone + 'static>(&self, metric: Result<C, prometheus::Error>) -> C {
        let metric = metric.expect("static metric definition");
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric registered once");
        metric
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels))
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let d = Definer(Registry::new());
        Metrics {
            rpc_requests: d.counter(
                "mtp_grpc_requests_total",
                "gRPC requests handled, by method and status code",
                &["method", "code"],
            ),
            rpc_duration: d.histogram(
                "mtp_grpc_request_duration_seconds",
                "gRPC request latency, by method",
                LATENCY_BUCKETS,
                &["method"],
            ),
            db_duration: d.histogram(
                "mtp_db_operation_duration_seconds",
                "PostgreSQL latency per store operation",
                LATENCY_BUCKETS,
                &["operation", "outcome"],
            ),
            environments: d.gauge(
                "mtp_environments",
                "Live environments by cluster and status (from PostgreSQL, refreshed every --metrics-interval)",
                &["cluster", "status"],
            ),
            revision_lag: d.gauge(
                "mtp_cluster_revision_lag",
                "Revisions issued to a cluster that no agent of it acknowledged yet (from PostgreSQL)",
                &["cluster"],
            ),
            agents_connected: d.gauge(
                "mtp_agents_connected",
                "Agent sessions open on this replica, by cluster",
                &["cluster"],
            ),
            appliers: d.gauge(
                "mtp_agent_appliers",
                "Agent sessions on this replica whose agent is its cluster's applier (more than one across replicas for longer than the half-open limit: a split; a reconnect briefly counts the old session too)",
                &["cluster"],
            ),
            time_to_ready: d.histogram(
                "mtp_environment_ready_seconds",
                "Time from an environment's creation to its first Ready report by an agent",
                READY_BUCKETS,
                &["cluster"],
            ),
            drift_repairs: d.counter(
                "mtp_drift_repairs_total",
                "Drifted objects an agent reported repaired, by cluster",
                &["cluster"],
            ),
            reports_ignored: d.counter(
                "mtp_agent_reports_ignored_total",
                "Agent reports that changed nothing, by cluster, kind (ack, drift, prune_held, reissue) and why (not_applier: not the fenced applier at the current epoch; rate: over the drift budget)",
                &["cluster", "kind", "why"],
            ),
            usage_batches: d.counter(
                "mtp_usage_batches_total",
                "Usage batches received from agents, by cluster and result (stored; duplicate: stored before, answered and ignored)",
                &["cluster", "result"],
            ),
            usage_windows: d.counter(
                "mtp_usage_namespace_windows_total",
                "Windows of usage received, by cluster and result (stored, and unknown: namespace windows stored or not an environment of the cluster; expired: node windows older than the ingest horizon, dropped)",
                &["cluster", "result"],
            ),
            usage_rollup_hours: d.counter(
                "mtp_usage_rollup_hours_total",
                "Hours whose usage rollups this replica recomputed",
                &[],
            ),
            sessions_ended: d.counter(
                "mtp_agent_sessions_ended_total",
                "Agent sessions this replica ended, by cluster and why (closed, lost, half_open, shutdown, refused, replaced, revoked, stuck, store)",
                &["cluster", "why"],
            ),
            expiries: d.add(IntCounter::new(
                "mtp_environment_expiries_total",
                "Environments whose expiry time passed and that this replica marked for deletion",
            )),
            tenant_cost: d.float_gauge(
                "mtp_tenant_cost_month_to_date",
                "A tenant's cost in the current UTC month so far, in the price book's currency (the exact amount as a float; usage with no price in force is left out). From PostgreSQL, the same on every replica",
                &["tenant", "currency"],
            ),
            environment_cost: d.float_gauge(
                "mtp_environment_cost_month_to_date",
                "An environment's cost in the current UTC month so far, in the price book's currency",
                &["tenant", "environment", "currency"],
            ),
            tenant_budget: d.float_gauge(
                "mtp_tenant_budget_monthly",
                "A tenant's monthly budget, in the price book's currency",
                &["tenant", "currency"],
            ),
            budget_crossed: d.gauge(
                "mtp_budget_threshold_crossed",
                "1 when a tenant's month-to-date cost has reached the budget threshold (percent of the monthly budget), else 0",
                &["tenant", "threshold"],
            ),
            budget_alerts: d.add(IntCounter::new(
                "mtp_budget_alerts_total",
                "Budget thresholds this replica recorded as crossed (each fires once per tenant and month across replicas)",
            )),
            registry: d.0,
        }
    }

    /// Sets the cost gauges from one evaluation: month-to-date cost per
    /// tenant (nanos), budgets, and which thresholds are crossed. Replaces
    /// the previous values, so deleted tenants and budgets go away.
    pub fn set_cost(
        &self,
        currency: &str,
        tenants: &[(String, i128)],
        budgets: &[(String, i128)],
        crossed: &[(String, u32, bool)],
    ) {
        self.tenant_cost.reset();
        for (tenant, nanos) in tenants {
            self.tenant_cost
                .with_label_values(&[tenant.as_str(), currency])
                .set(units(*nanos));
        }
        self.tenant_budget.reset();
        for (tenant, nanos) in budgets {
            self.tenant_budget
                .with_label_values(&[tenant.as_str(), currency])
                .set(units(*nanos));
        }
        self.budget_crossed.reset();
        for (tenant, threshold, is) in crossed {
            self.budget_crossed
                .with_label_values(&[tenant.as_str(), &threshold.to_string()])
                .set(i64::from(*is));
        }
    }

    /// Sets the per-environment month-to-date cost (nanos), replacing the
    /// previous values.
    pub fn set_environment_cost(&self, currency: &str, environments: &[(String, String, i128)]) {
        self.environment_cost.reset();
        for (tenant, env, nanos) in environments {
            self.environment_cost
                .with_label_values(&[tenant.as_str(), env.as_str(), currency])
                .set(units(*nanos));
        }
    }

    pub fn budget_alerts_fired(&self, n: u64) {
        self.budget_alerts.inc_by(n);
    }

    pub fn observe_rpc(&self, method: &str, code: i32, elapsed: Duration) {
        self.rpc_requests
            .with_label_values(&[method, &code_name(code)])
            .inc();
        self.rpc_duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_db(&self, operation: &str, elapsed: Duration, ok: bool) {
        self.db_duration
            .with_label_values(&[operation, if ok { "ok" } else { "error" }])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the fleet gauges from PostgreSQL's view. Every live status gets a
    /// value (0 included), so an alert can tell "none" from "not reported".
    pub fn set_fleet(&self, summaries: &[ClusterSummary]) {
        for s in summaries {
            for status in EnvironmentStatus::ALL {
                if status == EnvironmentStatus::Deleted {
                    continue;
                }
                let n = s
                    .environments
                    .iter()
                    .find(|(st, _)| *st == status)
                    .map_or(0, |(_, n)| *n);
                self.environments
                    .with_label_values(&[s.cluster.as_str(), status.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.revision_lag
                .with_label_values(&[s.cluster.as_str()])
                .set(s.revision_lag());
        }
    }

    /// Counts an agent session of `cluster` until the returned guard is dropped.
    pub fn agent_connected(&self, cluster: &str) -> SessionGauges {
        self.agents_connected.with_label_values(&[cluster]).inc();
        SessionGauges {
            metrics: self.clone(),
            cluster: cluster.to_owned(),
            applier: false,
        }
    }

    pub fn observe_ready(&self, cluster: &str, after_creation: Duration) {
        self.time_to_ready
            .with_label_values(&[cluster])
            .observe(after_creation.as_secs_f64());
    }

    pub fn drift_repaired(&self, cluster: &str) {
        self.drift_repairs.with_label_values(&[cluster]).inc();
    }

    pub fn report_ignored(&self, cluster: &str, kind: &str, why: &str) {
        self.reports_ignored
            .with_label_values(&[cluster, kind, why])
            .inc();
    }

    pub fn usage_recorded(&self, cluster: &str, duplicate: bool, windows: u64, unknown: u64) {
        let result = if duplicate { "duplicate" } else { "stored" };
        self.usage_batches
            .with_label_values(&[cluster, result])
            .inc();
        self.usage_windows
            .with_label_values(&[cluster, "stored"])
            .inc_by(windows);
        self.usage_windows
            .with_label_values(&[cluster, "unknown"])
            .inc_by(unknown);
    }

    /// A batch dropped unanswered: the session's ingest queue was full.
    pub fn usage_dropped(&self, cluster: &str) {
        self.usage_batches
            .with_label_values(&[cluster, "queue_full"])
            .inc();
    }

    pub fn usage_expired(&self, cluster: &str, windows: u64) {
        self.usage_windows
            .with_label_values(&[cluster, "expired"])
            .inc_by(windows);
    }

    pub fn usage_rolled_up(&self, hours: u64) {
        self.usage_rollup_hours
            .with_label_values(&[] as &[&str])
            .inc_by(hours);
    }

    pub fn session_ended(&self, cluster: &str, why: &str) {
        self.sessions_ended.with_label_values(&[cluster, why]).inc();
    }

    pub fn expired(&self, environments: usize) {
        self.expiries
            .inc_by(u64::try_from(environments).unwrap_or(u64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

/// Nanos of a currency as a float of units (for gauges only; the exact
/// amount is in reports).
fn units(nanos: i128) -> f64 {
    nanos as f64 / 1e9
}

/// "Ok", "InvalidArgument", … as tonic names the codes.
fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

/// One open agent session in the gauges: counted as connected while it
/// lives, and as an applier while its agent holds that role.
#[derive(Debug)]
pub struct SessionGauges {
    metrics: Metrics,
    cluster: String,
    applier: bool,
}

impl SessionGauges {
    pub fn set_applier(&mut self, applier: bool) {
        if applier != self.applier {
            let gauge = self
                .metrics
                .appliers
                .with_label_values(&[self.cluster.as_str()]);
            if applier {
                gauge.inc();
            } else {
                gauge.dec();
            }
            self.applier = applier;
        }
    }
}

impl Drop for SessionGauges {
    fn drop(&mut self) {
        self.set_applier(false);
        self.metrics
            .agents_connected
            .with_label_values(&[self.cluster.as_str()])
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_gauges_follow_the_session_and_its_role() {
        let metrics = Metrics::new();
        let connected = |m: &Metrics| m.agents_connected.with_label_values(&["c1"]).get();
        let appliers = |m: &Metrics| m.appliers.with_label_values(&["c1"]).get();
        let mut first = metrics.agent_connected("c1");
        let second = metrics.agent_connected("c1");
        first.set_applier(true);
        first.set_applier(true);
        assert_eq!((connected(&metrics), appliers(&metrics)), (2, 1));
        drop(first);
        assert_eq!((connected(&metrics), appliers(&metrics)), (1, 0));
        drop(second);
        assert_eq!(connected(&metrics), 0);
    }

    #[test]
    fn fleet_gauges_report_zero_for_statuses_with_none() {
        let metrics = Metrics::new();
        metrics.set_fleet(&[ClusterSummary {
            cluster: "c1".into(),
            revision: 7,
            acknowledged_revision: 5,
            environments: vec![(EnvironmentStatus::Ready, 3)],
        }]);
        let text = metrics.render();
        assert!(
            text.contains(r#"mtp_environments{cluster="c1",status="ready"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mtp_environments{cluster="c1",status="failed"} 0"#),
            "{text}"
        );
        assert!(!text.contains(r#"status="deleted""#), "{text}");
        assert!(
            text.contains(r#"mtp_cluster_revision_lag{cluster="c1"} 2"#),
            "{text}"
        );
    }
}
