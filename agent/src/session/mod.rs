//! The connection to the control plane: registration with the join token,
//! then sessions that say hello with the stored revision, pass desired state
//! to the reconciler and its reports back (through the `Outbox`), send
//! keepalives, detect a half-open stream, and reconnect with jittered
//! exponential backoff. `wire` is where reports become protobuf.

mod wire;

use std::path::PathBuf;
use std::time::Duration;

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_service_client::AgentServiceClient;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::desired::{Credential, StateDir};
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
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

pub struct Sessions {
    pub config: SessionConfig,
    pub state_dir: StateDir,
    pub to_reconciler: mpsc::Sender<Input>,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    pub status: watch::Receiver<AgentStatus>,
    pub fence: Fence,
    pub connected: watch::Sender<bool>,
    pub metrics: Metrics,
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
        let mut want_snapshot = false;
        loop {
            outbox.session_ended();
            let ended = self.session(&mut outbox, want_snapshot, &shutdown).await;
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

    fn refused(&self, status: &Status) {
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

    fn set_connected(&self, connected: bool) {
        let _ = self.connected.send(connected);
        self.metrics.set_connected(connected);
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
                ..Default::default()
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
            secret: response.certificate_pem,
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
        outbox: &mut Outbox,
        want_snapshot: bool,
        shutdown: &CancellationToken,
    ) -> Ended {
        let open = match self.open(want_snapshot, shutdown).await {
            Ok(open) => open,
            Err(ended) => return ended,
        };
        self.set_connected(true);
        if self.to_reconciler.send(Input::Connected).await.is_err() {
            return Ended::Shutdown;
        }
        self.serve(open, outbox, shutdown).await
    }

    /// Connects, registers if need be, and says hello with the revision of
    /// the desired state held (0 to ask for a snapshot).
    async fn open(
        &mut self,
        want_snapshot: bool,
        shutdown: &CancellationToken,
    ) -> Result<Open, Ended> {
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Err(Ended::Shutdown),
            c = self.channel() => c.map_err(|why| Ended::Lost { why, productive: false })?,
        };
        let credential = self.credential(&channel).await?;

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
        let resume_revision = if want_snapshot {
            0
        } else {
            self.status.borrow().desired_revision
        };
        let hello = wire::hello(resume_revision, self.fence.is_held(), self.config.keepalive);
        let _ = tx.send(hello).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let Ok(bearer) = format!("Bearer {}", credential.secret).parse() else {
            return Err(Ended::Unauthenticated(Status::unauthenticated(
                "the stored credential is not a valid header value",
            )));
        };
        request.metadata_mut().insert("authorization", bearer);
        let inbound = match AgentServiceClient::new(channel).session(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unauthenticated => return Err(Ended::Unauthenticated(s)),
            Err(s) => {
                return Err(Ended::Lost {
                    why: format!("opening the session: {}: {}", s.code(), s.message()),
                    productive: false,
                });
            }
        };
        tracing::info!(cluster = %credential.cluster, applied_revision = resume_revision, "connected to the control plane");
        Ok(Open { tx, inbound })
    }

    /// Runs an open session: desired state in, reports out (from the
    /// outbox, as the stream takes them), keepalives both ways.
    async fn serve(
        &mut self,
        open: Open,
        outbox: &mut Outbox,
        shutdown: &CancellationToken,
    ) -> Ended {
        let Open { tx, mut inbound } = open;
        let keepalive = self.config.keepalive;
        let silent_limit = keepalive * self.config.missed_keepalives.max(1);
        let mut ticker = tokio::time::interval(keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut productive = false;
        let lost = |productive| Ended::Lost {
            why: "stream closed".into(),
            productive,
        };
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
                    let (input, desired) = wire::input(kind);
                    productive |= desired;
                    if let Some(input) = input && self.to_reconciler.send(input).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                out = self.outbound.recv() => match out {
                    None => return Ended::Shutdown,
                    Some(Outbound::NeedSnapshot) => return Ended::NeedSnapshot,
                    Some(Outbound::Report(r)) => outbox.push(r),
                },
                permit = tx.reserve(), if !outbox.is_empty() => {
                    let Ok(permit) = permit else { return lost(productive) };
                    if let Some(report) = outbox.pop() {
                        permit.send(wire::message(report));
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > silent_limit {
                        return Ended::Lost {
                            why: format!("nothing heard from the control plane for {silent_limit:?} (half-open connection)"),
                            productive,
                        };
                    }
                    if tx.send(wire::keepalive()).await.is_err() {
                        return lost(productive);
                    }
                }
            }
        }
    }
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
