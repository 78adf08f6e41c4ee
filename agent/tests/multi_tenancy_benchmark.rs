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

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
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
// Quantities
// ---------------------------------------------------------------------------

/// A Kubernetes quantity in thousandths of its unit (so `500m` CPU is 500 and
/// `1Ki` is 1_024_000). Only the forms the API server accepts; anything else
/// is an error, as it would be on a real cluster.
fn milli(q: &Quantity) -> Result<i128, String> {
    let s = q.0.as_str();
    let bad = || format!("{s:?} is not a valid quantity");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let factor: i128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "P" => 1_000_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000_000,
        "Ki" => 1_000 << 10,
        "Mi" => 1_000 << 20,
        "Gi" => 1_000 << 30,
        "Ti" => 1_000 << 40,
        "Pi" => 1_000 << 50,
        "Ei" => 1_000 << 60,
        _ => return Err(bad()),
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut value: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    value *= factor;
    let mut scale = factor;
    for d in fraction.chars() {
        scale /= 10;
        ensure!(scale > 0, "{s:?}: more precision than a milli-unit");
        value += i128::from(d.to_digit(10).unwrap_or(0)) * scale;
    }
    Ok(if negative { -value } else { value })
}

// ---------------------------------------------------------------------------
// Pod Security Admission: what the `restricted` level guarantees
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PsaLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PsaLevel {
    fn parse(s: &str) -> Option<PsaLevel> {
        match s {
            "privileged" => Some(PsaLevel::Privileged),
            "baseline" => Some(PsaLevel::Baseline),
            "restricted" => Some(PsaLevel::Restricted),
            _ => None,
        }
    }
}

struct PsaGuarantee {
    mtb_id: &'static str,
    title: &'static str,
    /// The lowest Pod Security Standards level whose enforcement rejects the
    /// pods this check tries to create (`restricted` includes `baseline`).
    level: PsaLevel,
    /// What that level guarantees on a real cluster with the namespace
    /// labelled `pod-security.kubernetes.io/enforce=<level>`.
    guarantee: &'static str,
}

/// MTB check id → what `pod-security.kubernetes.io/enforce=restricted`
/// guarantees (Pod Security Standards, kubernetes.io/docs/concepts/security/pod-security-standards).
const PSA_TABLE: &[PsaGuarantee] = &[
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-3",
        title: "Block add capabilities",
        level: PsaLevel::Restricted,
        guarantee: "containers must drop ALL capabilities and may add back only NET_BIND_SERVICE \
                    (baseline already rejects anything beyond the runtime's default set)",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-4",
        title: "Require run as non-root user",
        level: PsaLevel::Restricted,
        guarantee: "runAsNonRoot must be true (pod or every container) and runAsUser must not be 0",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-5",
        title: "Block privileged containers",
        level: PsaLevel::Baseline,
        guarantee: "securityContext.privileged must be unset or false in every (init/ephemeral) container",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-6",
        title: "Block privilege escalation",
        level: PsaLevel::Restricted,
        guarantee: "securityContext.allowPrivilegeEscalation must be false in every container",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-1",
        title: "Block use of host path volumes",
        level: PsaLevel::Baseline,
        guarantee: "hostPath volumes are rejected (restricted further allows only configMap, csi, \
                    downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret)",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-3",
        title: "Block use of host networking and ports",
        level: PsaLevel::Baseline,
        guarantee: "hostNetwork must be unset or false and every hostPort unset or 0",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-4",
        title: "Block use of host PID",
        level: PsaLevel::Baseline,
        guarantee: "hostPID must be unset or false",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-5",
        title: "Block use of host IPC",
        level: PsaLevel::Baseline,
        guarantee: "hostIPC must be unset or false",
    },
];

fn valid_psa_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|minor| !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit()))
}

/// The namespace enforces (and audits and warns at) a level at least as
/// strict as `needed`, with a valid enforce-version.
fn check_psa(objects: &[ManagedObject], needed: PsaLevel) -> Result<(), String> {
    let labels = namespace_labels(objects)?;
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        let level = labels
            .get(&key)
            .ok_or_else(|| format!("namespace lacks {key}"))?;
        let parsed =
            PsaLevel::parse(level).ok_or_else(|| format!("{key}={level:?} is not a level"))?;
        ensure!(parsed >= needed, "{key}={level}, needs at least {needed:?}");
        ensure!(
            parsed == PsaLevel::Restricted,
            "{key}={level}: environments run at restricted"
        );
        let version_key = format!("{key}-version");
        match labels.get(&version_key) {
            Some(v) => ensure!(valid_psa_version(v), "{version_key}={v:?} is not a version"),
            None if mode == "enforce" => return Err(format!("namespace lacks {version_key}")),
            None => {}
        }
    }
    Ok(())
}

fn assert_psa_check(mtb_id: &str) {
    let row = PSA_TABLE
        .iter()
        .find(|r| r.mtb_id == mtb_id)
        .unwrap_or_else(|| panic!("{mtb_id} is not in the PSA table"));
    let failures: Vec<String> = rendered()
        .iter()
        .filter_map(|(c, objects)| {
            check_psa(objects, row.level).err().map(|e| {
                format!(
                    "{} ({}: {}) — on a real cluster: {}: {e}",
                    c.namespace, row.mtb_id, row.title, row.guarantee
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mtb_block_add_capabilities_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-3");
}

#[test]
fn mtb_require_run_as_non_root_user_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-4");
}

#[test]
fn mtb_block_privileged_containers_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-5");
}

#[test]
fn mtb_block_privilege_escalation_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-6");
}

#[test]
fn mtb_block_use_of_host_path_volumes_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-1");
}

#[test]
fn mtb_block_use_of_host_networking_and_ports_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-3");
}

#[test]
fn mtb_block_use_of_host_pid_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-4");
}

#[test]
fn mtb_block_use_of_host_ipc_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-5");
}

