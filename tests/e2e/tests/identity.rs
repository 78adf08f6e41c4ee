//! Agent identity: registration with a CSR gives a certificate naming the
//! agent and its cluster; `Session` needs a certificate of the agent CA that
//! is unexpired and matches a live agent row (cluster and serial included);
//! renewal over the session survives a restart and retires the old
//! certificate; revocation refuses new sessions and ends open ones; join
//! tokens can be listed, revoked and limited in uses, also under concurrency.

use std::time::Duration;

use mtp_control_plane::config::Config;
use mtp_e2e::agent::{Enrollment, ScriptedAgent, hello, register, register_csr};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use tonic::Code;
use tonic::transport::Identity;
use x509_parser::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

async fn setup(plane: &TestPlane, clusters: &[&str]) -> Clients {
    let team_a = ("team-a", quota("100", "400Gi", "4Ti", 10_000, 1000));
    plane.admin_with(&[team_a], clusters).await
}

async fn enrolled(admin: &mut Clients, plane: &TestPlane, cluster: &str, node: &str) -> Enrollment {
    let token = admin.join_token(cluster).await;
    register(&plane.url(), &token, node)
        .await
        .expect("registers")
}

fn der(pem_text: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("PEM");
    pem.contents
}

fn serial_of(pem_text: &str) -> String {
    let der = der(pem_text);
    let (_, cert) = parse_x509_certificate(&der).expect("certificate");
    hex::encode(cert.raw_serial())
}

/// A certificate for `key_pem`'s key, as `issuer` signs it: the subject and
/// serial an attacker chooses, valid `not_before..not_after`.
fn forge(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    agent_id: &str,
    cluster_id: &str,
    serial_hex: &str,
    validity: (::time::OffsetDateTime, ::time::OffsetDateTime),
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, agent_id);
    dn.push(rcgen::DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(
        &hex::decode(serial_hex).unwrap(),
    ));
    params.not_before = validity.0;
    params.not_after = validity.1;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The agent CA of the test planes, as someone holding its key would use it.
fn agent_ca() -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let files = mtp_e2e::pki().agent_ca_files();
    let cert = std::fs::read_to_string(files.cert).unwrap();
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(files.key).unwrap()).unwrap();
    rcgen::Issuer::from_ca_cert_pem(&cert, key).unwrap()
}

fn valid_now() -> (::time::OffsetDateTime, ::time::OffsetDateTime) {
    let now = ::time::OffsetDateTime::now_utc();
    (
        now - ::time::Duration::minutes(5),
        now + ::time::Duration::hours(1),
    )
}

