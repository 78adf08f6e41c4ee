//! A scripted agent: speaks the agent protocol by hand, so tests can check the
//! control plane's side of the channel message by message (the real agent is
//! tested against it in the end-to-end agent tests). It registers and
//! authenticates as the real one does: a key made here, a CSR, and the
//! signed certificate as its TLS client identity.

use std::time::Duration;

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::{ClientTlsConfig, Identity};

/// What `Register` gave an agent, with the key that never left it.
#[derive(Clone)]
pub struct Enrollment {
    pub agent_id: String,
    pub cluster: String,
    pub cluster_id: String,
    pub key_pem: String,
    pub certificate_pem: String,
    pub ca_certificate_pem: String,
    pub expire_time: Option<prost_types::Timestamp>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("agent_id", &self.agent_id)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Enrollment {
    /// Client TLS presenting this enrollment's certificate.
    pub fn tls(&self) -> ClientTlsConfig {
        crate::server_trust().identity(Identity::from_pem(&self.certificate_pem, &self.key_pem))
    }

    /// This enrollment with another certificate and key (after a renewal).
    pub fn renewed(&self, key_pem: String, certificate_pem: String) -> Enrollment {
        Enrollment {
            key_pem,
            certificate_pem,
            ..self.clone()
        }
    }
}

/// Registers `node` with a join token and a CSR over a new key.
pub async fn register(url: &str, join_token: &str, node: &str) -> Result<Enrollment, Status> {
    let (key_pem, csr_pem) = crate::pki::agent_key_and_csr();
    let response = register_csr(url, join_token, node, &csr_pem).await?;
    Ok(Enrollment {
        agent_id: response.agent_id,
        cluster: response.cluster,
        cluster_id: response.cluster_id,
        key_pem,
        certificate_pem: response.certificate_pem,
        ca_certificate_pem: response.ca_certificate_pem,
        expire_time: response.expire_time,
    })
}

/// `Register` with a given CSR, as sent (no client certificate).
pub async fn register_csr(
    url: &str,
    join_token: &str,
    node: &str,
    csr_pem: &str,
) -> Result<pb::RegisterAgentResponse, Status> {
    let channel = crate::endpoint(url).connect().await.expect("connects");
    pb::agent_service_client::AgentServiceClient::new(channel)
        .register(pb::RegisterAgentRequest {
            join_token: join_token.into(),
            node_name: node.into(),
            agent_version: "scripted".into(),
            csr_pem: csr_pem.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub struct ScriptedAgent {
    pub outbound: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::ControlMessage>,
    /// What the control plane said this session is (its first message).
    pub info: Option<pb::SessionInfo>,
    /// The latest applier decision heard.
    pub grant: Option<pb::ApplierGrant>,
    /// Revisions of held prunes an operator confirmed, as passed on.
    pub prune_confirmations: Vec<i64>,
}

impl ScriptedAgent {
    /// Opens a session with the enrollment's certificate and says hello.
    pub async fn connect(
        url: &str,
        enrollment: &Enrollment,
        applied_revision: i64,
        applier: bool,
    ) -> Result<Self, Status> {
        Self::connect_with(url, enrollment, hello(applied_revision, applier)).await
    }

    /// Opens a session whose first message is `first`.
    pub async fn connect_with(
        url: &str,
        enrollment: &Enrollment,
        first: pb::AgentMessage,
    ) -> Result<Self, Status> {
        Self::connect_tls(url, Some(enrollment.tls()), first).await
    }

    /// Opens a session with the given client TLS (`None`: the defaults for
    /// the URL, so no client certificate), for tests of what is refused. A
    /// failed TLS handshake comes back as a `Status` too.
    pub async fn connect_tls(
        url: &str,
        tls: Option<ClientTlsConfig>,
        first: pb::AgentMessage,
    ) -> Result<Self, Status> {
        Self::open(url, tls, Some(first)).await
    }

    /// Opens a session and says nothing yet: the control plane has set the
    /// session up and waits for the hello (`send` it when the test is ready).
    pub async fn open_before_hello(url: &str, enrollment: &Enrollment) -> Result<Self, Status> {
        Self::open(url, Some(enrollment.tls()), None).await
    }

    async fn open(
        url: &str,
        tls: Option<ClientTlsConfig>,
        first: Option<pb::AgentMessage>,
    ) -> Result<Self, Status> {
        let endpoint = match tls {
            Some(tls) => tonic::transport::Endpoint::from_shared(url.to_owned())
                .expect("valid url")
                .tls_config(tls)
                .expect("TLS configuration"),
            None => crate::endpoint(url),
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("connecting: {e:?}")))?;
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        if let Some(first) = first {
            tx.send(first).await.expect("queue hello");
        }
        let inbound = client
            .session(tonic::Request::new(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(ScriptedAgent {
            outbound: tx,
            inbound,
            info: None,
            grant: None,
            prune_confirmations: Vec::new(),
        })
    }

    /// The next message that is not bookkeeping: keepalives are skipped,
    /// session info, applier decisions and prune confirmations are recorded.
    /// Pages of desired state are assembled into one snapshot or change set
    /// (owners resolved into each namespace from the pages' tenants). Panics
    /// after `wait`.
    pub async fn next_desired(&mut self, wait: Duration) -> ControlKind {
        let deadline = tokio::time::Instant::now() + wait;
        let mut assembling: Option<ControlKind> = None;
        let mut owners = std::collections::BTreeMap::new();
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("desired state arrives in time")
                .expect("stream healthy")
                .expect("stream open");
            let Some(kind) = msg.kind else {
                panic!("empty control message")
            };
            let kind = match self.record(kind) {
                Some(kind) => kind,
                None => continue,
            };
            let (more, tenants) = match &kind {
                ControlKind::Snapshot(s) => (s.more, &s.tenants),
                ControlKind::Changes(c) => (c.more, &c.tenants),
                _ => {
                    assert!(
                        assembling.is_none(),
                        "a page sequence was interrupted by {kind:?}"
                    );
                    return kind;
                }
            };
            for t in tenants {
                owners.insert(t.tenant.clone(), t.owners.clone());
            }
            assembling = Some(match (assembling.take(), kind) {
                (None, page) => page,
                (Some(ControlKind::Snapshot(mut all)), ControlKind::Snapshot(page)) => {
                    assert_eq!(all.revision, page.revision, "pages of one snapshot");
                    all.namespaces.extend(page.namespaces);
                    all.tenants.extend(page.tenants);
                    all.more = page.more;
                    ControlKind::Snapshot(all)
                }
                (Some(ControlKind::Changes(mut all)), ControlKind::Changes(page)) => {
                    assert_eq!(
                        (all.from_revision, all.revision),
                        (page.from_revision, page.revision)
                    );
                    all.upserts.extend(page.upserts);
                    all.deletes.extend(page.deletes);
                    all.tenants.extend(page.tenants);
                    all.more = page.more;
                    ControlKind::Changes(all)
                }
                (Some(a), b) => panic!("pages of different kinds: {a:?} then {b:?}"),
            });
            if !more {
                let mut done = assembling.take().expect("assembled");
                let configs = match &mut done {
                    ControlKind::Snapshot(s) => &mut s.namespaces,
                    ControlKind::Changes(c) => &mut c.upserts,
                    _ => unreachable!(),
                };
                for n in configs.iter_mut() {
                    if n.owners.is_none() {
                        n.owners = owners.get(&n.tenant).cloned().flatten();
                    }
                }
                return done;
            }
        }
    }

    /// Records bookkeeping messages; returns the others.
    fn record(&mut self, kind: ControlKind) -> Option<ControlKind> {
        match kind {
            ControlKind::Keepalive(_) => None,
            ControlKind::Session(info) => {
                self.info = Some(info);
                None
            }
            ControlKind::Applier(grant) => {
                self.grant = Some(grant);
                None
            }
            ControlKind::PruneConfirmed(p) => {
                self.prune_confirmations.push(p.revision);
                None
            }
            other => Some(other),
        }
    }

    /// Whether this session is the fenced applier, as last heard.
    pub fn granted(&self) -> bool {
        self.grant.is_some_and(|g| g.granted)
    }

    /// The epoch of the latest applier decision heard (0: none).
    pub fn epoch(&self) -> i64 {
        self.grant.map_or(0, |g| g.epoch)
    }

    /// Whether anything but bookkeeping arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Err(_) => return true,
                Ok(Ok(Some(pb::ControlMessage { kind: Some(kind) }))) => {
                    if self.record(kind).is_some() {
                        return false;
                    }
                }
                Ok(_) => return false,
            }
        }
    }

    /// Reads until the control plane ends the stream; its status (`Ok` for
    /// a plain end). Panics after `wait`.
    pub async fn ended(&mut self, wait: Duration) -> Status {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("the session ends in time")
            {
                Ok(Some(pb::ControlMessage { kind: Some(kind) })) => {
                    self.record(kind);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Status::ok(""),
                Err(status) => return status,
            }
        }
    }

    /// Reads one whole snapshot as it comes, page by page: (pages, largest
    /// encoded page in bytes, namespaces). Panics after `wait`.
    pub async fn snapshot_pages(&mut self, wait: Duration) -> (usize, usize, usize) {
        use prost::Message;
        let deadline = tokio::time::Instant::now() + wait;
        let (mut pages, mut largest, mut namespaces) = (0, 0, 0);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("the snapshot arrives in time")
                .expect("stream healthy")
                .expect("stream open");
            let size = msg.encoded_len();
            let Some(kind) = msg.kind else { continue };
            if let Some(ControlKind::Snapshot(s)) = self.record(kind) {
                pages += 1;
                largest = largest.max(size);
                namespaces += s.namespaces.len();
                if !s.more {
                    return (pages, largest, namespaces);
                }
            }
        }
    }

    /// Waits for a prune confirmation passed on by the control plane.
    pub async fn next_prune_confirmation(&mut self, wait: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + wait;
        while self.prune_confirmations.is_empty() {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("a confirmation arrives in time")
                .expect("stream healthy")
                .expect("stream open");
            if let Some(kind) = msg.kind {
                self.record(kind);
            }
        }
        self.prune_confirmations.remove(0)
    }

    /// An acknowledgement saying `namespace` is stamped with `live_revision`.
    pub async fn send_superseded(&self, revision: i64, namespace: &str, live_revision: i64) {
        self.send(AgentKind::Ack(pb::RevisionAck {
            revision,
            results: vec![pb::NamespaceResult {
                namespace: namespace.into(),
                outcome: pb::NamespaceOutcome::Superseded as i32,
                reason: String::new(),
                live_revision,
            }],
            sequence: 0,
        }))
        .await;
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
