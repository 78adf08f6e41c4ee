//! What the kube-sim suite and the real-cluster suite share: the cluster a
//! scenario runs on ([`Ctx`]), the environment it applies, and the scenarios.

pub mod scenarios;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams};
use mtp_proto::v1::{
    ContainerDefaults, NamespaceConfig, NamespaceQuota, NetworkConfig, ObjectCounts, TenantOwners,
};

/// Where leases of the scenarios live.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// One scenario's view of a cluster: its names (prefixed with `id`, so runs
/// on a shared cluster never collide), what to delete afterwards, and the
/// timings that cluster allows.
#[derive(Clone)]
pub struct Ctx {
    /// The agent's identity (on the real server: the shipped ServiceAccount,
    /// RBAC and admission policy). Drift is made with it too, under other
    /// field managers: on a real server nobody else gets past the policy.
    client: Client,
    /// Someone who is not the agent, for what mtp does not own (a foreign
    /// namespace, a tenant's own policy) and for deleting leases.
    outsider: Client,
    /// On a server with the shipped RBAC the agent may only use its one Lease
    /// (`kube-system/mtp-agent-applier`): lease scenarios then share it,
    /// one at a time, and start from a deleted one.
    fixed_lease: Option<String>,
    pub id: String,
    /// Lease duration for the takeover scenario (whole seconds: the Lease
    /// stores `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// Namespace deletion is known to take a while (kube-sim with a
    /// finalization delay), so the first removal must report Terminating.
    pub namespace_deletion_is_slow: bool,
    namespaces: Arc<Mutex<Vec<String>>>,
    leases: Arc<Mutex<Vec<String>>>,
}

impl Ctx {
    pub fn new(
        client: Client,
        id: String,
        lease_duration: Duration,
        namespace_deletion_is_slow: bool,
    ) -> Ctx {
        Ctx {
            outsider: client.clone(),
            client,
            fixed_lease: None,
            id,
            lease_duration,
            namespace_deletion_is_slow,
            namespaces: Arc::default(),
            leases: Arc::default(),
        }
    }

    /// The same context where the agent (`client`) is not the one who makes
    /// foreign objects (`outsider`) and may only hold `lease`.
    #[allow(dead_code)] // only the real-server suite has separate identities
    pub fn with_identities(mut self, outsider: Client, lease: &str) -> Ctx {
        self.outsider = outsider;
        self.fixed_lease = Some(lease.to_string());
        self
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn outsider(&self) -> Client {
        self.outsider.clone()
    }

    /// A namespace name of this scenario, deleted afterwards.
    pub fn namespace(&self, env: &str) -> String {
        let name = format!("{}-{env}", self.id);
        self.namespaces.lock().unwrap().push(name.clone());
        name
    }

    /// A lease name of this scenario in kube-system, free now and deleted
    /// afterwards.
    pub async fn fresh_lease(&self, what: &str) -> String {
        let name = match &self.fixed_lease {
            Some(fixed) => {
                delete_lease(self.outsider(), fixed).await;
                fixed.clone()
            }
            None => format!("{}-{what}", self.id),
        };
        self.leases.lock().unwrap().push(name.clone());
        name
    }

    /// The tenant of this scenario's environments.
    pub fn tenant(&self) -> String {
        self.id.clone()
    }

    /// Deletes the namespaces and leases the scenario named, ignoring those
    /// already gone.
    pub async fn cleanup(&self) {
        let namespaces = std::mem::take(&mut *self.namespaces.lock().unwrap());
        let api = Api::<Namespace>::all(self.client());
        for ns in namespaces {
            match api.delete(&ns, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => eprintln!("cleanup: deleting namespace {ns}: {e}"),
            }
        }
        let leases = std::mem::take(&mut *self.leases.lock().unwrap());
        for lease in leases {
            delete_lease(self.outsider(), &lease).await;
        }
    }
}

async fn delete_lease(client: Client, name: &str) {
    let api = Api::<Lease>::namespaced(client, LEASE_NAMESPACE);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("deleting lease {LEASE_NAMESPACE}/{name}: {e}"),
    }
}

/// A namespace config as the control plane would send it, at revision 1.
pub fn config(ns: &str, tenant: &str) -> NamespaceConfig {
    NamespaceConfig {
        namespace: ns.into(),
        tenant: tenant.into(),
        environment: "dev".into(),
        revision: 1,
        quota: Some(NamespaceQuota {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            storage_bytes: 20 << 30,
            pods: 30,
            services: 10,
            persistent_volume_claims: 5,
            ephemeral_storage_bytes: 4 << 30,
            objects: Some(ObjectCounts {
                config_maps: 20,
                secrets: 3,
                service_accounts: 5,
                jobs: 5,
                cron_jobs: 2,
                deployments: 5,
                replica_sets: 50,
                stateful_sets: 2,
                ingresses: 5,
                roles: 5,
                role_bindings: 8,
            }),
        }),
        container_defaults: Some(ContainerDefaults {
            default_request_cpu_millis: 100,
            default_request_memory_bytes: 128 << 20,
            default_limit_cpu_millis: 500,
            default_limit_memory_bytes: 512 << 20,
            max_cpu_millis: 2000,
            max_memory_bytes: 4 << 30,
            default_request_ephemeral_storage_bytes: 64 << 20,
            default_limit_ephemeral_storage_bytes: 1 << 30,
            max_ephemeral_storage_bytes: 2 << 30,
        }),
        owners: Some(TenantOwners {
            users: vec!["alice@example.com".into()],
            groups: vec!["team-a".into()],
            service_accounts: vec![],
        }),
        network: Some(NetworkConfig {
            allow_same_tenant: true,
            allow_ingress_controller: true,
            ingress_namespace: "kube-system".into(),
        }),
    }
}
