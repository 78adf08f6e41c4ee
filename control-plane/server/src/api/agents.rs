//! `AgentService`: agents register with a join token, then hold a session in
//! which they receive their own cluster's desired state by revision and report
//! what they applied. The agent's identity comes from its credential only.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use mtp_core::names::validate_object_name;
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::agent_service_server::AgentService;
use mtp_proto::v1::control_message::Kind as ControlKind;
use mtp_store::{AgentIdentity, DesiredState, NamespaceReport, Store};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::convert::{namespace_config, timestamp};
use super::error::{ApiError, ApiResult};
use super::{bearer, request};

/// A revision change of one cluster, as announced by PostgreSQL NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionNotice {
    pub cluster_id: Uuid,
    pub revision: i64,
}

impl RevisionNotice {
    pub fn parse(payload: &str) -> Option<Self> {
        let (cluster, revision) = payload.split_once(':')?;
        Some(RevisionNotice {
            cluster_id: cluster.parse().ok()?,
            revision: revision.parse().ok()?,
        })
    }
}

/// Shared state of the agent channel.
#[derive(Clone, Debug)]
pub struct AgentChannel {
    store: Store,
    notices: broadcast::Sender<RevisionNotice>,
    keepalive: Duration,
    shutdown: CancellationToken,
}

/// A session with no message from the agent for this many keepalive
/// intervals is considered half-open and closed.
const MISSED_KEEPALIVES: u32 = 3;

impl AgentChannel {
    pub fn new(
        store: Store,
        notices: broadcast::Sender<RevisionNotice>,
        keepalive: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        AgentChannel {
            store,
            notices,
            keepalive,
            shutdown,
        }
    }

