//! The whole agent against a scripted control plane (a tonic server in the
//! test, plain HTTP) on kube-sim: pages assembled over the wire (one larger
//! than tonic's default 4 MiB decode limit), owners resolved, the grant on
//! and off, a session cut mid-update, a paging protocol error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::desired::StateDir;
use mtp_agent::identity::Enrollment;
use mtp_agent::lease::LeaseConfig;
use mtp_agent::reconciler::ReconcilerConfig;
use mtp_agent::session::SessionConfig;
use mtp_agent::{AgentConfig, bundle};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use mtp_proto::v1::control_message::Kind as ControlKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

#[allow(dead_code)]
mod support;

const HANG: Duration = Duration::from_secs(60);
const CLUSTER_ID: &str = "5e55e5e5-0000-4000-8000-000000000001";

/// One session as the test sees it: what to send, what the agent said.
struct Session {
    to_agent: mpsc::Sender<Result<pb::ControlMessage, Status>>,
    from_agent: mpsc::UnboundedReceiver<pb::AgentMessage>,
}

/// The scripted control plane: every session the agent opens is handed to
/// the test; keepalives are answered.
#[derive(Clone)]
struct Fake {
    sessions: Arc<Mutex<mpsc::UnboundedSender<Session>>>,
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn register(
        &self,
        _: Request<pb::RegisterAgentRequest>,
    ) -> Result<Response<pb::RegisterAgentResponse>, Status> {
        Err(Status::unimplemented("the test stores an identity"))
    }

