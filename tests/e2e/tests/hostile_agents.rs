//! Agents that lie, wedge or stall, scripted against a real control plane over
//! mutual TLS: forged acknowledgements from a second agent, revisions near the
//! end of the range, drift floods, state too big for one message, a reader
//! that never reads, a second session of the same agent, a flood of made-up
//! tokens. None of them may change what it is not entitled to, wedge its
//! cluster, or hold up the control plane.

use std::time::{Duration, Instant};

use mtp_e2e::agent::{Enrollment, ScriptedAgent, register};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use pb::NamespaceOutcome::{Deleted, Verified};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

async fn setup(plane: &TestPlane) -> Clients {
    let team_a = ("team-a", quota("100", "400Gi", "4Ti", 10_000, 1000));
    plane.admin_with(&[team_a], &["k3s-1"]).await
}

async fn enroll(plane: &TestPlane, admin: &mut Clients, node: &str) -> Enrollment {
    let token = admin.join_token("k3s-1").await;
    register(&plane.url(), &token, node).await.unwrap()
}

/// A session that said hello as a candidate and was fenced in (or not).
async fn session(plane: &TestPlane, who: &Enrollment, held: i64, candidate: bool) -> ScriptedAgent {
    let mut agent = ScriptedAgent::connect(&plane.url(), who, held, candidate)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    agent
}

fn status(env: &pb::Environment) -> pb::EnvironmentStatus {
    pb::EnvironmentStatus::try_from(env.status).unwrap()
}

async fn cluster(admin: &mut Clients) -> pb::Cluster {
    admin
        .clusters
        .get_cluster(pb::GetClusterRequest {
            name: "k3s-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `count` environments of team-a beside its `seed` one, inserted directly
/// (the API path is tested elsewhere; this is about what one session must
/// carry), all at revision 2.
async fn bulk_environments(pool: &sqlx::PgPool, count: i64) {
    sqlx::query(
        "INSERT INTO environments (id, tenant_id, name, cluster_id, profile, namespace,
                cpu_millis, memory_bytes, storage_bytes, pods, services, persistent_volume_claims,
                status, reason, revision, create_time)
         SELECT gen_random_uuid(), e.tenant_id, 'bulk-' || g, e.cluster_id, e.profile, 'team-a-bulk-' || g,
                1, 1, 1, 1, 1, 1, 'pending', '', 2, now()
         FROM environments e, generate_series(1, $1) g WHERE e.name = 'seed'",
    )
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE clusters SET revision = 2")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_agent_saying_it_applies_cannot_make_anything_ready_or_deleted() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    let honest = enroll(&plane, &mut admin, "node-1").await;
    let forger = enroll(&plane, &mut admin, "node-2").await;
    let applier = session(&plane, &honest, 0, true).await;
    assert!(applier.granted(), "the first candidate is fenced in");
    // The reproduction: another agent of the cluster says `applier: true`.
    let mut liar = session(&plane, &forger, 0, true).await;
    assert!(!liar.granted(), "only one applier per cluster");

    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    liar.next_desired(WAIT).await;
    liar.ack(1, vec![("team-a-dev".into(), Verified, "")]).await;
    liar.send(AgentKind::Drift(pb::DriftReport {
        namespace: "team-a-dev".into(),
        object: "RoleBinding/mtp-owners".into(),
        description: "forged".into(),
        repaired: true,
    }))
    .await;
    // Still heard on the stream (keepalives answered), and nothing moved.
    assert!(liar.quiet_for(Duration::from_millis(500)).await);
    assert_ne!(
        status(&admin.env("team-a", "dev").await),
        pb::EnvironmentStatus::Ready
    );

    admin.delete_env("team-a", "dev").await.unwrap();
    liar.next_desired(WAIT).await;
    liar.ack(2, vec![("team-a-dev".into(), Deleted, "")]).await;
    assert!(liar.quiet_for(Duration::from_millis(500)).await);
    assert_eq!(
        status(&admin.env("team-a", "dev").await),
        pb::EnvironmentStatus::Deleting
    );
    let events = admin.audit_events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.action == "environment.drift_repaired")
    );
    assert!(!events.iter().any(|e| e.action == "environment.deleted"));
}

#[tokio::test]
async fn a_hello_near_the_end_of_the_revision_range_is_refused_and_wedges_nothing() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    admin
        .create_env("team-a", "a", "k3s-1", "small")
        .await
        .unwrap();
    for (node, candidate) in [("node-1", false), ("node-2", true)] {
        let who = enroll(&plane, &mut admin, node).await;
        let mut agent =
            ScriptedAgent::connect(&plane.url(), &who, 9_223_372_036_854_775_806, candidate)
                .await
                .unwrap();
        let end = agent.ended(WAIT).await;
        assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
        assert!(
            end.message().starts_with("hello.applied_revision"),
            "{end:?}"
        );
    }
    assert_eq!(cluster(&mut admin).await.revision, 1);
    // The cluster still takes changes.
    let b = admin
        .create_env("team-a", "b", "k3s-1", "small")
        .await
        .unwrap();
    assert_eq!(b.revision, 2);
}

