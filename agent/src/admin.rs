//! The agent's admin HTTP port: liveness, readiness (a session to the control
//! plane is up and the applier role is known) and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What readiness is judged from.
#[derive(Debug, Clone)]
pub struct Readiness {
    connected: watch::Receiver<bool>,
    /// `None` until the lease elector's first round.
    role: watch::Receiver<Option<bool>>,
}

impl Readiness {
    pub fn new(connected: watch::Receiver<bool>, role: watch::Receiver<Option<bool>>) -> Self {
        Readiness { connected, role }
    }

    /// Ready, or why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if !*self.connected.borrow() {
            return Err("no session to the control plane");
        }
        if self.role.borrow().is_none() {
            return Err("the applier role is not known yet (lease not checked)");
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Metrics,
}

pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(
    State(state): State<AdminState>,
) -> ([(HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn readyz_needs_a_session_and_a_known_role_and_metrics_are_served() {
        let (connected, connected_rx) = watch::channel(false);
        let (role, role_rx) = watch::channel(None);
        let metrics = Metrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router(Readiness::new(connected_rx, role_rx), metrics.clone()),
            shutdown.clone(),
        ));

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("no session"), "{body}");
        connected.send_replace(true);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "the role is not known yet");
        assert!(body.contains("role"), "{body}");
        role.send_replace(Some(false));
        assert_eq!(
            get(addr, "/readyz").await,
            (200, "ready\n".into()),
            "a standby is ready too"
        );
        connected.send_replace(false);
        assert_eq!(get(addr, "/readyz").await.0, 503, "the session went away");

        metrics.set_connected(true);
        metrics.drift_repaired(2);
        let (code, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(text.contains("mtp_agent_connected 1"), "{text}");
        assert!(text.contains("mtp_agent_drift_repairs_total 2"), "{text}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
