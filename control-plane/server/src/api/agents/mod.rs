//! `AgentService`: agents register with a join token, then hold a session
//! (see [`session`]) in which they receive their own cluster's desired state
//! by revision and report what they applied. The agent's identity comes from
//! its client certificate (signed by the agent CA, see `crate::ca`) and its
//! row in the store, never from message content.

mod session;
mod usage;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use mtp_core::agents::{AgentIdentity, AgentRegistration};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_service_server::AgentService;
use mtp_store::{RevisionNotices, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use self::session::AgentSession;
use super::convert::{FromRequest, timestamp};
use super::error::{ApiError, ApiResult};
use super::request;
use super::throttle::AuthThrottle;
use crate::ca::{self, AgentCa};
use crate::metrics::Metrics;

/// Shared state of the agent channel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentChannel {
    store: Store,
    notices: RevisionNotices,
    metrics: Metrics,
    keepalive: Duration,
    shutdown: CancellationToken,
    /// Signs agent certificates (registration, renewal).
    ca: Arc<AgentCa>,
    /// Whether the port serves TLS: without it no agent can present a
    /// certificate, and sessions are refused with a message saying so.
    tls: bool,
    /// Failed registrations per peer: a flood of made-up join tokens is
    /// held off before it reaches PostgreSQL.
    throttle: AuthThrottle,
    /// Usage windows older than this are answered and dropped.
    usage_max_age: chrono::TimeDelta,
}

impl AgentChannel {
    pub fn new(
        store: Store,
        notices: RevisionNotices,
        metrics: Metrics,
        keepalive: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        AgentChannel {
            store,
            notices,
            metrics,
            keepalive,
            shutdown,
            ca: Arc::new(
                AgentCa::load(&ca::AgentCaSource::Ephemeral, Duration::from_secs(3600))
                    .expect("an in-memory CA can always be generated"),
            ),
            tls: false,
            throttle: AuthThrottle::default(),
            usage_max_age: session::USAGE_MAX_AGE,
        }
    }

    /// The ingest horizon of usage windows (default: `session::USAGE_MAX_AGE`, 2 days).
    pub fn with_usage_max_age(mut self, max_age: Duration) -> Self {
        self.usage_max_age = chrono::TimeDelta::from_std(max_age).unwrap_or(session::USAGE_MAX_AGE);
        self
    }

    /// The agent CA that signs certificates, and whether the port serves TLS.
    pub fn with_identity(mut self, ca: Arc<AgentCa>, tls: bool) -> Self {
        self.ca = ca;
        self.tls = tls;
        self
    }

    /// The one place an agent's identity is established: the client
    /// certificate TLS verified against the agent CA names an agent, its
    /// cluster and a serial; the store says whether that agent exists in that
    /// cluster, is not revoked, and still accepts that serial.
    async fn identify<T>(&self, request: &Request<T>) -> ApiResult<AgentIdentity> {
        let refuse = |why: &str| ApiError::from(mtp_core::Error::Unauthenticated(why.into()));
        if !self.tls {
            return Err(refuse(
                "agent sessions need TLS: they are identified by client certificates, and this control plane serves plaintext (--dev); start it with --tls-cert and --tls-key",
            ));
        }
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_deref().and_then(|c| c.first()) else {
            return Err(refuse(
                "agent sessions need the agent's client certificate (from Register with a join token); none was presented",
            ));
        };
        let presented = ca::presented(leaf.as_ref()).ok_or_else(|| {
            refuse(
                "the client certificate does not name an mtp agent (CN = agent id, O = cluster id)",
            )
        })?;
        Ok(self.store.authenticate_agent(&presented).await?)
    }

    /// A new certificate for `identity`'s (possibly new) key, asked for over
    /// its session: the new serial becomes current and the one the session
    /// was opened with the previous one, in one audited transaction (so it
    /// survives a control-plane restart). The agent uses the new certificate
    /// from its next connection on.
    pub async fn renew(
        &self,
        identity: &AgentIdentity,
        csr_pem: &str,
    ) -> ApiResult<pb::CertificateIssued> {
        let csr = ca::parse_csr(csr_pem)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let ca = self.ca.clone();
        let (issued, pem) = self
            .store
            .renew_agent_certificate(identity, &request_id, move |who| ca.sign(csr, who))
            .await?;
        tracing::info!(agent = %identity.agent_id, serial = %issued.serial, expire_time = %issued.expire_time, "agent certificate renewed");
        Ok(pb::CertificateIssued {
            certificate_pem: pem,
            expire_time: Some(timestamp(issued.expire_time)),
        })
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

/// Control messages queued for one agent before the session waits on it.
const OUTBOUND_QUEUE: usize = 16;

#[tonic::async_trait]
impl AgentService for AgentChannel {
    async fn register(
        &self,
        request: Request<pb::RegisterAgentRequest>,
    ) -> Result<Response<pb::RegisterAgentResponse>, Status> {
        let request_id = request::request_id(request.metadata());
        let peer = request.remote_addr().map(|a| a.ip());
        let now = std::time::Instant::now();
        if let Err(wait) = self.throttle.check(peer, now) {
            return Err(ApiError::held_off(wait).into());
        }
        let r = request.into_inner();
        // The CSR is checked before the join token is spent on it.
        let csr = ca::parse_csr(&r.csr_pem).map_err(ApiError::from)?;
        let registration = AgentRegistration::from_request(r).map_err(ApiError::from)?;
        let ca = self.ca.clone();
        let (identity, issued, pem) = self
            .store
            .register_agent(&registration, &request_id, move |who| ca.sign(csr, who))
            .await
            .inspect_err(|e| {
                if matches!(
                    e,
                    mtp_store::Error::Domain(mtp_core::Error::Unauthenticated(_))
                ) {
                    self.throttle.failed(peer, now);
                }
            })
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RegisterAgentResponse {
            agent_id: identity.agent_id,
            cluster: identity.cluster,
            certificate_pem: pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
            expire_time: Some(timestamp(issued.expire_time)),
            cluster_id: identity.cluster_id.to_string(),
        }))
    }

    type SessionStream = ControlStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = self.identify(&request).await?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let span = tracing::info_span!("agent_session", cluster = %identity.cluster, node = %identity.node_name, agent = %identity.agent_id);
        let session = AgentSession::new(self.clone(), identity, tx);
        tokio::spawn(session.run(request.into_inner()).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
