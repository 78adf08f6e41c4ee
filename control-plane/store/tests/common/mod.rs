//! Fixtures of the store tests: a migrated store on a fresh database of the
//! shared test PostgreSQL, and the few rows most tests start from.

#![allow(dead_code)] // each test binary uses its own part of these

use mtp_core::agents::{AgentIdentity, AgentRegistration, IssuedCertificate};
use mtp_core::clusters::{Cluster, NewCluster};
use mtp_core::environments::{Environment, NewEnvironment};
use mtp_core::quota::TenantQuota;
use mtp_core::tenants::{Owners, TenantSpec};
use mtp_store::{ChangeContext, Store, StoreConfig};

pub const GI: u64 = 1 << 30;

pub async fn store() -> Store {
    let db = mtp_pg_harness::fresh_database().await;
    let store = Store::connect(&StoreConfig::new(db.url()))
        .await
        .expect("connects");
    store.migrate().await.expect("migrates");
    store
}

pub fn ctx() -> ChangeContext {
    ChangeContext::system("tests")
}

pub async fn cluster(store: &Store, name: &str) -> Cluster {
    let new = NewCluster {
        name: name.into(),
        labels: Default::default(),
        ingress_namespace: "kube-system".into(),
    };
    store.create_cluster(&ctx(), &new).await.expect("cluster")
}

/// A tenant whose CPU quota holds `small_envs` environments of the `small`
/// profile (1 CPU each); every other resource is plentiful.
pub async fn tenant(store: &Store, name: &str, small_envs: u64) {
    let spec = TenantSpec {
        name: name.into(),
        display_name: String::new(),
        owners: Owners::default(),
        quota: TenantQuota {
            cpu_millis: small_envs * 1000,
            memory_bytes: 1000 * GI,
            storage_bytes: 10_000 * GI,
            pods: 10_000,
            max_environments: 1000,
        },
        allowed_profiles: Vec::new(),
    };
    store.create_tenant(&ctx(), &spec).await.expect("tenant");
}

pub fn new_env(tenant: &str, name: &str, cluster: &str) -> NewEnvironment {
    NewEnvironment {
        tenant: tenant.into(),
        name: name.into(),
        cluster: cluster.into(),
        profile: "small".into(),
        quota_override: Default::default(),
        expire_time: None,
    }
}

pub async fn env(store: &Store, tenant: &str, name: &str, cluster: &str) -> Environment {
    store
        .create_environment(&ctx(), &new_env(tenant, name, cluster))
        .await
        .expect("environment")
}

/// An agent registered on `cluster` the way a real one is: with a join token
/// (the certificate is not signed here: the store only keeps its serial).
pub async fn agent(store: &Store, cluster: &str, node: &str) -> AgentIdentity {
    let (secret, _) = store
        .create_join_token(&ctx(), cluster, chrono::Duration::hours(1), 0)
        .await
        .expect("join token");
    register(store, &secret, node).await.expect("registers")
}

/// Registers `node` with a join token secret, recording a fake certificate
/// with a fresh random serial.
pub async fn register(
    store: &Store,
    secret: &str,
    node: &str,
) -> Result<AgentIdentity, mtp_store::Error> {
    let registration =
        AgentRegistration::new(secret.to_owned(), node, "test".into()).expect("valid registration");
    store
        .register_agent(&registration, "test-request", |_| {
            Ok((fake_certificate(), ()))
        })
        .await
        .map(|(identity, _, ())| identity)
}

/// A stand-in for a signed certificate: a random serial, expiring in an hour.
pub fn fake_certificate() -> IssuedCertificate {
    IssuedCertificate {
        serial: uuid::Uuid::new_v4().simple().to_string(),
        expire_time: chrono::Utc::now() + chrono::Duration::hours(1),
    }
}

/// An agent of `cluster` with a live session, fenced in as its applier:
/// its identity and the epoch of the grant.
pub async fn applier(store: &Store, cluster: &str, node: &str) -> (AgentIdentity, i64) {
    let identity = agent(store, cluster, node).await;
    let epoch = grant(store, &identity).await;
    (identity, epoch)
}

/// Opens a session for `identity` and fences it in; panics if refused.
pub async fn grant(store: &Store, identity: &AgentIdentity) -> i64 {
    let session = uuid::Uuid::new_v4();
    assert!(
        store
            .claim_session(identity, session, "test")
            .await
            .unwrap()
    );
    match store
        .claim_applier(identity, session, std::time::Duration::from_secs(15))
        .await
        .unwrap()
    {
        mtp_store::ApplierDecision::Granted { epoch } => epoch,
        other => panic!("not granted: {other:?}"),
    }
}

/// Records an acknowledgement of `applier` (identity, epoch); `None`: fenced out.
pub async fn ack(
    store: &Store,
    applier: &(AgentIdentity, i64),
    revision: i64,
    results: &[(String, mtp_core::agents::NamespaceReport)],
) -> Option<mtp_store::AckOutcome> {
    let claim = mtp_core::claims::AckClaim::new(revision, results.to_vec(), 0).expect("valid ack");
    store
        .record_ack(&applier.0, applier.1, &claim)
        .await
        .expect("recorded or fenced out")
}
