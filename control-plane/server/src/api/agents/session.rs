//! One agent's session: the hello, then who the agent is for this control
//! plane (its one live session, whether it is the fenced applier), desired
//! state sent by revision in pages, reports checked against the fence and
//! their bounds, keepalives both ways, half-open and stuck-reader detection.
//! Why it ended is typed, so a database outage is told apart from a bug, a
//! peer's fault or a replaced session.

use std::time::Duration;

use mtp_core::agents::AgentIdentity;
use mtp_core::claims::{self, AckClaim, DriftClaim, HeldPrune, ReportBudget};
use mtp_core::usage::UsageBatchClaim;
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use mtp_store::{AgentNotice, ApplierDecision, RevisionNotice, SessionStanding};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};
use uuid::Uuid;

use super::AgentChannel;
use super::usage::UsageIngest;
use crate::api::convert::{DESIRED_PAGE_BYTES, FromRequest, desired_pages, timestamp, usage_batch};
use crate::api::error::ApiError;
use crate::metrics::SessionGauges;

/// A session with no message from the agent for this many keepalive
/// intervals is considered half-open and closed. Also how many intervals a
/// send to the agent may wait for room before the agent counts as stuck,
/// and how long a silent applier keeps its fence against other candidates.
const MISSED_KEEPALIVES: u32 = 3;

/// However long an agent says its keepalive interval is, half-open detection
/// waits at most this many of ours, so no agent can switch it off.
const MAX_AGENT_KEEPALIVES: u32 = 10;

/// Drift reports one session may have recorded: a burst, then a rate. The
/// rest is dropped and counted; the agent repairs drift either way.
const DRIFT_BURST: u32 = 100;
const DRIFT_PER_SECOND: u32 = 10;

/// The shortest time between two certificate renewals of one session.
const RENEWAL_SPACING: Duration = Duration::from_secs(60);
/// Usage windows older than this are refused by default: their raw
/// partitions may be dropped already (see `--usage-raw-retention-days`),
/// and an agent's spool holds 24 hours by default. `--usage-max-age`
/// changes it.
pub(crate) const USAGE_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    AgentClosed,
    AgentGone,
    HalfOpen,
    Shutdown,
    /// The agent broke the protocol or sent something out of bounds; it was told why.
    Refused(String),
    /// A newer session of the same agent took over (on any replica).
    Replaced,
    /// The agent was revoked.
    Revoked,
    /// The agent did not read what was sent for too long.
    Stuck,
    /// The store failed: unavailable (the agent reconnects later) or a bug.
    Store(mtp_store::Error),
}

impl SessionEnd {
    fn label(&self) -> &'static str {
        match self {
            SessionEnd::AgentClosed => "closed",
            SessionEnd::AgentGone => "lost",
            SessionEnd::HalfOpen => "half_open",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::Refused(_) => "refused",
            SessionEnd::Replaced => "replaced",
            SessionEnd::Revoked => "revoked",
            SessionEnd::Stuck => "stuck",
            SessionEnd::Store(_) => "store",
        }
    }
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
    agent_notices: broadcast::Receiver<AgentNotice>,
    /// This session's own claim notice has come back on `agent_notices`.
    /// Notices are delivered in commit order, so everything heard before
    /// it (an earlier session's claim, the registration that issued this
    /// session's certificate, a revocation undone by a re-registration)
    /// committed before this session's claim and is history to it.
    heard_own_claim: bool,
    identity: AgentIdentity,
    /// This session's id: the agent's one live session while the agent row
    /// names it.
    id: Uuid,
    outbound: Outbound,
    /// The highest revision sent to the agent.
    last_sent: i64,
    /// The agent wants to apply (it holds its cluster's Lease).
    candidate: bool,
    /// The epoch this session was fenced in at, while it is the applier.
    epoch: Option<i64>,
    /// The held prune revision whose confirmation was passed on.
    confirmed_prune: i64,
    drift_budget: ReportBudget,
    /// When this session last asked for a certificate.
    last_renewal: Option<Instant>,
    /// Present from the hello on: the session counts as connected.
    gauges: Option<SessionGauges>,
    /// Usage batches are stored by a task of their own (from the first one on).
    usage: Option<UsageIngest>,
}

