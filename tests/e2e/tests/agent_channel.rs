//! The control plane's side of the agent channel, driven by a scripted agent:
//! snapshots and changes by revision, acknowledgements that make environments
//! Ready or Deleted, cluster isolation, NOTIFY across replicas, catch-up after
//! an outage, half-open detection, expiry.

use std::time::Duration;

use mtp_control_plane::config::Config;
use mtp_e2e::agent::{Enrollment, ScriptedAgent, hello, namespaces, register, revision};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::control_message::Kind as ControlKind;
use pb::NamespaceOutcome::{Deleted, Failed, Verified};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

async fn setup(plane: &TestPlane, clusters: &[&str]) -> Clients {
    let team_a = ("team-a", quota("100", "400Gi", "4Ti", 10_000, 1000));
    plane.admin_with(&[team_a], clusters).await
}

async fn agent_for(
    plane: &TestPlane,
    admin: &mut Clients,
    cluster: &str,
    node: &str,
) -> Enrollment {
    let token = admin.join_token(cluster).await;
    let registered = register(&plane.url(), &token, node).await.unwrap();
    assert_eq!(registered.cluster, cluster);
    registered
}

#[tokio::test]
async fn an_acknowledged_revision_makes_environments_ready_then_deleted() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    let first = agent.next_desired(WAIT).await;
    assert!(
        matches!(&first, ControlKind::Snapshot(s) if s.revision == 0 && s.namespaces.is_empty()),
        "{first:?}"
    );

    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    let change = agent.next_desired(WAIT).await;
    let ControlKind::Changes(c) = &change else {
        panic!("{change:?}")
    };
    assert_eq!((c.from_revision, c.revision), (0, 1));
    let config = &c.upserts[0];
    assert_eq!(
        (
            config.namespace.as_str(),
            config.tenant.as_str(),
            config.environment.as_str()
        ),
        ("team-a-dev", "team-a", "dev")
    );
    let q = config.quota.unwrap();
    assert_eq!((q.cpu_millis, q.memory_bytes, q.pods), (1000, 2 << 30, 20));
    assert_eq!(
        config.owners.as_ref().unwrap().users,
        ["team-a-lead@example.com"]
    );
    assert_eq!(
        config.network.as_ref().unwrap().ingress_namespace,
        "kube-system"
    );
    // Marked Applying once sent to an applier: just after the agent got it,
    // not necessarily before.
    wait_status(&mut admin, "dev", pb::EnvironmentStatus::Applying).await;

    agent
        .ack(1, vec![("team-a-dev".into(), Verified, "")])
        .await;
    let env = wait_status(&mut admin, "dev", pb::EnvironmentStatus::Ready).await;
    assert_eq!(env.applied_revision, 1);
    assert!(env.ready_time.is_some());

    admin.delete_env("team-a", "dev").await.unwrap();
    let change = agent.next_desired(WAIT).await;
    let ControlKind::Changes(c) = &change else {
        panic!("{change:?}")
    };
    assert_eq!(
        (c.revision, c.deletes.as_slice()),
        (2, ["team-a-dev".to_owned()].as_slice())
    );
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Deleting as i32
    );
    agent.ack(2, vec![("team-a-dev".into(), Deleted, "")]).await;
    wait_status(&mut admin, "dev", pb::EnvironmentStatus::Deleted).await;
    let events = admin.audit_events().await;
    let confirmed = events
        .iter()
        .find(|e| e.action == "environment.deleted")
        .expect("deletion confirmation audited");
    assert!(confirmed.actor.starts_with("agent:"));

    // The name is free again once the namespace is gone.
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
}

#[tokio::test]
async fn failures_reported_by_the_agent_reach_the_environment() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    agent
        .ack(
            1,
            vec![(
                "team-a-dev".into(),
                Failed,
                "NetworkPolicy/mtp-default-deny: forbidden",
            )],
        )
        .await;
    let env = wait_status(&mut admin, "dev", pb::EnvironmentStatus::Failed).await;
    assert_eq!(env.reason, "NetworkPolicy/mtp-default-deny: forbidden");
}

