//! The environment's ResourceQuota and LimitRange, and Kubernetes
//! quantities in the API server's canonical form.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use mtp_proto::v1::NamespaceConfig;

use super::{LIMITS_NAME, QUOTA_NAME, meta};

pub(super) fn quota(config: &NamespaceConfig, labels: &BTreeMap<String, String>) -> ResourceQuota {
    let ns = config.namespace.as_str();
    let q = config.quota.unwrap_or_default();
    let mut hard = BTreeMap::new();
    let cpu_quota = cpu(q.cpu_millis);
    let memory = bytes(q.memory_bytes);
    hard.insert("requests.cpu".into(), cpu_quota.clone());
    hard.insert("limits.cpu".into(), cpu_quota);
    hard.insert("requests.memory".into(), memory.clone());
    hard.insert("limits.memory".into(), memory);
    hard.insert("requests.storage".into(), bytes(q.storage_bytes));
    hard.insert("pods".into(), count(q.pods));
    hard.insert("services".into(), count(q.services));
    hard.insert(
        "persistentvolumeclaims".into(),
        count(q.persistent_volume_claims),
    );
    // Node ports and load balancers expose a tenant outside the cluster
    // network policy; environments never get them.
    hard.insert("services.nodeports".into(), count(0));
    hard.insert("services.loadbalancers".into(), count(0));
    // Node-local disk and the cluster's datastore: without these one
    // environment can fill a node or etcd. Absent from an older control
    // plane's configs (0 / no message): then not limited, as before.
    // Requests only: limits are capped per container by the LimitRange;
    // a summed limit would allow only a few default-sized containers.
    if q.ephemeral_storage_bytes > 0 {
        hard.insert(
            "requests.ephemeral-storage".into(),
            bytes(q.ephemeral_storage_bytes),
        );
    }
    if let Some(o) = &q.objects {
        for (resource, n) in [
            ("configmaps", o.config_maps),
            ("secrets", o.secrets),
            ("serviceaccounts", o.service_accounts),
            ("jobs.batch", o.jobs),
            ("cronjobs.batch", o.cron_jobs),
            ("deployments.apps", o.deployments),
            ("replicasets.apps", o.replica_sets),
            ("statefulsets.apps", o.stateful_sets),
            ("ingresses.networking.k8s.io", o.ingresses),
            ("roles.rbac.authorization.k8s.io", o.roles),
            ("rolebindings.rbac.authorization.k8s.io", o.role_bindings),
        ] {
            hard.insert(format!("count/{resource}"), count(n));
        }
    }
    ResourceQuota {
        metadata: meta(QUOTA_NAME, ns, labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container defaults and maximum.
pub(super) fn limits(config: &NamespaceConfig, labels: &BTreeMap<String, String>) -> LimitRange {
    let ns = config.namespace.as_str();
    let d = config.container_defaults.unwrap_or_default();
    let pair = |c: i64, m: i64, e: i64| {
        let mut resources = BTreeMap::from([
            ("cpu".to_string(), cpu(c)),
            ("memory".to_string(), bytes(m)),
        ]);
        if e > 0 {
            resources.insert("ephemeral-storage".to_string(), bytes(e));
        }
        resources
    };
    LimitRange {
        metadata: meta(LIMITS_NAME, ns, labels),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(pair(
                    d.default_limit_cpu_millis,
                    d.default_limit_memory_bytes,
                    d.default_limit_ephemeral_storage_bytes,
                )),
                default_request: Some(pair(
                    d.default_request_cpu_millis,
                    d.default_request_memory_bytes,
                    d.default_request_ephemeral_storage_bytes,
                )),
                max: Some(pair(
                    d.max_cpu_millis,
                    d.max_memory_bytes,
                    d.max_ephemeral_storage_bytes,
                )),
                ..Default::default()
            }],
        }),
    }
}

/// CPU in the API server's canonical form: whole cores as `2`, else `500m`.
pub fn cpu(millis: i64) -> Quantity {
    if millis % 1000 == 0 {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// Bytes in the API server's canonical binary form: the largest of Ki..Ei
/// that divides exactly, else plain bytes.
pub fn bytes(n: i64) -> Quantity {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if n == 0 {
        return Quantity("0".into());
    }
    let mut value = n;
    let mut suffix = "";
    for s in SUFFIXES {
        if value % 1024 != 0 {
            break;
        }
        value /= 1024;
        suffix = s;
    }
    Quantity(format!("{value}{suffix}"))
}

fn count(n: i64) -> Quantity {
    Quantity(n.to_string())
}
