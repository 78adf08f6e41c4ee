//! The agent channel's persistence on a real PostgreSQL: the desired state
//! of a cluster by revision, the guards that keep stale acknowledgements from
//! moving state back, and re-issuing revisions after a restore.

mod common;

use std::time::Duration;

use common::{ack, applier, cluster, ctx, env, store, tenant};
use mtp_core::agents::{AgentIdentity, NamespaceReport};
use mtp_core::environments::{Environment, EnvironmentStatus};
use mtp_core::tenants::{Owners, TenantUpdate};
use mtp_store::{AuditFilter, Store};

fn namespaces(update: &mtp_core::agents::DesiredUpdate) -> Vec<&str> {
    update
        .upserts
        .iter()
        .map(|n| n.namespace.as_str())
        .collect()
}

#[tokio::test]
async fn desired_state_is_a_snapshot_or_the_changes_since_a_revision() {
    let store = store().await;
    let c = cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let a = env(&store, "team-a", "a", "k3s-1").await;
    let b = env(&store, "team-a", "b", "k3s-1").await;
    assert_eq!((a.revision, b.revision), (1, 2));
    store
        .delete_environment(&ctx(), "team-a", "a")
        .await
        .unwrap();

    // A snapshot holds what should exist; a deleted environment is absent.
    let snapshot = store.desired_state(c.id, None).await.unwrap();
    assert_eq!(snapshot.since, None);
    assert_eq!(snapshot.revision, 3);
    assert_eq!(namespaces(&snapshot), [b.namespace.as_str()]);
    assert!(snapshot.deletes.is_empty());

    // Changes after 1: b's creation and a's deletion, not a's creation.
    let changes = store.desired_state(c.id, Some(1)).await.unwrap();
    assert_eq!((changes.since, changes.revision), (Some(1), 3));
    assert_eq!(namespaces(&changes), [b.namespace.as_str()]);
    assert_eq!(changes.deletes, [a.namespace.as_str()]);
    assert_eq!(changes.upserts[0].revision, 2);

    // From 0, everything ever issued, deletions included.
    let all = store.desired_state(c.id, Some(0)).await.unwrap();
    assert_eq!(all.since, Some(0));
    assert_eq!(namespaces(&all), [b.namespace.as_str()]);
    assert_eq!(all.deletes, [a.namespace.as_str()]);

    // Current: nothing to send.
    let current = store.desired_state(c.id, Some(3)).await.unwrap();
    assert_eq!((current.since, current.revision), (Some(3), 3));
    assert!(current.upserts.is_empty() && current.deletes.is_empty());

    // A revision this database never issued (or a negative one) gets a
    // snapshot: only a snapshot can prune what the agent holds.
    for unknown in [4, 99, -1] {
        let s = store.desired_state(c.id, Some(unknown)).await.unwrap();
        assert_eq!(s.since, None, "since {unknown}");
        assert_eq!(namespaces(&s), [b.namespace.as_str()]);
    }
}

/// Cluster `k3s-1`, tenant `team-a` with environment `e` on it, and an
/// agent of the cluster.
async fn one_env_and_its_applier() -> (Store, Environment, (AgentIdentity, i64)) {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let e = env(&store, "team-a", "e", "k3s-1").await;
    let applier = applier(&store, "k3s-1", "node-1").await;
    (store, e, applier)
}

#[tokio::test]
async fn a_stale_acknowledgement_never_moves_state_back() {
    let (store, e, applier) = one_env_and_its_applier().await;
    let verified = [(e.namespace.clone(), NamespaceReport::Verified)];
    ack(&store, &applier, 1, &verified).await.unwrap();
    let ready = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(ready.status, EnvironmentStatus::Ready);
    assert_eq!(ready.applied_revision, 1);

    // An owner change re-issues the environment at revision 2.
    let update = TenantUpdate {
        owners: Some(Owners {
            users: vec!["alice@example.com".into()],
            ..Owners::default()
        }),
        ..TenantUpdate::default()
    };
    store
        .update_tenant(&ctx(), "team-a", &update)
        .await
        .unwrap();
    assert_eq!(
        store.get_environment("team-a", "e").await.unwrap().revision,
        2
    );

    // A late result about revision 1 says nothing about revision 2.
    let failed = [(e.namespace.clone(), NamespaceReport::Failed("old".into()))];
    ack(&store, &applier, 1, &failed).await.unwrap();
    let after = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(after.status, EnvironmentStatus::Ready);
    assert_eq!((after.applied_revision, after.reason.as_str()), (1, ""));

    // Revision 2 acknowledged, then a replayed ack of 1: the agent's
    // acknowledged revision stays at 2.
    ack(&store, &applier, 2, &verified).await.unwrap();
    ack(&store, &applier, 1, &[]).await.unwrap();
    let agents = store.list_agents(Some("k3s-1")).await.unwrap();
    assert_eq!(agents[0].acknowledged_revision, 2);
    let after = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(after.applied_revision, 2);

    // A confirmation of deletion for a revision before the deletion is not one.
    store
        .delete_environment(&ctx(), "team-a", "e")
        .await
        .unwrap();
    let deleted = [(e.namespace.clone(), NamespaceReport::Deleted)];
    ack(&store, &applier, 2, &deleted).await.unwrap();
    let still = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(still.status, EnvironmentStatus::Deleting);
    ack(&store, &applier, 3, &deleted).await.unwrap();
    let gone = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(gone.status, EnvironmentStatus::Deleted);
}

#[tokio::test]
async fn only_the_first_ready_report_counts_as_time_to_ready() {
    let (store, e, applier) = one_env_and_its_applier().await;
    let verified = [(e.namespace.clone(), NamespaceReport::Verified)];
    let first = ack(&store, &applier, 1, &verified).await.unwrap();
    assert_eq!(first.first_ready.len(), 1);
    let again = ack(&store, &applier, 1, &verified).await.unwrap();
    assert!(again.first_ready.is_empty());
}

#[tokio::test]
async fn revisions_are_reissued_above_what_an_agent_holds() {
    let store = store().await;
    let c = cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    env(&store, "team-a", "a", "k3s-1").await;
    env(&store, "team-a", "b", "k3s-1").await;
    let (holder, epoch) = applier(&store, "k3s-1", "node-1").await;
    let notices = store.revision_notices().await;
    let mut heard = notices.subscribe();

    // The database (at 2) was restored from a backup; the agent holds 10.
    let revision = store
        .reissue_revisions(&holder, epoch, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision, 11);
    let snapshot = store.desired_state(c.id, None).await.unwrap();
    assert_eq!(snapshot.revision, 11);
    assert_eq!(snapshot.upserts.len(), 2);
    assert!(snapshot.upserts.iter().all(|n| n.revision == 11));
    // Changes after what the agent holds now include every environment.
    let changes = store.desired_state(c.id, Some(10)).await.unwrap();
    assert_eq!(changes.upserts.len(), 2);

    let notice = tokio::time::timeout(Duration::from_secs(30), heard.recv())
        .await
        .expect("a notice within 30 s")
        .unwrap();
    assert_eq!((notice.cluster_id, notice.revision), (c.id, 11));

    // A second session racing with a lower revision changes nothing.
    assert_eq!(
        store.reissue_revisions(&holder, epoch, 5).await.unwrap(),
        Some(11)
    );
    let events = store
        .list_audit_events(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let reissued = events
        .iter()
        .filter(|e| e.action == "cluster.revisions_reissued")
        .count();
    assert_eq!(reissued, 1);
}
