//! Invariant 2 (docs/architecture.md): each mutating call writes its audit event in the same
//! transaction; the log is append-only and hash-chained; tampering is found.

use mtp_e2e::{TestPlane, count, quota};
use mtp_proto::v1 as pb;

async fn events(plane: &TestPlane) -> Vec<pb::AuditEvent> {
    plane.admin().await.audit_events().await
}

async fn verify(plane: &TestPlane) -> pb::VerifyAuditLogResponse {
    let mut admin = plane.admin().await;
    admin
        .audit
        .verify_audit_log(pb::VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Runs a few mutations and returns how many audit events they must have written.
async fn populate(plane: &TestPlane) -> usize {
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-a", quota("4", "8Gi", "100Gi", 50, 5))
        .await
        .unwrap();
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin
        .create_env("team-a", "qa", "k3s-1", "small")
        .await
        .unwrap();
    admin.delete_env("team-a", "qa").await.unwrap();
    admin.mint(pb::TokenRole::ReadOnly, "team-a").await;
    6
}

#[tokio::test]
async fn every_mutation_is_audited_with_actor_target_and_request_id() {
    let plane = TestPlane::start().await;
    let base = events(&plane).await.len(); // the bootstrap token
    let expected = populate(&plane).await;
    let all = events(&plane).await;
    let ours = &all[base..];
    let actions: Vec<&str> = ours.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "cluster.create",
            "tenant.create",
            "environment.create",
            "environment.create",
            "environment.delete",
            "token.create"
        ]
    );
    assert_eq!(ours.len(), expected);
    let env = &ours[2];
    assert_eq!(env.target, "environment/team-a/dev");
    assert_eq!(env.tenant, "team-a");
    assert!(env.actor.starts_with("token:"));
    assert!(!env.request_id.is_empty());
    let details: serde_json::Value = serde_json::from_str(&env.details_json).unwrap();
    assert_eq!(details["namespace"], "team-a-dev");
    // Each event links to the one before it.
    for pair in all.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash);
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
    let report = verify(&plane).await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events_checked as usize, all.len());
}

#[tokio::test]
async fn client_request_ids_reach_the_audit_log() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    let mut request = tonic::Request::new(pb::CreateClusterRequest {
        name: "k3s-1".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "ticket-4711".parse().unwrap());
    let response = admin.clusters.create_cluster(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "ticket-4711"
    );
    let last = events(&plane).await.pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.request_id.as_str()),
        ("cluster.create", "ticket-4711")
    );
}

#[tokio::test]
async fn failed_calls_write_no_audit_event() {
    let plane = TestPlane::start().await;
    populate(&plane).await;
    let sql = plane.sql().await;
    let before = count(&sql, "audit_events").await;
    let mut admin = plane.admin().await;
    assert!(admin.create_cluster("k3s-1").await.is_err()); // already exists
    assert!(
        admin
            .create_env("team-a", "Bad", "k3s-1", "small")
            .await
            .is_err()
    );
    assert!(
        admin
            .create_env("team-a", "big", "k3s-1", "large")
            .await
            .is_err()
    ); // over quota
    assert_eq!(count(&sql, "audit_events").await, before);
}

#[tokio::test]
async fn the_log_refuses_edits_and_the_verifier_finds_the_first_broken_link() {
    let plane = TestPlane::start().await;
    populate(&plane).await;
    let sql = plane.sql().await;

    // Append-only: ordinary SQL cannot change or remove events.
    let err = sqlx::query("UPDATE audit_events SET actor = 'nobody' WHERE sequence = 3")
        .execute(&sql)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(
        sqlx::query("DELETE FROM audit_events WHERE sequence = 3")
            .execute(&sql)
            .await
            .is_err()
    );
    assert!(verify(&plane).await.intact);

    // A superuser can bypass triggers; the hash chain still gives it away.
    let mut conn = sql.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET target = 'tenant/someone-else' WHERE sequence = 4")
        .execute(&mut *conn)
        .await
        .unwrap();
    let report = verify(&plane).await;
    assert!(!report.intact);
    assert_eq!(report.first_broken_sequence, 4);
    assert!(
        report.problem.contains("does not match its hash"),
        "{}",
        report.problem
    );

    // Deleting an event shows up as a gap at the first missing sequence.
    sqlx::query("UPDATE audit_events SET target = 'tenant/team-a' WHERE sequence = 4")
        .execute(&mut *conn)
        .await
        .unwrap();
    let original: String =
        sqlx::query_scalar("SELECT details FROM audit_events WHERE sequence = 4")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let _ = original;
    sqlx::query("DELETE FROM audit_events WHERE sequence = 2")
        .execute(&mut *conn)
        .await
        .unwrap();
    let report = verify(&plane).await;
    assert!(!report.intact);
    assert_eq!(report.first_broken_sequence, 2);
    assert!(report.problem.contains("missing"), "{}", report.problem);
}

#[tokio::test]
async fn deleting_the_newest_events_is_detected_through_the_chain_head() {
    let plane = TestPlane::start().await;
    populate(&plane).await;
    let sql = plane.sql().await;
    let last: i64 = sqlx::query_scalar("SELECT MAX(sequence) FROM audit_events")
        .fetch_one(&sql)
        .await
        .unwrap();
    let mut conn = sql.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE sequence = $1")
        .bind(last)
        .execute(&mut *conn)
        .await
        .unwrap();
    let report = verify(&plane).await;
    assert!(!report.intact);
    assert_eq!(report.first_broken_sequence, last);
}
