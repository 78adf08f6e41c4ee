//! Every bundle the agent renders, checked against the namespace-level checks
//! of the Kubernetes Multi-Tenancy Benchmarks (MTB,
//! github.com/kubernetes-sigs/multi-tenancy/tree/master/benchmarks) that the
//! environment's configuration decides. Pure: no cluster, no I/O.
//!
//! Each test is named after the MTB check it stands for and runs over a
//! handful of hand-built configs (open and closed networking, several kinds
//! of owners, different quotas). The checks read the apply configurations of
//! `Bundle::objects()` — exactly what the agent sends to the API server.
//!
//! What the labels and objects *do* on a cluster (PodSecurity admission, the
//! CNI enforcing NetworkPolicy, RBAC evaluation) is modelled here: a table for
//! PodSecurity, the upstream bootstrap rules of `admin`/`edit` as a fixture,
//! and a small NetworkPolicy evaluator. `the_checks_reject_broken_bundles`
//! breaks bundles on purpose and proves every check notices. The real
//! kube-apiserver suite (`real_cluster/`) checks PodSecurity, RBAC and the
//! admission policies for real; only NetworkPolicy enforcement stays modelled.
//!
//! Layout: this file holds the configs and the readers of apply
//! configurations; `psa`, `quotas`, `rbac` and `netpol` hold one model and
//! its checks each; `quantity` is a parser of its own (an oracle independent
//! of the agent's code, on purpose); `broken` is the strictness test.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mtp_agent::bundle::{self, Bundle, Kind, ManagedObject};
use mtp_proto::v1::{
    ContainerDefaults, NamespaceConfig, NamespaceQuota, NetworkConfig, TenantOwners,
};

type Labels = BTreeMap<String, String>;
type Check = fn(&NamespaceConfig, &[ManagedObject]) -> Result<(), String>;

const TENANT: &str = "team-a";
const OTHER_TENANT: &str = "team-b";
/// Set by the API server on every namespace (Kubernetes ≥ 1.21).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod broken;
mod netpol;
mod psa;
mod quantity;
mod quotas;
mod rbac;

use netpol::*;
use psa::*;
use quantity::*;
use quotas::*;
use rbac::*;

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

fn network(same_tenant: bool, ingress: bool, ingress_namespace: &str) -> Option<NetworkConfig> {
    Some(NetworkConfig {
        allow_same_tenant: same_tenant,
        allow_ingress_controller: ingress,
        ingress_namespace: ingress_namespace.into(),
    })
}

fn quota(
    cpu: i64,
    memory: i64,
    storage: i64,
    pods: i64,
    services: i64,
    pvcs: i64,
) -> NamespaceQuota {
    NamespaceQuota {
        cpu_millis: cpu,
        memory_bytes: memory,
        storage_bytes: storage,
        pods,
        services,
        persistent_volume_claims: pvcs,
        ..NamespaceQuota::default()
    }
}

/// `(default request, default limit, max)` for cpu millis and memory bytes.
fn defaults(cpu: (i64, i64, i64), memory: (i64, i64, i64)) -> ContainerDefaults {
    ContainerDefaults {
        default_request_cpu_millis: cpu.0,
        default_request_memory_bytes: memory.0,
        default_limit_cpu_millis: cpu.1,
        default_limit_memory_bytes: memory.1,
        max_cpu_millis: cpu.2,
        max_memory_bytes: memory.2,
        ..ContainerDefaults::default()
    }
}

fn owners(users: &[&str], groups: &[&str], service_accounts: &[&str]) -> Option<TenantOwners> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Some(TenantOwners {
        users: v(users),
        groups: v(groups),
        service_accounts: v(service_accounts),
    })
}

fn env(namespace: &str, tenant: &str, environment: &str) -> NamespaceConfig {
    NamespaceConfig {
        namespace: namespace.into(),
        tenant: tenant.into(),
        environment: environment.into(),
        revision: 1,
        ..Default::default()
    }
}