#[test]
fn psa_table_lists_each_check_once() {
    let ids: BTreeSet<_> = PSA_TABLE.iter().map(|r| r.mtb_id).collect();
    assert_eq!(ids.len(), PSA_TABLE.len());
    assert_eq!(PSA_TABLE.len(), 8, "one test above per row");
}

// ---------------------------------------------------------------------------
// Quotas and limits
// ---------------------------------------------------------------------------

fn hard(objects: &[ManagedObject]) -> Result<BTreeMap<String, Quantity>, String> {
    let q: ResourceQuota = one(objects, Kind::ResourceQuota)?;
    ensure!(
        q.metadata.name.as_deref() == Some(bundle::QUOTA_NAME),
        "quota is called {:?}",
        q.metadata.name
    );
    let spec = q.spec.ok_or("quota has no spec")?;
    ensure!(
        spec.scopes.is_none() && spec.scope_selector.is_none(),
        "quota is scoped: it must cover every pod"
    );
    spec.hard
        .ok_or_else(|| "quota has no spec.hard".to_string())
}

fn quota_entry(
    hard: &BTreeMap<String, Quantity>,
    key: &str,
    want_milli: i128,
) -> Result<(), String> {
    let q = hard.get(key).ok_or_else(|| format!("quota lacks {key}"))?;
    let value = milli(q)?;
    ensure!(value >= 0, "quota {key}={} is negative", q.0);
    ensure!(
        value == want_milli,
        "quota {key}={}, config says {want_milli}/1000",
        q.0
    );
    Ok(())
}

/// MTB-PL1-CC-FNS-1: cpu, memory and storage are limited, as configured.
fn check_resource_quotas(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    let hard = hard(objects)?;
    let q = c.quota.unwrap_or_default();
    let bytes = |n: i64| i128::from(n) * 1000;
    quota_entry(&hard, "requests.cpu", i128::from(q.cpu_millis))?;
    quota_entry(&hard, "limits.cpu", i128::from(q.cpu_millis))?;
    quota_entry(&hard, "requests.memory", bytes(q.memory_bytes))?;
    quota_entry(&hard, "limits.memory", bytes(q.memory_bytes))?;
    quota_entry(&hard, "requests.storage", bytes(q.storage_bytes))?;
    for (key, value) in &hard {
        ensure!(milli(value)? >= 0, "quota {key}={} is negative", value.0);
    }
    Ok(())
}

/// MTB-PL1-CC-FNS-2: object counts are limited, as configured.
fn check_object_quotas(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    let hard = hard(objects)?;
    let q = c.quota.unwrap_or_default();
    let n = |v: i64| i128::from(v) * 1000;
    quota_entry(&hard, "pods", n(q.pods))?;
    quota_entry(&hard, "services", n(q.services))?;
    quota_entry(
        &hard,
        "persistentvolumeclaims",
        n(q.persistent_volume_claims),
    )?;
    Ok(())
}

/// MTB-PL1-BC-HI-2 ("Block use of NodePort services"; the upstream config
/// file reuses HI-1) and load balancers alike: a quota of zero for both.
fn check_no_node_ports_or_load_balancers(
    _: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let hard = hard(objects)?;
    quota_entry(&hard, "services.nodeports", 0)?;
    quota_entry(&hard, "services.loadbalancers", 0)?;
    Ok(())
}

/// The LimitRange that gives every container requests and limits (so the
/// quota on requests/limits admits pods that set none) and caps one container.
fn check_container_limit_range(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let lr: LimitRange = one(objects, Kind::LimitRange)?;
    let items = lr.spec.ok_or("limit range has no spec")?.limits;
    let containers: Vec<_> = items.iter().filter(|i| i.type_ == "Container").collect();
    let [item] = containers.as_slice() else {
        return Err(format!(
            "want one Container limit, found {}",
            containers.len()
        ));
    };
    let d = c.container_defaults.unwrap_or_default();
    let get = |which: &str,
               map: &Option<BTreeMap<String, Quantity>>,
               resource: &str|
     -> Result<i128, String> {
        let q = map
            .as_ref()
            .and_then(|m| m.get(resource))
            .ok_or_else(|| format!("Container {which} lacks {resource}"))?;
        let v = milli(q)?;
        ensure!(v >= 0, "Container {which}.{resource}={} is negative", q.0);
        Ok(v)
    };
    for (resource, want) in [
        (
            "cpu",
            [
                d.default_request_cpu_millis,
                d.default_limit_cpu_millis,
                d.max_cpu_millis,
            ]
            .map(i128::from),
        ),
        (
            "memory",
            [
                d.default_request_memory_bytes,
                d.default_limit_memory_bytes,
                d.max_memory_bytes,
            ]
            .map(|b| i128::from(b) * 1000),
        ),
    ] {
        let request = get("defaultRequest", &item.default_request, resource)?;
        let limit = get("default", &item.default, resource)?;
        let max = get("max", &item.max, resource)?;
        ensure!(
            [request, limit, max] == want,
            "Container {resource}: defaultRequest/default/max = {request}/{limit}/{max} milli, config says {want:?}"
        );
        ensure!(
            limit <= max,
            "Container {resource}: default {limit} > max {max}"
        );
        ensure!(
            request <= limit,
            "Container {resource}: defaultRequest {request} > default {limit}"
        );
    }
    Ok(())
}

#[test]
fn mtb_configure_ns_quotas_for_cpu_memory_and_storage() {
    assert_holds(check_resource_quotas);
}

#[test]
fn mtb_configure_ns_object_limits_for_pods_services_and_claims() {
    assert_holds(check_object_quotas);
}

#[test]
fn mtb_configure_ns_quotas_with_container_defaults_and_maximum() {
    assert_holds(check_container_limit_range);
}

#[test]
fn mtb_block_use_of_nodeport_and_load_balancer_services() {
    assert_holds(check_no_node_ports_or_load_balancers);
}

