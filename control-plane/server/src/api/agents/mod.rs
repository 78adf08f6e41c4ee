//! `AgentService`: agents register with a join token, then hold a session
//! (see [`session`]) in which they receive their own cluster's desired state
//! by revision and report what they applied. The agent's identity comes from
//! its credential only.

mod session;

use std::pin::Pin;
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
use super::convert::FromRequest;
use super::error::{ApiError, ApiResult};
use super::{bearer, request};
use crate::metrics::Metrics;

/// Shared state of the agent channel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentChannel {
    store: Store,
    notices: RevisionNotices,
    metrics: Metrics,
    keepalive: Duration,
    shutdown: CancellationToken,
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
        }
    }

    /// The one place an agent's identity is established: its credential.
    async fn identify<T>(&self, request: &Request<T>) -> ApiResult<AgentIdentity> {
        Ok(self
            .store
            .authenticate_agent(bearer(request.metadata())?)
            .await?)
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
        let registration =
            AgentRegistration::from_request(request.into_inner()).map_err(ApiError::from)?;
        let (identity, credential) = self
            .store
            .register_agent(&registration, &request_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RegisterAgentResponse {
            agent_id: identity.agent_id,
            cluster: identity.cluster,
            certificate_pem: credential,
            ..Default::default()
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
