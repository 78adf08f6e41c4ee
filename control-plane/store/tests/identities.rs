//! Agent identities on a real PostgreSQL: a certificate counts only if agent
//! id, cluster id and serial all match a live row; renewal keeps the serial
//! the session held as the previous one until the new one is used; a
//! re-registration keeps the agent id and drops the rest; revocation sends
//! its notice on commit; `max_uses` holds under concurrent registrations.

mod common;

use std::time::Duration;

use common::{agent, cluster, ctx, fake_certificate, register, store};
use mtp_core::agents::{AgentIdentity, PresentedCertificate};
use mtp_store::{AgentNotice, Error, Store};

fn presented(id: &AgentIdentity) -> PresentedCertificate {
    PresentedCertificate {
        agent_id: id.agent_id.clone(),
        cluster_id: id.cluster_id,
        serial: id.certificate_serial.clone(),
    }
}

fn unauthenticated(r: Result<AgentIdentity, Error>) -> String {
    match r {
        Err(Error::Domain(mtp_core::Error::Unauthenticated(why))) => why,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

async fn renew(store: &Store, who: &AgentIdentity) -> Result<String, Error> {
    store
        .renew_agent_certificate(who, "test", |_| Ok((fake_certificate(), ())))
        .await
        .map(|(issued, ())| issued.serial)
}

#[tokio::test]
async fn agent_cluster_and_serial_must_all_match_a_live_row() {
    let store = store().await;
    let a = cluster(&store, "cluster-a").await;
    let b = cluster(&store, "cluster-b").await;
    let agent_a = agent(&store, "cluster-a", "node-1").await;
    let agent_b = agent(&store, "cluster-b", "node-1").await;
    assert!(agent_a.agent_id.starts_with("mtpagent_"));
    assert_ne!(agent_a.agent_id, agent_b.agent_id);

    let who = store
        .authenticate_agent(&presented(&agent_a))
        .await
        .unwrap();
    assert_eq!(who, agent_a);
    assert_eq!((who.cluster.as_str(), who.cluster_id), ("cluster-a", a.id));

    // A's agent id with B's cluster id (and the other way round).
    let crossed = PresentedCertificate {
        cluster_id: b.id,
        ..presented(&agent_a)
    };
    unauthenticated(store.authenticate_agent(&crossed).await);
    let crossed = PresentedCertificate {
        cluster_id: a.id,
        ..presented(&agent_b)
    };
    unauthenticated(store.authenticate_agent(&crossed).await);
    // Another serial, or B's serial with A's agent.
    let other = PresentedCertificate {
        serial: "00".into(),
        ..presented(&agent_a)
    };
    assert!(unauthenticated(store.authenticate_agent(&other).await).contains("replaced"));
    let other = PresentedCertificate {
        serial: agent_b.certificate_serial.clone(),
        ..presented(&agent_a)
    };
    unauthenticated(store.authenticate_agent(&other).await);
    let unknown = PresentedCertificate {
        agent_id: "mtpagent_0000000000000000".into(),
        ..presented(&agent_a)
    };
    unauthenticated(store.authenticate_agent(&unknown).await);
}

#[tokio::test]
async fn a_renewal_keeps_the_held_serial_as_previous_until_the_new_one_is_used() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let first = agent(&store, "k3s-1", "node-1").await;
    let second_serial = renew(&store, &first).await.unwrap();
    let second = AgentIdentity {
        certificate_serial: second_serial.clone(),
        ..first.clone()
    };
    // Both work until the new one is used (the answer may have been lost)…
    store.authenticate_agent(&presented(&first)).await.unwrap();
    // …and a session of the old one may renew again: the lost answer is
    // replaced, the old serial stays previous.
    let third_serial = renew(&store, &first).await.unwrap();
    unauthenticated(store.authenticate_agent(&presented(&second)).await);
    let third = AgentIdentity {
        certificate_serial: third_serial,
        ..first.clone()
    };
    store.authenticate_agent(&presented(&first)).await.unwrap();
    // The first use of the new one retires the old one.
    store.authenticate_agent(&presented(&third)).await.unwrap();
    unauthenticated(store.authenticate_agent(&presented(&first)).await);
    // A session opened with a retired certificate cannot renew.
    assert!(matches!(
        renew(&store, &first).await,
        Err(Error::Domain(mtp_core::Error::Unauthenticated(_)))
    ));
    let audit = store
        .list_audit_events(&mtp_store::AuditFilter {
            tenant: None,
            after_sequence: 0,
            limit: 1000,
        })
        .await
        .unwrap();
    let renewals = audit
        .iter()
        .filter(|e| e.action == "agent.certificate_renewed")
        .count();
    assert_eq!(renewals, 2, "each renewal audited, the refused one not");
}

#[tokio::test]
async fn revocation_refuses_the_agent_notifies_its_sessions_and_a_new_registration_readmits_it() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let notices = store.revision_notices().await;
    let mut heard = notices.subscribe_agents();
    let me = agent(&store, "k3s-1", "node-1").await;
    let (old_token, _) = store
        .create_join_token(&ctx(), "k3s-1", chrono::Duration::hours(1), 0)
        .await
        .unwrap();
    let (cluster_name, _) = store.revoke_agent(&ctx(), &me.agent_id).await.unwrap();
    assert_eq!(cluster_name, "k3s-1");
    let notice = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(n @ AgentNotice::Revoked { .. }) = heard.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("the revocation is announced on commit");
    assert_eq!(notice.agent_id(), me.agent_id);
    assert!(unauthenticated(store.authenticate_agent(&presented(&me)).await).contains("revoked"));
    assert!(
        renew(&store, &me).await.is_err(),
        "a revoked agent cannot renew"
    );
    // Revoking again changes nothing (and audits nothing).
    store.revoke_agent(&ctx(), &me.agent_id).await.unwrap();
    let audit = store
        .list_audit_events(&mtp_store::AuditFilter {
            tenant: None,
            after_sequence: 0,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "agent.revoke").count(),
        1
    );

    // A token that existed before the revocation does not re-admit (one
    // sits in a Secret on every node); a token minted afterwards does:
    // same agent id, new serial, revocation lifted.
    let refused = common::register(&store, &old_token, "node-1")
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("revoked after this join token was minted"),
        "{refused}"
    );
    let again = agent(&store, "k3s-1", "node-1").await;
    assert_eq!(again.agent_id, me.agent_id);
    assert_ne!(again.certificate_serial, me.certificate_serial);
    store.authenticate_agent(&presented(&again)).await.unwrap();
    unauthenticated(store.authenticate_agent(&presented(&me)).await);
}