#[test]
fn quantities_parse_like_the_api_server() {
    let m = |s: &str| milli(&Quantity(s.into()));
    assert_eq!(m("500m"), Ok(500));
    assert_eq!(m("2"), Ok(2000));
    assert_eq!(m("1.5"), Ok(1500));
    assert_eq!(m("1Ki"), Ok(1_024_000));
    assert_eq!(m("2Gi"), Ok(2_000 << 30));
    assert_eq!(m("1k"), Ok(1_000_000));
    assert_eq!(m("0"), Ok(0));
    assert_eq!(m("-1"), Ok(-1000));
    assert!(m("1Kb").is_err() && m("").is_err() && m("Gi").is_err() && m("1.2.3").is_err());
}

// ---------------------------------------------------------------------------
// RBAC: the bootstrap `admin` and `edit` ClusterRoles
// ---------------------------------------------------------------------------

struct Rule {
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];
const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// Rules of `system:aggregate-to-view` (aggregated into `edit` and `admin`)
/// for the core group and network policies, as in upstream Kubernetes
/// `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`.
const AGGREGATE_TO_VIEW: &[Rule] = &[
    Rule {
        groups: &[""],
        resources: &[
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "configmaps",
        ],
        verbs: READ,
    },
    Rule {
        groups: &[""],
        resources: &[
            "limitranges",
            "resourcequotas",
            "bindings",
            "events",
            "pods/status",
            "resourcequotas/status",
            "namespaces/status",
            "replicationcontrollers/status",
            "pods/log",
        ],
        verbs: READ,
    },
    // Read access to namespaces at namespace scope: reading *this* namespace.
    Rule {
        groups: &[""],
        resources: &["namespaces"],
        verbs: READ,
    },
    Rule {
        groups: &["networking.k8s.io"],
        resources: &["networkpolicies", "ingresses", "ingresses/status"],
        verbs: READ,
    },
];

/// Core-group and networking rules of `system:aggregate-to-edit`. Upstream:
/// "It does not grant powers for privileged resources which are domain of the
/// system: /status subresources or quota/limits which are used to control namespaces".
const AGGREGATE_TO_EDIT: &[Rule] = &[
    Rule {
        groups: &[""],
        resources: &[
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
            "secrets",
            "services/proxy",
        ],
        verbs: READ,
    },
    Rule {
        groups: &[""],
        resources: &["serviceaccounts"],
        verbs: &["impersonate"],
    },
    Rule {
        groups: &[""],
        resources: &[
            "pods",
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
        ],
        verbs: WRITE,
    },
    Rule {
        groups: &[""],
        resources: &["pods/eviction", "serviceaccounts/token"],
        verbs: &["create"],
    },
    Rule {
        groups: &[""],
        resources: &[
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/proxy",
            "endpoints",
            "persistentvolumeclaims",
            "configmaps",
            "secrets",
        ],
        verbs: WRITE,
    },
    Rule {
        groups: &["networking.k8s.io"],
        resources: &["networkpolicies", "ingresses"],
        verbs: WRITE,
    },
];

/// `system:aggregate-to-admin`: `edit` plus granting permissions in the namespace.
const AGGREGATE_TO_ADMIN: &[Rule] = &[
    Rule {
        groups: &["authorization.k8s.io"],
        resources: &["localsubjectaccessreviews"],
        verbs: &["create"],
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["roles", "rolebindings"],
        verbs: READ_WRITE,
    },
];

/// The ClusterRoles an environment may bind, with their (aggregated) rules.
fn bindable_role(name: &str) -> Option<Vec<&'static Rule>> {
    let view = AGGREGATE_TO_VIEW.iter();
    match name {
        "edit" => Some(view.chain(AGGREGATE_TO_EDIT).collect()),
        "admin" => Some(
            view.chain(AGGREGATE_TO_EDIT)
                .chain(AGGREGATE_TO_ADMIN)
                .collect(),
        ),
        _ => None,
    }
}