/// The configs every check runs over: all of tenant `team-a`, each in its own
/// namespace, covering open/closed networking, owner kinds and quota shapes.
fn configs() -> Vec<NamespaceConfig> {
    vec![
        // Everything allowed, ingress controller in its own namespace.
        NamespaceConfig {
            quota: Some(quota(1500, 2 << 30, 10 << 30, 20, 10, 5)),
            container_defaults: Some(defaults((100, 500, 1000), (128 << 20, 512 << 20, 1 << 30))),
            owners: owners(&["alice@example.com"], &["team-a-devs"], &["ci/deployer"]),
            network: network(true, true, "ingress-nginx"),
            ..env("team-a-dev", TENANT, "dev")
        },
        // Closed: no same-tenant, no ingress controller.
        NamespaceConfig {
            quota: Some(quota(64_000, 256 << 30, 1 << 40, 500, 100, 50)),
            container_defaults: Some(defaults((250, 2000, 8000), (256 << 20, 4 << 30, 32 << 30))),
            owners: owners(&["bob@example.com", "carol@example.com"], &[], &[]),
            network: network(false, false, ""),
            ..env("team-a-prod", TENANT, "prod")
        },
        // Same tenant only; owners are service accounts only (one malformed,
        // which the bundle drops).
        NamespaceConfig {
            quota: Some(quota(250, 1000, 1536 << 20, 1, 1, 0)),
            container_defaults: Some(defaults((10, 250, 250), (1000, 64 << 20, 64 << 20))),
            owners: owners(
                &[],
                &[],
                &[
                    "argocd/argocd-application-controller",
                    "team-a-qa/builder",
                    "no-slash",
                ],
            ),
            network: network(true, false, "ingress-nginx"),
            ..env("team-a-qa", TENANT, "qa")
        },
        // Ingress controller in kube-system (K3s's Traefik), no same-tenant.
        NamespaceConfig {
            quota: Some(quota(4000, 8 << 30, 0, 40, 5, 0)),
            container_defaults: Some(defaults((100, 1000, 4000), (64 << 20, 1 << 30, 8 << 30))),
            owners: owners(
                &[],
                &["team-a-admins", "system:serviceaccounts:team-a-ci"],
                &[],
            ),
            network: network(false, true, "kube-system"),
            ..env("team-a-stage", TENANT, "stage")
        },
        // Ingress switched on without a namespace: nothing may come in.
        NamespaceConfig {
            quota: Some(quota(1000, 1 << 30, 5 << 30, 10, 2, 2)),
            container_defaults: Some(defaults((100, 200, 1000), (100 << 20, 200 << 20, 1 << 30))),
            owners: owners(&["dave@example.com"], &[], &["team-a-preview/deployer"]),
            network: network(true, true, ""),
            ..env("team-a-preview", TENANT, "preview")
        },
        // Nothing set at all: zero quota and limits, no owners, no network config.
        env("team-a-empty", TENANT, "empty"),
    ]
}

/// Another tenant, fully open to its own tenant and an ingress controller.
fn other_tenant() -> NamespaceConfig {
    NamespaceConfig {
        owners: owners(&["mallory@example.com"], &[], &[]),
        network: network(true, true, "ingress-nginx"),
        ..env("team-b-dev", OTHER_TENANT, "dev")
    }
}

fn rendered() -> Vec<(NamespaceConfig, Vec<ManagedObject>)> {
    configs()
        .into_iter()
        .map(|c| {
            let objects = Bundle::render(&c).objects();
            (c, objects)
        })
        .collect()
}

/// Runs a check over every config and fails with every violation found.
fn assert_holds(check: Check) {
    let failures: Vec<String> = rendered()
        .iter()
        .filter_map(|(c, objects)| {
            check(c, objects)
                .err()
                .map(|e| format!("{}: {e}", c.namespace))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Reading the apply configurations
// ---------------------------------------------------------------------------

fn typed<T: serde::de::DeserializeOwned>(o: &ManagedObject) -> Result<T, String> {
    serde_json::from_value(o.body.clone()).map_err(|e| format!("{}: does not decode: {e}", o.id()))
}

fn of_kind(objects: &[ManagedObject], kind: Kind) -> Vec<&ManagedObject> {
    objects.iter().filter(|o| o.kind == kind).collect()
}

fn one<T: serde::de::DeserializeOwned>(objects: &[ManagedObject], kind: Kind) -> Result<T, String> {
    match of_kind(objects, kind).as_slice() {
        [o] => typed(o),
        found => Err(format!(
            "want exactly one {}, found {}",
            kind.name(),
            found.len()
        )),
    }
}

fn namespace_labels(objects: &[ManagedObject]) -> Result<Labels, String> {
    let ns: Namespace = one(objects, Kind::Namespace)?;
    Ok(ns.metadata.labels.unwrap_or_default())
}

fn policies(objects: &[ManagedObject]) -> Result<Vec<NetworkPolicy>, String> {
    of_kind(objects, Kind::NetworkPolicy)
        .into_iter()
        .map(typed)
        .collect()
}

fn bindings(objects: &[ManagedObject]) -> Result<Vec<RoleBinding>, String> {
    of_kind(objects, Kind::RoleBinding)
        .into_iter()
        .map(typed)
        .collect()
}

// ---------------------------------------------------------------------------
// Ownership label
// ---------------------------------------------------------------------------

fn check_managed_by(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    ensure!(!objects.is_empty(), "empty bundle");
    for o in objects {
        let labels = &o.body["metadata"]["labels"];
        ensure!(
            labels[bundle::MANAGED_BY] == bundle::MANAGED_BY_VALUE,
            "{} lacks {}={}",
            o.id(),
            bundle::MANAGED_BY,
            bundle::MANAGED_BY_VALUE
        );
        ensure!(
            labels[bundle::TENANT_LABEL] == c.tenant.as_str(),
            "{} lacks the tenant label",
            o.id()
        );
    }
    Ok(())
}

#[test]
fn every_object_carries_managed_by_mtp() {
    assert_holds(check_managed_by);
}
