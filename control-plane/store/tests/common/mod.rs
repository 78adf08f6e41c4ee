//! Fixtures of the store tests: a migrated store on a fresh database of the
//! shared test PostgreSQL, and the few rows most tests start from.

#![allow(dead_code)] // each test binary uses its own part of these

use mtp_core::agents::{AgentIdentity, AgentRegistration};
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

/// An agent registered on `cluster` the way a real one is: with a join token.
pub async fn agent(store: &Store, cluster: &str, node: &str) -> AgentIdentity {
    let (secret, _) = store
        .create_join_token(&ctx(), cluster, chrono::Duration::hours(1))
        .await
        .expect("join token");
    let registration =
        AgentRegistration::new(secret, node, "test".into()).expect("valid registration");
    store
        .register_agent(&registration, "test-request")
        .await
        .expect("registers")
        .0
}