fn allows(rules: &[&Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        (r.groups.contains(&group) || r.groups.contains(&"*"))
            && (r.resources.contains(&resource) || r.resources.contains(&"*"))
            && (r.verbs.contains(&verb) || r.verbs.contains(&"*"))
    })
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn bound_roles(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<Vec<(String, RoleRef)>, String> {
    bindings(objects)?
        .into_iter()
        .map(|b| {
            let name = b.metadata.name.clone().unwrap_or_default();
            ensure!(
                b.metadata.namespace.as_deref() == Some(c.namespace.as_str()),
                "RoleBinding/{name} is in {:?}, not the environment's namespace",
                b.metadata.namespace
            );
            Ok((name, b.role_ref))
        })
        .collect()
}

/// MTB-PL1-CC-TI-1: no bound role may write quotas or limit ranges. Also the
/// namespace itself, whose labels carry the pod security level and the
/// tenant the network policies trust.
fn check_quota_not_modifiable(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    for (binding, role_ref) in bound_roles(c, objects)? {
        let rules = bindable_role(&role_ref.name).ok_or_else(|| {
            format!(
                "RoleBinding/{binding} binds {:?}, not admin or edit",
                role_ref.name
            )
        })?;
        for resource in [
            "resourcequotas",
            "resourcequotas/status",
            "limitranges",
            "namespaces",
            "namespaces/status",
        ] {
            for verb in WRITE_VERBS {
                ensure!(
                    !allows(&rules, "", resource, verb),
                    "RoleBinding/{binding} ({}) may {verb} {resource}",
                    role_ref.name
                );
            }
        }
    }
    Ok(())
}

/// MTB-PL1-CC-CPI-1: nothing cluster-scoped is granted — only RoleBindings in
/// the environment's namespace, to allowlisted ClusterRoles.
fn check_no_cluster_access(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    for o in objects {
        let kind = o.body["kind"].as_str().unwrap_or_default();
        let api_version = o.body["apiVersion"].as_str().unwrap_or_default();
        ensure!(
            !matches!(kind, "ClusterRoleBinding" | "ClusterRole" | "Role"),
            "the bundle contains a {kind}"
        );
        ensure!(
            kind == o.kind.name(),
            "{} has kind {kind:?} in its body",
            o.id()
        );
        if api_version.starts_with(RBAC_GROUP) {
            ensure!(
                kind == "RoleBinding",
                "{} is RBAC but not a RoleBinding",
                o.id()
            );
        }
        if o.kind == Kind::Namespace {
            ensure!(
                o.name == c.namespace,
                "the bundle creates namespace {}",
                o.name
            );
            ensure!(o.namespace.is_none(), "Namespace with a namespace");
        } else {
            ensure!(
                o.namespace.as_deref() == Some(c.namespace.as_str())
                    && o.body["metadata"]["namespace"] == c.namespace.as_str(),
                "{} is not in {}",
                o.id(),
                c.namespace
            );
        }
    }
    let roles = bound_roles(c, objects)?;
    ensure!(!roles.is_empty(), "no role bindings at all");
    for (binding, role_ref) in roles {
        ensure!(
            role_ref.api_group == RBAC_GROUP,
            "RoleBinding/{binding}: roleRef.apiGroup {:?}",
            role_ref.api_group
        );
        ensure!(
            role_ref.kind == "ClusterRole",
            "RoleBinding/{binding}: roleRef.kind {:?}",
            role_ref.kind
        );
        ensure!(
            bindable_role(&role_ref.name).is_some(),
            "RoleBinding/{binding} binds ClusterRole {:?}, not admin or edit",
            role_ref.name
        );
    }
    Ok(())
}

/// MTB-PL1-CC-TI-2: grants stay inside the tenant — the CI account is the
/// environment's own, and owner subjects are well formed.
fn check_subjects(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    let all = bindings(objects)?;
    let named = |n: &str| all.iter().find(|b| b.metadata.name.as_deref() == Some(n));
    let ci = named(bundle::CI_BINDING).ok_or("no CI binding")?;
    let ci_subjects = ci.subjects.clone().unwrap_or_default();
    ensure!(!ci_subjects.is_empty(), "CI binding has no subjects");
    for s in &ci_subjects {
        ensure!(
            s.kind == "ServiceAccount",
            "CI binding binds a {} {}",
            s.kind,
            s.name
        );
        ensure!(
            s.namespace.as_deref() == Some(c.namespace.as_str()),
            "CI binding binds ServiceAccount {:?}/{} outside {}",
            s.namespace,
            s.name,
            c.namespace
        );
    }
    ensure!(
        ci.role_ref.name == "edit",
        "CI binding grants {}",
        ci.role_ref.name
    );
    let owners = named(bundle::OWNERS_BINDING).ok_or("no owners binding")?;
    let subjects: Vec<Subject> = owners.subjects.clone().unwrap_or_default();
    let o = c.owners.clone().unwrap_or_default();
    let mut want: Vec<(String, Option<String>, String)> = Vec::new();
    want.extend(o.users.iter().map(|u| ("User".into(), None, u.clone())));
    want.extend(o.groups.iter().map(|g| ("Group".into(), None, g.clone())));
    want.extend(o.service_accounts.iter().filter_map(|sa| {
        sa.split_once('/').map(|(ns, name)| {
            (
                "ServiceAccount".into(),
                Some(ns.to_string()),
                name.to_string(),
            )
        })
    }));
    let have: Vec<_> = subjects
        .iter()
        .map(|s| (s.kind.clone(), s.namespace.clone(), s.name.clone()))
        .collect();
    ensure!(
        have == want,
        "owner subjects {have:?}, config says {want:?}"
    );
    for s in &subjects {
        match s.kind.as_str() {
            "User" | "Group" => ensure!(
                s.api_group.as_deref() == Some(RBAC_GROUP) && s.namespace.is_none(),
                "owner {} {}: apiGroup {:?} namespace {:?}",
                s.kind,
                s.name,
                s.api_group,
                s.namespace
            ),
            "ServiceAccount" => ensure!(
                s.namespace.as_deref().is_some_and(|n| !n.is_empty()) && !s.name.is_empty(),
                "owner ServiceAccount without a namespace or name"
            ),
            other => return Err(format!("owner subject of kind {other}")),
        }
    }
    Ok(())
}

#[test]
fn mtb_block_modification_of_resource_quotas_by_admin_and_edit() {
    // The fixture is not vacuous: the same evaluation does see what the roles grant.
    let admin = bindable_role("admin").unwrap();
    let edit = bindable_role("edit").unwrap();
    assert!(allows(&edit, "", "pods", "create"));
    assert!(allows(
        &edit,
        "networking.k8s.io",
        "networkpolicies",
        "delete"
    ));
    assert!(allows(&admin, RBAC_GROUP, "rolebindings", "create"));
    assert!(!allows(&edit, RBAC_GROUP, "rolebindings", "create"));
    assert!(allows(&admin, "", "resourcequotas", "get"));
    assert!(bindable_role("cluster-admin").is_none());
    assert_holds(check_quota_not_modifiable);
}

#[test]
fn mtb_block_access_to_cluster_resources() {
    assert_holds(check_no_cluster_access);
}

#[test]
fn mtb_block_access_to_other_tenant_resources() {
    assert_holds(check_subjects);
}

// ---------------------------------------------------------------------------
// NetworkPolicy evaluation (networking.k8s.io/v1 semantics)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Ns {
    name: String,
    labels: Labels,
}

#[derive(Debug, Clone)]
struct Pod {
    ns: Ns,
    labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

const PROBES: [(Proto, i32); 6] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 443),
    (Proto::Tcp, 8080),
    (Proto::Tcp, 53),
    (Proto::Udp, 53),
    (Proto::Udp, 5353),
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    let exact = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = sel
        .match_expressions
        .iter()
        .flatten()
        .all(|e: &LabelSelectorRequirement| {
            let values = e.values.clone().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("label selector operator {other:?} is not valid"),
            }
        });
    exact && expressions
}

