//! The environment the cluster scenarios apply, shared by the kube-sim suite
//! and the real-cluster suite so both check the very same bundle.

use mtp_proto::v1::{
    ContainerDefaults, NamespaceConfig, NamespaceQuota, NetworkConfig, TenantOwners,
};

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
        }),
        container_defaults: Some(ContainerDefaults {
            default_request_cpu_millis: 100,
            default_request_memory_bytes: 128 << 20,
            default_limit_cpu_millis: 500,
            default_limit_memory_bytes: 512 << 20,
            max_cpu_millis: 2000,
            max_memory_bytes: 4 << 30,
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