#[tokio::test]
async fn an_agent_only_ever_receives_its_own_clusters_configurations() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["cluster-a", "cluster-b"]).await;
    admin
        .create_env("team-a", "on-a", "cluster-a", "small")
        .await
        .unwrap();
    admin
        .create_env("team-a", "on-b", "cluster-b", "small")
        .await
        .unwrap();
    let credential = agent_for(&plane, &mut admin, "cluster-a", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    let snapshot = agent.next_desired(WAIT).await;
    assert_eq!(namespaces(&snapshot), ["team-a-on-a"]);

    admin
        .create_env("team-a", "on-b-2", "cluster-b", "small")
        .await
        .unwrap();
    assert!(
        agent.quiet_for(Duration::from_millis(1500)).await,
        "cluster B's change never reaches cluster A's agent"
    );
    admin
        .create_env("team-a", "on-a-2", "cluster-a", "small")
        .await
        .unwrap();
    let change = agent.next_desired(WAIT).await;
    assert_eq!(namespaces(&change), ["team-a-on-a-2"]);

    // Acknowledging another cluster's namespace changes nothing there.
    agent
        .ack(
            revision(&change),
            vec![("team-a-on-b".into(), Verified, "")],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admin.env("team-a", "on-b").await.status,
        pb::EnvironmentStatus::Pending as i32
    );

    // An agent certificate never works for the admin API, nor an API token
    // (or no certificate) for the channel.
    let mut request = tonic::Request::new(tokio_stream::iter(vec![hello(0, true)]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", plane.admin_secret).parse().unwrap(),
    );
    let channel = mtp_e2e::endpoint(&plane.url()).connect().await.unwrap();
    let err = pb::agent_service_client::AgentServiceClient::new(channel)
        .session(request)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    let with_certificate = tonic::transport::Endpoint::from_shared(plane.url())
        .unwrap()
        .tls_config(credential.tls())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut as_agent = Clients::new(with_certificate, None);
    assert_eq!(
        as_agent
            .tenants
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn join_tokens_are_checked_and_re_registering_replaces_the_credential() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let err = register(&plane.url(), "mtpjoin_0123456789abcdef_00", "node-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let token = admin.join_token("k3s-1").await;
    let err = register(&plane.url(), &token, "Not A Node")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message().starts_with("node_name:")),
        (Code::InvalidArgument, true)
    );
    let first = register(&plane.url(), &token, "node-1").await.unwrap();
    let second = register(&plane.url(), &token, "node-1").await.unwrap();
    // The node keeps its agent id; only the certificate changes.
    assert_eq!(first.agent_id, second.agent_id);
    assert_eq!(
        ScriptedAgent::connect(&plane.url(), &first, 0, true)
            .await
            .err()
            .unwrap()
            .code(),
        Code::Unauthenticated
    );
    ScriptedAgent::connect(&plane.url(), &second, 0, true)
        .await
        .unwrap();
    let agents = admin
        .clusters
        .list_agents(pb::ListAgentsRequest {
            cluster: "k3s-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].node_name, "node-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_through_one_replica_reaches_an_agent_on_another() {
    let db = mtp_pg_harness::fresh_database().await;
    // Keepalives (and the fallback poll that rides on them) are slower than
    // the test's patience, so only NOTIFY can deliver the change in time.
    let mut slow = Config::for_dev(db.url());
    slow.agent_keepalive = Duration::from_secs(60);
    let replica_a = TestPlane::start_with(slow.clone()).await;
    let replica_b = TestPlane::start_with(slow).await;
    let mut admin_a = setup(&replica_a, &["k3s-1"]).await;
    let credential = agent_for(&replica_a, &mut admin_a, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&replica_b.url(), &credential, 0, true)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    admin_a
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    let change = agent.next_desired(Duration::from_secs(5)).await;
    assert_eq!(namespaces(&change), ["team-a-dev"]);
}

#[tokio::test]
async fn a_reconnecting_agent_is_sent_the_50_changes_since_its_revision() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    for i in 0..5 {
        admin
            .create_env("team-a", &format!("early-{i}"), "k3s-1", "small")
            .await
            .unwrap();
    }
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    let snapshot = agent.next_desired(WAIT).await;
    let acked = revision(&snapshot);
    agent
        .ack(
            acked,
            namespaces(&snapshot)
                .into_iter()
                .map(|n| (n, Verified, ""))
                .collect(),
        )
        .await;
    drop(agent);

    // 50 changes while the agent is away: 45 creates, 5 deletes of old ones.
    admin
        .fifty_changes("team-a", "k3s-1", "late", "early")
        .await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, acked, true)
        .await
        .unwrap();
    let catch_up = agent.next_desired(WAIT).await;
    let ControlKind::Changes(c) = &catch_up else {
        panic!("expected changes since {acked}, got {catch_up:?}")
    };
    assert_eq!((c.from_revision, c.revision), (acked, acked + 50));
    assert_eq!(c.upserts.len(), 45);
    let mut deletes = c.deletes.clone();
    deletes.sort();
    assert_eq!(
        deletes,
        (0..5)
            .map(|i| format!("team-a-early-{i}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn acknowledged_state_survives_a_control_plane_restart() {
    let db = mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    agent
        .ack(1, vec![("team-a-dev".into(), Verified, "")])
        .await;
    wait_status(&mut admin, "dev", pb::EnvironmentStatus::Ready).await;
    admin
        .create_env("team-a", "qa", "k3s-1", "small")
        .await
        .unwrap();
    agent.next_desired(WAIT).await; // revision 2, not acknowledged before the crash

    plane.running.kill();
    // The stream ends for the agent when its server goes away.
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = agent.inbound.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the session ends with the control plane");

    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let mut admin = plane.admin().await;
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Ready as i32
    );
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 1, true)
        .await
        .unwrap();
    let resumed = agent.next_desired(WAIT).await;
    assert_eq!(
        namespaces(&resumed),
        ["team-a-qa"],
        "only what came after the acknowledged revision"
    );
}

#[tokio::test]
async fn a_silent_agent_is_dropped_as_half_open_and_shown_disconnected() {
    let plane = TestPlane::start().await; // keepalive 1 s in tests
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    let listed = admin.agents().await;
    assert!(listed[0].connected && listed[0].applier);
    // The scripted agent sends no keepalives: the server must give up on it.
    let closed = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = agent.inbound.message().await {}
    })
    .await;
    assert!(closed.is_ok(), "half-open session closed within seconds");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = admin.agents().await;
    assert!(!listed[0].connected && !listed[0].applier);
}

#[tokio::test]
async fn acknowledgements_from_a_non_applier_change_nothing() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-2").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, false)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Pending as i32
    );
    agent
        .ack(1, vec![("team-a-dev".into(), Verified, "")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Pending as i32
    );
}