    type SessionStream = ReceiverStream<Result<pb::ControlMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (to_agent, rx) = mpsc::channel(64);
        let (heard, from_agent) = mpsc::unbounded_channel();
        let echo = to_agent.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(AgentKind::Keepalive(k)) = &m.kind {
                    let _ = echo.send(Ok(control(ControlKind::Keepalive(*k)))).await;
                    continue;
                }
                if heard.send(m).is_err() {
                    return;
                }
            }
        });
        let _ = self.sessions.lock().unwrap().send(Session {
            to_agent,
            from_agent,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn control(kind: ControlKind) -> pb::ControlMessage {
    pb::ControlMessage { kind: Some(kind) }
}

impl Session {
    async fn send(&self, kind: ControlKind) {
        self.to_agent.send(Ok(control(kind))).await.unwrap();
    }

    async fn next(&mut self) -> AgentKind {
        match tokio::time::timeout(HANG, self.from_agent.recv()).await {
            Ok(Some(pb::AgentMessage { kind: Some(kind) })) => kind,
            other => panic!("expected a message from the agent, got {other:?}"),
        }
    }

    async fn hello(&mut self) -> pb::AgentHello {
        match self.next().await {
            AgentKind::Hello(h) => h,
            other => panic!("a session starts with a hello, got {other:?}"),
        }
    }

    /// Acks up to the last message of the one of `revision` (the one with
    /// a sequence), their results together.
    async fn ack_of(&mut self, revision: i64) -> Vec<pb::NamespaceResult> {
        let mut results = Vec::new();
        loop {
            if let AgentKind::Ack(a) = self.next().await
                && a.revision == revision
            {
                results.extend(a.results);
                if a.sequence != 0 {
                    return results;
                }
            }
        }
    }

    /// Every message the agent sends within `d`.
    async fn quiet_for(&mut self, d: Duration) -> Vec<AgentKind> {
        let until = tokio::time::Instant::now() + d;
        let mut seen = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(until, self.from_agent.recv()).await {
            seen.extend(m.kind);
        }
        seen
    }

    async fn start(&self, granted: bool) {
        self.send(ControlKind::Session(pb::SessionInfo {
            cluster_id: CLUSTER_ID.into(),
            cluster: "prod".into(),
            agent_id: "agent-1".into(),
        }))
        .await;
        if granted {
            self.grant(true, 1).await;
        }
    }

    async fn grant(&self, granted: bool, epoch: i64) {
        self.send(ControlKind::Applier(pb::ApplierGrant { granted, epoch }))
            .await;
    }
}

async fn fake_control_plane() -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let fake = Fake {
        sessions: Arc::new(Mutex::new(tx)),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(HANG, sessions.recv())
        .await
        .expect("the agent connects")
        .unwrap()
}

fn enroll(dir: &Path) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    StateDir::new(dir)
        .unwrap()
        .save_enrollment(&Enrollment {
            agent_id: "agent-1".into(),
            cluster: "prod".into(),
            cluster_id: CLUSTER_ID.into(),
            // Plain HTTP: never presented.
            key_pem: String::new(),
            certificate_pem: String::new(),
            ca_certificate_pem: String::new(),
            issue_time: now,
            expire_time: now + 30 * 86_400,
        })
        .unwrap();
}

fn config(addr: SocketAddr, dir: &Path) -> AgentConfig {
    AgentConfig {
        session: SessionConfig {
            control_plane: format!("http://{addr}"),
            ca_cert: None,
            join_token: None,
            node_name: "node-1".into(),
            keepalive: Duration::from_millis(500),
            missed_keepalives: 20,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
        },
        lease: LeaseConfig {
            namespace: "kube-system".into(),
            name: "mtp-agent-applier".into(),
            duration: Duration::from_secs(3600),
            retry_interval: Duration::from_millis(50),
        },
        reconciler: ReconcilerConfig {
            resync_interval: Duration::from_secs(3600),
            retry_interval: Duration::from_millis(100),
            drift_quiet: Duration::from_millis(50),
            concurrency: 4,
            prune_max_share: 0.5,
        },
        state_dir: dir.to_path_buf(),
        usage: mtp_agent::UsageConfig::disabled(),
    }
}

fn ns(name: &str) -> pb::NamespaceConfig {
    pb::NamespaceConfig {
        owners: None,
        revision: 2,
        ..support::config(name, "team-a")
    }
}

fn team_a() -> pb::TenantConfig {
    pb::TenantConfig {
        tenant: "team-a".into(),
        owners: Some(pb::TenantOwners {
            users: vec!["alice@example.com".into()],
            ..Default::default()
        }),
    }
}

fn exists(sim: &SimCluster, name: &str) -> bool {
    sim.object("namespaces", "", name).unwrap().is_some()
}

fn outcome(results: &[pb::NamespaceResult], ns: &str) -> Option<pb::NamespaceOutcome> {
    results
        .iter()
        .find(|r| r.namespace == ns)
        .map(|r| r.outcome())
}

#[tokio::test]
async fn pages_grants_and_cuts_over_the_wire() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let sim = SimCluster::start(SimOptions::default()).await.unwrap();
    let kube_system = serde_json::from_value::<Namespace>(
        serde_json::json!({"metadata": {"name": "kube-system"}}),
    )
    .unwrap();
    let _ = Api::<Namespace>::all(sim.client())
        .create(&PostParams::default(), &kube_system)
        .await;
    let dir = tempfile::tempdir().unwrap();
    enroll(dir.path());
    let (addr, mut sessions) = fake_control_plane().await;
    let shutdown = CancellationToken::new();
    let agent = mtp_agent::start(config(addr, dir.path()), sim.client(), shutdown.clone())
        .await
        .unwrap();

    let mut s = next_session(&mut sessions).await;
    let hello = s.hello().await;
    assert_eq!((hello.applied_revision, hello.cluster_id.as_str()), (0, ""));
    s.start(true).await;

    // A first page past tonic's default 4 MiB limit (padding in a tenant no
    // namespace of the update uses), then the last.
    let pad = pb::TenantConfig {
        tenant: "padding".into(),
        owners: Some(pb::TenantOwners {
            users: (0..60_000).map(|i| format!("{i:0>96}")).collect(),
            ..Default::default()
        }),
    };
    s.send(ControlKind::Snapshot(pb::DesiredSnapshot {
        revision: 2,
        namespaces: vec![ns("team-a-dev")],
        tenants: vec![team_a(), pad],
        more: true,
    }))
    .await;
    let seen = s.quiet_for(Duration::from_millis(500)).await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, AgentKind::Ack(a) if a.revision == 2)),
        "{seen:?}"
    );
    assert!(!exists(&sim, "team-a-dev"), "nothing of a partial snapshot");
    s.send(ControlKind::Snapshot(pb::DesiredSnapshot {
        revision: 2,
        namespaces: vec![ns("team-a-qa")],
        tenants: vec![team_a()],
        more: false,
    }))
    .await;
    let results = s.ack_of(2).await;
    assert_eq!(
        outcome(&results, "team-a-dev"),
        Some(pb::NamespaceOutcome::Verified)
    );
    assert_eq!(
        outcome(&results, "team-a-qa"),
        Some(pb::NamespaceOutcome::Verified)
    );
    let binding = sim
        .object("rolebindings", "team-a-dev", bundle::OWNERS_BINDING)
        .unwrap()
        .expect("owners bound");
    assert_eq!(
        binding["subjects"][0]["name"], "alice@example.com",
        "{binding}"
    );
    let live = sim.object("namespaces", "", "team-a-dev").unwrap().unwrap();
    assert_eq!(
        live["metadata"]["annotations"][bundle::CLUSTER_ID_ANNOTATION],
        CLUSTER_ID
    );

    // Cut in the middle of an update: none of it is applied or held.
    s.send(ControlKind::Changes(pb::DesiredChanges {
        from_revision: 2,
        revision: 3,
        upserts: vec![ns("team-a-stg")],
        tenants: vec![team_a()],
        more: true,
        ..Default::default()
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.to_agent
        .send(Err(Status::unavailable("cut")))
        .await
        .unwrap();
    drop(s);
    let mut s = next_session(&mut sessions).await;
    let hello = s.hello().await;
    assert_eq!(hello.applied_revision, 2, "the partial update was dropped");
    assert_eq!(hello.cluster_id, CLUSTER_ID, "the identity it applied for");
    assert!(!exists(&sim, "team-a-stg"));

    // A new session without a grant applies nothing.
    s.start(false).await;
    let mut stg = ns("team-a-stg");
    stg.revision = 3;
    s.send(ControlKind::Changes(pb::DesiredChanges {
        from_revision: 2,
        revision: 3,
        upserts: vec![stg],
        tenants: vec![team_a()],
        more: false,
        ..Default::default()
    }))
    .await;
    let seen = s.quiet_for(Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|m| matches!(m, AgentKind::Ack(_))),
        "{seen:?}"
    );
    assert!(!exists(&sim, "team-a-stg"), "no grant, no write");
    s.grant(true, 2).await;
    let results = s.ack_of(3).await;
    assert_eq!(
        outcome(&results, "team-a-stg"),
        Some(pb::NamespaceOutcome::Verified)
    );

    // Withdrawn: nothing more is written.
    s.grant(false, 0).await;
    let mut prod = ns("team-a-prod");
    prod.revision = 4;
    s.send(ControlKind::Changes(pb::DesiredChanges {
        from_revision: 3,
        revision: 4,
        upserts: vec![prod],
        tenants: vec![team_a()],
        more: false,
        ..Default::default()
    }))
    .await;
    let seen = s.quiet_for(Duration::from_millis(500)).await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, AgentKind::Ack(a) if a.revision == 4)),
        "{seen:?}"
    );
    assert!(!exists(&sim, "team-a-prod"));

    // A page whose tenant it does not carry: dropped, and the agent comes
    // back asking for a snapshot.
    s.send(ControlKind::Changes(pb::DesiredChanges {
        from_revision: 4,
        revision: 5,
        upserts: vec![pb::NamespaceConfig {
            tenant: "team-b".into(),
            ..ns("team-b-dev")
        }],
        tenants: vec![team_a()],
        more: false,
        ..Default::default()
    }))
    .await;
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.hello().await.applied_revision, 0, "asks for a snapshot");
    assert!(!exists(&sim, "team-b-dev"));

    shutdown.cancel();
    agent.stop().await;
}

