//! Usage over the agent channel (invariant 6): every agent, applier or not,
//! sends batches of its node's usage; each copy is answered, and a batch is
//! stored once whatever happens between sending and the answer — a cut
//! session, a control-plane restart, two replicas receiving the same batch.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use mtp_e2e::agent::{Enrollment, ScriptedAgent, namespaces, register};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

async fn setup(plane: &TestPlane) -> (Clients, Enrollment) {
    let team_a = ("team-a", quota("100", "400Gi", "4Ti", 10_000, 1000));
    let mut admin = plane.admin_with(&[team_a], &["k3s-1"]).await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    let token = admin.join_token("k3s-1").await;
    let enrollment = register(&plane.url(), &token, "node-1").await.unwrap();
    (admin, enrollment)
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// A batch of `minutes` one-minute windows of team-a-dev, hours ago, at a
/// place set by its sequence (so two batches never share a window).
fn batch(epoch: u64, sequence: u64, minutes: i64) -> pb::UsageBatch {
    let base = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(6);
    pb::UsageBatch {
        spool_epoch: epoch,
        sequence,
        windows: (0..minutes)
            .map(|m| pb::UsageWindow {
                start: Some(ts(base + TimeDelta::minutes(m + (sequence as i64) * 100))),
                duration_seconds: 60,
                covered_seconds: 60,
                node_cpu_millis: 4000,
                node_memory_bytes: 16 << 30,
                namespaces: vec![pb::NamespaceUsage {
                    namespace: "team-a-dev".into(),
                    cpu_requested_core_nanos: 6_000_000_000,
                    cpu_used_core_nanos: 9_000_000_000,
                    cpu_billed_core_nanos: 9_000_000_000,
                    memory_requested_byte_seconds: 60 << 20,
                    memory_used_byte_seconds: 30 << 20,
                    memory_billed_byte_seconds: 60 << 20,
                    container_seconds: 60,
                    ..Default::default()
                }],
            })
            .collect(),
        gaps: vec![],
    }
}

/// Sends a batch and waits for its answer.
async fn send_and_confirm(agent: &mut ScriptedAgent, batch: pb::UsageBatch) {
    let (epoch, sequence) = (batch.spool_epoch, batch.sequence);
    agent.send(AgentKind::Usage(batch)).await;
    confirmed(agent, epoch, sequence).await;
}

/// Waits for the answer to batch (epoch, sequence).
async fn confirmed(agent: &mut ScriptedAgent, epoch: u64, sequence: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            let message = agent.inbound.message().await.expect("session open");
            if let Some(pb::ControlMessage {
                kind: Some(ControlKind::UsageRecorded(r)),
            }) = message
            {
                assert_eq!((r.spool_epoch, r.sequence), (epoch, sequence));
                return;
            }
        }
    })
    .await
    .expect("the batch is answered");
}

/// Namespace windows stored and their billed CPU, straight from the raw table.
async fn stored(plane: &TestPlane) -> (i64, i64) {
    let pool = plane.sql().await;
    sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(cpu_billed), 0)::bigint FROM usage_windows")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_resent_after_a_cut_session_is_stored_once_and_answered_again() {
    let plane = TestPlane::start().await;
    let (_admin, enrollment) = setup(&plane).await;
    // Not a candidate for applier: usage comes from every agent.
    let agent = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    // Sent, then the session is cut before the answer is read.
    agent.send(AgentKind::Usage(batch(5, 1, 30))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(agent);
    let mut again = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    send_and_confirm(&mut again, batch(5, 1, 30)).await;
    send_and_confirm(&mut again, batch(5, 1, 30)).await;
    send_and_confirm(&mut again, batch(5, 2, 10)).await;
    assert_eq!(stored(&plane).await, (40, 40 * 9_000_000_000));
}

#[tokio::test]
async fn a_batch_survives_a_restart_and_two_replicas_store_it_once() {
    let db = mtp_pg_harness::fresh_database().await;
    let first = TestPlane::start_on(db.url().to_owned()).await;
    let (_admin, enrollment) = setup(&first).await;
    let mut agent = ScriptedAgent::connect(&first.url(), &enrollment, 0, false)
        .await
        .unwrap();
    send_and_confirm(&mut agent, batch(8, 1, 20)).await;
    first.running.kill();
    drop(agent);

    // Two replicas on the same database; the agent's copy reaches both.
    let a = TestPlane::start_on(db.url().to_owned()).await;
    let b = TestPlane::start_on(db.url().to_owned()).await;
    let mut on_a = ScriptedAgent::connect(&a.url(), &enrollment, 0, false)
        .await
        .unwrap();
    send_and_confirm(&mut on_a, batch(8, 1, 20)).await;
    drop(on_a);
    let mut on_b = ScriptedAgent::connect(&b.url(), &enrollment, 0, false)
        .await
        .unwrap();
    send_and_confirm(&mut on_b, batch(8, 1, 20)).await;
    send_and_confirm(&mut on_b, batch(8, 2, 5)).await;
    assert_eq!(stored(&a).await, (25, 25 * 9_000_000_000));
}