#[tokio::test]
async fn expired_environments_are_deleted_automatically_and_audited() {
    let plane = TestPlane::start().await; // expiry pass every 500 ms in tests
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    admin
        .create_expiring_env("team-a", "short-lived", "k3s-1", soon)
        .await
        .unwrap();
    let env = wait_status(&mut admin, "short-lived", pb::EnvironmentStatus::Deleting).await;
    assert_eq!(env.reason, "expired");
    let events = admin.audit_events().await;
    let expiry = events
        .iter()
        .rev()
        .find(|e| e.action == "environment.delete")
        .unwrap();
    assert_eq!(
        (expiry.actor.as_str(), expiry.target.as_str()),
        ("system:expiry", "environment/team-a/short-lived")
    );
}

async fn wait_status(
    admin: &mut Clients,
    env: &str,
    status: pb::EnvironmentStatus,
) -> pb::Environment {
    admin.wait_status("team-a", env, status, WAIT).await
}

#[tokio::test]
async fn a_recorded_acknowledgement_is_confirmed_by_its_number() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let applier_credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let other_credential = agent_for(&plane, &mut admin, "k3s-1", "node-2").await;
    let mut applier = ScriptedAgent::connect(&plane.url(), &applier_credential, 0, true)
        .await
        .unwrap();
    let mut other = ScriptedAgent::connect(&plane.url(), &other_credential, 0, false)
        .await
        .unwrap();
    applier.next_desired(WAIT).await;
    other.next_desired(WAIT).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    applier.next_desired(WAIT).await;
    other.next_desired(WAIT).await;

    // Not the applier: nothing is recorded, so nothing is confirmed.
    other
        .numbered_ack(1, 7, vec![("team-a-dev".into(), Verified, "")])
        .await;
    assert!(other.quiet_for(Duration::from_millis(500)).await);

    applier
        .numbered_ack(1, 42, vec![("team-a-dev".into(), Verified, "")])
        .await;
    let confirmed = applier.next_desired(WAIT).await;
    let ControlKind::AckRecorded(r) = &confirmed else {
        panic!("{confirmed:?}")
    };
    assert_eq!((r.sequence, r.revision), (42, 1));
    // Confirmed means recorded: the environment is Ready already.
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Ready as i32
    );

    // An agent that is already current is told so (an empty change set),
    // not left guessing whether its stored state is the latest.
    let third = agent_for(&plane, &mut admin, "k3s-1", "node-3").await;
    let mut current = ScriptedAgent::connect(&plane.url(), &third, 1, false)
        .await
        .unwrap();
    let answer = current.next_desired(WAIT).await;
    let ControlKind::Changes(c) = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!((c.from_revision, c.revision), (1, 1));
    assert!(c.upserts.is_empty() && c.deletes.is_empty());
}