/// Usage end to end on kube-sim (TLS and a bearer token, so the kubelet is
/// called with the agent's own credentials and CA, under the `/kubelet/node-1`
/// path prefix): sampled on the simulated clock, spooled, sent, deleted when
/// recorded, and sent again on a new session while not recorded.
#[tokio::test]
async fn usage_is_sampled_spooled_sent_and_resent_until_recorded() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube_sim::{ContainerUsage, SimClock, UsageCurve};

    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let clock = SimClock::manual(start);
    let sim = SimCluster::start(SimOptions {
        tls: true,
        bearer_token: Some("agent-token".into()),
        clock: clock.clone(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for name in ["kube-system"] {
        let ns =
            serde_json::from_value::<Namespace>(serde_json::json!({"metadata": {"name": name}}))
                .unwrap();
        Api::<Namespace>::all(sim.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-1"},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}
    }))
    .unwrap();
    Api::<Node>::all(sim.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    enroll(dir.path());
    let (addr, mut sessions) = fake_control_plane().await;
    let credentials = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(sim.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let mut config = config(addr, dir.path());
    config.usage = mtp_agent::UsageConfig {
        sample_interval: Duration::from_millis(100),
        window_seconds: 10,
        ..mtp_agent::UsageConfig::enabled(sim.kubelet_url("node-1"), credentials)
    };
    let shutdown = CancellationToken::new();
    let agent = mtp_agent::start(config, sim.client(), shutdown.clone())
        .await
        .unwrap();
    let mut s = next_session(&mut sessions).await;
    s.hello().await;
    s.start(true).await;
    s.send(ControlKind::Snapshot(pb::DesiredSnapshot {
        revision: 2,
        namespaces: vec![ns("team-a-dev")],
        tenants: vec![team_a()],
        more: false,
    }))
    .await;
    s.ack_of(2).await;
    // A pod asking for half a core and using a whole one, and one in a
    // namespace the agent does not manage.
    Api::<Namespace>::all(sim.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    for namespace in ["team-a-dev", "other"] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "x",
                "resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(sim.client(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        sim.set_container_curve(
            namespace,
            "web",
            "main",
            UsageCurve::constant(ContainerUsage {
                cpu_nano_cores: 1_000_000_000,
                memory_working_set_bytes: 2 << 20,
                ..Default::default()
            }),
        );
    }
    // The simulated clock moves 2 s every 50 ms.
    let ticking = tokio::spawn({
        let clock = clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                clock.advance(Duration::from_secs(2));
            }
        }
    });

    // Batches arrive; none recorded yet: at most four.
    let mut batches: Vec<pb::UsageBatch> = Vec::new();
    while batches.len() < 4 {
        if let AgentKind::Usage(b) = s.next().await {
            batches.push(b);
        }
    }
    let more = s.quiet_for(Duration::from_millis(800)).await;
    assert!(
        !more.iter().any(|m| matches!(m, AgentKind::Usage(_))),
        "a fifth batch before any was recorded: {more:?}"
    );
    for b in &batches {
        control_plane_accepts(b);
    }
    let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4], "in spool order");
    let epoch = batches[0].spool_epoch;
    assert!(epoch > 0 && batches.iter().all(|b| b.spool_epoch == epoch));
    // A fully covered window: the managed pod only, exactly.
    let full = batches
        .iter()
        .flat_map(|b| &b.windows)
        .find(|w| w.covered_seconds == 10 && !w.namespaces.is_empty())
        .unwrap_or_else(|| panic!("a covered window: {batches:#?}"));
    assert_eq!(full.start.unwrap().seconds % 10, 0);
    assert_eq!(full.duration_seconds, 10);
    assert_eq!(
        (full.node_cpu_millis, full.node_memory_bytes),
        (4000, 8 << 30)
    );
    assert_eq!(full.namespaces.len(), 1, "{full:#?}");
    let u = &full.namespaces[0];
    assert_eq!(u.namespace, "team-a-dev");
    assert_eq!(u.cpu_requested_core_nanos, 5_000_000_000);
    assert!(u.cpu_used_core_nanos.abs_diff(10_000_000_000) <= 2, "{u:?}");
    assert_eq!(u.cpu_billed_core_nanos, u.cpu_used_core_nanos);
    assert_eq!(u.memory_requested_byte_seconds, 10 << 20);
    assert_eq!(u.memory_used_byte_seconds, 20 << 20);
    assert_eq!(u.container_seconds, 10);

    // Recorded: 1, 3 and an unknown one. 2 and 4 stay in the spool.
    for seq in [1, 3, 999] {
        s.send(ControlKind::UsageRecorded(pb::UsageRecorded {
            spool_epoch: epoch,
            sequence: seq,
        }))
        .await;
    }
    // Two more may go now.
    let mut next = Vec::new();
    while next.len() < 2 {
        if let AgentKind::Usage(b) = s.next().await {
            next.push(b.sequence);
        }
    }
    assert_eq!(next, [5, 6]);
    ticking.abort();

    // A new session: what was not recorded goes again, oldest first.
    s.to_agent
        .send(Err(Status::unavailable("cut")))
        .await
        .unwrap();
    drop(s);
    let mut s = next_session(&mut sessions).await;
    s.hello().await;
    s.start(true).await;
    let mut again = Vec::new();
    while again.len() < 4 {
        if let AgentKind::Usage(b) = s.next().await {
            again.push(b.sequence);
        }
    }
    assert_eq!(again, [2, 4, 5, 6]);
    let spooled = std::fs::read_dir(dir.path().join("usage-spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
        .count();
    assert!(
        spooled >= 4,
        "recorded batches deleted, the others kept: {spooled}"
    );
    let text = agent.metrics().render();
    assert!(
        text.contains("mtp_agent_usage_batches_acknowledged_total 2"),
        "{text}"
    );
    assert!(
        text.contains("mtp_agent_usage_samples_total{result=\"ok\"}"),
        "{text}"
    );
    shutdown.cancel();
    agent.wait().await;
}

/// The control plane's own validation of a usage batch (what would end the
/// session if it failed), with its clock at the agent's.
fn control_plane_accepts(batch: &pb::UsageBatch) {
    if let Err(e) = mtp_control_plane::api::convert::usage_batch(
        batch.clone(),
        chrono::Utc::now(),
        chrono::DateTime::from_timestamp(0, 0).unwrap(),
    ) {
        panic!("the control plane would refuse {batch:#?}: {e}");
    }
}