/// Opens a session presenting `cert_pem`/`key_pem`; the refusal, if any.
async fn session_with(
    plane: &TestPlane,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ScriptedAgent, tonic::Status> {
    let tls = mtp_e2e::server_trust().identity(Identity::from_pem(cert_pem, key_pem));
    ScriptedAgent::connect_tls(&plane.url(), Some(tls), hello(0, false)).await
}

/// A session that was accepted is only known to be when the first control
/// message arrives (a refused TLS client certificate surfaces at the first
/// read with TLS 1.3), so this reads it.
async fn accepted(
    result: Result<ScriptedAgent, tonic::Status>,
) -> Result<ScriptedAgent, tonic::Status> {
    let mut agent = result?;
    match tokio::time::timeout(WAIT, agent.inbound.message()).await {
        Ok(Ok(Some(_))) => Ok(agent),
        Ok(Ok(None)) => Err(tonic::Status::aborted("closed")),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("neither accepted nor refused within {WAIT:?}"),
    }
}

#[tokio::test]
async fn a_csr_is_exchanged_for_a_certificate_naming_the_agent_and_its_cluster() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let cluster = admin
        .clusters
        .get_cluster(pb::GetClusterRequest {
            name: "k3s-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = admin.join_token("k3s-1").await;

    // Without a CSR (or with garbage) nothing is issued and the token is not spent.
    for bad in [
        "",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = register_csr(&plane.url(), &token, "node-1", bad)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("csr_pem:"), "{}", err.message());
    }

    let (key_pem, csr_pem) = mtp_e2e::pki::agent_key_and_csr();
    let reg = register_csr(&plane.url(), &token, "node-1", &csr_pem)
        .await
        .unwrap();
    assert!(reg.agent_id.starts_with("mtpagent_"), "{}", reg.agent_id);
    assert_eq!(reg.cluster_id, cluster.id);
    assert_eq!(reg.ca_certificate_pem, plane.running.agent_ca_pem);

    let der = der(&reg.certificate_pem);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    let subject = cert.subject();
    let cn = subject.iter_common_name().next().unwrap().as_str().unwrap();
    let o = subject
        .iter_organization()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    let ou = subject
        .iter_organizational_unit()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(
        (cn, o, ou),
        (reg.agent_id.as_str(), cluster.id.as_str(), "k3s-1")
    );
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        uris,
        [format!(
            "spiffe://mtp/cluster/{}/node/node-1/agent/{}",
            cluster.id, reg.agent_id
        )]
    );
    // The key is the agent's own; the certificate is for clients only.
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        cert.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    // Signed by the agent CA, expiring when the response says.
    let ca_der = der_of_ca(&plane);
    let (_, ca) = parse_x509_certificate(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(
        cert.validity().not_after.timestamp(),
        reg.expire_time.unwrap().seconds
    );

    // Audited with the serial; the token counted one use.
    let events = admin.audit_events().await;
    let event = events
        .iter()
        .find(|e| e.action == "agent.register")
        .expect("audited");
    assert!(
        event
            .details_json
            .contains(&serial_of(&reg.certificate_pem)),
        "{}",
        event.details_json
    );
}

fn der_of_ca(plane: &TestPlane) -> Vec<u8> {
    der(&plane.running.agent_ca_pem)
}

#[tokio::test]
async fn sessions_need_a_valid_certificate_of_the_agent_ca() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let me = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    let serial = serial_of(&me.certificate_pem);

    // No client certificate: the public API works, Session does not.
    let err = ScriptedAgent::connect_tls(&plane.url(), None, hello(0, true))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("client certificate"),
        "{}",
        err.message()
    );

    // Another CA's certificate with the very subject and serial: refused by TLS.
    let (rogue, _) = mtp_e2e::pki::new_ca("rogue");
    let (cert, key) = forge(&rogue, &me.agent_id, &me.cluster_id, &serial, valid_now());
    let err = accepted(session_with(&plane, &cert, &key).await)
        .await
        .err()
        .expect("refused");
    assert_ne!(err.code(), Code::Ok, "{err:?}");

    // The agent CA's own certificate, but expired: refused by TLS.
    let now = ::time::OffsetDateTime::now_utc();
    let expired = (
        now - ::time::Duration::hours(2),
        now - ::time::Duration::hours(1),
    );
    let (cert, key) = forge(&agent_ca(), &me.agent_id, &me.cluster_id, &serial, expired);
    let err = accepted(session_with(&plane, &cert, &key).await)
        .await
        .err()
        .expect("refused");
    assert_ne!(err.code(), Code::Ok, "{err:?}");

    // A valid certificate of the agent CA with a serial the row does not
    // have (an old one, a forged one): refused by the store.
    let (cert, key) = forge(
        &agent_ca(),
        &me.agent_id,
        &me.cluster_id,
        "0123456789abcdef0123456789abcdef",
        valid_now(),
    );
    let err = session_with(&plane, &cert, &key)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("replaced"), "{}", err.message());

    // The real one works.
    accepted(ScriptedAgent::connect(&plane.url(), &me, 0, true).await)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_short_lived_certificate_stops_working_when_it_expires() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let config = Config {
        agent_certificate_lifetime: Duration::from_secs(10),
        ..Config::for_dev(db.url())
    };
    let plane = TestPlane::start_with(config).await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let me = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    accepted(ScriptedAgent::connect(&plane.url(), &me, 0, true).await)
        .await
        .unwrap();
    let expire = me.expire_time.unwrap().seconds;
    let left = expire - chrono::Utc::now().timestamp();
    assert!((8..=11).contains(&left), "lifetime {left}s");
    tokio::time::sleep(Duration::from_secs(u64::try_from(left).unwrap() + 1)).await;
    let err = accepted(ScriptedAgent::connect(&plane.url(), &me, 0, true).await)
        .await
        .err()
        .expect("expired certificate refused");
    assert_ne!(err.code(), Code::Ok);
}