fn policy_types(spec: &NetworkPolicySpec) -> Vec<String> {
    match &spec.policy_types {
        Some(types) => {
            for t in types {
                assert!(
                    t == "Ingress" || t == "Egress",
                    "policyType {t:?} is not valid"
                );
            }
            types.clone()
        }
        // Defaulting: Ingress always, Egress when the policy has egress rules.
        None => {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.is_some() {
                t.push("Egress".into());
            }
            t
        }
    }
}

/// A peer of a rule in a policy of namespace `home`, matched against `pod`.
fn peer_matches(peer: &NetworkPolicyPeer, home: &str, pod: &Pod) -> bool {
    if peer.ip_block.is_some() {
        // CIDR rules are meant for traffic leaving the cluster, but a range may
        // well cover pod IPs: assume it does (the strict reading).
        return true;
    }
    match (&peer.namespace_selector, &peer.pod_selector) {
        // Rejected by API validation; read as "everything".
        (None, None) => true,
        (None, Some(pods)) => pod.ns.name == home && selector_matches(pods, &pod.labels),
        (Some(namespaces), None) => selector_matches(namespaces, &pod.ns.labels),
        (Some(namespaces), Some(pods)) => {
            selector_matches(namespaces, &pod.ns.labels) && selector_matches(pods, &pod.labels)
        }
    }
}

fn peers_match(peers: &Option<Vec<NetworkPolicyPeer>>, home: &str, pod: &Pod) -> bool {
    match peers {
        None => true,
        Some(p) if p.is_empty() => true,
        Some(p) => p.iter().any(|peer| peer_matches(peer, home, pod)),
    }
}

fn ports_match(ports: &Option<Vec<NetworkPolicyPort>>, proto: Proto, port: i32) -> bool {
    match ports {
        None => true,
        Some(p) if p.is_empty() => true,
        Some(p) => p.iter().any(|rule| {
            rule.protocol.as_deref().unwrap_or("TCP") == proto.name()
                && match &rule.port {
                    None => true,
                    Some(IntOrString::Int(n)) => match rule.end_port {
                        Some(end) => *n <= port && port <= end,
                        None => *n == port,
                    },
                    // A named port may be any number: assume it matches.
                    Some(IntOrString::String(_)) => true,
                }
        }),
    }
}

/// The policies of a cluster and decisions on traffic between two pods.
struct Cluster {
    policies: Vec<NetworkPolicy>,
}

impl Cluster {
    fn new(bundles: &[&[ManagedObject]]) -> Cluster {
        let policies = bundles
            .iter()
            .flat_map(|b| policies(b).expect("policies decode"))
            .collect();
        Cluster { policies }
    }

    /// Policies of `pod`'s namespace that select it for `direction`.
    fn isolating(&self, pod: &Pod, direction: &str) -> Vec<&NetworkPolicy> {
        self.policies
            .iter()
            .filter(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                p.metadata.namespace.as_deref() == Some(pod.ns.name.as_str())
                    && selector_matches(&spec.pod_selector.clone().unwrap_or_default(), &pod.labels)
                    && policy_types(&spec).iter().any(|t| t == direction)
            })
            .collect()
    }

    /// Whether `dst` admits traffic from `src` (only `dst`'s policies count).
    fn ingress_allowed(&self, src: &Pod, dst: &Pod, proto: Proto, port: i32) -> bool {
        let selecting = self.isolating(dst, "Ingress");
        selecting.is_empty()
            || selecting.iter().any(|p| {
                p.spec
                    .iter()
                    .flat_map(|s| s.ingress.iter().flatten())
                    .any(|rule| {
                        ports_match(&rule.ports, proto, port)
                            && peers_match(&rule.from, &dst.ns.name, src)
                    })
            })
    }

    /// Whether `src` may send to `dst` (only `src`'s policies count).
    fn egress_allowed(&self, src: &Pod, dst: &Pod, proto: Proto, port: i32) -> bool {
        let selecting = self.isolating(src, "Egress");
        selecting.is_empty()
            || selecting.iter().any(|p| {
                p.spec
                    .iter()
                    .flat_map(|s| s.egress.iter().flatten())
                    .any(|rule| {
                        ports_match(&rule.ports, proto, port)
                            && peers_match(&rule.to, &src.ns.name, dst)
                    })
            })
    }

    fn connects(&self, src: &Pod, dst: &Pod, proto: Proto, port: i32) -> bool {
        self.egress_allowed(src, dst, proto, port) && self.ingress_allowed(src, dst, proto, port)
    }
}

/// A namespace as the API server holds it: the bundle's labels plus
/// `kubernetes.io/metadata.name`.
fn ns_of(objects: &[ManagedObject]) -> Ns {
    let ns: Namespace = one(objects, Kind::Namespace).expect("namespace decodes");
    let name = ns.metadata.name.unwrap_or_default();
    let mut labels = ns.metadata.labels.unwrap_or_default();
    labels.insert(NAME_LABEL.into(), name.clone());
    Ns { name, labels }
}

fn unmanaged_ns(name: &str, extra: &[(&str, &str)]) -> Ns {
    let mut labels = labels(extra);
    labels.insert(NAME_LABEL.into(), name.into());
    Ns {
        name: name.into(),
        labels,
    }
}

fn pod(ns: &Ns, pairs: &[(&str, &str)]) -> Pod {
    Pod {
        ns: ns.clone(),
        labels: labels(pairs),
    }
}

fn app(ns: &Ns) -> Pod {
    pod(ns, &[("app", "web")])
}

/// The network config as the bundle reads it.
fn net(c: &NamespaceConfig) -> NetworkConfig {
    c.network.clone().unwrap_or_default()
}

