//! The applier fence and agent sessions on a real PostgreSQL: one applier per
//! cluster with an epoch that only grows, reports of anyone else changing
//! nothing, bounded re-issues, one live session per agent, held prunes and
//! their confirmation, and deletions audited per namespace.

mod common;

use std::time::Duration;

use common::{ack, agent, applier, cluster, ctx, env, grant, store, tenant};
use mtp_core::agents::NamespaceReport;
use mtp_core::claims::{DriftClaim, HeldPrune, MAX_REVISION_AHEAD};
use mtp_core::environments::EnvironmentStatus;
use mtp_store::{ApplierDecision, AuditFilter, SessionStanding, Store};
use uuid::Uuid;

const STALE: Duration = Duration::from_secs(15);

async fn actions(store: &Store, action: &str) -> Vec<mtp_core::audit::AuditEvent> {
    store
        .list_audit_events(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

#[tokio::test]
async fn a_forged_acknowledgement_from_a_second_agent_changes_nothing() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let e = env(&store, "team-a", "e", "k3s-1").await;
    let honest = applier(&store, "k3s-1", "node-1").await;
    // A second agent registered with the cluster's join token asks to
    // apply while the first is alive: refused.
    let forger = agent(&store, "k3s-1", "node-2").await;
    let forger_session = Uuid::new_v4();
    assert!(
        store
            .claim_session(&forger, forger_session, "x")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_applier(&forger, forger_session, STALE)
            .await
            .unwrap(),
        ApplierDecision::Held {
            by: honest.0.agent_id.clone()
        }
    );
    // Whatever epoch it claims, its acknowledgement is not heard.
    let verified = [(e.namespace.clone(), NamespaceReport::Verified)];
    for epoch in [0, honest.1, honest.1 + 1] {
        assert_eq!(
            ack(&store, &(forger.clone(), epoch), 1, &verified).await,
            None
        );
    }
    let still = store.get_environment("team-a", "e").await.unwrap();
    assert_eq!(still.status, EnvironmentStatus::Pending);

    // Nor can it confirm a deletion, write drift, re-issue or hold a prune.
    store
        .delete_environment(&ctx(), "team-a", "e")
        .await
        .unwrap();
    let deleted = [(e.namespace.clone(), NamespaceReport::Deleted)];
    assert_eq!(
        ack(&store, &(forger.clone(), honest.1), 2, &deleted).await,
        None
    );
    assert_eq!(
        store.get_environment("team-a", "e").await.unwrap().status,
        EnvironmentStatus::Deleting
    );
    let drift =
        DriftClaim::new(e.namespace.clone(), "Role/x".into(), "forged".into(), true).unwrap();
    assert!(!store.record_drift(&forger, honest.1, &drift).await.unwrap());
    assert_eq!(
        store
            .reissue_revisions(&forger, honest.1, 50)
            .await
            .unwrap(),
        None
    );
    let held = HeldPrune::new(2, 1, 1, vec![]).unwrap();
    assert!(!store.hold_prune(&forger, honest.1, &held).await.unwrap());
    assert!(
        actions(&store, "environment.drift_repaired")
            .await
            .is_empty()
    );
    assert!(actions(&store, "environment.deleted").await.is_empty());

    // The fenced applier is heard.
    assert!(ack(&store, &honest, 2, &deleted).await.is_some());
    assert_eq!(
        store.get_environment("team-a", "e").await.unwrap().status,
        EnvironmentStatus::Deleted
    );
    assert_eq!(actions(&store, "environment.deleted").await.len(), 1);
}

#[tokio::test]
async fn the_epoch_only_grows_and_an_old_epoch_is_fenced_out() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let e = env(&store, "team-a", "e", "k3s-1").await;
    let (a, first) = applier(&store, "k3s-1", "node-1").await;
    let b = agent(&store, "k3s-1", "node-2").await;
    // A's session ends and lets go: B is granted above A's epoch.
    let session = Uuid::new_v4();
    assert!(store.claim_session(&a, session, "x").await.unwrap());
    store.end_session(&a, session, Some(first)).await.unwrap();
    let second = grant(&store, &b).await;
    assert!(second > first);
    let verified = [(e.namespace.clone(), NamespaceReport::Verified)];
    assert_eq!(ack(&store, &(a.clone(), first), 1, &verified).await, None);
    // B's session goes silent past the stale limit: A takes over, above.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = Uuid::new_v4();
    assert!(store.claim_session(&a, again, "x").await.unwrap());
    let third = match store
        .claim_applier(&a, again, Duration::from_millis(200))
        .await
        .unwrap()
    {
        ApplierDecision::Granted { epoch } => epoch,
        other => panic!("a silent holder keeps the fence: {other:?}"),
    };
    assert!(third > second);
    assert_eq!(ack(&store, &(b.clone(), second), 1, &verified).await, None);
    assert!(
        ack(&store, &(a.clone(), third), 1, &verified)
            .await
            .is_some()
    );
    // A new session of the same agent is a new epoch: its old session's
    // reports are fenced out too.
    let fourth = grant(&store, &a).await;
    assert!(fourth > third);
    assert_eq!(ack(&store, &(a.clone(), third), 1, &verified).await, None);
    let c = store.get_cluster("k3s-1").await.unwrap();
    assert_eq!(
        (c.applier_agent_id.as_deref(), c.applier_epoch),
        (Some(a.agent_id.as_str()), fourth)
    );
    assert_eq!(actions(&store, "cluster.applier_granted").await.len(), 4);
}

