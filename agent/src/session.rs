//! The connection to the control plane: registration with the join token,
//! then sessions that say hello with the stored revision, pass desired state
//! to the reconciler and its acks back, send keepalives, detect a half-open
//! stream, and reconnect with jittered exponential backoff.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::agent_service_client::AgentServiceClient;
use mtp_proto::v1::control_message::Kind as ControlKind;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::desired::{Credential, StateDir};
use crate::lease::Fence;
use crate::reconciler::{AgentStatus, Input, Outbound};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// Drift reports and role changes are kept across a disconnect (acks are
/// not: a new session gets a full status ack instead).
const BUFFER_LIMIT: usize = 10_000;

pub struct Sessions {
    pub config: SessionConfig,
    pub state_dir: StateDir,
    pub to_reconciler: mpsc::Sender<Input>,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    pub status: watch::Receiver<AgentStatus>,
    pub fence: Fence,
    pub connected: watch::Sender<bool>,
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

impl Sessions {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut buffered: VecDeque<pb::AgentMessage> = VecDeque::new();
        let mut want_snapshot = false;
        loop {
            let ended = self.session(&mut buffered, want_snapshot, &shutdown).await;
            let _ = self.connected.send(false);
            want_snapshot = false;
            match ended {
                Ended::Shutdown => return,
                Ended::NeedSnapshot => {
                    want_snapshot = true;
                    attempt = 0;
                    continue;
                }
                Ended::Unauthenticated(status) => {
                    if self.config.join_token.is_some() {
                        tracing::warn!(
                            message = status.message(),
                            "the control plane refused this agent's credential; registering again with the join token"
                        );
                        if let Err(e) = self.state_dir.forget_credential() {
                            tracing::error!(error = %e, "could not remove the stored credential");
                        }
                    } else {
                        tracing::error!(
                            message = status.message(),
                            "the control plane refused this agent's credential and no join token is configured; get one with `mtp cluster join-token` and restart with --join-token"
                        );
                    }
                }
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
                        Some(Outbound::Message(m)) => keep(&mut buffered, m),
                        Some(Outbound::NeedSnapshot) => want_snapshot = true,
                    }
                }
            }
        }
    }

    async fn channel(&self) -> Result<Channel, String> {
        let url = self.config.control_plane.trim();
        let mut endpoint = Endpoint::from_shared(url.to_string())
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
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS setup: {e}"))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))
    }

    async fn credential(&self, channel: &Channel) -> Result<Credential, Ended> {
        match self.state_dir.credential() {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(e) => {
                return Err(Ended::Lost {
                    why: format!("reading the stored credential: {e}"),
                    productive: false,
                });
            }
        }
        let Some(token) = &self.config.join_token else {
            return Err(Ended::Lost {
                why: format!(
                    "no stored credential in {} and no --join-token to register with",
                    self.state_dir.path().display()
                ),
                productive: false,
            });
        };
        let response = AgentServiceClient::new(channel.clone())
            .register(pb::RegisterAgentRequest {
                join_token: token.clone(),
                node_name: self.config.node_name.clone(),
                agent_version: AGENT_VERSION.into(),
            })
            .await
            .map_err(|s| Ended::Lost {
                why: format!(
                    "registering with the join token: {}: {}",
                    s.code(),
                    s.message()
                ),
                productive: false,
            })?
            .into_inner();
        let credential = Credential {
            agent_id: response.agent_id,
            cluster: response.cluster,
            secret: response.credential,
        };
        self.state_dir
            .save_credential(&credential)
            .map_err(|e| Ended::Lost {
                why: format!("storing the credential: {e}"),
                productive: false,
            })?;
        tracing::info!(cluster = %credential.cluster, agent = %credential.agent_id, "registered with the control plane");
        Ok(credential)
    }

    async fn session(
        &mut self,
        buffered: &mut VecDeque<pb::AgentMessage>,
        want_snapshot: bool,
        shutdown: &CancellationToken,
    ) -> Ended {
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            c = self.channel() => match c {
                Ok(c) => c,
                Err(why) => return Ended::Lost { why, productive: false },
            },
        };
        let credential = match self.credential(&channel).await {
            Ok(c) => c,
            Err(e) => return e,
        };

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
        let applied_revision = if want_snapshot {
            0
        } else {
            self.status.borrow().desired_revision
        };
        let hello = pb::AgentMessage {
            kind: Some(AgentKind::Hello(pb::AgentHello {
                applied_revision,
                agent_version: AGENT_VERSION.into(),
                applier: self.fence.is_held(),
                keepalive_ms: u32::try_from(self.config.keepalive.as_millis()).unwrap_or(u32::MAX),
            })),
        };
        let _ = tx.send(hello).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        match format!("Bearer {}", credential.secret).parse() {
            Ok(v) => {
                request.metadata_mut().insert("authorization", v);
            }
            Err(_) => {
                return Ended::Unauthenticated(Status::unauthenticated(
                    "the stored credential is not a valid header value",
                ));
            }
        }
        let mut inbound = match AgentServiceClient::new(channel).session(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unauthenticated => return Ended::Unauthenticated(s),
            Err(s) => {
                return Ended::Lost {
                    why: format!("opening the session: {}: {}", s.code(), s.message()),
                    productive: false,
                };
            }
        };
        tracing::info!(cluster = %credential.cluster, applied_revision, "connected to the control plane");
        let _ = self.connected.send(true);
        if self.to_reconciler.send(Input::Connected).await.is_err() {
            return Ended::Shutdown;
        }
        while let Some(m) = buffered.pop_front() {
            if tx.send(m).await.is_err() {
                return Ended::Lost {
                    why: "stream closed".into(),
                    productive: false,
                };
            }
        }

        let keepalive = self.config.keepalive;
        let silent_limit = keepalive * self.config.missed_keepalives.max(1);
        let mut ticker = tokio::time::interval(keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut productive = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ended::Shutdown,
                message = inbound.message() => {
                    last_heard = Instant::now();
                    let kind = match message {
                        Ok(Some(pb::ControlMessage { kind: Some(kind) })) => kind,
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ended::Lost { why: "the control plane closed the session".into(), productive },
                        Err(s) if s.code() == Code::Unauthenticated => return Ended::Unauthenticated(s),
                        Err(s) => return Ended::Lost { why: format!("{}: {}", s.code(), s.message()), productive },
                    };
                    let input = match kind {
                        ControlKind::Snapshot(s) => {
                            productive = true;
                            Input::Snapshot(s)
                        }
                        ControlKind::Changes(c) => {
                            productive = true;
                            Input::Changes(c)
                        }
                        ControlKind::AckRecorded(r) => Input::AckRecorded(r.sequence),
                        ControlKind::Keepalive(_) => continue,
                    };
                    if self.to_reconciler.send(input).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                out = self.outbound.recv() => match out {
                    None => return Ended::Shutdown,
                    Some(Outbound::NeedSnapshot) => return Ended::NeedSnapshot,
                    Some(Outbound::Message(m)) => {
                        if let Err(mpsc::error::SendError(m)) = tx.send(m).await {
                            keep(buffered, m);
                            return Ended::Lost { why: "stream closed".into(), productive };
                        }
                    }
                },
                _ = ticker.tick() => {
                    if last_heard.elapsed() > silent_limit {
                        return Ended::Lost {
                            why: format!("nothing heard from the control plane for {silent_limit:?} (half-open connection)"),
                            productive,
                        };
                    }
                    let beat = pb::AgentMessage { kind: Some(AgentKind::Keepalive(pb::Keepalive {
                        time: Some(now_timestamp()),
                    })) };
                    if tx.send(beat).await.is_err() {
                        return Ended::Lost { why: "stream closed".into(), productive };
                    }
                }
            }
        }
    }
}

/// Keeps a message for the next session; acks are dropped (the next session
/// starts with a full status ack), the oldest of the rest go first when full.
fn keep(buffer: &mut VecDeque<pb::AgentMessage>, m: pb::AgentMessage) {
    if matches!(
        m.kind,
        Some(AgentKind::Ack(_)) | Some(AgentKind::Keepalive(_))
    ) {
        return;
    }
    if buffer.len() >= BUFFER_LIMIT {
        buffer.pop_front();
        tracing::warn!("outbound buffer full; dropped the oldest drift report");
    }
    buffer.push_back(m);
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

fn now_timestamp() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn acks_are_not_buffered_but_drift_is() {
        let mut b = VecDeque::new();
        keep(
            &mut b,
            pb::AgentMessage {
                kind: Some(AgentKind::Ack(pb::RevisionAck::default())),
            },
        );
        keep(
            &mut b,
            pb::AgentMessage {
                kind: Some(AgentKind::Drift(pb::DriftReport::default())),
            },
        );
        assert_eq!(b.len(), 1);
    }
}