/// Checks one environment's policies against pods of every kind of
/// neighbour; `sibling` is another namespace of the same tenant.
fn check_network(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
    sibling_objects: &[ManagedObject],
    other_objects: &[ManagedObject],
) -> Result<(), String> {
    let cluster = Cluster::new(&[objects, sibling_objects, other_objects]);
    let me = ns_of(objects);
    let sibling = ns_of(sibling_objects);
    let other = ns_of(other_objects);
    let kube_system = unmanaged_ns("kube-system", &[]);
    let ingress_nginx = unmanaged_ns("ingress-nginx", &[]);
    let faker = unmanaged_ns("sneaky", &[(bundle::TENANT_LABEL, c.tenant.as_str())]);
    let unlabelled = unmanaged_ns("default", &[]);
    let n = net(c);

    let here = app(&me);
    let neighbour = pod(&me, &[("app", "db")]);
    for (proto, port) in PROBES {
        let at = format!("{}/{port}", proto.name());
        // Same namespace: always.
        ensure!(
            cluster.connects(&here, &neighbour, proto, port)
                && cluster.connects(&neighbour, &here, proto, port),
            "same-namespace traffic denied on {at}"
        );
        // Never, either way: another tenant's mtp namespace, an unmanaged
        // namespace wearing this tenant's label, a plain namespace. Only this
        // namespace's policies decide (the other side's are assumed open).
        for (stranger, what) in [
            (&other, format!("tenant {OTHER_TENANT}")),
            (&faker, "a namespace faking the tenant label".to_string()),
            (&unlabelled, "namespace default".to_string()),
        ] {
            let theirs = app(stranger);
            ensure!(
                !cluster.ingress_allowed(&theirs, &here, proto, port),
                "ingress from {what} allowed on {at}"
            );
            ensure!(
                !cluster.egress_allowed(&here, &theirs, proto, port),
                "egress to {what} allowed on {at}"
            );
        }
        // Same tenant, other environment: only when allowed.
        let sib = app(&sibling);
        ensure!(
            cluster.ingress_allowed(&sib, &here, proto, port) == n.allow_same_tenant,
            "ingress from sibling {} on {at}: allowed={}, allow_same_tenant={}",
            sibling.name,
            !n.allow_same_tenant,
            n.allow_same_tenant
        );
        ensure!(
            cluster.egress_allowed(&here, &sib, proto, port) == n.allow_same_tenant,
            "egress to sibling {} on {at}: allowed={}, allow_same_tenant={}",
            sibling.name,
            !n.allow_same_tenant,
            n.allow_same_tenant
        );
        // The ingress controller's namespace: in only when switched on.
        for controller_ns in [&ingress_nginx, &kube_system] {
            let controller = pod(
                controller_ns,
                &[("app.kubernetes.io/name", "ingress-controller")],
            );
            let want = n.allow_ingress_controller && n.ingress_namespace == controller_ns.name;
            ensure!(
                cluster.ingress_allowed(&controller, &here, proto, port) == want,
                "ingress from {} on {at}: allowed={}, want {want}",
                controller_ns.name,
                !want
            );
            ensure!(
                !cluster.egress_allowed(&here, &controller, proto, port),
                "egress to {} allowed on {at}",
                controller_ns.name
            );
        }
        // DNS: to the cluster DNS pods on port 53, nothing else in kube-system.
        let dns = pod(&kube_system, &[("k8s-app", "kube-dns")]);
        ensure!(
            cluster.egress_allowed(&here, &dns, proto, port) == (port == 53),
            "egress to kube-dns on {at}: allowed={}",
            port != 53
        );
        for other_system in [
            pod(&kube_system, &[("k8s-app", "metrics-server")]),
            pod(&kube_system, &[]),
            pod(
                &kube_system,
                &[("k8s-app", "kube-dns-fake"), ("app", "kube-dns")],
            ),
        ] {
            ensure!(
                !cluster.egress_allowed(&here, &other_system, proto, port),
                "egress to kube-system pod {:?} allowed on {at}",
                other_system.labels
            );
        }
        // A pod dressed as DNS outside kube-system gets nothing.
        for fake_dns in [
            pod(&other, &[("k8s-app", "kube-dns")]),
            pod(&faker, &[("k8s-app", "kube-dns")]),
        ] {
            ensure!(
                !cluster.egress_allowed(&here, &fake_dns, proto, port),
                "egress to a kube-dns look-alike in {} allowed on {at}",
                fake_dns.ns.name
            );
        }
    }
    check_default_deny(objects)
}

/// Isolation must not hang on the allow rules: a policy selecting every pod
/// for both directions without a single rule.
fn check_default_deny(objects: &[ManagedObject]) -> Result<(), String> {
    let found = policies(objects)?.into_iter().any(|p| {
        let spec = p.spec.unwrap_or_default();
        let types = spec.policy_types.clone().unwrap_or_default();
        spec.pod_selector == Some(LabelSelector::default())
            && types.iter().any(|t| t == "Ingress")
            && types.iter().any(|t| t == "Egress")
            && spec.ingress.unwrap_or_default().is_empty()
            && spec.egress.unwrap_or_default().is_empty()
    });
    ensure!(
        found,
        "no default-deny policy (all pods, Ingress and Egress, no rules)"
    );
    Ok(())
}

/// A sibling environment of the same tenant, with the same network settings
/// as `c` (so traffic between them is decided by `c`'s switch alone on `c`'s side).
fn sibling_of(c: &NamespaceConfig) -> NamespaceConfig {
    NamespaceConfig {
        network: c.network.clone(),
        ..env(&format!("{}-sibling", c.namespace), &c.tenant, "sibling")
    }
}

fn check_network_isolation(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
    let sibling = Bundle::render(&sibling_of(c)).objects();
    let other = Bundle::render(&other_tenant()).objects();
    check_network(c, objects, &sibling, &other)
}

#[test]
fn mtb_default_deny_network_connections_across_tenants() {
    assert_holds(check_network_isolation);
}