#[tokio::test]
async fn a_batch_breaking_the_rules_is_refused_naming_the_field() {
    let plane = TestPlane::start().await;
    let (_admin, enrollment) = setup(&plane).await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    let mut bad = batch(3, 1, 2);
    // Billed below what was used: not max(request, usage).
    bad.windows[1].namespaces[0].cpu_billed_core_nanos = 1;
    agent.send(AgentKind::Usage(bad)).await;
    let status = agent.ended(WAIT).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("windows[1].namespaces[0].cpu_billed_core_nanos"),
        "{}",
        status.message()
    );
    assert_eq!(
        stored(&plane).await,
        (0, 0),
        "nothing of the batch is stored"
    );
}

#[tokio::test]
async fn windows_past_the_ingest_horizon_are_dropped_and_the_batch_answered() {
    let plane = TestPlane::start().await;
    let (_admin, enrollment) = setup(&plane).await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    let mut late = batch(4, 1, 2);
    let old = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::days(5);
    late.windows[0].start = Some(ts(old));
    // Answered, not refused: a spool that held it would resend it forever.
    send_and_confirm(&mut agent, late).await;
    assert_eq!(stored(&plane).await, (1, 9_000_000_000));
}

/// Usage never delays desired state on the same session: while the usage
/// tables are locked (a database slow for usage), a batch waits to be
/// stored, and an environment created meanwhile still reaches the agent at
/// once; the batch is answered when the lock goes.
#[tokio::test]
async fn a_slow_usage_insert_never_holds_back_desired_state() {
    let plane = TestPlane::start().await;
    let (mut admin, enrollment) = setup(&plane).await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    let sql = plane.sql().await;
    let mut locker = sql.begin().await.unwrap();
    sqlx::query("LOCK TABLE usage_batches IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    agent.send(AgentKind::Usage(batch(9, 1, 5))).await;
    admin
        .create_env("team-a", "late", "k3s-1", "small")
        .await
        .unwrap();
    let change = agent.next_desired(WAIT).await;
    assert!(
        namespaces(&change).contains(&"team-a-late".to_owned()),
        "{change:?}"
    );
    assert_eq!(stored(&plane).await.0, 0, "the batch still waits");
    locker.rollback().await.unwrap();
    confirmed(&mut agent, 9, 1).await;
    assert_eq!(stored(&plane).await.0, 5);
}

/// A session holds a bounded queue of batches waiting to be stored: while
/// the store is stuck, batches beyond it are dropped unanswered (an honest
/// agent has at most 4 in flight and never gets there; it would send them
/// again on its next session), never buffered without bound.
#[tokio::test]
async fn batches_beyond_the_ingest_queue_are_dropped_unanswered() {
    let plane = TestPlane::start().await;
    let (_admin, enrollment) = setup(&plane).await;
    let mut agent = ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap();
    agent.next_desired(WAIT).await;
    let sql = plane.sql().await;
    let mut locker = sql.begin().await.unwrap();
    sqlx::query("LOCK TABLE usage_batches IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let base = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(3);
    for sequence in 1..=20u64 {
        let mut b = batch(11, sequence, 1);
        b.windows[0].start = Some(ts(base + TimeDelta::minutes(sequence as i64)));
        agent.send(AgentKind::Usage(b)).await;
    }
    // Let the session take all twenty in before the store moves again.
    assert!(agent.quiet_for(Duration::from_millis(500)).await);
    locker.rollback().await.unwrap();
    let mut answered = Vec::new();
    while let Ok(Ok(Some(message))) =
        tokio::time::timeout(Duration::from_secs(2), agent.inbound.message()).await
    {
        if let Some(ControlKind::UsageRecorded(r)) = message.kind {
            answered.push(r.sequence);
        }
    }
    // The queue's eight, in order, and at most one more: the one the store
    // had taken out of the queue (when it did depends on scheduling).
    assert!(
        (8..=9).contains(&answered.len()) && answered[..8] == (1..=8).collect::<Vec<_>>(),
        "{answered:?}"
    );
    assert_eq!(stored(&plane).await.0, answered.len() as i64);
}
