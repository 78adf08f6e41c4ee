//! Prometheus metrics of the control plane: per-RPC counts and latencies, and
//! PostgreSQL latency per store operation.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    rpc_requests: IntCounterVec,
    rpc_duration: HistogramVec,
    db_duration: HistogramVec,
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

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let rpc_requests = IntCounterVec::new(
            Opts::new(
                "mtp_grpc_requests_total",
                "gRPC requests handled, by method and status code",
            ),
            &["method", "code"],
        )
        .expect("static metric definition");
        let rpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "mtp_grpc_request_duration_seconds",
                "gRPC request latency, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("static metric definition");
        let db_duration = HistogramVec::new(
            HistogramOpts::new(
                "mtp_db_operation_duration_seconds",
                "PostgreSQL latency per store operation",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "outcome"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(rpc_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rpc_duration.clone()),
            Box::new(db_duration.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            db_duration,
        }
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

/// "Ok", "InvalidArgument", … as tonic names the codes.
fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}