    async fn identify<T>(&self, request: &Request<T>) -> ApiResult<AgentIdentity> {
        Ok(self
            .store
            .authenticate_agent(bearer(request.metadata())?)
            .await?)
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentChannel {
    async fn register(
        &self,
        request: Request<pb::RegisterAgentRequest>,
    ) -> Result<Response<pb::RegisterAgentResponse>, Status> {
        let request_id = request::request_id(request.metadata());
        let r = request.into_inner();
        let node = r.node_name.trim();
        if node.is_empty()
            || node.len() > 253
            || node
                .split('.')
                .any(|p| validate_object_name("node_name", p).is_err())
        {
            return Err(ApiError::from(mtp_core::Error::invalid(
                "node_name",
                "must be a DNS-1123 subdomain",
            ))
            .into());
        }
        if r.agent_version.len() > 64 {
            return Err(ApiError::from(mtp_core::Error::invalid(
                "agent_version",
                "at most 64 characters",
            ))
            .into());
        }
        let (identity, credential) = self
            .store
            .register_agent(&r.join_token, node, &r.agent_version, &request_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RegisterAgentResponse {
            agent_id: identity.agent_id,
            cluster: identity.cluster,
            credential,
        }))
    }

    type SessionStream = ControlStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = self.identify(&request).await?;
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!("agent_session", cluster = %identity.cluster, node = %identity.node_name, agent = %identity.agent_id);
        let session = Session {
            channel: self.clone(),
            notices: self.notices.subscribe(),
            identity,
            outbound: tx,
            last_sent: 0,
            applier: false,
        };
        tokio::spawn(session.run(request.into_inner()).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Why a session ended (for the log).
enum End {
    AgentClosed,
    AgentGone,
    HalfOpen,
    Shutdown,
    Failed(String),
}

struct Session {
    channel: AgentChannel,
    // Subscribed before the first read of the desired state, so no commit
    // between that read and the subscription can be missed.
    notices: broadcast::Receiver<RevisionNotice>,
    identity: AgentIdentity,
    outbound: mpsc::Sender<Result<pb::ControlMessage, Status>>,
    last_sent: i64,
    applier: bool,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::AgentMessage>) {
        let end = self.serve(&mut inbound).await;
        let store = &self.channel.store;
        if let Err(e) = store.agent_seen(&self.identity, false, false, None).await {
            tracing::warn!(error = %e, "could not record the agent as disconnected");
        }
        match end {
            End::AgentClosed => tracing::info!("agent closed the session"),
            End::AgentGone => tracing::info!("agent connection lost"),
            End::HalfOpen => tracing::warn!(
                "no message from the agent within {} keepalives; closing the half-open session",
                MISSED_KEEPALIVES
            ),
            End::Shutdown => tracing::info!("session closed for shutdown"),
            End::Failed(e) => tracing::warn!(error = %e, "session failed"),
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<pb::AgentMessage>) -> End {
        let keepalive = self.channel.keepalive;
        let hello =
            match tokio::time::timeout(keepalive * MISSED_KEEPALIVES, inbound.message()).await {
                Ok(Ok(Some(pb::AgentMessage {
                    kind: Some(AgentKind::Hello(h)),
                }))) => h,
                Ok(Ok(Some(_))) => {
                    return self
                        .refuse("the first message of a session must be a hello")
                        .await;
                }
                Ok(Ok(None)) => return End::AgentClosed,
                Ok(Err(_)) => return End::AgentGone,
                Err(_) => return End::HalfOpen,
            };
        self.applier = hello.applier;
        tracing::info!(applied_revision = hello.applied_revision, applier = hello.applier, version = %hello.agent_version, "agent connected");
        if let Err(e) = self
            .channel
            .store
            .agent_seen(
                &self.identity,
                true,
                self.applier,
                Some(&hello.agent_version),
            )
            .await
        {
            return End::Failed(e.to_string());
        }
        let mut since = (hello.applied_revision > 0).then_some(hello.applied_revision);
        match self.channel.store.get_cluster(&self.identity.cluster).await {
            Ok(cluster) if hello.applied_revision > cluster.revision => {
                // The agent's state belongs to a history this database does
                // not have: only a snapshot can tell it what to keep.
                since = None;
                match self
                    .channel
                    .store
                    .reissue_revisions(&self.identity, hello.applied_revision)
                    .await
                {
                    Ok(revision) => tracing::warn!(
                        agent_revision = hello.applied_revision,
                        database_revision = cluster.revision,
                        revision,
                        "the agent holds a revision this database never issued (restored from a backup?); every environment re-issued above it"
                    ),
                    Err(e) => return End::Failed(e.to_string()),
                }
            }
            Ok(_) => {}
            Err(e) => return End::Failed(e.to_string()),
        }
        if let Err(end) = self.send_desired(since).await {
            return end;
        }

        let mut ticker = tokio::time::interval(keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An agent configured with a longer interval than ours is not silent
        // between its keepalives.
        // Capped, so that no agent can switch half-open detection off.
        let agent_keepalive =
            Duration::from_millis(u64::from(hello.keepalive_ms)).min(keepalive * 10);
        let silence_limit = keepalive.max(agent_keepalive) * MISSED_KEEPALIVES;
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                () = self.channel.shutdown.cancelled() => return End::Shutdown,
                message = inbound.message() => {
                    last_heard = Instant::now();
                    match message {
                        Ok(Some(m)) => if let Err(end) = self.handle(m).await { return end },
                        Ok(None) => return End::AgentClosed,
                        Err(_) => return End::AgentGone,
                    }
                }
                notice = self.notices.recv() => {
                    let due = match notice {
                        Ok(n) => n.cluster_id == self.identity.cluster_id && n.revision > self.last_sent,
                        // Missed some notices: catch up from what we last sent.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return End::Shutdown,
                    };
                    if due && let Err(end) = self.send_desired(Some(self.last_sent)).await {
                        return end;
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        return End::HalfOpen;
                    }
                    let beat = pb::ControlMessage { kind: Some(ControlKind::Keepalive(pb::Keepalive { time: Some(timestamp(chrono::Utc::now())) })) };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = self.outbound.try_send(Ok(beat)) {
                        return End::AgentGone;
                    }
                    // Fallback for a lost notification (e.g. while the
                    // listener reconnected): compare revisions on every beat.
                    match self.channel.store.get_cluster(&self.identity.cluster).await {
                        Ok(c) if c.revision > self.last_sent => {
                            if let Err(end) = self.send_desired(Some(self.last_sent)).await { return end }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "revision check failed"),
                    }
                }
            }
        }
    }

    async fn refuse(&self, why: &str) -> End {
        let _ = self.outbound.send(Err(Status::invalid_argument(why))).await;
        End::Failed(why.to_owned())
    }

    async fn handle(&mut self, message: pb::AgentMessage) -> Result<(), End> {
        let store = &self.channel.store;
        match message.kind {
            Some(AgentKind::Ack(ack)) => {
                if !self.applier {
                    tracing::warn!(
                        revision = ack.revision,
                        "ignoring an acknowledgement from an agent that is not the applier"
                    );
                    return Ok(());
                }
                if ack.revision > self.last_sent {
                    return Err(self
                        .refuse("acknowledged a revision that was never sent")
                        .await);
                }
                let results: Vec<(String, NamespaceReport)> = ack
                    .results
                    .into_iter()
                    .filter_map(|r| {
                        let report = match pb::NamespaceOutcome::try_from(r.outcome) {
                            Ok(pb::NamespaceOutcome::Verified) => NamespaceReport::Verified,
                            Ok(pb::NamespaceOutcome::Failed) => NamespaceReport::Failed(r.reason),
                            Ok(pb::NamespaceOutcome::Deleted) => NamespaceReport::Deleted,
                            _ => return None,
                        };
                        Some((r.namespace, report))
                    })
                    .collect();
                let failed = results
                    .iter()
                    .filter(|(_, r)| matches!(r, NamespaceReport::Failed(_)))
                    .count();
                store
                    .record_ack(&self.identity, ack.revision, &results)
                    .await
                    .map_err(|e| End::Failed(e.to_string()))?;
                tracing::info!(
                    revision = ack.revision,
                    namespaces = results.len(),
                    failed,
                    "revision acknowledged"
                );
                if ack.sequence != 0 {
                    let recorded = pb::ControlMessage {
                        kind: Some(ControlKind::AckRecorded(pb::AckRecorded {
                            sequence: ack.sequence,
                            revision: ack.revision,
                        })),
                    };
                    if self.outbound.send(Ok(recorded)).await.is_err() {
                        return Err(End::AgentGone);
                    }
                }
            }
            Some(AgentKind::Drift(d)) => {
                tracing::info!(namespace = %d.namespace, object = %d.object, repaired = d.repaired, "drift reported");
                store
                    .record_drift(&self.identity, &d.namespace, &d.object, &d.description)
                    .await
                    .map_err(|e| End::Failed(e.to_string()))?;
            }
            Some(AgentKind::Applier(state)) => {
                if state.applier != self.applier {
                    tracing::info!(applier = state.applier, "agent changed role");
                }
                self.applier = state.applier;
                store
                    .agent_seen(&self.identity, true, self.applier, None)
                    .await
                    .map_err(|e| End::Failed(e.to_string()))?;
                if self.applier {
                    store
                        .mark_applying(self.identity.cluster_id, self.last_sent)
                        .await
                        .map_err(|e| End::Failed(e.to_string()))?;
                }
            }
            Some(AgentKind::Keepalive(_)) => {
                // Answered at once: the agent detects a half-open stream by
                // its own interval, whatever ours is.
                let reply = pb::ControlMessage {
                    kind: Some(ControlKind::Keepalive(pb::Keepalive {
                        time: Some(timestamp(chrono::Utc::now())),
                    })),
                };
                // Never wait on a full queue for a keepalive: a peer that
                // does not read is what the silence check is there to catch.
                if let Err(mpsc::error::TrySendError::Closed(_)) = self.outbound.try_send(Ok(reply))
                {
                    return Err(End::AgentGone);
                }
            }
            Some(AgentKind::Hello(_)) | None => {
                return Err(self
                    .refuse("unexpected message in an established session")
                    .await);
            }
        }
        Ok(())
    }

    /// Sends a snapshot (`since` = None) or the changes after `since`.
    async fn send_desired(&mut self, since: Option<i64>) -> Result<(), End> {
        let store = &self.channel.store;
        let state: DesiredState = store
            .desired_state(self.identity.cluster_id, since)
            .await
            .map_err(|e| End::Failed(e.to_string()))?;
        let kind = match state.since {
            None => ControlKind::Snapshot(pb::DesiredSnapshot {
                revision: state.revision,
                namespaces: state.upserts.iter().map(namespace_config).collect(),
            }),
            Some(from) => {
                if state.revision == from {
                    // Nothing new, but the agent holds `from`: it may
                    // acknowledge it (e.g. re-sending an ack lost in a cut).
                    // Say so, so that it knows its state is current.
                    self.last_sent = self.last_sent.max(from);
                    let current = pb::DesiredChanges {
                        from_revision: from,
                        revision: from,
                        upserts: Vec::new(),
                        deletes: Vec::new(),
                    };
                    return self
                        .outbound
                        .send(Ok(pb::ControlMessage {
                            kind: Some(ControlKind::Changes(current)),
                        }))
                        .await
                        .map_err(|_| End::AgentGone);
                }
                ControlKind::Changes(pb::DesiredChanges {
                    from_revision: from,
                    revision: state.revision,
                    upserts: state.upserts.iter().map(namespace_config).collect(),
                    deletes: state.deletes.clone(),
                })
            }
        };
        tracing::debug!(revision = state.revision, since = ?state.since, upserts = state.upserts.len(), deletes = state.deletes.len(), "sending desired state");
        self.outbound
            .send(Ok(pb::ControlMessage { kind: Some(kind) }))
            .await
            .map_err(|_| End::AgentGone)?;
        self.last_sent = state.revision;
        if self.applier {
            store
                .mark_applying(self.identity.cluster_id, state.revision)
                .await
                .map_err(|e| End::Failed(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_or_are_ignored() {
        let id = Uuid::new_v4();
        assert_eq!(
            RevisionNotice::parse(&format!("{id}:42")),
            Some(RevisionNotice {
                cluster_id: id,
                revision: 42
            })
        );
        assert_eq!(RevisionNotice::parse("junk"), None);
        assert_eq!(RevisionNotice::parse(&format!("{id}:x")), None);
    }
}
