//! The connection to the control plane: registration with the join token
//! (a CSR over a key made here; the signed certificate is the agent's
//! identity), then sessions over mutual TLS that say hello with the stored
//! revision, renew the certificate when half its lifetime is gone, pass desired state
//! to the reconciler and its reports back (through the `Outbox`), send
//! keepalives, detect a half-open stream, and reconnect with jittered
//! exponential backoff, and send usage batches from the spool (only when no
//! report waits, at most four unrecorded, all again on a new session).
//! `wire` is where reports become protobuf.

mod pages;
mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::agent_service_client::AgentServiceClient;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::desired::StateDir;
use crate::identity::{self, Enrollment};
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::reconciler::{AgentStatus, Input, Outbound};
use crate::usage::{Outgoing, UsageLink};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long connecting and opening a session may take, beyond the
/// half-open limit, before the attempt counts as lost.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `http://` or `https://` URL of the control plane's gRPC port.
    pub control_plane: String,
    /// PEM CA to trust for an `https://` control plane.
    pub ca_cert: Option<PathBuf>,
    pub join_token: Option<String>,
    pub node_name: String,
    pub keepalive: Duration,
    /// Silent keepalive periods after which the stream counts as half-open.
    pub missed_keepalives: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

pub struct Sessions {
    pub config: SessionConfig,
    pub state_dir: StateDir,
    pub to_reconciler: mpsc::Sender<Input>,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    pub status: watch::Receiver<AgentStatus>,
    pub fence: Fence,
    pub connected: watch::Sender<bool>,
    pub metrics: Metrics,
    /// Where registration and renewal stand (start with `Default`).
    pub identity: IdentityState,
    /// The usage spool to send from (`None`: usage is off).
    pub usage: Option<UsageLink>,
}

/// The session's view of the agent's identity.
#[derive(Debug, Default)]
pub struct IdentityState {
    /// The identity the current session was opened with.
    current: Option<Enrollment>,
    /// The key of a renewal asked for in this session, waiting for its
    /// certificate (dropped with the session: the next one asks again).
    pending_key: Option<String>,
    /// The stored identity was refused: register with the join token before
    /// using it again (it is replaced only once that succeeds).
    reregister: bool,
    /// The plaintext warning was logged.
    warned_plaintext: bool,
}

/// How a session ended, and what the next one should do about it.
enum Ended {
    Shutdown,
    /// Start over with a full snapshot.
    NeedSnapshot,
    /// The credential was refused: register again if a join token is at hand.
    Unauthenticated(Status),
    /// Connection failed, was cut or went silent; `productive` if it got as
    /// far as receiving desired state (resets the backoff).
    Lost {
        why: String,
        productive: bool,
    },
}

/// An opened session: the outbound stream and the inbound one.
struct Open {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::ControlMessage>,
}