#[tokio::test]
async fn the_applier_holding_a_restored_databases_future_gets_a_bounded_reissue() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    admin
        .create_env("team-a", "a", "k3s-1", "small")
        .await
        .unwrap();
    let who = enroll(&plane, &mut admin, "node-1").await;
    // A non-applier holding 40: a snapshot, no re-issue.
    let bystander = enroll(&plane, &mut admin, "node-2").await;
    let _applier_session_first = session(&plane, &who, 0, true).await;
    let mut b = ScriptedAgent::connect(&plane.url(), &bystander, 40, false)
        .await
        .unwrap();
    let update = b.next_desired(WAIT).await;
    assert!(matches!(update, ControlKind::Snapshot(_)), "{update:?}");
    assert_eq!(cluster(&mut admin).await.revision, 1);
    drop(_applier_session_first);
    // The fenced applier holding 40 (restored backup): re-issued above it.
    let mut applier = ScriptedAgent::connect(&plane.url(), &who, 40, true)
        .await
        .unwrap();
    let update = applier.next_desired(WAIT).await;
    let ControlKind::Snapshot(s) = &update else {
        panic!("{update:?}")
    };
    assert_eq!(s.revision, 41);
    assert!(s.namespaces.iter().all(|n| n.revision == 41));
    // A namespace stamped above everything (superseded): re-issued above
    // the stamp, so the applier can update it.
    applier.send_superseded(41, "team-a-a", 75).await;
    let changes = applier.next_desired(WAIT).await;
    assert_eq!(mtp_e2e::agent::revision(&changes), 76);
    // A stamp too far ahead is not followed.
    applier.send_superseded(76, "team-a-a", i64::MAX).await;
    assert!(applier.quiet_for(Duration::from_millis(500)).await);
    assert_eq!(cluster(&mut admin).await.revision, 76);
}

#[tokio::test]
async fn a_drift_flood_is_bounded_and_does_not_end_the_session() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    let who = enroll(&plane, &mut admin, "node-1").await;
    let mut agent = session(&plane, &who, 0, true).await;
    let started = Instant::now();
    for i in 0..1000 {
        agent
            .send(AgentKind::Drift(pb::DriftReport {
                namespace: "team-a-dev".into(),
                object: format!("ConfigMap/flood-{i}"),
                description: "d".repeat(1024),
                repaired: true,
            }))
            .await;
    }
    assert!(
        agent.quiet_for(Duration::from_secs(1)).await,
        "the session stays up"
    );
    let seconds = started.elapsed().as_secs() + 2;
    let recorded = admin
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "environment.drift_repaired")
        .count() as u64;
    // A burst of 100, then 10 per second.
    assert!(
        recorded >= 100 && recorded <= 100 + 10 * seconds,
        "{recorded} recorded in {seconds}s"
    );
    // Oversized or NUL texts are refused, naming the field.
    agent
        .send(AgentKind::Drift(pb::DriftReport {
            namespace: "team-a-dev".into(),
            object: "x".repeat(254),
            description: String::new(),
            repaired: true,
        }))
        .await;
    let end = agent.ended(WAIT).await;
    assert_eq!(end.code(), Code::InvalidArgument);
    assert_eq!(end.message(), "drift.object: at most 253 bytes");
}

#[tokio::test]
async fn fifty_thousand_environments_arrive_in_pages_and_an_oversized_ack_is_refused() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    admin
        .create_env("team-a", "seed", "k3s-1", "small")
        .await
        .unwrap();
    let pool = plane.sql().await;
    // 50,000 environments inserted directly: the API path is tested
    // elsewhere, this is about what one session must carry.
    bulk_environments(&pool, 50000).await;
    let who = enroll(&plane, &mut admin, "node-1").await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &who, 0, true)
        .await
        .unwrap();
    let (pages, largest, namespaces) = agent.snapshot_pages(Duration::from_secs(120)).await;
    assert_eq!(namespaces, 50_001);
    assert!(pages > 10, "{pages} pages");
    assert!(largest < 1 << 20, "largest page {largest} bytes");

    // An ack over the message limit is refused by the transport, and the
    // control plane carries on.
    let huge = (0..40_000)
        .map(|i| pb::NamespaceResult {
            namespace: format!("team-a-bulk-{i}"),
            outcome: pb::NamespaceOutcome::Failed as i32,
            reason: "r".repeat(200),
            live_revision: 0,
        })
        .collect();
    agent
        .send(AgentKind::Ack(pb::RevisionAck {
            revision: 2,
            results: huge,
            sequence: 1,
        }))
        .await;
    let end = agent.ended(Duration::from_secs(30)).await;
    assert_ne!(end.code(), Code::Ok, "{end:?}");
    assert!(end.message().contains("unreadable message"), "{end:?}");
    // (The tenant's quota is spent by the bulk rows; the plane still answers.)
    assert_eq!(cluster(&mut admin).await.revision, 2);
}

