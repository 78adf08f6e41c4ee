//! Invariant 1 (docs/architecture.md): a tenant's quota is never exceeded by the sum of its
//! environments, even when 100 clients create environments at the same moment.

use futures::future::join_all;
use mtp_e2e::{Clients, TestPlane, count, quota};
use tonic::Code;

/// Fires `n` creates from `n` separate connections, released together.
async fn race(plane: &TestPlane, tenant: &str, n: usize) -> Vec<Result<(), tonic::Status>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(plane.admin().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c): (usize, Clients)| {
            let barrier = barrier.clone();
            let tenant = tenant.to_owned();
            tokio::spawn(async move {
                barrier.wait().await;
                c.create_env(&tenant, &format!("env-{i}"), "k3s-1", "small")
                    .await
                    .map(|_| ())
            })
        });
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task ran"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_creates_never_pass_the_cpu_quota() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    // small = 1 CPU, 2Gi, 10Gi, 20 pods: CPU runs out after 7.
    admin
        .create_tenant("team-a", quota("7500m", "1Ti", "10Ti", 10_000, 1000))
        .await
        .unwrap();

    let results = race(&plane, "team-a", 100).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 7, "exactly the creates that fit succeed");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message()
                .contains("cpu: needs 1 but only 500m of 7500m is left (short by 500m)"),
            "the refusal says which resource ran out and by how much: {}",
            err.message()
        );
    }
    let tenant = admin
        .tenants
        .get_tenant(mtp_proto::v1::GetTenantRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let usage = tenant.usage.unwrap();
    assert_eq!((usage.cpu.as_str(), usage.environments), ("7", 7));

    let sql = plane.sql().await;
    assert_eq!(count(&sql, "environments").await, 7);
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'environment.create'")
            .fetch_one(&sql)
            .await
            .unwrap();
    assert_eq!(
        audited, 7,
        "one audit event per successful create, none for refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_creates_never_pass_max_environments() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-b", quota("1000", "100Ti", "100Ti", 100_000, 12))
        .await
        .unwrap();

    let results = race(&plane, "team-b", 100).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 12);
    let refusal = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("some were refused");
    assert_eq!(refusal.code(), Code::ResourceExhausted);
    assert!(
        refusal
            .message()
            .contains("environments: needs 1 but only 0 of 12 is left"),
        "{}",
        refusal.message()
    );
}

#[tokio::test]
async fn deleting_frees_nothing_until_confirmed_and_quota_cannot_shrink_below_use() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-c", quota("2", "8Gi", "100Gi", 100, 5))
        .await
        .unwrap();
    admin
        .create_env("team-c", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin
        .create_env("team-c", "qa", "k3s-1", "small")
        .await
        .unwrap();

    // The namespace is still on the cluster until an agent confirms deletion,
    // so a deleting environment keeps holding its share of the quota.
    let deleted = admin.delete_env("team-c", "qa").await.unwrap();
    assert_eq!(
        deleted.status,
        mtp_proto::v1::EnvironmentStatus::Deleting as i32
    );
    let err = admin
        .create_env("team-c", "qa2", "k3s-1", "small")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);

    let err = admin
        .tenants
        .update_tenant(mtp_proto::v1::UpdateTenantRequest {
            name: "team-c".into(),
            quota: Some(quota("1", "8Gi", "100Gi", 100, 5)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cpu 1 < 2 in use"),
        "{}",
        err.message()
    );
}