#[test]
fn mtb_default_deny_network_connections_across_tenants_switches_follow_the_config() {
    // The same environment opened and closed, one switch at a time.
    let base = configs().remove(0);
    for (same_tenant, ingress, ingress_ns) in [
        (true, true, "ingress-nginx"),
        (false, true, "ingress-nginx"),
        (true, false, "ingress-nginx"),
        (false, false, ""),
        (true, true, ""),
        (false, true, "kube-system"),
    ] {
        let c = NamespaceConfig {
            network: network(same_tenant, ingress, ingress_ns),
            ..base.clone()
        };
        let objects = Bundle::render(&c).objects();
        check_network_isolation(&c, &objects).unwrap_or_else(|e| panic!("{:?}: {e}", c.network));
    }
    // End to end: two sibling environments talk only when both allow it.
    for (a_open, b_open) in [(true, true), (true, false), (false, true), (false, false)] {
        let a = NamespaceConfig {
            network: network(a_open, false, ""),
            ..env("team-a-x", TENANT, "x")
        };
        let b = NamespaceConfig {
            network: network(b_open, false, ""),
            ..env("team-a-y", TENANT, "y")
        };
        let (ao, bo) = (Bundle::render(&a).objects(), Bundle::render(&b).objects());
        let cluster = Cluster::new(&[&ao, &bo]);
        let (pa, pb) = (app(&ns_of(&ao)), app(&ns_of(&bo)));
        assert_eq!(
            cluster.connects(&pb, &pa, Proto::Tcp, 80),
            a_open && b_open,
            "{a_open} {b_open}"
        );
        assert_eq!(
            cluster.connects(&pa, &pb, Proto::Tcp, 80),
            a_open && b_open,
            "{a_open} {b_open}"
        );
    }
}

#[test]
fn network_policy_evaluator_follows_the_api_semantics() {
    let ns = unmanaged_ns("x", &[("team", "a")]);
    let elsewhere = unmanaged_ns("y", &[("team", "b")]);
    let mk = |from: Option<Vec<NetworkPolicyPeer>>, types: Option<Vec<&str>>| NetworkPolicy {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("p".into()),
            namespace: Some("x".into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            ingress: Some(vec![
                k8s_openapi::api::networking::v1::NetworkPolicyIngressRule {
                    from,
                    ..Default::default()
                },
            ]),
            policy_types: types.map(|t| t.into_iter().map(String::from).collect()),
            ..Default::default()
        }),
    };
    let target = app(&ns);
    let local = pod(&ns, &[("role", "x")]);
    let remote = app(&elsewhere);
    let decide = |p: NetworkPolicy, src: &Pod| {
        Cluster { policies: vec![p] }.ingress_allowed(src, &target, Proto::Tcp, 80)
    };
    // No policy: not isolated.
    assert!(Cluster { policies: vec![] }.ingress_allowed(&remote, &target, Proto::Tcp, 80));
    // Missing or empty `from`: every source.
    assert!(decide(mk(None, None), &remote));
    assert!(decide(mk(Some(vec![]), None), &remote));
    // podSelector alone: same namespace only.
    let only_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    };
    assert!(decide(mk(Some(vec![only_pods.clone()]), None), &local));
    assert!(!decide(mk(Some(vec![only_pods]), None), &remote));
    // namespaceSelector with expressions.
    let expr = |op: &str, values: Option<Vec<&str>>| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(decide(
        mk(Some(vec![expr("In", Some(vec!["b"]))]), None),
        &remote
    ));
    assert!(!decide(
        mk(Some(vec![expr("NotIn", Some(vec!["b"]))]), None),
        &remote
    ));
    assert!(decide(mk(Some(vec![expr("Exists", None)]), None), &remote));
    assert!(!decide(
        mk(Some(vec![expr("DoesNotExist", None)]), None),
        &remote
    ));
    // namespaceSelector and podSelector in one peer: both must match.
    let both = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels(&[("app", "db")])),
            ..Default::default()
        }),
        ..expr("In", Some(vec!["b"]))
    };
    assert!(!decide(mk(Some(vec![both.clone()]), None), &remote));
    assert!(decide(
        mk(Some(vec![both]), None),
        &pod(&elsewhere, &[("app", "db")])
    ));
    // A policy only for Egress does not isolate ingress.
    assert!(decide(
        mk(Some(vec![expr("DoesNotExist", None)]), Some(vec!["Egress"])),
        &remote
    ));
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

// ---------------------------------------------------------------------------
// The checks are strict: broken bundles fail them
// ---------------------------------------------------------------------------

fn policy_named<'a>(b: &'a mut Bundle, name: &str) -> &'a mut NetworkPolicySpec {
    b.network_policies
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.spec.as_mut())
        .unwrap_or_else(|| panic!("no policy {name}"))
}