impl Sessions {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        // Reports are kept across a disconnect by kind (see `outbox`); acks
        // are not: a new session gets a full status ack instead.
        let mut outbox = Outbox::new(self.metrics.clone());
        // Usage batches stay in the spool across sessions; each session
        // sends again what was not recorded.
        let mut usage = self.usage.clone().map(Outgoing::new);
        let mut want_snapshot = false;
        loop {
            outbox.session_ended();
            let ended = self
                .session(&mut outbox, usage.as_mut(), want_snapshot, &shutdown)
                .await;
            self.set_connected(false);
            outbox.session_ended();
            want_snapshot = false;
            match ended {
                Ended::Shutdown => return,
                Ended::NeedSnapshot => {
                    want_snapshot = true;
                    attempt = 0;
                    continue;
                }
                Ended::Unauthenticated(status) => self.refused(&status),
                Ended::Lost { why, productive } => {
                    if productive {
                        attempt = 0;
                    }
                    tracing::warn!(reason = %why, "control plane session ended; reconnecting");
                }
            }
            let delay = backoff(
                attempt,
                self.config.backoff_initial,
                self.config.backoff_max,
            );
            attempt = attempt.saturating_add(1);
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                attempt,
                "waiting before reconnecting"
            );
            let until = Instant::now() + delay;
            // Keep collecting what the reconciler says while waiting.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(until) => break,
                    m = self.outbound.recv() => match m {
                        None => return,
                        Some(Outbound::Report(r)) => outbox.push(r),
                        Some(Outbound::NeedSnapshot) => want_snapshot = true,
                    }
                }
            }
        }
    }

    /// The control plane refused the stored identity (revoked, replaced,
    /// expired, or another control plane's). It is never deleted: with a
    /// join token at hand the next attempt registers again and replaces it
    /// only once that succeeded; without one the agent keeps retrying (an
    /// operator may still fix it on the control plane's side).
    fn refused(&mut self, status: &Status) {
        if self.config.join_token.is_some() {
            tracing::warn!(
                message = status.message(),
                "the control plane refused this agent's certificate; registering again with the join token"
            );
            self.identity.reregister = true;
        } else {
            tracing::error!(
                message = status.message(),
                state_dir = %self.state_dir.path().display(),
                "the control plane refused this agent's certificate and no join token is configured: retrying with backoff; to re-admit this node mint a token (`mtp cluster join-token create <cluster>`) and restart with --join-token-file"
            );
        }
    }

    fn set_connected(&self, connected: bool) {
        let _ = self.connected.send(connected);
        self.metrics.set_connected(connected);
    }

    /// A connection to the control plane: plain TLS (registration), or
    /// mutual TLS presenting `identity` (sessions).
    async fn channel(&mut self, identity: Option<&Enrollment>) -> Result<Channel, String> {
        let url = self.config.control_plane.trim().to_string();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("control plane address {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(self.config.keepalive)
            .keep_alive_timeout(self.config.keepalive * self.config.missed_keepalives.max(1));
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.config.ca_cert {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("reading CA certificate {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(identity) = identity {
                tls = tls.identity(identity.tls_identity());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS setup: {e}"))?;
        } else if !self.identity.warned_plaintext {
            self.identity.warned_plaintext = true;
            if is_loopback(&url) {
                tracing::warn!(
                    url,
                    "plaintext http:// to the control plane: only a --dev control plane serves it, and it refuses agent sessions (they need client certificates over TLS)"
                );
            } else {
                tracing::warn!(
                    url,
                    "PLAINTEXT http:// TO A NON-LOOPBACK CONTROL PLANE: the join token travels unencrypted and agent sessions are refused; use https:// with --ca-cert"
                );
            }
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))
    }

    /// The identity to open a session with: the stored one, unless there is
    /// none or it was refused (or expired) and a join token is at hand — then
    /// a new registration, stored only once it succeeded.
    async fn credential(&mut self, shutdown: &CancellationToken) -> Result<Enrollment, Ended> {
        let stored = self.state_dir.enrollment().map_err(|e| Ended::Lost {
            why: format!("reading the stored identity: {e}"),
            productive: false,
        })?;
        let expired = stored
            .as_ref()
            .is_some_and(|e| e.expired(SystemTime::now()));
        match stored {
            Some(e) if !self.identity.reregister && !expired => return Ok(e),
            Some(e) if self.config.join_token.is_none() => {
                if expired {
                    tracing::error!(agent = %e.agent_id, "this agent's certificate expired and no join token is configured: mint one (`mtp cluster join-token create <cluster>`) and restart with --join-token-file");
                }
                // Keep trying what is stored: an operator may still fix it.
                return Ok(e);
            }
            _ => {}
        }
        let Some(token) = self.config.join_token.clone() else {
            return Err(Ended::Lost {
                why: format!(
                    "no stored identity in {} and no --join-token-file to register with",
                    self.state_dir.path().display()
                ),
                productive: false,
            });
        };
        let lost = |why: String| Ended::Lost {
            why,
            productive: false,
        };
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Err(Ended::Shutdown),
            c = self.channel(None) => c.map_err(lost)?,
        };
        let (key_pem, csr_pem) =
            identity::new_key_and_csr().map_err(|e| lost(format!("generating a key: {e}")))?;
        let registered = AgentServiceClient::new(channel)
            .register(pb::RegisterAgentRequest {
                join_token: token,
                node_name: self.config.node_name.clone(),
                agent_version: AGENT_VERSION.into(),
                csr_pem,
            })
            .await;
        let response = match registered {
            Ok(r) => r.into_inner(),
            Err(s) => {
                // Next time, try the stored identity again (if any): the
                // refusal that brought us here may have been put right.
                self.identity.reregister = false;
                return Err(lost(format!(
                    "registering with the join token: {}: {}",
                    s.code(),
                    s.message()
                )));
            }
        };
        let enrollment = Enrollment {
            agent_id: response.agent_id,
            cluster: response.cluster,
            cluster_id: response.cluster_id,
            key_pem,
            certificate_pem: response.certificate_pem,
            ca_certificate_pem: response.ca_certificate_pem,
            issue_time: identity::seconds(SystemTime::now()),
            expire_time: expire_seconds(response.expire_time.as_ref()),
        };
        self.state_dir
            .save_enrollment(&enrollment)
            .map_err(|e| lost(format!("storing the identity: {e}")))?;
        self.identity.reregister = false;
        tracing::info!(cluster = %enrollment.cluster, agent = %enrollment.agent_id, "registered with the control plane");
        Ok(enrollment)
    }

    /// A renewal request if one is due and none is waiting: a new key each
    /// time (kept here until its certificate arrives).
    fn renewal(&mut self) -> Option<pb::AgentMessage> {
        let current = self.identity.current.as_ref()?;
        if self.identity.pending_key.is_some() || !current.renewal_due(SystemTime::now()) {
            return None;
        }
        match identity::new_key_and_csr() {
            Ok((key_pem, csr_pem)) => {
                tracing::info!(agent = %current.agent_id, "certificate past half its lifetime; asking for a renewal");
                self.identity.pending_key = Some(key_pem);
                Some(pb::AgentMessage {
                    kind: Some(AgentKind::Renew(pb::RenewCertificate { csr_pem })),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "could not generate a key for the renewal");
                None
            }
        }
    }

    async fn session(
        &mut self,
        outbox: &mut Outbox,
        usage: Option<&mut Outgoing>,
        want_snapshot: bool,
        shutdown: &CancellationToken,
    ) -> Ended {
        let open = match self.open(want_snapshot, shutdown).await {
            Ok(open) => open,
            Err(ended) => return ended,
        };
        self.set_connected(true);
        self.fence.session_started();
        if self.to_reconciler.send(Input::Connected).await.is_err() {
            return Ended::Shutdown;
        }
        self.serve(open, outbox, usage, shutdown).await
    }

    /// Connects, registers if need be, and says hello with the revision of
    /// the desired state held (0 to ask for a snapshot).
    async fn open(
        &mut self,
        want_snapshot: bool,
        shutdown: &CancellationToken,
    ) -> Result<Open, Ended> {
        self.identity.pending_key = None;
        let credential = self.credential(shutdown).await?;
        // Bounded as a whole: a TCP connection that is accepted and then
        // goes silent (a frozen middlebox) would hold the TLS handshake, or
        // the call, forever; the connect timeout covers only the TCP part.
        let limit = OPEN_TIMEOUT + self.config.keepalive * self.config.missed_keepalives.max(1);
        let stalled = |what: &str| Ended::Lost {
            why: format!("{what} took longer than {limit:?}"),
            productive: false,
        };
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Err(Ended::Shutdown),
            c = tokio::time::timeout(limit, self.channel(Some(&credential))) => match c {
                Ok(c) => c.map_err(|why| Ended::Lost { why, productive: false })?,
                Err(_) => return Err(stalled("connecting (TCP and TLS)")),
            },
        };

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
        let resume_revision = if want_snapshot {
            0
        } else {
            self.status.borrow().desired_revision
        };
        let cluster_id = self.status.borrow().cluster_id.clone();
        let hello = wire::hello(
            resume_revision,
            self.fence.is_held(),
            self.config.keepalive,
            &cluster_id,
        );
        let _ = tx.send(hello).await;
        let request = tonic::Request::new(ReceiverStream::new(rx));
        let opened = tokio::time::timeout(
            limit,
            AgentServiceClient::new(channel)
                .max_decoding_message_size(wire::MAX_CONTROL_MESSAGE_BYTES)
                .max_encoding_message_size(wire::MAX_CONTROL_MESSAGE_BYTES)
                .session(request),
        )
        .await
        .map_err(|_| stalled("opening the session"))?;
        let inbound = match opened {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unauthenticated || tls_refused(&s) => {
                return Err(Ended::Unauthenticated(s));
            }
            Err(s) => {
                return Err(Ended::Lost {
                    why: format!("opening the session: {}: {}", s.code(), s.message()),
                    productive: false,
                });
            }
        };
        tracing::info!(cluster = %credential.cluster, agent = %credential.agent_id, applied_revision = resume_revision, "connected to the control plane");
        self.identity.current = Some(credential);
        Ok(Open { tx, inbound })
    }

    /// Runs an open session: desired state in (pages assembled into whole
    /// updates), the applier grant onto the fence, reports out (from the
    /// outbox, as the stream takes them), keepalives both ways. However it
    /// ends, the grant ends with it.
    async fn serve(
        &mut self,
        open: Open,
        outbox: &mut Outbox,
        mut usage: Option<&mut Outgoing>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let Open { tx, mut inbound } = open;
        if let Some(u) = usage.as_deref_mut() {
            u.session_started();
        }
        let keepalive = self.config.keepalive;
        let silent_limit = keepalive * self.config.missed_keepalives.max(1);
        let mut ticker = tokio::time::interval(keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut productive = false;
        // The update whose last page has not arrived; a cut discards it.
        let mut pages = pages::Pages::default();
        // The rest of a report that became several messages (a long ack).
        let mut sending: VecDeque<pb::AgentMessage> = VecDeque::new();
        let lost = |productive| Ended::Lost {
            why: "stream closed".into(),
            productive,
        };
        let ended = loop {
            let ready = may_send(&sending, outbox, usage.as_deref_mut());
            let link = usage.as_deref().map(|u| u.link().clone());
            tokio::select! {
                () = shutdown.cancelled() => break Ended::Shutdown,
                // New batches in the spool: look again.
                () = spooled(link.as_ref()) => {}
                message = inbound.message() => {
                    last_heard = Instant::now();
                    let kind = match message {
                        Ok(Some(pb::ControlMessage { kind: Some(kind) })) => kind,
                        Ok(Some(_)) => continue,
                        Ok(None) => break Ended::Lost { why: "the control plane closed the session".into(), productive },
                        Err(s) if s.code() == Code::Unauthenticated => break Ended::Unauthenticated(s),
                        Err(s) => break Ended::Lost { why: format!("{}: {}", s.code(), s.message()), productive },
                    };
                    let inbound = match wire::input(kind, &mut pages) {
                        Ok(inbound) => inbound,
                        Err(e) => {
                            tracing::error!(error = %e, "the control plane broke the paging protocol; update dropped, asking for a snapshot");
                            // Not at once: a control plane that keeps doing
                            // it must not get a reconnect loop.
                            let pause = backoff(4, self.config.backoff_initial, self.config.backoff_max);
                            tokio::select! {
                                () = shutdown.cancelled() => break Ended::Shutdown,
                                () = tokio::time::sleep(pause) => break Ended::NeedSnapshot,
                            }
                        }
                    };
                    let input = match inbound {
                        wire::Inbound::Input { input, desired } => {
                            productive |= desired;
                            input
                        }
                        wire::Inbound::Grant(grant) => {
                            // On the fence first: a withdrawal stops a pass
                            // under way at its next write.
                            if grant.granted {
                                self.fence.grant(grant.epoch);
                            } else {
                                self.fence.withdraw();
                            }
                            Input::Grant(grant)
                        }
                        wire::Inbound::Certificate(certificate) => {
                            self.on_certificate(certificate);
                            continue;
                        }
                        wire::Inbound::UsageRecorded(id) => {
                            if let Some(u) = usage.as_deref_mut() {
                                u.recorded(id);
                            }
                            continue;
                        }
                        wire::Inbound::Nothing => continue,
                    };
                    if self.to_reconciler.send(input).await.is_err() {
                        break Ended::Shutdown;
                    }
                }
                out = self.outbound.recv() => match out {
                    None => break Ended::Shutdown,
                    Some(Outbound::NeedSnapshot) => break Ended::NeedSnapshot,
                    Some(Outbound::Report(r)) => outbox.push(r),
                },
                permit = tx.reserve(), if ready => {
                    let Ok(permit) = permit else { break lost(productive) };
                    if let Some(message) = next_message(&mut sending, outbox, usage.as_deref_mut()) {
                        permit.send(message);
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > silent_limit {
                        break Ended::Lost {
                            why: format!("nothing heard from the control plane for {silent_limit:?} (half-open connection)"),
                            productive,
                        };
                    }
                    if tx.send(wire::keepalive()).await.is_err() {
                        break lost(productive);
                    }
                    if let Some(renew) = self.renewal()
                        && tx.send(renew).await.is_err()
                    {
                        break lost(productive);
                    }
                }
            }
        };
        if pages.in_progress() {
            tracing::warn!("the session ended in the middle of an update; its pages are discarded");
        }
        // No grant outlives its session: the fence at once, the reconciler
        // next. Until the next session the Lease alone decides (see `Fence`).
        self.fence.session_ended();
        let _ = self.to_reconciler.send(Input::SessionEnded).await;
        ended
    }

    /// A renewed client certificate arrived over the session: stored with
    /// its key in one atomic write; the next connection uses it. (The
    /// control plane accepts the old one until the new one is first used, so
    /// a failure here loses nothing: the next session asks again.)
    fn on_certificate(&mut self, certificate: pb::CertificateIssued) {
        let (Some(key_pem), Some(current)) = (
            self.identity.pending_key.take(),
            self.identity.current.as_ref(),
        ) else {
            tracing::warn!("a certificate arrived that this agent did not ask for; ignored");
            return;
        };
        let renewed = current.renewed(
            key_pem,
            certificate.certificate_pem,
            expire_seconds(certificate.expire_time.as_ref()),
        );
        match self.state_dir.save_enrollment(&renewed) {
            Ok(()) => {
                tracing::info!(agent = %renewed.agent_id, expire_time = renewed.expire_time, "renewed certificate stored; the next connection uses it");
                self.identity.current = Some(renewed);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not store the renewed certificate; keeping the current one")
            }
        }
    }
}

/// Whether a message waits for the stream: a report (or the rest of one),
/// or else a usage batch that may go.
fn may_send(
    sending: &VecDeque<pb::AgentMessage>,
    outbox: &Outbox,
    usage: Option<&mut Outgoing>,
) -> bool {
    !sending.is_empty() || !outbox.is_empty() || usage.is_some_and(|u| u.ready())
}

/// The next message for the stream: the rest of the report being sent,
/// else the next report, and only when no report waits, a usage batch
/// (usage never delays desired state).
fn next_message(
    sending: &mut VecDeque<pb::AgentMessage>,
    outbox: &mut Outbox,
    usage: Option<&mut Outgoing>,
) -> Option<pb::AgentMessage> {
    if sending.is_empty()
        && let Some(report) = outbox.pop()
    {
        sending.extend(wire::messages(report));
    }
    if let Some(message) = sending.pop_front() {
        return Some(message);
    }
    usage.and_then(Outgoing::next_batch)
}

/// Resolves when batches were spooled (never without usage).
async fn spooled(link: Option<&UsageLink>) {
    match link {
        Some(link) => link.changed().await,
        None => std::future::pending().await,
    }
}

/// Seconds since the epoch of a certificate's expiry (0: unknown, which
/// makes it due for renewal at once).
fn expire_seconds(t: Option<&prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0))
}