impl AgentSession {
    pub(super) fn new(channel: AgentChannel, identity: AgentIdentity, outbound: Outbound) -> Self {
        AgentSession {
            notices: channel.notices.subscribe(),
            agent_notices: channel.notices.subscribe_agents(),
            heard_own_claim: false,
            channel,
            identity,
            id: Uuid::new_v4(),
            outbound,
            last_sent: 0,
            candidate: false,
            epoch: None,
            confirmed_prune: 0,
            last_renewal: None,
            drift_budget: ReportBudget::new(
                DRIFT_BURST,
                DRIFT_PER_SECOND,
                Instant::now().into_std(),
            ),
            gauges: None,
            usage: None,
        }
    }

    pub(super) async fn run(mut self, mut inbound: Streaming<pb::AgentMessage>) {
        let end = self.serve(&mut inbound).await;
        self.gauges = None;
        self.usage = None;
        self.channel
            .metrics
            .session_ended(&self.identity.cluster, end.label());
        match end {
            SessionEnd::AgentClosed => tracing::info!("agent closed the session"),
            SessionEnd::AgentGone => tracing::info!("agent connection lost"),
            SessionEnd::HalfOpen => tracing::warn!(
                "no message from the agent within {MISSED_KEEPALIVES} keepalives; closing the half-open session"
            ),
            SessionEnd::Shutdown => tracing::info!("session closed for shutdown"),
            SessionEnd::Refused(why) => tracing::warn!(why, "session refused"),
            SessionEnd::Replaced => {
                tracing::info!("a newer session of this agent took over; closing this one");
                let _ = self.outbound.try_send(Err(Status::aborted(
                    "replaced by a newer session of this agent",
                )));
            }
            SessionEnd::Revoked => {
                tracing::warn!("the agent was revoked; closing its session");
                let _ = self
                    .outbound
                    .try_send(Err(Status::unauthenticated("this agent was revoked")));
            }
            SessionEnd::Stuck => tracing::warn!(
                "the agent did not take what was sent within {MISSED_KEEPALIVES} keepalives; closing the session"
            ),
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
        if let Err(e) = store.end_session(&self.identity, self.id, self.epoch).await {
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
                .refuse("the first message of a session must be a hello".into())
                .await),
            Ok(Ok(None)) => Err(SessionEnd::AgentClosed),
            Ok(Err(_)) => Err(SessionEnd::AgentGone),
            Err(_) => Err(SessionEnd::HalfOpen),
        }
    }

    /// Makes this the agent's live session, tells the agent which cluster
    /// identity it speaks to and whether it applies, and sends what it
    /// lacks: the changes after the revision it holds, or a snapshot.
    async fn start(&mut self, hello: &pb::AgentHello) -> Result<(), SessionEnd> {
        let version = claims::agent_text("hello.agent_version", hello.agent_version.clone(), 64)
            .map_err(|e| e.to_string());
        let version = match version {
            Ok(v) => v,
            Err(why) => return Err(self.refuse(why).await),
        };
        tracing::info!(applied_revision = hello.applied_revision, applier = hello.applier, version = %version, "agent connected");
        let store = &self.channel.store;
        if !store
            .claim_session(&self.identity, self.id, &version)
            .await?
        {
            return Err(SessionEnd::Revoked);
        }
        self.gauges = Some(self.channel.metrics.agent_connected(&self.identity.cluster));
        let info = ControlKind::Session(pb::SessionInfo {
            cluster_id: self.identity.cluster_id.to_string(),
            cluster: self.identity.cluster.clone(),
            agent_id: self.identity.agent_id.clone(),
        });
        self.send(info).await?;
        if !hello.cluster_id.is_empty() && hello.cluster_id != self.identity.cluster_id.to_string()
        {
            // The agent holds prunes across such a change; say why here.
            tracing::error!(
                agent_cluster_id = %hello.cluster_id,
                cluster_id = %self.identity.cluster_id,
                "the agent's state was applied for another cluster identity (a different or re-created database?); it will not prune"
            );
        }
        self.candidate = hello.applier;
        if self.candidate {
            self.claim_applier().await?;
        }
        let cluster = self
            .channel
            .store
            .get_cluster(&self.identity.cluster)
            .await?;
        let since = match self
            .resume_point(hello.applied_revision, cluster.revision)
            .await
        {
            Ok(since) => since,
            Err(why) => return Err(self.refuse(why).await),
        };
        self.send_desired(since).await
    }