#[tokio::test]
async fn an_agent_that_stops_reading_is_dropped_and_shutdown_does_not_wait_for_it() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    admin
        .create_env("team-a", "seed", "k3s-1", "small")
        .await
        .unwrap();
    let pool = plane.sql().await;
    bulk_environments(&pool, 100000).await;
    let who = enroll(&plane, &mut admin, "node-1").await;
    // Connects, says hello, then never reads: the snapshot cannot go out.
    let stuck = ScriptedAgent::connect(&plane.url(), &who, 0, true)
        .await
        .unwrap();
    // It keeps sending keepalives, so it is not silent (half-open): only
    // the bound on each send can find it.
    let beats = stuck.outbound.clone();
    tokio::spawn(async move {
        let beat = || pb::AgentMessage {
            kind: Some(AgentKind::Keepalive(pb::Keepalive { time: None })),
        };
        while beats.send(beat()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    for connected in [true, false] {
        loop {
            let agents = admin.agents().await;
            if agents.iter().all(|a| a.connected == connected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never connected = {connected}: {agents:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A second stuck reader, then shutdown: bounded, not hung.
    let _again = ScriptedAgent::connect(&plane.url(), &who, 0, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), plane.running.shutdown())
        .await
        .expect("graceful shutdown does not hang on a stuck agent");
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(stuck);
}

#[tokio::test]
async fn a_second_session_of_the_same_agent_replaces_the_first() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    let who = enroll(&plane, &mut admin, "node-1").await;
    let mut first = session(&plane, &who, 0, true).await;
    assert!(first.granted());
    let second = session(&plane, &who, 0, true).await;
    assert!(second.granted());
    let end = first.ended(WAIT).await;
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    // The new session holds a newer epoch.
    assert!(second.epoch() > first.epoch());
}

#[tokio::test]
async fn a_held_prune_is_confirmed_by_an_operator_and_passed_to_the_applier() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane).await;
    let who = enroll(&plane, &mut admin, "node-1").await;
    let mut applier = session(&plane, &who, 0, true).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    applier.next_desired(WAIT).await;
    applier
        .send(AgentKind::PruneHeld(pb::PruneHeld {
            revision: 1,
            would_delete: 9,
            managed: 10,
            sample: vec!["team-b-old".into()],
        }))
        .await;
    let deadline = Instant::now() + WAIT;
    let held = loop {
        if let Some(h) = cluster(&mut admin).await.held_prune {
            break h;
        }
        assert!(Instant::now() < deadline, "the hold is never shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((held.revision, held.would_delete, held.managed), (1, 9, 10));
    let wrong = admin
        .clusters
        .confirm_prune(pb::ConfirmPruneRequest {
            cluster: "k3s-1".into(),
            revision: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    admin
        .clusters
        .confirm_prune(pb::ConfirmPruneRequest {
            cluster: "k3s-1".into(),
            revision: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        applier
            .next_prune_confirmation(Duration::from_secs(20))
            .await,
        1
    );
}

#[tokio::test]
async fn a_flood_of_made_up_tokens_is_held_off_before_the_database() {
    let plane = TestPlane::start().await;
    let mut forger = plane
        .clients(Some(
            "mtp_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
        ))
        .await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let err = forger
            .clusters
            .list_clusters(pb::ListClustersRequest {})
            .await
            .unwrap_err();
        codes.push(err.code());
    }
    assert_eq!(codes[..20], [Code::Unauthenticated; 20]);
    assert!(
        codes[20..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
}

#[tokio::test]
async fn a_flood_of_made_up_join_tokens_is_held_off_too() {
    let plane = TestPlane::start().await;
    let forged = format!("mtpjoin_0123456789abcdef_{}", "0".repeat(64));
    let mut codes = Vec::new();
    for i in 0..25 {
        let err = register(&plane.url(), &forged, &format!("node-{i}"))
            .await
            .unwrap_err();
        codes.push(err.code());
    }
    assert_eq!(codes[..20], [Code::Unauthenticated; 20]);
    assert!(
        codes[20..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
}
