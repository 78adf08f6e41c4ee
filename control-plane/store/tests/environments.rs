//! Environments on a real PostgreSQL: quota admission under real concurrency
//! (docs/architecture.md, invariant 1), the revision notices that wake agent
//! sessions, and the per-cluster summary behind the fleet metrics.

mod common;

use std::time::Duration;

use common::{cluster, ctx, env, new_env, store, tenant};
use mtp_core::agents::NamespaceReport;
use mtp_core::environments::EnvironmentStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_exceed_the_tenant_quota() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    // Room for exactly 5 `small` environments; 20 creates race for it.
    tenant(&store, "team-a", 5).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .create_environment(&ctx(), &new_env("team-a", &format!("e{i}"), "k3s-1"))
                .await
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(mtp_store::Error::Domain(mtp_core::Error::QuotaExceeded(_))) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(admitted, 5);
    let t = store.get_tenant("team-a").await.unwrap();
    assert_eq!(t.usage.environments, 5);
    assert_eq!(t.usage.cpu_millis, t.spec.quota.cpu_millis);
    // Each admitted create took its own revision of the cluster.
    let mut revisions: Vec<i64> = store
        .list_environments(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    revisions.sort_unstable();
    assert_eq!(revisions, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn committed_changes_are_announced_and_refused_ones_are_not() {
    let store = store().await;
    let c = cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 1).await;
    let notices = store.revision_notices().await;
    let mut heard = notices.subscribe();
    env(&store, "team-a", "a", "k3s-1").await;
    // A refused create issues no revision and announces nothing: the next
    // notice is the deletion's, at 2.
    let refused = store
        .create_environment(&ctx(), &new_env("team-a", "b", "k3s-1"))
        .await;
    assert!(refused.is_err());
    store
        .delete_environment(&ctx(), "team-a", "a")
        .await
        .unwrap();
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let notice = tokio::time::timeout(Duration::from_secs(30), heard.recv())
            .await
            .expect("a notice within 30 s")
            .unwrap();
        assert_eq!(notice.cluster_id, c.id);
        revisions.push(notice.revision);
    }
    assert_eq!(revisions, [1, 2]);
    // And nothing after them: a refused create that bumped the counter would
    // show as revision 3 here, with the notices above still reading [1, 2].
    assert_eq!(store.get_cluster("k3s-1").await.unwrap().revision, 2);
}

#[tokio::test]
async fn cluster_summaries_count_live_environments_and_the_revision_lag() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    cluster(&store, "k3s-2").await;
    tenant(&store, "team-a", 10).await;
    let a = env(&store, "team-a", "a", "k3s-1").await;
    env(&store, "team-a", "b", "k3s-1").await;
    env(&store, "team-a", "c", "k3s-1").await;
    store
        .delete_environment(&ctx(), "team-a", "c")
        .await
        .unwrap();
    let applier = common::applier(&store, "k3s-1", "node-1").await;
    let verified = [(a.namespace.clone(), NamespaceReport::Verified)];
    common::ack(&store, &applier, 2, &verified).await.unwrap();

    let summaries = store.cluster_summaries().await.unwrap();
    assert_eq!(summaries.len(), 2);
    let one = &summaries[0];
    assert_eq!(one.cluster, "k3s-1");
    assert_eq!((one.revision, one.acknowledged_revision), (4, 2));
    assert_eq!(one.revision_lag(), 2);
    let mut by_status = one.environments.clone();
    by_status.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        by_status,
        [
            (EnvironmentStatus::Deleting, 1),
            (EnvironmentStatus::Pending, 1),
            (EnvironmentStatus::Ready, 1),
        ]
    );
    let two = &summaries[1];
    assert_eq!((two.cluster.as_str(), two.revision_lag()), ("k3s-2", 0));
    assert!(two.environments.is_empty());
}