#[tokio::test]
async fn max_uses_holds_under_concurrent_registrations() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let (secret, token) = store
        .create_join_token(&ctx(), "k3s-1", chrono::Duration::hours(1), 5)
        .await
        .unwrap();
    assert_eq!((token.max_uses, token.uses), (5, 0));
    let attempts = (0..20).map(|i| {
        let (store, secret) = (store.clone(), secret.clone());
        tokio::spawn(async move { register(&store, &secret, &format!("node-{i}")).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{results:?}");
    let listed = store.list_join_tokens(Some("k3s-1")).await.unwrap();
    assert_eq!((listed[0].uses, listed[0].max_uses), (5, 5));

    // Revoked and expired tokens say so (to a holder of the secret).
    let (unlimited, t) = store
        .create_join_token(&ctx(), "k3s-1", chrono::Duration::hours(1), 0)
        .await
        .unwrap();
    register(&store, &unlimited, "more-1").await.unwrap();
    register(&store, &unlimited, "more-2").await.unwrap();
    store.revoke_join_token(&ctx(), &t.id).await.unwrap();
    let why = unauthenticated(register(&store, &unlimited, "more-3").await);
    assert!(why.contains("revoked"), "{why}");
    let (short, _) = store
        .create_join_token(&ctx(), "k3s-1", chrono::Duration::milliseconds(1), 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let why = unauthenticated(register(&store, &short, "more-4").await);
    assert!(why.contains("expired"), "{why}");
}

#[tokio::test]
async fn a_connected_node_cannot_be_registered_again_under_its_name() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let me = agent(&store, "k3s-1", "node-1").await;
    let session = uuid::Uuid::new_v4();
    assert!(store.claim_session(&me, session, "x").await.unwrap());
    let (token, _) = store
        .create_join_token(&ctx(), "k3s-1", chrono::Duration::hours(1), 0)
        .await
        .unwrap();
    let err = common::register(&store, &token, "node-1")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has an agent connected right now"),
        "{err}"
    );
    // Once it is gone, a reinstall registers.
    store.end_session(&me, session, None).await.unwrap();
    let again = common::register(&store, &token, "node-1").await.unwrap();
    assert_eq!(again.agent_id, me.agent_id);
}
