//! One agent's session: the hello, then desired state sent by revision (a
//! snapshot or the changes after what the agent holds), acknowledgements and
//! drift recorded, keepalives both ways, and half-open detection. Why it ended
//! is typed, so a database outage is told apart from a bug or a peer's fault.

use std::time::Duration;

use mtp_core::agents::AgentIdentity;
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use mtp_store::RevisionNotice;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::AgentChannel;
use crate::api::convert::{desired_to_pb, namespace_results, timestamp};
use crate::api::error::ApiError;
use crate::metrics::SessionGauges;

/// A session with no message from the agent for this many keepalive
/// intervals is considered half-open and closed.
const MISSED_KEEPALIVES: u32 = 3;

/// However long an agent says its keepalive interval is, half-open detection
/// waits at most this many of ours, so no agent can switch it off.
const MAX_AGENT_KEEPALIVES: u32 = 10;

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    AgentClosed,
    AgentGone,
    HalfOpen,
    Shutdown,
    /// The agent broke the protocol; it was told why.
    Refused(&'static str),
    /// The store failed: unavailable (the agent reconnects later) or a bug.
    Store(mtp_store::Error),
}

impl From<mtp_store::Error> for SessionEnd {
    fn from(e: mtp_store::Error) -> Self {
        SessionEnd::Store(e)
    }
}

type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

pub(super) struct AgentSession {
    channel: AgentChannel,
    // Subscribed before the first read of the desired state, so no commit
    // between that read and the subscription can be missed.
    notices: broadcast::Receiver<RevisionNotice>,
    identity: AgentIdentity,
    outbound: Outbound,
    /// The highest revision sent to the agent.
    last_sent: i64,
    applier: bool,
    /// Present from the hello on: the session counts as connected.
    gauges: Option<SessionGauges>,
}

impl AgentSession {
    pub(super) fn new(channel: AgentChannel, identity: AgentIdentity, outbound: Outbound) -> Self {
        AgentSession {
            notices: channel.notices.subscribe(),
            channel,
            identity,
            outbound,
            last_sent: 0,
            applier: false,
            gauges: None,
        }
    }