    /// Where to resume an agent that holds `held`: after it, or from a
    /// snapshot. Held above the cluster means a history this database does
    /// not have (restored from a backup?): the fenced applier's claim
    /// re-issues every environment above it (bounded); anyone else only gets
    /// a snapshot. A claim too far ahead is refused.
    async fn resume_point(
        &mut self,
        held: i64,
        cluster_revision: i64,
    ) -> Result<Option<i64>, String> {
        if held < 0 {
            return Err("hello.applied_revision: must not be negative".into());
        }
        if held <= cluster_revision {
            return Ok((held > 0).then_some(held));
        }
        if let Err(e) = claims::reissue_above(cluster_revision, held) {
            return Err(format!("hello.applied_{e}"));
        }
        let Some(epoch) = self.epoch else {
            tracing::warn!(
                agent_revision = held,
                database_revision = cluster_revision,
                "a non-applier holds a revision this database never issued; sending a snapshot, not re-issuing"
            );
            return Ok(None);
        };
        match self
            .channel
            .store
            .reissue_revisions(&self.identity, epoch, held)
            .await
        {
            Ok(Some(revision)) => tracing::warn!(
                agent_revision = held,
                database_revision = cluster_revision,
                revision,
                "the applier holds a revision this database never issued (restored from a backup?); every environment re-issued above it"
            ),
            Ok(None) => self.lost_fence("reissue"),
            Err(e) => return Err(format!("hello.applied_revision: {e}")),
        }
        Ok(None)
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
                        Err(status) => Err(self.inbound_failed(status).await),
                    }
                }
                notice = self.notices.recv() => self.on_notice(notice).await,
                notice = self.agent_notices.recv() => self.on_agent_notice(notice),
                Some(e) = usage_failure(&mut self.usage) => Err(SessionEnd::Store(e)),
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

    /// The agent's stream failed: a message this side could not take (too
    /// big, undecodable) is the agent's fault and it is told so; anything
    /// else is a lost connection.
    async fn inbound_failed(&self, status: Status) -> SessionEnd {
        match status.code() {
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument | Code::Internal => {
                self.refuse(format!("unreadable message: {}", status.message()))
                    .await
            }
            _ => SessionEnd::AgentGone,
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

    /// A newer session of this agent, or its revocation, ends this one at
    /// once. (Missed notices are caught by the beat's check.)
    fn on_agent_notice(
        &mut self,
        notice: Result<AgentNotice, broadcast::error::RecvError>,
    ) -> Result<(), SessionEnd> {
        match notice {
            Ok(n) if n.agent_id() != self.identity.agent_id => Ok(()),
            Ok(AgentNotice::Session { session, .. }) if session == self.id => {
                self.heard_own_claim = true;
                Ok(())
            }
            // Committed before this session's claim: not about it. (Were
            // this session's own notice lost, the beat's row check is the
            // fallback.)
            Ok(_) if !self.heard_own_claim => Ok(()),
            Ok(AgentNotice::Session { .. }) => Err(SessionEnd::Replaced),
            Ok(AgentNotice::Revoked { .. }) => Err(SessionEnd::Revoked),
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
            Err(broadcast::error::RecvError::Closed) => Err(SessionEnd::Shutdown),
        }
    }

    async fn on_tick(&mut self) -> Result<(), SessionEnd> {
        self.keepalive()?;
        // The fallbacks for a lost notification (e.g. while the listener
        // reconnected), on every beat: is this still the agent's live
        // session, and did the revision move? A failed check is only
        // logged: the next beat tries again.
        let store = &self.channel.store;
        match store.touch_session(&self.identity, self.id).await {
            Ok(SessionStanding::Replaced) => return Err(SessionEnd::Replaced),
            Ok(SessionStanding::Revoked) => return Err(SessionEnd::Revoked),
            Ok(SessionStanding::Live) => {}
            Err(e) => {
                tracing::debug!(error = %e, "session check failed");
                return Ok(());
            }
        }
        if self.candidate && self.epoch.is_none() {
            self.claim_applier().await?;
        }
        let cluster = match self.channel.store.get_cluster(&self.identity.cluster).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "revision check failed");
                return Ok(());
            }
        };
        if self.epoch.is_some()
            && cluster.applier_agent_id.as_deref() != Some(&self.identity.agent_id)
        {
            // Fenced out by a grant on another replica.
            self.lost_fence("grant");
            self.send(ControlKind::Applier(pb::ApplierGrant {
                granted: false,
                epoch: cluster.applier_epoch,
            }))
            .await?;
        }
        if let (Some(_), Some(held)) = (self.epoch, &cluster.held_prune)
            && held.confirmed_revision > self.confirmed_prune
        {
            self.confirmed_prune = held.confirmed_revision;
            tracing::warn!(
                revision = held.confirmed_revision,
                "passing an operator's prune confirmation to the applier"
            );
            self.send(ControlKind::PruneConfirmed(pb::PruneConfirmed {
                revision: held.confirmed_revision,
            }))
            .await?;
        }
        if cluster.revision > self.last_sent {
            self.send_desired(Some(self.last_sent)).await?;
        }
        Ok(())
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

    async fn refuse(&self, why: String) -> SessionEnd {
        let _ = self
            .outbound
            .try_send(Err(Status::invalid_argument(why.clone())));
        SessionEnd::Refused(why)
    }

    async fn handle(&mut self, message: pb::AgentMessage) -> Result<(), SessionEnd> {
        match message.kind {
            Some(AgentKind::Ack(ack)) => match AckClaim::from_request(ack) {
                Ok(ack) => self.on_ack(ack).await,
                Err(e) => Err(self.refuse(e.to_string()).await),
            },
            Some(AgentKind::Drift(d)) => match DriftClaim::from_request(d) {
                Ok(drift) => self.on_drift(drift).await,
                Err(e) => Err(self.refuse(e.to_string()).await),
            },
            Some(AgentKind::PruneHeld(p)) => match HeldPrune::from_request(p) {
                Ok(held) => self.on_prune_held(held).await,
                Err(e) => Err(self.refuse(e.to_string()).await),
            },
            Some(AgentKind::Applier(state)) => self.on_candidacy(state.applier).await,
            Some(AgentKind::Usage(mut batch)) => {
                let now = chrono::Utc::now();
                let oldest = now - self.channel.usage_max_age;
                // Windows past the horizon are answered and counted, never
                // refused: an agent back from a long outage would otherwise
                // resend them on every session, wedged.
                let before = batch.windows.len();
                batch.windows.retain(|w| {
                    w.start
                        .as_ref()
                        .is_none_or(|t| t.seconds >= oldest.timestamp())
                });
                let expired = (before - batch.windows.len()) as u64;
                if expired > 0 {
                    tracing::info!(
                        expired,
                        "usage windows older than the ingest horizon dropped"
                    );
                    self.channel
                        .metrics
                        .usage_expired(&self.identity.cluster, expired);
                }
                match usage_batch(batch, now, oldest) {
                    Ok(batch) => self.on_usage(batch).await,
                    Err(e) => Err(self.refuse(e.to_string()).await),
                }
            }
            Some(AgentKind::Renew(r)) => {
                // One renewal per session is what an agent needs; a second
                // within a minute is refused rather than signed and audited.
                let now = Instant::now();
                if self
                    .last_renewal
                    .is_some_and(|t| now.duration_since(t) < RENEWAL_SPACING)
                {
                    return Err(self
                        .refuse(format!(
                            "renew: at most one renewal per {RENEWAL_SPACING:?} per session"
                        ))
                        .await);
                }
                self.last_renewal = Some(now);
                let issued = self.channel.renew(&self.identity, &r.csr_pem).await;
                match issued {
                    Ok(c) => self.send(ControlKind::Certificate(c)).await,
                    Err(e) => {
                        let status = Status::from(e);
                        tracing::warn!(code = ?status.code(), message = status.message(), "certificate renewal refused");
                        Err(self.refuse(format!("renew: {}", status.message())).await)
                    }
                }
            }
            // Answered at once: the agent detects a half-open stream by its
            // own interval, whatever ours is.
            Some(AgentKind::Keepalive(_)) => self.keepalive(),
            Some(AgentKind::Hello(_)) | None => Err(self
                .refuse("unexpected message in an established session".into())
                .await),
        }
    }

    /// The epoch to record a report under, or `None` (counted, logged) when
    /// this session is not the fenced applier.
    fn applier_epoch(&self, kind: &str) -> Option<i64> {
        if self.epoch.is_none() {
            tracing::warn!(
                kind,
                "ignoring a report from an agent that is not the fenced applier"
            );
            self.channel
                .metrics
                .report_ignored(&self.identity.cluster, kind, "not_applier");
        }
        self.epoch
    }

    /// The store found another agent (or a newer epoch) fenced in.
    fn lost_fence(&mut self, kind: &str) {
        tracing::warn!(kind, epoch = ?self.epoch, "this session is no longer the fenced applier");
        self.channel
            .metrics
            .report_ignored(&self.identity.cluster, kind, "not_applier");
        self.epoch = None;
        if let Some(g) = &mut self.gauges {
            g.set_applier(false);
        }
    }

    async fn on_ack(&mut self, ack: AckClaim) -> Result<(), SessionEnd> {
        let Some(epoch) = self.applier_epoch("ack") else {
            return Ok(());
        };
        if ack.revision > self.last_sent {
            return Err(self
                .refuse(format!(
                    "ack.revision: {} was never sent (latest sent: {})",
                    ack.revision, self.last_sent
                ))
                .await);
        }
        let failed = ack
            .results
            .iter()
            .filter(|(_, r)| matches!(r, mtp_core::agents::NamespaceReport::Failed(_)))
            .count();
        let store = &self.channel.store;
        let Some(outcome) = store.record_ack(&self.identity, epoch, &ack).await? else {
            self.lost_fence("ack");
            return self
                .send(ControlKind::Applier(pb::ApplierGrant {
                    granted: false,
                    epoch,
                }))
                .await;
        };
        for after in outcome.first_ready {
            self.channel
                .metrics
                .observe_ready(&self.identity.cluster, after);
        }
        tracing::info!(
            revision = ack.revision,
            namespaces = ack.results.len(),
            failed,
            "revision acknowledged"
        );
        if let Some(stamp) = ack.highest_live_stamp() {
            self.reissue_above_stamp(epoch, stamp).await?;
        }
        if ack.sequence != 0 {
            let recorded = ControlKind::AckRecorded(pb::AckRecorded {
                sequence: ack.sequence,
                revision: ack.revision,
            });
            self.send(recorded).await?;
        }
        Ok(())
    }

    /// Namespaces stamped with a revision newer than anything this database
    /// issued (state restored from a backup older than the cluster's
    /// objects): re-issue above the highest such stamp, so they are updated
    /// instead of left alone forever. A stamp too far ahead is logged and
    /// left (it cannot push the counter to its end).
    async fn reissue_above_stamp(&mut self, epoch: i64, stamp: i64) -> Result<(), SessionEnd> {
        match self
            .channel
            .store
            .reissue_revisions(&self.identity, epoch, stamp)
            .await
        {
            Ok(Some(revision)) => {
                tracing::warn!(
                    stamp,
                    revision,
                    "namespaces carry a revision stamp this database never issued; every environment re-issued above it"
                );
                Ok(())
            }
            Ok(None) => {
                self.lost_fence("reissue");
                Ok(())
            }
            Err(mtp_store::Error::Domain(e)) => {
                tracing::error!(stamp, error = %e, "a namespace stamp is too far above the cluster's revision to re-issue above; fix the namespace's mtp.io/revision annotation");
                self.channel.metrics.report_ignored(
                    &self.identity.cluster,
                    "reissue",
                    "out_of_bounds",
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every agent reports its own node's usage, applier or not. Stored at
    /// most once (the batch id is the key); every copy is answered, so the
    /// agent can drop it from its spool.
    /// Hands the batch to this session's ingest task: stored and answered
    /// there, in order, while this loop goes on with desired state.
    async fn on_usage(&mut self, batch: UsageBatchClaim) -> Result<(), SessionEnd> {
        let channel = &self.channel;
        self.usage
            .get_or_insert_with(|| {
                UsageIngest::start(
                    channel.store.clone(),
                    channel.metrics.clone(),
                    self.identity.clone(),
                    self.outbound.clone(),
                )
            })
            .submit(batch);
        Ok(())
    }

    async fn on_drift(&mut self, drift: DriftClaim) -> Result<(), SessionEnd> {
        let Some(epoch) = self.applier_epoch("drift") else {
            return Ok(());
        };
        if !self.drift_budget.take(Instant::now().into_std()) {
            tracing::debug!(namespace = %drift.namespace, "drift report over this session's budget; dropped");
            self.channel
                .metrics
                .report_ignored(&self.identity.cluster, "drift", "rate");
            return Ok(());
        }
        tracing::info!(namespace = %drift.namespace, object = %drift.object, repaired = drift.repaired, "drift reported");
        if !self
            .channel
            .store
            .record_drift(&self.identity, epoch, &drift)
            .await?
        {
            self.lost_fence("drift");
            return Ok(());
        }
        if drift.repaired {
            self.channel.metrics.drift_repaired(&self.identity.cluster);
        }
        Ok(())
    }

    async fn on_prune_held(&mut self, held: HeldPrune) -> Result<(), SessionEnd> {
        let Some(epoch) = self.applier_epoch("prune_held") else {
            return Ok(());
        };
        tracing::warn!(
            revision = held.revision,
            would_delete = held.would_delete,
            managed = held.managed,
            "the applier holds a prune pass; confirm with `mtp cluster confirm-prune`"
        );
        if !self
            .channel
            .store
            .hold_prune(&self.identity, epoch, &held)
            .await?
        {
            self.lost_fence("prune_held");
        }
        Ok(())
    }

    /// The agent's candidacy changed (its Lease was won or lost).
    async fn on_candidacy(&mut self, candidate: bool) -> Result<(), SessionEnd> {
        if candidate != self.candidate {
            tracing::info!(candidate, "agent changed candidacy");
        }
        self.candidate = candidate;
        match (candidate, self.epoch) {
            (true, None) => self.claim_applier().await,
            (false, Some(epoch)) => {
                self.channel
                    .store
                    .release_applier(&self.identity, epoch)
                    .await?;
                self.epoch = None;
                if let Some(g) = &mut self.gauges {
                    g.set_applier(false);
                }
                self.send(ControlKind::Applier(pb::ApplierGrant {
                    granted: false,
                    epoch,
                }))
                .await
            }
            _ => Ok(()),
        }
    }

    /// Asks the store to fence this agent in; tells the agent when granted.
    async fn claim_applier(&mut self) -> Result<(), SessionEnd> {
        let stale_after = self.channel.keepalive * MISSED_KEEPALIVES;
        match self
            .channel
            .store
            .claim_applier(&self.identity, self.id, stale_after)
            .await?
        {
            ApplierDecision::Granted { epoch } => {
                self.epoch = Some(epoch);
                if let Some(g) = &mut self.gauges {
                    g.set_applier(true);
                }
                self.send(ControlKind::Applier(pb::ApplierGrant {
                    granted: true,
                    epoch,
                }))
                .await?;
                // What was sent before the grant may still be pending.
                self.channel
                    .store
                    .mark_applying(self.identity.cluster_id, self.last_sent)
                    .await?;
                Ok(())
            }
            ApplierDecision::Held { by } => {
                // Said every time, so the agent never applies on its Lease
                // alone while another agent is fenced in.
                tracing::debug!(holder = %by, "another agent is the fenced applier; candidacy kept");
                self.send(ControlKind::Applier(pb::ApplierGrant {
                    granted: false,
                    epoch: 0,
                }))
                .await
            }
        }
    }

    /// Sends one message, waiting at most the stuck limit for room, and
    /// never past shutdown.
    async fn send(&self, kind: ControlKind) -> Result<(), SessionEnd> {
        let message = pb::ControlMessage { kind: Some(kind) };
        let limit = self.channel.keepalive * MISSED_KEEPALIVES;
        tokio::select! {
            () = self.channel.shutdown.cancelled() => Err(SessionEnd::Shutdown),
            sent = tokio::time::timeout(limit, self.outbound.send(Ok(message))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(SessionEnd::AgentGone),
                Err(_) => Err(SessionEnd::Stuck),
            },
        }
    }

    /// Sends a snapshot (`since` = None) or the changes after `since`, in pages.
    async fn send_desired(&mut self, since: Option<i64>) -> Result<(), SessionEnd> {
        let store = &self.channel.store;
        let update = store.desired_state(self.identity.cluster_id, since).await?;
        let pages = desired_pages(&update, DESIRED_PAGE_BYTES);
        if update.since == Some(update.revision) {
            // Nothing new, but the agent holds this revision: it may
            // acknowledge it (e.g. re-sending an ack lost in a cut). Say so,
            // so that it knows its state is current.
            self.last_sent = self.last_sent.max(update.revision);
        } else {
            tracing::debug!(revision = update.revision, since = ?update.since, upserts = update.upserts.len(), deletes = update.deletes.len(), pages = pages.len(), "sending desired state");
        }
        for page in pages {
            if let Some(kind) = page.kind {
                self.send(kind).await?;
            }
        }
        if update.since == Some(update.revision) {
            return Ok(());
        }
        self.last_sent = update.revision;
        if self.epoch.is_some() {
            store
                .mark_applying(self.identity.cluster_id, update.revision)
                .await?;
        }
        Ok(())
    }
}

/// The next store failure of the session's usage ingest (pending forever
/// while there is none, or no ingest yet).
async fn usage_failure(usage: &mut Option<UsageIngest>) -> Option<mtp_store::Error> {
    match usage {
        Some(u) => u.failures.recv().await,
        None => std::future::pending().await,
    }
}