#[tokio::test]
async fn a_plaintext_plane_refuses_agent_sessions_saying_they_need_tls() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_plaintext_with(Config::for_dev(db.url())).await;
    assert!(plane.url().starts_with("http://"));
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let token = admin.join_token("k3s-1").await;
    // Registration works (it needs no client certificate)…
    let me = register(&plane.url(), &token, "node-1").await.unwrap();
    // …but no session can be identified without TLS.
    let err = ScriptedAgent::connect_tls(&plane.url(), None, hello(0, true))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("need TLS"), "{}", err.message());
    drop(me);
}

#[tokio::test]
async fn a_certificate_of_one_cluster_never_stands_for_an_agent_of_another() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["cluster-a", "cluster-b"]).await;
    let a = enrolled(&mut admin, &plane, "cluster-a", "node-1").await;
    let b = enrolled(&mut admin, &plane, "cluster-b", "node-1").await;
    admin
        .create_env("team-a", "on-b", "cluster-b", "small")
        .await
        .unwrap();

    // Even with the CA key, a certificate naming A's agent with B's cluster
    // id (or B's agent with A's) matches no row.
    for (agent, cluster, serial) in [
        (&a.agent_id, &b.cluster_id, serial_of(&a.certificate_pem)),
        (&b.agent_id, &a.cluster_id, serial_of(&b.certificate_pem)),
    ] {
        let (cert, key) = forge(&agent_ca(), agent, cluster, &serial, valid_now());
        let err = session_with(&plane, &cert, &key)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    // A's agent is sent A's state, never B's.
    admin
        .create_env("team-a", "on-a", "cluster-a", "small")
        .await
        .unwrap();
    let mut agent = ScriptedAgent::connect(&plane.url(), &a, 0, true)
        .await
        .unwrap();
    loop {
        match agent.next_desired(WAIT).await {
            ControlKind::Session(info) => assert_eq!(
                (info.cluster.as_str(), info.cluster_id.as_str()),
                ("cluster-a", a.cluster_id.as_str())
            ),
            ControlKind::Snapshot(s) => {
                let names: Vec<_> = s.namespaces.iter().map(|n| n.namespace.as_str()).collect();
                assert_eq!(names, ["team-a-on-a"]);
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_renewed_certificate_survives_a_restart_and_retires_the_old_one() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let old = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    let mut session = ScriptedAgent::connect(&plane.url(), &old, 0, true)
        .await
        .unwrap();
    let (new_key, csr_pem) = mtp_e2e::pki::agent_key_and_csr();
    session
        .send(AgentKind::Renew(pb::RenewCertificate { csr_pem }))
        .await;
    let issued = loop {
        match session.next_desired(WAIT).await {
            ControlKind::Certificate(c) => break c,
            _ => continue,
        }
    };
    let new = old.renewed(new_key, issued.certificate_pem.clone());
    assert_ne!(
        serial_of(&new.certificate_pem),
        serial_of(&old.certificate_pem)
    );
    // The session that asked goes on.
    session
        .send(AgentKind::Keepalive(pb::Keepalive { time: None }))
        .await;
    let events = admin.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "agent.certificate_renewed")
    );
    drop(session);

    // The control plane restarts; the renewal was committed.
    plane.running.kill();
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    // Until the new certificate is used, the old one still opens a session
    // (the renewal's answer could have been lost on the way)…
    drop(
        accepted(ScriptedAgent::connect(&plane.url(), &old, 0, true).await)
            .await
            .expect("old still accepted"),
    );
    // …the new one works, and its first use retires the old one.
    drop(
        accepted(ScriptedAgent::connect(&plane.url(), &new, 0, true).await)
            .await
            .expect("new accepted"),
    );
    let err = ScriptedAgent::connect(&plane.url(), &old, 0, true)
        .await
        .err()
        .expect("old retired");
    assert_eq!(err.code(), Code::Unauthenticated);
    accepted(ScriptedAgent::connect(&plane.url(), &new, 0, true).await)
        .await
        .expect("new still accepted");
}

#[tokio::test]
async fn a_revoked_agent_is_refused_its_open_session_ends_and_a_new_token_readmits_it() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let me = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    let mut open = accepted(ScriptedAgent::connect(&plane.url(), &me, 0, true).await)
        .await
        .unwrap();

    // Only platform admins revoke.
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;
    let mut as_owner = plane.clients(Some(&owner)).await;
    let err = as_owner
        .clusters
        .revoke_agent(pb::RevokeAgentRequest {
            id: me.agent_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let revoked = admin
        .clusters
        .revoke_agent(pb::RevokeAgentRequest {
            id: me.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.id, me.agent_id);
    assert!(revoked.revoke_time.is_some());
    assert!(!revoked.applier);
    let events = admin.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "agent.revoke" && e.details_json.contains(&me.agent_id))
    );

    // The session that was open ends (the lead's session code ends it on
    // the store's AgentNotice::Revoked).
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match open.inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the open session of a revoked agent ends");
    if let Some(status) = ended {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("revoked"), "{status:?}");
    }

    // New sessions are refused, saying why.
    let err = ScriptedAgent::connect(&plane.url(), &me, 0, true)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());

    // An unknown agent id is NOT_FOUND.
    let err = admin
        .clusters
        .revoke_agent(pb::RevokeAgentRequest {
            id: "mtpagent_0000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Registering again with a valid join token re-admits the node, under
    // the same agent id.
    let again = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    assert_eq!(again.agent_id, me.agent_id);
    accepted(ScriptedAgent::connect(&plane.url(), &again, 0, true).await)
        .await
        .unwrap();
    let err = ScriptedAgent::connect(&plane.url(), &me, 0, true)
        .await
        .err()
        .expect("the revoked certificate stays refused");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn join_tokens_are_listed_without_secrets_revoked_and_limited_in_uses() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1", "k3s-2"]).await;
    let limited = admin
        .clusters
        .create_join_token(pb::CreateJoinTokenRequest {
            cluster: "k3s-1".into(),
            ttl_seconds: 3600,
            max_uses: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((limited.max_uses, limited.uses), (3, 0));
    assert!(!limited.id.is_empty() && limited.secret.contains(&limited.id));
    let other = admin.join_token("k3s-2").await;

    // Ten nodes register at once with a token good for three.
    let url = plane.url();
    let attempts = (0..10).map(|i| {
        let (url, secret) = (url.clone(), limited.secret.clone());
        tokio::spawn(async move { register(&url, &secret, &format!("node-{i}")).await })
    });
    let results = futures::future::join_all(attempts).await;
    let (ok, refused): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|r| r.unwrap())
        .partition(Result::is_ok);
    assert_eq!(ok.len(), 3, "exactly max_uses registrations succeed");
    for err in refused {
        let err = err.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("used up"), "{}", err.message());
    }

    let list = |cluster: &str| {
        let mut admin = admin.clone();
        let cluster = cluster.to_owned();
        async move {
            admin
                .clusters
                .list_join_tokens(pb::ListJoinTokensRequest { cluster })
                .await
                .map(|r| r.into_inner().join_tokens)
        }
    };
    let all = list("").await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter().all(|t| t.secret.is_empty()),
        "never a secret in a list"
    );
    let mine = list("k3s-1").await.unwrap();
    assert_eq!(mine.len(), 1);
    let t = &mine[0];
    assert_eq!(
        (t.id.as_str(), t.cluster.as_str(), t.uses, t.max_uses),
        (limited.id.as_str(), "k3s-1", 3, 3)
    );
    assert!(t.create_time.is_some() && t.expire_time.is_some() && t.revoke_time.is_none());
    assert_eq!(t.created_by, mine[0].created_by);
    assert!(!t.created_by.is_empty());
    assert_eq!(list("nope").await.unwrap_err().code(), Code::NotFound);

    // Tenant owners see no join tokens and revoke none.
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;
    let mut as_owner = plane.clients(Some(&owner)).await;
    assert_eq!(
        as_owner
            .clusters
            .list_join_tokens(pb::ListJoinTokensRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // A revoked token registers nobody; agents registered with it keep working.
    let other_id = all
        .iter()
        .find(|t| t.cluster == "k3s-2")
        .unwrap()
        .id
        .clone();
    let revoked = admin
        .clusters
        .revoke_join_token(pb::RevokeJoinTokenRequest {
            id: other_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some() && revoked.secret.is_empty());
    let err = register(&plane.url(), &other, "node-1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    let events = admin.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "cluster.join_token.revoke" && e.details_json.contains(&other_id))
    );
    let err = admin
        .clusters
        .revoke_join_token(pb::RevokeJoinTokenRequest {
            id: "0000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// The identity the real agent keeps in its state directory.
fn stored(agent: &mtp_e2e::fleet::TestAgent) -> Option<mtp_agent::identity::Enrollment> {
    mtp_agent::desired::StateDir::new(&agent.config.state_dir)
        .ok()?
        .enrollment()
        .ok()?
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_agent_renews_before_expiry_and_stays_out_after_a_revocation() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    // Renewal is due after 10 s; the agent checks at every keepalive (300 ms).
    let config = Config {
        agent_certificate_lifetime: Duration::from_secs(20),
        ..Config::for_dev(db.url())
    };
    let plane = TestPlane::start_with(config).await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let sim = mtp_e2e::fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let agent = mtp_e2e::fleet::TestAgent::start(&sim, &plane.url(), &token, "node-1").await;
    let first =
        mtp_e2e::fleet::eventually("the agent registers", WAIT, || async { stored(&agent) }).await;
    assert!(first.key_pem.contains("PRIVATE KEY"));

    // Renewed over the session, with a new key, before the certificate expired.
    let renewed =
        mtp_e2e::fleet::eventually("the agent renews", Duration::from_secs(20), || async {
            stored(&agent).filter(|e| e.certificate_pem != first.certificate_pem)
        })
        .await;
    assert_eq!(renewed.agent_id, first.agent_id);
    assert_ne!(renewed.key_pem, first.key_pem, "a new key for each renewal");
    assert!(renewed.expire_time > first.expire_time);
    assert!(
        chrono::Utc::now().timestamp() < i64::try_from(first.expire_time).unwrap(),
        "renewed at half the lifetime, not after expiry"
    );
    assert!(
        admin
            .audit_events()
            .await
            .iter()
            .any(|e| e.action == "agent.certificate_renewed")
    );
    // And it keeps working with it: an environment becomes Ready.
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin
        .wait_status(
            "team-a",
            "dev",
            pb::EnvironmentStatus::Ready,
            Duration::from_secs(20),
        )
        .await;

    // Revoked: the agent's session ends, and the join token it holds (minted
    // before the revocation, as the one in every node's Secret is) does not
    // re-admit it: it stays out, keeping its identity, until an operator
    // mints a new token.
    admin
        .clusters
        .revoke_agent(pb::RevokeAgentRequest {
            id: first.agent_id.clone(),
        })
        .await
        .unwrap();
    mtp_e2e::fleet::eventually("the revoked agent is disconnected", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let agents = admin.agents().await;
            agents
                .iter()
                .all(|a| !a.connected && a.revoke_time.is_some())
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = stored(&agent).expect("the identity is kept");
    assert_eq!(
        serial_of(&kept.certificate_pem),
        serial_of(&renewed.certificate_pem)
    );
    let registrations = admin
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "agent.register")
        .count();
    assert_eq!(
        registrations, 1,
        "the old token re-admitted a revoked agent"
    );
    assert!(admin.agents().await.iter().all(|a| !a.connected));
}

#[tokio::test]
async fn a_replica_with_another_agent_ca_refuses_to_start() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let _first = TestPlane::start_on(db.url().to_owned()).await;
    // Files that do not exist yet: the replica creates a CA of its own there,
    // which is not the one the database recorded at the first start.
    let dir = tempfile::tempdir().unwrap();
    let files = mtp_control_plane::ca::AgentCaFiles {
        cert: dir.path().join("ca/agent-ca.crt"),
        key: dir.path().join("ca/agent-ca.key"),
    };
    let config = Config {
        agent_ca: mtp_control_plane::ca::AgentCaSource::Files(files.clone()),
        ..mtp_e2e::with_tls(Config::for_dev(db.url()))
    };
    let err = mtp_control_plane::ControlPlane::start(config)
        .await
        .expect_err("a replica with another agent CA must not start");
    let message = format!("{err:#}");
    assert!(
        message.contains("is not the one this database's control plane uses"),
        "{message}"
    );
    // Its new key was written privately, and is not logged in the error.
    let key = std::fs::read_to_string(&files.key).unwrap();
    assert!(!message.contains(key.lines().nth(1).unwrap()));
}

/// Agent notices reach a session in commit order, so those committed before
/// its claim are history to it: a late registration notice (the one that
/// issued this very certificate), a stale "newer session" or a revocation
/// since undone must not end it. One committed after its claim still does.
/// (The stale notices are sent by hand, while the session waits for its
/// hello, in the store's payload format: that is the delivery order a busy
/// listener produces.)
#[tokio::test]
async fn notices_committed_before_a_sessions_claim_do_not_end_it() {
    use sqlx::Connection;
    const CHANNEL: &str = "mtp_agent_session";
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let me = enrolled(&mut admin, &plane, "k3s-1", "node-1").await;
    let mut agent = ScriptedAgent::open_before_hello(&plane.url(), &me)
        .await
        .expect("session opens");

    let mut listener = sqlx::postgres::PgListener::connect(&plane.database_url)
        .await
        .unwrap();
    listener.listen(CHANNEL).await.unwrap();
    let mut db = sqlx::PgConnection::connect(&plane.database_url)
        .await
        .unwrap();
    for what in [
        "00000000-0000-0000-0000-000000000000".to_owned(),
        "6f1d2c3e-0000-4000-8000-000000000001".to_owned(),
        "revoked".to_owned(),
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{}:{what}", me.agent_id))
            .execute(&mut db)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("the notice is delivered")
            .unwrap();
    }
    // The control plane's listener heard them too (its own connection; give
    // it a moment), and they wait in the session's queue ahead of its claim.
    tokio::time::sleep(Duration::from_millis(300)).await;

    agent.send(hello(0, false).kind.unwrap()).await;
    agent.next_desired(WAIT).await;
    assert!(
        agent.quiet_for(Duration::from_secs(1)).await,
        "the session lives on"
    );

    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!(
            "{}:6f1d2c3e-0000-4000-8000-000000000002",
            me.agent_id
        ))
        .execute(&mut db)
        .await
        .unwrap();
    let status = agent.ended(WAIT).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("replaced"), "{status:?}");
}