#[tokio::test]
async fn concurrent_candidates_get_exactly_one_grant() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let mut agents = Vec::new();
    for i in 0..12 {
        let a = agent(&store, "k3s-1", &format!("node-{i}")).await;
        let session = Uuid::new_v4();
        assert!(store.claim_session(&a, session, "x").await.unwrap());
        agents.push((a, session));
    }
    let claims = agents.iter().map(|(a, session)| {
        let (store, a, session) = (store.clone(), a.clone(), *session);
        tokio::spawn(async move { store.claim_applier(&a, session, STALE).await.unwrap() })
    });
    let decisions: Vec<ApplierDecision> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let granted = decisions
        .iter()
        .filter(|d| matches!(d, ApplierDecision::Granted { .. }))
        .count();
    assert_eq!(granted, 1, "{decisions:?}");
}

#[tokio::test]
async fn a_claimed_revision_far_above_the_cluster_is_refused_and_nothing_wedges() {
    let store = store().await;
    let c = cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    env(&store, "team-a", "a", "k3s-1").await;
    let (holder, epoch) = applier(&store, "k3s-1", "node-1").await;
    // The reproduction: i64::MAX - 1, then anything past the bound.
    for claimed in [
        9_223_372_036_854_775_806,
        i64::MAX,
        1 + 1 + MAX_REVISION_AHEAD,
    ] {
        let err = store
            .reissue_revisions(&holder, epoch, claimed)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("revision: "), "{err}");
    }
    assert_eq!(store.get_cluster("k3s-1").await.unwrap().revision, 1);
    // The cluster still takes changes.
    let b = env(&store, "team-a", "b", "k3s-1").await;
    assert_eq!(b.revision, 2);
    // Within the bound, re-issued above the claim, with checked arithmetic.
    let claimed = 2 + MAX_REVISION_AHEAD;
    assert_eq!(
        store
            .reissue_revisions(&holder, epoch, claimed)
            .await
            .unwrap(),
        Some(claimed + 1)
    );
    let s = store.desired_state(c.id, None).await.unwrap();
    assert!(s.upserts.iter().all(|n| n.revision == claimed + 1));
}

#[tokio::test]
async fn a_newer_session_replaces_the_old_one_everywhere() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let a = agent(&store, "k3s-1", "node-1").await;
    let notices = store.revision_notices().await;
    let mut heard = notices.subscribe_agents();
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.claim_session(&a, old, "x").await.unwrap());
    assert_eq!(
        store.touch_session(&a, old).await.unwrap(),
        SessionStanding::Live
    );
    assert!(store.claim_session(&a, new, "x").await.unwrap());
    assert_eq!(
        store.touch_session(&a, old).await.unwrap(),
        SessionStanding::Replaced
    );
    assert_eq!(
        store.touch_session(&a, new).await.unwrap(),
        SessionStanding::Live
    );
    // The old session ending does not mark the agent disconnected.
    store.end_session(&a, old, None).await.unwrap();
    assert!(store.list_agents(Some("k3s-1")).await.unwrap()[0].connected);
    store.end_session(&a, new, None).await.unwrap();
    assert!(!store.list_agents(Some("k3s-1")).await.unwrap()[0].connected);
    // Every replica heard both claims.
    let mut sessions = Vec::new();
    while sessions.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(30), heard.recv())
            .await
            .expect("a notice within 30 s")
            .unwrap();
        if let mtp_store::AgentNotice::Session { agent_id, session } = n {
            assert_eq!(agent_id, a.agent_id);
            sessions.push(session);
        }
    }
    assert_eq!(sessions, [old, new]);
}

#[tokio::test]
async fn a_held_prune_waits_for_the_confirmation_of_its_revision() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let (holder, epoch) = applier(&store, "k3s-1", "node-1").await;
    let err = store.confirm_prune(&ctx(), "k3s-1", 3).await.unwrap_err();
    assert!(err.to_string().contains("no held prune"), "{err}");
    let held = HeldPrune::new(3, 8, 10, vec!["team-a-x".into()]).unwrap();
    assert!(store.hold_prune(&holder, epoch, &held).await.unwrap());
    // Said again (every pass): audited once.
    assert!(store.hold_prune(&holder, epoch, &held).await.unwrap());
    assert_eq!(actions(&store, "cluster.prune_held").await.len(), 1);
    let shown = store
        .get_cluster("k3s-1")
        .await
        .unwrap()
        .held_prune
        .unwrap();
    assert_eq!(
        (shown.revision, shown.would_delete, shown.confirmed_revision),
        (3, 8, 0)
    );
    assert!(shown.hold_time.is_some());
    // A confirmation names the pass it confirms.
    let err = store.confirm_prune(&ctx(), "k3s-1", 2).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("revision: the held prune pass is at revision 3"),
        "{err}"
    );
    let c = store.confirm_prune(&ctx(), "k3s-1", 3).await.unwrap();
    assert_eq!(c.held_prune.unwrap().confirmed_revision, 3);
    assert_eq!(actions(&store, "cluster.prune_confirmed").await.len(), 1);
    // Another pass at the same revision is not covered by that confirmation.
    let other = HeldPrune::new(3, 9, 10, vec!["team-a-y".into()]).unwrap();
    assert!(store.hold_prune(&holder, epoch, &other).await.unwrap());
    let shown = store
        .get_cluster("k3s-1")
        .await
        .unwrap()
        .held_prune
        .unwrap();
    assert_eq!((shown.would_delete, shown.confirmed_revision), (9, 0));
    assert_eq!(actions(&store, "cluster.prune_held").await.len(), 2);
}

