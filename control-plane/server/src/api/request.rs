//! Per-request plumbing as a tower layer: a request id on every call (taken
//! from the client's `x-request-id` or minted), echoed in the response, carried
//! by the call's log span, plus the per-RPC metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;

pub const REQUEST_ID: &str = "x-request-id";

/// The request id of a call (set by [`RequestLayer`]; minted if absent).
pub fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Accepts a client-chosen id only if it is short and printable, so it can go
/// into logs and the audit log safely.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Clone, Debug)]
pub struct RequestLayer {
    metrics: Metrics,
}

impl RequestLayer {
    pub fn new(metrics: Metrics) -> Self {
        RequestLayer { metrics }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestService<S> {
    inner: S,
    metrics: Metrics,
}

/// Metric label of a path: our own and the standard gRPC services by name,
/// everything else lumped together so junk paths cannot blow up cardinality.
fn method_label(path: &str) -> &str {
    let known = path.starts_with("/mtp.v1.")
        || path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.");
    if known && path.len() <= 96 {
        path
    } else {
        "other"
    }
}

impl<S, B, RB> Service<Request<B>> for RequestService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable(v))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let header = HeaderValue::from_str(&id).expect("request ids are printable ASCII");
        req.headers_mut().insert(REQUEST_ID, header.clone());
        let method = method_label(req.uri().path()).to_owned();
        let quiet = method.starts_with("/grpc.");
        let span = tracing::info_span!("rpc", method = %method, request_id = %id, actor = tracing::field::Empty);
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let start = Instant::now();
                let mut response = inner.call(req).await?;
                response.headers_mut().insert(REQUEST_ID, header);
                // Errors are "trailers-only" responses: the status is in the headers.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let elapsed = start.elapsed();
                metrics.observe_rpc(&method, code, elapsed);
                if quiet {
                    tracing::debug!(code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "rpc done");
                } else {
                    tracing::info!(code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "rpc done");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert!(acceptable("build-1234"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable(&"x".repeat(200)));
        assert_eq!(
            method_label("/mtp.v1.TenantService/CreateTenant"),
            "/mtp.v1.TenantService/CreateTenant"
        );
        assert_eq!(method_label("/random/junk"), "other");
    }
}