#[tokio::test]
async fn keepalives_are_answered_and_an_agents_longer_interval_is_respected() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let mut config = Config::for_dev(db.url());
    config.agent_keepalive = Duration::from_secs(60);
    let plane = TestPlane::start_with(config).await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let credential = agent_for(&plane, &mut admin, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &credential, 0, true)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    // The server's own beat comes once a minute here; an answer comes at once.
    let beat = || pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Keepalive(pb::Keepalive {
            time: None,
        })),
    };
    let next_keepalive = async |agent: &mut ScriptedAgent| loop {
        match agent.inbound.message().await {
            Ok(Some(pb::ControlMessage {
                kind: Some(ControlKind::Keepalive(_)),
            })) => return,
            Ok(Some(_)) => continue,
            other => panic!("session ended: {other:?}"),
        }
    };
    // The server's interval fires once right after the snapshot; after that
    // its next beat is a minute away.
    tokio::time::timeout(WAIT, next_keepalive(&mut agent))
        .await
        .expect("the first beat of the interval");
    agent.send(beat().kind.unwrap()).await;
    let answered = tokio::time::timeout(WAIT, next_keepalive(&mut agent)).await;
    assert!(answered.is_ok(), "a keepalive is answered");

    // A server with a 1 s interval closes silent sessions after 3 s, unless
    // the agent said it beats less often.
    let fast = TestPlane::start().await;
    let mut admin = setup(&fast, &["k3s-1"]).await;
    let credential = agent_for(&fast, &mut admin, "k3s-1", "node-1").await;
    let hello = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::AgentHello {
            applied_revision: 0,
            agent_version: "scripted".into(),
            applier: true,
            keepalive_ms: 5_000,
            ..Default::default()
        })),
    };
    let mut slow_agent = ScriptedAgent::connect_with(&fast.url(), &credential, hello)
        .await
        .unwrap();
    slow_agent.next_desired(WAIT).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    slow_agent.send(beat().kind.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = admin.agents().await;
    assert!(
        listed[0].connected,
        "an agent silent for 4.5 s under its advertised 5 s interval stays connected"
    );
}