    pub(super) async fn run(mut self, mut inbound: Streaming<pb::AgentMessage>) {
        let end = self.serve(&mut inbound).await;
        self.gauges = None;
        match end {
            SessionEnd::AgentClosed => tracing::info!("agent closed the session"),
            SessionEnd::AgentGone => tracing::info!("agent connection lost"),
            SessionEnd::HalfOpen => tracing::warn!(
                "no message from the agent within {MISSED_KEEPALIVES} keepalives; closing the half-open session"
            ),
            SessionEnd::Shutdown => tracing::info!("session closed for shutdown"),
            SessionEnd::Refused(why) => tracing::warn!(why, "session refused"),
            SessionEnd::Store(e) => {
                // The one error mapping logs the details (warn when the
                // database is away, error for anything else) and redacts.
                let status = Status::from(ApiError::from(e));
                tracing::warn!(code = ?status.code(), "session ended by a store failure");
                // Best effort, and before anything that may wait on the
                // database: never block on a full queue, the session is over
                // either way (the agent treats a plain end the same).
                let _ = self.outbound.try_send(Err(status));
            }
        }
        let store = &self.channel.store;
        if let Err(e) = store.agent_seen(&self.identity, false, false, None).await {
            tracing::warn!(error = %e, "could not record the agent as disconnected");
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<pb::AgentMessage>) -> SessionEnd {
        let hello = match self.hello(inbound).await {
            Ok(h) => h,
            Err(end) => return end,
        };
        if let Err(end) = self.start(&hello).await {
            return end;
        }
        self.follow(inbound, &hello).await
    }

    /// Waits for the hello that opens every session.
    async fn hello(
        &self,
        inbound: &mut Streaming<pb::AgentMessage>,
    ) -> Result<pb::AgentHello, SessionEnd> {
        let wait = self.channel.keepalive * MISSED_KEEPALIVES;
        match tokio::time::timeout(wait, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                kind: Some(AgentKind::Hello(h)),
            }))) => Ok(h),
            Ok(Ok(Some(_))) => Err(self
                .refuse("the first message of a session must be a hello")
                .await),
            Ok(Ok(None)) => Err(SessionEnd::AgentClosed),
            Ok(Err(_)) => Err(SessionEnd::AgentGone),
            Err(_) => Err(SessionEnd::HalfOpen),
        }
    }

    /// Records the agent as connected and sends what it lacks: the changes
    /// after the revision it holds, or a snapshot.
    async fn start(&mut self, hello: &pb::AgentHello) -> Result<(), SessionEnd> {
        self.applier = hello.applier;
        tracing::info!(applied_revision = hello.applied_revision, applier = hello.applier, version = %hello.agent_version, "agent connected");
        let store = &self.channel.store;
        store
            .agent_seen(
                &self.identity,
                true,
                self.applier,
                Some(&hello.agent_version),
            )
            .await?;
        let mut gauges = self.channel.metrics.agent_connected(&self.identity.cluster);
        gauges.set_applier(self.applier);
        self.gauges = Some(gauges);
        let mut since = (hello.applied_revision > 0).then_some(hello.applied_revision);
        let cluster = store.get_cluster(&self.identity.cluster).await?;
        if hello.applied_revision > cluster.revision {
            // The agent's state belongs to a history this database does
            // not have: only a snapshot can tell it what to keep.
            since = None;
            let revision = store
                .reissue_revisions(&self.identity, hello.applied_revision)
                .await?;
            tracing::warn!(
                agent_revision = hello.applied_revision,
                database_revision = cluster.revision,
                revision,
                "the agent holds a revision this database never issued (restored from a backup?); every environment re-issued above it"
            );
        }
        self.send_desired(since).await
    }

    /// The established session, until it ends.
    async fn follow(
        &mut self,
        inbound: &mut Streaming<pb::AgentMessage>,
        hello: &pb::AgentHello,
    ) -> SessionEnd {
        let keepalive = self.channel.keepalive;
        let mut ticker = tokio::time::interval(keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An agent configured with a longer interval than ours is not silent
        // between its keepalives.
        let agent_keepalive = Duration::from_millis(u64::from(hello.keepalive_ms))
            .min(keepalive * MAX_AGENT_KEEPALIVES);
        let silence_limit = keepalive.max(agent_keepalive) * MISSED_KEEPALIVES;
        let mut last_heard = Instant::now();
        let shutdown = self.channel.shutdown.clone();
        loop {
            let step = tokio::select! {
                () = shutdown.cancelled() => Err(SessionEnd::Shutdown),
                message = inbound.message() => {
                    last_heard = Instant::now();
                    match message {
                        Ok(Some(m)) => self.handle(m).await,
                        Ok(None) => Err(SessionEnd::AgentClosed),
                        Err(_) => Err(SessionEnd::AgentGone),
                    }
                }
                notice = self.notices.recv() => self.on_notice(notice).await,
                _ = ticker.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        Err(SessionEnd::HalfOpen)
                    } else {
                        self.on_tick().await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_notice(
        &mut self,
        notice: Result<RevisionNotice, broadcast::error::RecvError>,
    ) -> Result<(), SessionEnd> {
        let due = match notice {
            Ok(n) => n.cluster_id == self.identity.cluster_id && n.revision > self.last_sent,
            // Missed some notices: catch up from what we last sent.
            Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return Err(SessionEnd::Shutdown),
        };
        if due {
            self.send_desired(Some(self.last_sent)).await?;
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), SessionEnd> {
        self.keepalive()?;
        // Fallback for a lost notification (e.g. while the listener
        // reconnected): compare revisions on every beat. A failed check is
        // only logged: the next beat tries again.
        match self.channel.store.get_cluster(&self.identity.cluster).await {
            Ok(c) if c.revision > self.last_sent => self.send_desired(Some(self.last_sent)).await,
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "revision check failed");
                Ok(())
            }
        }
    }

    /// Sends a keepalive without waiting: a peer that does not read is what
    /// the silence check is there to catch.
    fn keepalive(&self) -> Result<(), SessionEnd> {
        let beat = pb::ControlMessage {
            kind: Some(ControlKind::Keepalive(pb::Keepalive {
                time: Some(timestamp(chrono::Utc::now())),
            })),
        };
        match self.outbound.try_send(Ok(beat)) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SessionEnd::AgentGone),
            _ => Ok(()),
        }
    }

    async fn refuse(&self, why: &'static str) -> SessionEnd {
        let _ = self.outbound.send(Err(Status::invalid_argument(why))).await;
        SessionEnd::Refused(why)
    }

    async fn handle(&mut self, message: pb::AgentMessage) -> Result<(), SessionEnd> {
        match message.kind {
            Some(AgentKind::Ack(ack)) => self.on_ack(ack).await,
            Some(AgentKind::Drift(d)) => {
                tracing::info!(namespace = %d.namespace, object = %d.object, repaired = d.repaired, "drift reported");
                self.channel
                    .store
                    .record_drift(&self.identity, &d.namespace, &d.object, &d.description)
                    .await?;
                if d.repaired {
                    self.channel.metrics.drift_repaired(&self.identity.cluster);
                }
                Ok(())
            }
            Some(AgentKind::Applier(state)) => self.on_applier(state.applier).await,
            // Answered at once: the agent detects a half-open stream by its
            // own interval, whatever ours is.
            Some(AgentKind::Keepalive(_)) => self.keepalive(),
            Some(AgentKind::Renew(_)) | Some(AgentKind::PruneHeld(_)) => Ok(()),
            Some(AgentKind::Hello(_)) | None => Err(self
                .refuse("unexpected message in an established session")
                .await),
        }
    }

    async fn on_ack(&mut self, ack: pb::RevisionAck) -> Result<(), SessionEnd> {
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
        let results = namespace_results(ack.results);
        let failed = results
            .iter()
            .filter(|(_, r)| matches!(r, mtp_core::agents::NamespaceReport::Failed(_)))
            .count();
        let outcome = self
            .channel
            .store
            .record_ack(&self.identity, ack.revision, &results)
            .await?;
        for after in outcome.first_ready {
            self.channel
                .metrics
                .observe_ready(&self.identity.cluster, after);
        }
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
            self.send(recorded).await?;
        }
        Ok(())
    }

    async fn on_applier(&mut self, applier: bool) -> Result<(), SessionEnd> {
        if applier != self.applier {
            tracing::info!(applier, "agent changed role");
        }
        self.applier = applier;
        if let Some(g) = &mut self.gauges {
            g.set_applier(applier);
        }
        let store = &self.channel.store;
        store
            .agent_seen(&self.identity, true, self.applier, None)
            .await?;
        if self.applier {
            store
                .mark_applying(self.identity.cluster_id, self.last_sent)
                .await?;
        }
        Ok(())
    }

    async fn send(&self, message: pb::ControlMessage) -> Result<(), SessionEnd> {
        self.outbound
            .send(Ok(message))
            .await
            .map_err(|_| SessionEnd::AgentGone)
    }

    /// Sends a snapshot (`since` = None) or the changes after `since`.
    async fn send_desired(&mut self, since: Option<i64>) -> Result<(), SessionEnd> {
        let store = &self.channel.store;
        let update = store.desired_state(self.identity.cluster_id, since).await?;
        if update.since == Some(update.revision) {
            // Nothing new, but the agent holds this revision: it may
            // acknowledge it (e.g. re-sending an ack lost in a cut). Say so,
            // so that it knows its state is current.
            self.last_sent = self.last_sent.max(update.revision);
            return self.send(desired_to_pb(&update)).await;
        }
        tracing::debug!(revision = update.revision, since = ?update.since, upserts = update.upserts.len(), deletes = update.deletes.len(), "sending desired state");
        self.send(desired_to_pb(&update)).await?;
        self.last_sent = update.revision;
        if self.applier {
            store
                .mark_applying(self.identity.cluster_id, update.revision)
                .await?;
        }
        Ok(())
    }
}
