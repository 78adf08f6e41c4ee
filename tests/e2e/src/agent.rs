//! A scripted agent: speaks the agent protocol by hand, so tests can check the
//! control plane's side of the channel message by message (the real agent is
//! tested against it in the end-to-end agent tests).

use std::time::Duration;

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Exchanges a join token for an agent credential.
pub async fn register(
    url: &str,
    join_token: &str,
    node: &str,
) -> Result<pb::RegisterAgentResponse, Status> {
    let mut client = pb::agent_service_client::AgentServiceClient::connect(url.to_owned())
        .await
        .expect("connects");
    client
        .register(pb::RegisterAgentRequest {
            join_token: join_token.into(),
            node_name: node.into(),
            agent_version: "scripted".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub struct ScriptedAgent {
    pub outbound: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::ControlMessage>,
}

impl ScriptedAgent {
    /// Opens a session and says hello.
    pub async fn connect(
        url: &str,
        credential: &str,
        applied_revision: i64,
        applier: bool,
    ) -> Result<Self, Status> {
        Self::connect_with(url, credential, hello(applied_revision, applier)).await
    }

    /// Opens a session whose first message is `first`.
    pub async fn connect_with(
        url: &str,
        credential: &str,
        first: pb::AgentMessage,
    ) -> Result<Self, Status> {
        let mut client = pb::agent_service_client::AgentServiceClient::connect(url.to_owned())
            .await
            .expect("connects");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue hello");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().expect("ascii"),
        );
        let inbound = client.session(request).await?.into_inner();
        Ok(ScriptedAgent {
            outbound: tx,
            inbound,
        })
    }

    /// The next snapshot or changes, skipping keepalives; panics after `wait`.
    pub async fn next_desired(&mut self, wait: Duration) -> ControlKind {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("desired state arrives in time")
                .expect("stream healthy")
                .expect("stream open");
            match msg.kind {
                Some(ControlKind::Keepalive(_)) => continue,
                Some(kind) => return kind,
                None => panic!("empty control message"),
            }
        }
    }

    /// Whether anything but keepalives arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Err(_) => return true,
                Ok(Ok(Some(pb::ControlMessage {
                    kind: Some(ControlKind::Keepalive(_)),
                }))) => continue,
                Ok(_) => return false,
            }
        }
    }

    pub async fn send(&self, kind: AgentKind) {
        self.outbound
            .send(pb::AgentMessage { kind: Some(kind) })
            .await
            .expect("session open");
    }

    /// An acknowledgement that asks for no confirmation (sequence 0).
    pub async fn ack(&self, revision: i64, results: Vec<(String, pb::NamespaceOutcome, &str)>) {
        self.numbered_ack(revision, 0, results).await;
    }

    pub async fn numbered_ack(
        &self,
        revision: i64,
        sequence: u64,
        results: Vec<(String, pb::NamespaceOutcome, &str)>,
    ) {
        let results = results
            .into_iter()
            .map(|(namespace, outcome, reason)| pb::NamespaceResult {
                namespace,
                outcome: outcome as i32,
                reason: reason.into(),
                ..Default::default()
            })
            .collect();
        self.send(AgentKind::Ack(pb::RevisionAck {
            revision,
            results,
            sequence,
        }))
        .await;
    }
}

pub fn hello(applied_revision: i64, applier: bool) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(AgentKind::Hello(pb::AgentHello {
            applied_revision,
            agent_version: "scripted".into(),
            applier,
            keepalive_ms: 0,
            ..Default::default()
        })),
    }
}

/// Namespaces of a snapshot or the upserts of changes.
pub fn namespaces(kind: &ControlKind) -> Vec<String> {
    match kind {
        ControlKind::Snapshot(s) => s.namespaces.iter().map(|n| n.namespace.clone()).collect(),
        ControlKind::Changes(c) => c.upserts.iter().map(|n| n.namespace.clone()).collect(),
        _ => vec![],
    }
}

pub fn revision(kind: &ControlKind) -> i64 {
    match kind {
        ControlKind::Snapshot(s) => s.revision,
        ControlKind::Changes(c) => c.revision,
        ControlKind::AckRecorded(r) => r.revision,
        _ => 0,
    }
}