#[tokio::test]
async fn every_namespace_the_applier_deletes_is_audited() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let e = env(&store, "team-a", "e", "k3s-1").await;
    let applier = applier(&store, "k3s-1", "node-1").await;
    // A namespace no environment owns (pruned), and a live environment's
    // namespace the agent says it deleted: both on the record, as claims.
    let deleted = [
        ("team-z-gone".to_owned(), NamespaceReport::Deleted),
        (e.namespace.clone(), NamespaceReport::Deleted),
    ];
    ack(&store, &applier, 1, &deleted).await.unwrap();
    let events = actions(&store, "namespace.deleted_by_agent").await;
    let targets: Vec<&str> = events.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(
        targets,
        ["namespace/k3s-1/team-z-gone", "environment/team-a/e"]
    );
    assert!(
        events
            .iter()
            .all(|e| e.details.contains(r#""reported_by":"agent""#))
    );
    // A confirmed deletion reported again after a cut is not audited twice.
    store
        .delete_environment(&ctx(), "team-a", "e")
        .await
        .unwrap();
    ack(&store, &applier, 2, &deleted[1..]).await.unwrap();
    ack(&store, &applier, 2, &deleted[1..]).await.unwrap();
    assert_eq!(actions(&store, "environment.deleted").await.len(), 1);
    assert_eq!(actions(&store, "namespace.deleted_by_agent").await.len(), 2);
}

#[tokio::test]
async fn a_replaced_session_cannot_take_the_grant_and_a_new_session_releases_the_old_grant() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let a = agent(&store, "k3s-1", "node-1").await;
    let b = agent(&store, "k3s-1", "node-2").await;
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.claim_session(&a, old, "x").await.unwrap());
    let first = match store.claim_applier(&a, old, STALE).await.unwrap() {
        ApplierDecision::Granted { epoch } => epoch,
        other => panic!("{other:?}"),
    };
    // A comes back (its old session's end never recorded, e.g. its replica
    // crashed) without the Lease: its new session lets go of the grant...
    assert!(store.claim_session(&a, new, "x").await.unwrap());
    let c = store.get_cluster("k3s-1").await.unwrap();
    assert_eq!((c.applier_agent_id, c.applier_epoch), (None, first));
    // ...so the agent that holds the Lease is granted at once, above.
    let second = grant(&store, &b).await;
    assert!(second > first);
    // And the replaced session of A cannot take it back.
    assert!(matches!(
        store.claim_applier(&a, old, STALE).await.unwrap(),
        ApplierDecision::Held { .. }
    ));
}

#[tokio::test]
async fn acknowledgements_and_reissues_never_deadlock_with_deletions() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 100).await;
    let mut namespaces = Vec::new();
    for i in 0..40 {
        namespaces.push(
            env(&store, "team-a", &format!("e{i}"), "k3s-1")
                .await
                .namespace,
        );
    }
    let applier = applier(&store, "k3s-1", "node-1").await;
    // Deletions one by one (environment row, then the cluster row, then the
    // audit head) against acks that confirm deletions and mark others
    // Ready (environment rows, then the audit head), and re-issues (every
    // environment row, then the cluster row).
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                store
                    .delete_environment(&ctx(), "team-a", &format!("e{i}"))
                    .await
                    .unwrap();
            }
        })
    };
    let acker = {
        let (store, applier, namespaces) = (store.clone(), applier.clone(), namespaces.clone());
        tokio::spawn(async move {
            for round in 0..80i64 {
                let results: Vec<(String, NamespaceReport)> = namespaces
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let r = if i % 2 == 0 {
                            NamespaceReport::Deleted
                        } else {
                            NamespaceReport::Verified
                        };
                        (n.clone(), r)
                    })
                    .collect();
                let revision = store.get_cluster("k3s-1").await.unwrap().revision;
                ack(&store, &applier, revision, &results)
                    .await
                    .expect("still the applier");
                let _ = round;
                store
                    .reissue_revisions(&applier.0, applier.1, revision + 1)
                    .await
                    .unwrap();
            }
        })
    };
    deleter
        .await
        .expect("no deletion failed (a deadlock aborts one)");
    acker
        .await
        .expect("no acknowledgement failed (a deadlock aborts one)");
}