/// Whether `url`'s host is a loopback address (plaintext there stays on
/// the machine).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a failed call was the control plane's TLS refusing the client
/// certificate (expired, unknown CA: a TLS alert, not a gRPC status), which
/// only a new registration can fix.
fn tls_refused(status: &Status) -> bool {
    let mut text = format!("{} {:?}", status.message(), status);
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    [
        "CertificateExpired",
        "BadCertificate",
        "UnknownCA",
        "CertificateRevoked",
        "CertificateUnknown",
    ]
    .iter()
    .any(|alert| text.contains(alert))
}

/// Exponential backoff with "equal jitter": half the step is fixed, half random,
/// so a fleet of agents cut at once does not reconnect in lockstep.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let step = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max);
    let half = step / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;
    use crate::usage::spool::Spool;

    fn usage_window(i: i64) -> pb::UsageWindow {
        pb::UsageWindow {
            start: Some(prost_types::Timestamp {
                seconds: 1_767_225_600 + 60 * i,
                nanos: 0,
            }),
            duration_seconds: 60,
            covered_seconds: 60,
            ..Default::default()
        }
    }

    /// The usage sequence of a message, or `None` for another kind.
    fn usage_sequence(m: &pb::AgentMessage) -> Option<u64> {
        match &m.kind {
            Some(AgentKind::Usage(b)) => Some(b.sequence),
            _ => None,
        }
    }

    #[test]
    fn usage_waits_for_reports_goes_four_at_a_time_and_is_sent_again_on_a_new_session() {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = Spool::open(tmp.path(), 100, 7, metrics.clone()).unwrap();
        let link = UsageLink::new(spool, metrics.clone());
        for i in 0..6 {
            link.push(vec![usage_window(i)]).unwrap();
        }
        let mut usage = Outgoing::new(link.clone());
        usage.session_started();
        let mut outbox = Outbox::new(metrics.clone());
        let mut sending = VecDeque::new();
        outbox.push(Report::Role { applier: true });
        outbox.push(Report::Role { applier: false });

        // Reports first, every one of them.
        for _ in 0..2 {
            assert!(may_send(&sending, &outbox, Some(&mut usage)));
            let m = next_message(&mut sending, &mut outbox, Some(&mut usage)).unwrap();
            assert!(matches!(m.kind, Some(AgentKind::Applier(_))), "{m:?}");
        }
        // Then usage, in spool order, four without an answer at most.
        let mut sent = Vec::new();
        while may_send(&sending, &outbox, Some(&mut usage)) {
            let m = next_message(&mut sending, &mut outbox, Some(&mut usage)).unwrap();
            sent.push(usage_sequence(&m).unwrap());
        }
        assert_eq!(sent, [1, 2, 3, 4]);
        assert_eq!(usage.in_flight(), crate::usage::MAX_IN_FLIGHT);
        // A report that arrives now goes before the next batch.
        outbox.push(Report::Role { applier: true });
        usage.recorded((7, 2));
        usage.recorded((99, 1)); // unknown: ignored
        let m = next_message(&mut sending, &mut outbox, Some(&mut usage)).unwrap();
        assert!(matches!(m.kind, Some(AgentKind::Applier(_))));
        let m = next_message(&mut sending, &mut outbox, Some(&mut usage)).unwrap();
        assert_eq!(usage_sequence(&m), Some(5));
        assert!(
            !may_send(&sending, &outbox, Some(&mut usage)),
            "four in flight again"
        );
        assert!(next_message(&mut sending, &mut outbox, Some(&mut usage)).is_none());

        // A new session: everything not recorded, from the oldest.
        usage.session_started();
        let mut again = Vec::new();
        while let Some(m) = next_message(&mut sending, &mut outbox, Some(&mut usage)) {
            again.push(usage_sequence(&m).unwrap());
        }
        assert_eq!(again, [1, 3, 4, 5]);
        for seq in [1, 3, 4, 5] {
            usage.recorded((7, seq));
        }
        let m = next_message(&mut sending, &mut outbox, Some(&mut usage)).unwrap();
        assert_eq!(usage_sequence(&m), Some(6));
        usage.recorded((7, 6));
        assert!(!may_send(&sending, &outbox, Some(&mut usage)));
        assert_eq!(link.lock().windows(), 0, "recorded batches are deleted");
        let text = metrics.render();
        assert!(
            text.contains("mtp_agent_usage_batches_sent_total 10"),
            "{text}"
        );
        assert!(
            text.contains("mtp_agent_usage_batches_acknowledged_total 6"),
            "{text}"
        );
        // Without usage, only reports.
        assert!(!may_send(&sending, &outbox, None));
    }

    #[test]
    fn loopback_hosts_are_told_apart() {
        for url in [
            "http://127.0.0.1:7443",
            "http://localhost:1",
            "http://[::1]:7443/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://cp.example.com:7443",
            "http://10.0.0.1:7443",
            "http://[2001:db8::1]:1",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 0..30 {
            let step = (initial * 2u32.saturating_pow(attempt.min(20))).min(max);
            for _ in 0..20 {
                let d = backoff(attempt, initial, max);
                assert!(
                    d >= step / 2 && d <= step,
                    "attempt {attempt}: {d:?} not in [{:?}, {step:?}]",
                    step / 2
                );
            }
        }
        let samples: std::collections::BTreeSet<_> =
            (0..50).map(|_| backoff(6, initial, max)).collect();
        assert!(samples.len() > 5, "jitter must spread reconnects");
    }
}
