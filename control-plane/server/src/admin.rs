//! The admin HTTP port: liveness, readiness (PostgreSQL reachable) and metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use mtp_store::Store;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    store: Store,
    metrics: Metrics,
}

pub fn router(store: Store, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { store, metrics })
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: PostgreSQL is unreachable\n".into(),
            )
        }
    }
}

async fn metrics_text(
    State(state): State<AdminState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