#[test]
fn the_checks_reject_broken_bundles() {
    let base = configs().remove(0);
    type Breakage = (&'static str, Check, fn(&mut Bundle));
    let breakages: Vec<Breakage> = vec![
        (
            "PSA baseline",
            |_, o| check_psa(o, PsaLevel::Baseline),
            |b| {
                let l = b.namespace.metadata.labels.as_mut().unwrap();
                l.insert(
                    "pod-security.kubernetes.io/enforce".into(),
                    "baseline".into(),
                );
            },
        ),
        (
            "PSA warn only",
            |_, o| check_psa(o, PsaLevel::Baseline),
            |b| {
                b.namespace
                    .metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .remove("pod-security.kubernetes.io/enforce");
            },
        ),
        (
            "PSA without version",
            |_, o| check_psa(o, PsaLevel::Baseline),
            |b| {
                b.namespace
                    .metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .remove("pod-security.kubernetes.io/enforce-version");
            },
        ),
        ("no storage quota", check_resource_quotas, |b| {
            b.quota
                .spec
                .as_mut()
                .unwrap()
                .hard
                .as_mut()
                .unwrap()
                .remove("requests.storage");
        }),
        ("negative cpu", check_resource_quotas, |b| {
            b.quota
                .spec
                .as_mut()
                .unwrap()
                .hard
                .as_mut()
                .unwrap()
                .insert("limits.cpu".into(), Quantity("-1".into()));
        }),
        ("no pod count", check_object_quotas, |b| {
            b.quota
                .spec
                .as_mut()
                .unwrap()
                .hard
                .as_mut()
                .unwrap()
                .remove("pods");
        }),
        (
            "node ports allowed",
            check_no_node_ports_or_load_balancers,
            |b| {
                b.quota
                    .spec
                    .as_mut()
                    .unwrap()
                    .hard
                    .as_mut()
                    .unwrap()
                    .insert("services.nodeports".into(), Quantity("1".into()));
            },
        ),
        (
            "load balancers unlimited",
            check_no_node_ports_or_load_balancers,
            |b| {
                b.quota
                    .spec
                    .as_mut()
                    .unwrap()
                    .hard
                    .as_mut()
                    .unwrap()
                    .remove("services.loadbalancers");
            },
        ),
        ("default above max", check_container_limit_range, |b| {
            let item = &mut b.limits.spec.as_mut().unwrap().limits[0];
            std::mem::swap(&mut item.default, &mut item.max);
        }),
        ("no max", check_container_limit_range, |b| {
            b.limits.spec.as_mut().unwrap().limits[0].max = None;
        }),
        ("cluster-admin owners", check_quota_not_modifiable, |b| {
            b.role_bindings[0].role_ref.name = "cluster-admin".into();
        }),
        ("cluster-admin owners", check_no_cluster_access, |b| {
            b.role_bindings[0].role_ref.name = "cluster-admin".into();
        }),
        (
            "binding in another namespace",
            check_no_cluster_access,
            |b| {
                b.role_bindings[1].metadata.namespace = Some("kube-system".into());
            },
        ),
        ("CI account of another namespace", check_subjects, |b| {
            b.role_bindings[1].subjects.as_mut().unwrap()[0].namespace = Some("team-b-dev".into());
        }),
        ("extra owner", check_subjects, |b| {
            b.role_bindings[0].subjects.as_mut().unwrap().push(Subject {
                api_group: Some(RBAC_GROUP.into()),
                kind: "User".into(),
                name: "mallory".into(),
                namespace: None,
            });
        }),
        (
            "no default deny, no same-namespace",
            check_network_isolation,
            |b| {
                b.network_policies.retain(|p| {
                    let n = p.metadata.name.as_deref().unwrap_or_default();
                    n != bundle::DEFAULT_DENY && n != bundle::ALLOW_SAME_NAMESPACE
                });
            },
        ),
        ("no default deny", check_network_isolation, |b| {
            b.network_policies
                .retain(|p| p.metadata.name.as_deref() != Some(bundle::DEFAULT_DENY));
        }),
        (
            "same-tenant selector without managed-by",
            check_network_isolation,
            |b| {
                let spec = policy_named(b, bundle::ALLOW_SAME_TENANT);
                for rule in spec.ingress.iter_mut().flatten() {
                    for peer in rule.from.iter_mut().flatten() {
                        peer.namespace_selector
                            .as_mut()
                            .unwrap()
                            .match_labels
                            .as_mut()
                            .unwrap()
                            .remove(bundle::MANAGED_BY);
                    }
                }
            },
        ),
        (
            "same-tenant selector matching any mtp namespace",
            check_network_isolation,
            |b| {
                let spec = policy_named(b, bundle::ALLOW_SAME_TENANT);
                for rule in spec.egress.iter_mut().flatten() {
                    for peer in rule.to.iter_mut().flatten() {
                        peer.namespace_selector
                            .as_mut()
                            .unwrap()
                            .match_labels
                            .as_mut()
                            .unwrap()
                            .remove(bundle::TENANT_LABEL);
                    }
                }
            },
        ),
        (
            "same-namespace peer as an empty namespaceSelector",
            check_network_isolation,
            |b| {
                let spec = policy_named(b, bundle::ALLOW_SAME_NAMESPACE);
                for rule in spec.ingress.iter_mut().flatten() {
                    for peer in rule.from.iter_mut().flatten() {
                        peer.namespace_selector = Some(LabelSelector::default());
                    }
                }
            },
        ),
        ("DNS peer split in two", check_network_isolation, |b| {
            let spec = policy_named(b, bundle::ALLOW_DNS);
            let rule = &mut spec.egress.as_mut().unwrap()[0];
            let peer = rule.to.as_mut().unwrap().remove(0);
            rule.to = Some(vec![
                NetworkPolicyPeer {
                    namespace_selector: peer.namespace_selector,
                    ..Default::default()
                },
                NetworkPolicyPeer {
                    pod_selector: peer.pod_selector,
                    ..Default::default()
                },
            ]);
        }),
        ("DNS on every port", check_network_isolation, |b| {
            policy_named(b, bundle::ALLOW_DNS).egress.as_mut().unwrap()[0].ports = None;
        }),
        (
            "ingress controller from any namespace",
            check_network_isolation,
            |b| {
                let spec = policy_named(b, bundle::ALLOW_INGRESS_CONTROLLER);
                spec.ingress.as_mut().unwrap()[0].from = Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..Default::default()
                }]);
            },
        ),
        ("unlabelled quota", check_managed_by, |b| {
            b.quota
                .metadata
                .labels
                .as_mut()
                .unwrap()
                .remove(bundle::MANAGED_BY);
        }),
    ];
    for (what, check, breakage) in breakages {
        let mut b = Bundle::render(&base);
        check(&base, &b.objects())
            .unwrap_or_else(|e| panic!("{what}: the intact bundle fails: {e}"));
        breakage(&mut b);
        assert!(
            check(&base, &b.objects()).is_err(),
            "{what}: the check did not notice"
        );
    }
}
