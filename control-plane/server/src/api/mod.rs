//! The public gRPC API (`mtp.v1`): authentication of each call, then one
//! service implementation per resource, all over the same store.

pub mod agents;
mod audit;
mod clusters;
pub mod convert;
pub(crate) mod cost;
mod environments;
pub mod error;
mod profiles;
pub mod request;
mod tenants;
pub mod throttle;
mod tokens;

use mtp_core::access::Principal;
use mtp_store::{ChangeContext, Store};
use tonic::Request;

use self::error::ApiResult;

/// Shared state of every API service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    store: Store,
    throttle: throttle::AuthThrottle,
}

/// The authenticated caller of one request and what its changes are recorded as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub ctx: ChangeContext,
}

impl Api {
    pub fn new(store: Store) -> Self {
        Api {
            store,
            throttle: throttle::AuthThrottle::default(),
        }
    }

    /// Establishes who is calling from the `authorization: Bearer …` metadata.
    pub(crate) async fn caller<T>(&self, request: &Request<T>) -> ApiResult<Caller> {
        let request_id = request::request_id(request.metadata());
        let secret = bearer(request.metadata())?;
        let peer = request.remote_addr().map(|a| a.ip());
        let now = std::time::Instant::now();
        if let Err(wait) = self.throttle.check(peer, now) {
            return Err(error::ApiError::held_off(wait));
        }
        let principal = match self.store.authenticate(secret).await {
            Ok(p) => p,
            Err(mtp_store::Error::Domain(e @ mtp_core::Error::Unauthenticated(_))) => {
                self.throttle.failed(peer, now);
                return Err(mtp_store::Error::Domain(e).into());
            }
            Err(e) => return Err(e.into()),
        };
        tracing::Span::current().record("actor", principal.actor());
        Ok(Caller {
            ctx: ChangeContext {
                actor: principal.actor(),
                request_id,
            },
            principal,
        })
    }
}

/// The secret of an `authorization: Bearer …` metadata entry.
pub(crate) fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, mtp_core::Error> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            mtp_core::Error::Unauthenticated(
                "missing credentials: send the metadata 'authorization: Bearer <token>'".into(),
            )
        })
}
