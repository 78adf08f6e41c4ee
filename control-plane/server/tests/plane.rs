//! The control plane in-process on a real PostgreSQL, driven over gRPC like
//! its clients: reflection in the version older tools speak, and the
//! operator metrics following an agent session (spoken by hand here, so each
//! message and its effect are explicit) and the environments it serves.

use std::net::SocketAddr;
use std::time::Duration;

use mtp_control_plane::config::Config;
use mtp_control_plane::config::TlsMaterial;
use mtp_control_plane::{ControlPlane, RunningControlPlane};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Streaming};

/// Upper bound on waiting for an eventual condition; a sound run takes well
/// under a second, so reaching it means the condition never came true.
const PATIENCE: Duration = Duration::from_secs(30);

struct Plane {
    running: RunningControlPlane,
    admin_secret: String,
    /// The server CA that signed the plane's TLS certificate.
    server_ca_pem: String,
    _db: mtp_pg_harness::TestDatabase,
}

/// A CA and a server certificate it signed for 127.0.0.1: (CA PEM, TLS).
fn server_tls() -> (String, TlsMaterial) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let tls = TlsMaterial {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    (ca_pem, tls)
}

impl Plane {
    async fn start() -> Plane {
        let db = mtp_pg_harness::fresh_database().await;
        // TLS, as agent sessions need client certificates.
        let (server_ca_pem, tls) = server_tls();
        let config = Config {
            metrics_interval: Duration::from_millis(50),
            expiry_interval: Duration::from_millis(100),
            tls: Some(tls),
            ..Config::for_dev(db.url())
        };
        let running = ControlPlane::start(config).await.expect("starts");
        let (_, admin_secret) = running
            .store
            .bootstrap_admin_token()
            .await
            .expect("bootstrap")
            .expect("a fresh database has no admin token");
        Plane {
            running,
            admin_secret,
            server_ca_pem,
            _db: db,
        }
    }

    fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.server_ca_pem))
    }

    async fn channel(&self) -> Channel {
        self.channel_with(self.tls()).await
    }

    async fn channel_with(&self, tls: ClientTlsConfig) -> Channel {
        Channel::from_shared(self.running.grpc_url())
            .expect("url")
            .tls_config(tls)
            .expect("TLS")
            .connect()
            .await
            .expect("connects")
    }

    fn authed<T>(&self, secret: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let value = format!("Bearer {secret}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
        request
    }

    fn admin<T>(&self, message: T) -> Request<T> {
        self.authed(&self.admin_secret, message)
    }

    async fn metrics(&self) -> String {
        http_get(self.running.admin_addr, "/metrics").await
    }

    /// Waits until /metrics contains `line`, returning the page.
    async fn metrics_with(&self, line: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let page = self.metrics().await;
            if page.contains(line) {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{line} never appeared in:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("reads the response");
    response
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_for_older_tools() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let plane = Plane::start().await;
    let mut reflection = ServerReflectionClient::new(plane.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("v1alpha reflection is served")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "grpc.health.v1.Health",
        "mtp.v1.AgentService",
        "mtp.v1.AuditService",
        "mtp.v1.ClusterService",
        "mtp.v1.EnvironmentService",
        "mtp.v1.ProfileService",
        "mtp.v1.TenantService",
        "mtp.v1.TokenService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// A hand-driven agent session: what it sends and what it is sent.
struct FakeAgent {
    to_plane: mpsc::Sender<pb::AgentMessage>,
    from_plane: Streaming<pb::ControlMessage>,
}

impl FakeAgent {
    async fn join(plane: &Plane, cluster: &str) -> FakeAgent {
        let mut clusters =
            pb::cluster_service_client::ClusterServiceClient::new(plane.channel().await);
        let join = clusters
            .create_join_token(plane.admin(pb::CreateJoinTokenRequest {
                cluster: cluster.into(),
                ttl_seconds: 0,
                max_uses: 0,
            }))
            .await
            .expect("join token")
            .into_inner();
        let mut agents = pb::agent_service_client::AgentServiceClient::new(plane.channel().await);
        let key = rcgen::KeyPair::generate().unwrap();
        let csr_pem = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let registered = agents
            .register(pb::RegisterAgentRequest {
                join_token: join.secret,
                node_name: "node-1".into(),
                agent_version: "hand-driven".into(),
                csr_pem,
            })
            .await
            .expect("registers")
            .into_inner();
        // The session presents the signed certificate as its TLS identity.
        let identity = Identity::from_pem(&registered.certificate_pem, key.serialize_pem());
        let mut agents = pb::agent_service_client::AgentServiceClient::new(
            plane.channel_with(plane.tls().identity(identity)).await,
        );
        let (to_plane, outbound) = mpsc::channel(16);
        let session = Request::new(ReceiverStream::new(outbound));
        let hello = AgentKind::Hello(pb::AgentHello {
            applied_revision: 0,
            agent_version: "hand-driven".into(),
            applier: true,
            keepalive_ms: 1000,
            ..Default::default()
        });
        to_plane
            .send(pb::AgentMessage { kind: Some(hello) })
            .await
            .expect("queued");
        let from_plane = agents.session(session).await.expect("session").into_inner();
        FakeAgent {
            to_plane,
            from_plane,
        }
    }

    async fn send(&self, kind: AgentKind) {
        self.to_plane
            .send(pb::AgentMessage { kind: Some(kind) })
            .await
            .expect("session open");
    }

    /// The next message that is not a keepalive.
    async fn next(&mut self) -> ControlKind {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.from_plane.message())
                .await
                .expect("a control message in time")
                .expect("stream intact")
                .expect("stream open");
            match message.kind {
                // Bookkeeping: who the session is, the applier grant.
                Some(
                    ControlKind::Keepalive(_) | ControlKind::Session(_) | ControlKind::Applier(_),
                ) => continue,
                Some(kind) => return kind,
                None => panic!("empty control message"),
            }
        }
    }

    async fn ack(&mut self, revision: i64, sequence: u64, results: Vec<pb::NamespaceResult>) {
        self.send(AgentKind::Ack(pb::RevisionAck {
            revision,
            results,
            sequence,
        }))
        .await;
        match self.next().await {
            ControlKind::AckRecorded(r) => {
                assert_eq!((r.sequence, r.revision), (sequence, revision))
            }
            other => panic!("expected the ack's confirmation, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn operator_metrics_follow_sessions_environments_and_reports() {
    let plane = Plane::start().await;
    let channel = plane.channel().await;
    let mut clusters = pb::cluster_service_client::ClusterServiceClient::new(channel.clone());
    let mut tenants = pb::tenant_service_client::TenantServiceClient::new(channel.clone());
    let mut envs = pb::environment_service_client::EnvironmentServiceClient::new(channel);
    clusters
        .create_cluster(plane.admin(pb::CreateClusterRequest {
            name: "k3s-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    tenants
        .create_tenant(plane.admin(pb::CreateTenantRequest {
            name: "team-a".into(),
            quota: Some(pb::TenantQuota {
                cpu: "8".into(),
                memory: "16Gi".into(),
                storage: "100Gi".into(),
                pods: 100,
                max_environments: 5,
            }),
            ..Default::default()
        }))
        .await
        .unwrap();

    // Connected and applier from the hello on: the snapshot comes after.
    let mut agent = FakeAgent::join(&plane, "k3s-1").await;
    assert!(matches!(agent.next().await, ControlKind::Snapshot(s) if s.revision == 0));
    let page = plane.metrics().await;
    assert!(
        page.contains(r#"mtp_agents_connected{cluster="k3s-1"} 1"#),
        "{page}"
    );
    assert!(
        page.contains(r#"mtp_agent_appliers{cluster="k3s-1"} 1"#),
        "{page}"
    );

    let env = envs
        .create_environment(plane.admin(pb::CreateEnvironmentRequest {
            tenant: "team-a".into(),
            name: "feature-1".into(),
            cluster: "k3s-1".into(),
            profile: "small".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let ControlKind::Changes(changes) = agent.next().await else {
        panic!("expected the new environment as a change")
    };
    assert_eq!(changes.revision, 1);
    plane
        .metrics_with(r#"mtp_environments{cluster="k3s-1",status="applying"} 1"#)
        .await;
    plane
        .metrics_with(r#"mtp_cluster_revision_lag{cluster="k3s-1"} 1"#)
        .await;
    assert!(
        !plane
            .metrics()
            .await
            .contains("mtp_environment_ready_seconds_count")
    );

    let verified = pb::NamespaceResult {
        namespace: env.namespace.clone(),
        outcome: pb::NamespaceOutcome::Verified as i32,
        reason: String::new(),
        live_revision: 0,
    };
    agent.ack(1, 1, vec![verified]).await;
    let page = plane.metrics().await;
    assert!(
        page.contains(r#"mtp_environment_ready_seconds_count{cluster="k3s-1"} 1"#),
        "{page}"
    );
    plane
        .metrics_with(r#"mtp_environments{cluster="k3s-1",status="ready"} 1"#)
        .await;
    plane
        .metrics_with(r#"mtp_cluster_revision_lag{cluster="k3s-1"} 0"#)
        .await;

    // Drift: counted when repaired. The next ack's confirmation proves the
    // report before it was handled (one session handles messages in order).
    for repaired in [true, false] {
        agent
            .send(AgentKind::Drift(pb::DriftReport {
                namespace: env.namespace.clone(),
                object: "NetworkPolicy/mtp-default-deny".into(),
                description: "edited by hand".into(),
                repaired,
            }))
            .await;
    }
    agent.ack(1, 2, Vec::new()).await;
    let page = plane.metrics().await;
    assert!(
        page.contains(r#"mtp_drift_repairs_total{cluster="k3s-1"} 1"#),
        "{page}"
    );

    // Stepping down as applier, then leaving: both gauges fall back.
    agent
        .send(AgentKind::Applier(pb::ApplierState { applier: false }))
        .await;
    plane
        .metrics_with(r#"mtp_agent_appliers{cluster="k3s-1"} 0"#)
        .await;
    drop(agent);
    plane
        .metrics_with(r#"mtp_agents_connected{cluster="k3s-1"} 0"#)
        .await;

    // The reaper counts what it expires.
    assert!(
        plane
            .metrics()
            .await
            .contains("mtp_environment_expiries_total 0")
    );
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    envs.create_environment(plane.admin(pb::CreateEnvironmentRequest {
        tenant: "team-a".into(),
        name: "short-lived".into(),
        cluster: "k3s-1".into(),
        profile: "small".into(),
        expire_time: Some(prost_types::Timestamp {
            seconds: soon.timestamp(),
            nanos: soon.timestamp_subsec_nanos() as i32,
        }),
        ..Default::default()
    }))
    .await
    .unwrap();
    plane.metrics_with("mtp_environment_expiries_total 1").await;
    plane
        .metrics_with(r#"mtp_environments{cluster="k3s-1",status="deleting"} 1"#)
        .await;
    plane.running.shutdown().await;
}
