//! The pure mapping from one `NamespaceConfig` to the Kubernetes objects of its
//! environment (docs/architecture.md, "Bundle"): the namespace here, quota
//! and limits in `quota`, network policies in `network`, the CI account and
//! role bindings in `rbac`.
//!
//! No I/O here: the same config always gives the same objects, so the mapping
//! is unit-tested field by field and checked against the Multi-Tenancy
//! Benchmarks without a cluster.

use std::collections::BTreeMap;

mod network;
mod quota;
mod rbac;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use mtp_proto::v1::NamespaceConfig;
use serde_json::Value;

/// Label every object the agent writes carries; the agent never touches an
/// object without it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "mtp";
pub const TENANT_LABEL: &str = "mtp.io/tenant";
pub const ENVIRONMENT_LABEL: &str = "mtp.io/environment";
/// On the Namespace: the cluster revision its configuration comes from. An
/// agent whose desired state is older than this never overwrites or deletes
/// the namespace (its state is stale; a newer applier wrote it).
pub const REVISION_ANNOTATION: &str = "mtp.io/revision";
/// On the Namespace: the identity (UUID) of the cluster in the control
/// plane's database whose desired state created it. An agent never deletes a
/// namespace stamped with another identity (a different database: restored
/// from another installation, or the cluster re-created).
pub const CLUSTER_ID_ANNOTATION: &str = "mtp.io/cluster-id";
/// `labelSelector` matching exactly the objects the agent manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=mtp";

pub const QUOTA_NAME: &str = "mtp-quota";
pub const LIMITS_NAME: &str = "mtp-limits";
pub const DEFAULT_DENY: &str = "mtp-default-deny";
pub const ALLOW_SAME_NAMESPACE: &str = "mtp-allow-same-namespace";
pub const ALLOW_DNS: &str = "mtp-allow-dns";
pub const ALLOW_INGRESS_CONTROLLER: &str = "mtp-allow-ingress-controller";
pub const ALLOW_SAME_TENANT: &str = "mtp-allow-same-tenant";
pub const OWNERS_BINDING: &str = "mtp-owners";
pub const CI_ACCOUNT: &str = "mtp-ci";
pub const CI_BINDING: &str = "mtp-ci-edit";

pub use quota::{bytes, cpu};

/// The kinds the agent writes, in the order they are applied (the Namespace
/// first: everything else lives in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    ResourceQuota,
    LimitRange,
    NetworkPolicy,
    ServiceAccount,
    RoleBinding,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::NetworkPolicy,
        Kind::ServiceAccount,
        Kind::RoleBinding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => Namespace::KIND,
            Kind::ResourceQuota => ResourceQuota::KIND,
            Kind::LimitRange => LimitRange::KIND,
            Kind::NetworkPolicy => NetworkPolicy::KIND,
            Kind::ServiceAccount => ServiceAccount::KIND,
            Kind::RoleBinding => RoleBinding::KIND,
        }
    }
}

/// One object of a bundle, ready for server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedObject {
    pub kind: Kind,
    pub name: String,
    /// `None` for the Namespace itself.
    pub namespace: Option<String>,
    /// The full apply configuration: apiVersion, kind, metadata and spec.
    pub body: Value,
}

impl ManagedObject {
    /// `Kind/name`, as shown in drift reports and errors.
    pub fn id(&self) -> String {
        object_id(self.kind.name(), &self.name)
    }
}

/// How an object of a namespace is named in drift reports, errors and the
/// agent's bookkeeping: `Kind/name`.
pub fn object_id(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// All objects of one environment's namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limits: LimitRange,
    pub network_policies: Vec<NetworkPolicy>,
    pub service_account: ServiceAccount,
    pub role_bindings: Vec<RoleBinding>,
}

/// The revision stamped on a namespace (0 when absent or unreadable: written
/// before stamping existed, or by hand).
pub fn stamped_revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The cluster identity stamped on a namespace (`None`: written before
/// stamping existed, or by hand).
pub fn stamped_cluster_id(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    annotations
        .and_then(|a| a.get(CLUSTER_ID_ANNOTATION))
        .filter(|v| !v.is_empty())
        .cloned()
}

impl Bundle {
    /// The same bundle with the namespace stamped for cluster `cluster_id`
    /// (unchanged for `None`: the identity is not known yet).
    pub fn stamped(mut self, cluster_id: Option<&str>) -> Bundle {
        if let Some(id) = cluster_id.filter(|id| !id.is_empty()) {
            self.namespace
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CLUSTER_ID_ANNOTATION.to_string(), id.to_string());
        }
        self
    }

    /// The cluster revision this bundle was rendered from.
    pub fn revision(&self) -> i64 {
        stamped_revision(self.namespace.metadata.annotations.as_ref())
    }

    /// Maps a config to its objects. Mechanical: every decision was made by
    /// the control plane.
    pub fn render(config: &NamespaceConfig) -> Bundle {
        let labels = common_labels(config);
        Bundle {
            namespace: namespace(config, &labels),
            quota: quota::quota(config, &labels),
            limits: quota::limits(config, &labels),
            network_policies: network::policies(config, &labels),
            service_account: rbac::service_account(config, &labels),
            role_bindings: rbac::role_bindings(config, &labels),
        }
    }

    /// The objects in apply order, each as a complete apply configuration.
    pub fn objects(&self) -> Vec<ManagedObject> {
        let mut out = vec![
            managed(Kind::Namespace, &self.namespace),
            managed(Kind::ResourceQuota, &self.quota),
            managed(Kind::LimitRange, &self.limits),
        ];
        out.extend(
            self.network_policies
                .iter()
                .map(|p| managed(Kind::NetworkPolicy, p)),
        );
        out.push(managed(Kind::ServiceAccount, &self.service_account));
        out.extend(
            self.role_bindings
                .iter()
                .map(|b| managed(Kind::RoleBinding, b)),
        );
        out
    }
}

/// The namespace, with restricted Pod Security and the revision stamp.
fn namespace(config: &NamespaceConfig, labels: &BTreeMap<String, String>) -> Namespace {
    let mut ns_labels = labels.clone();
    for mode in ["enforce", "audit", "warn"] {
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(config.namespace.clone()),
            labels: Some(ns_labels),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                config.revision.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn managed<K>(kind: Kind, object: &K) -> ManagedObject
where
    K: Resource + Metadata<Ty = ObjectMeta> + serde::Serialize,
{
    let mut body = serde_json::to_value(object).unwrap_or(Value::Null);
    // Typed k8s-openapi objects serialize without apiVersion/kind; apply needs both.
    if let Value::Object(map) = &mut body {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    let meta = object.metadata();
    ManagedObject {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        body,
    }
}

fn common_labels(config: &NamespaceConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (TENANT_LABEL.to_string(), config.tenant.clone()),
        (ENVIRONMENT_LABEL.to_string(), config.environment.clone()),
    ])
}

fn meta(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use mtp_proto::v1::{ContainerDefaults, NamespaceQuota, NetworkConfig, TenantOwners};

    use super::network::NAMESPACE_NAME_LABEL;
    use super::*;

    pub(crate) fn sample() -> NamespaceConfig {
        NamespaceConfig {
            namespace: "team-a-dev".into(),
            tenant: "team-a".into(),
            environment: "dev".into(),
            revision: 3,
            quota: Some(NamespaceQuota {
                cpu_millis: 1500,
                memory_bytes: 2 << 30,
                storage_bytes: 10 << 30,
                pods: 20,
                services: 10,
                persistent_volume_claims: 5,
                ..NamespaceQuota::default()
            }),
            container_defaults: Some(ContainerDefaults {
                default_request_cpu_millis: 100,
                default_request_memory_bytes: 128 << 20,
                default_limit_cpu_millis: 500,
                default_limit_memory_bytes: 512 << 20,
                max_cpu_millis: 1000,
                max_memory_bytes: 1 << 30,
                ..ContainerDefaults::default()
            }),
            owners: Some(TenantOwners {
                users: vec!["alice@example.com".into()],
                groups: vec!["team-a-devs".into()],
                service_accounts: vec!["ci/deployer".into()],
            }),
            network: Some(NetworkConfig {
                allow_same_tenant: true,
                allow_ingress_controller: true,
                ingress_namespace: "kube-system".into(),
            }),
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu(2000), q("2"));
        assert_eq!(cpu(1500), q("1500m"));
        assert_eq!(cpu(0), q("0"));
        assert_eq!(bytes(2 << 30), q("2Gi"));
        assert_eq!(bytes(1536 << 20), q("1536Mi"));
        assert_eq!(bytes(1000), q("1000"));
        assert_eq!(bytes(0), q("0"));
    }

    #[test]
    fn namespace_carries_ownership_and_restricted_pod_security() {
        let b = Bundle::render(&sample());
        let labels = b.namespace.metadata.labels.unwrap();
        assert_eq!(b.namespace.metadata.name.as_deref(), Some("team-a-dev"));
        assert_eq!(labels[MANAGED_BY], "mtp");
        assert_eq!(labels[TENANT_LABEL], "team-a");
        assert_eq!(labels[ENVIRONMENT_LABEL], "dev");
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels[&format!("pod-security.kubernetes.io/{mode}")],
                "restricted"
            );
        }
    }

    #[test]
    fn the_namespace_is_stamped_with_its_cluster_identity_when_known() {
        let plain = Bundle::render(&sample());
        assert_eq!(
            stamped_cluster_id(plain.namespace.metadata.annotations.as_ref()),
            None
        );
        assert_eq!(plain.clone().stamped(None), plain);
        let b = plain.stamped(Some("6f1c0b9e-0000-4000-8000-000000000001"));
        let annotations = b.namespace.metadata.annotations.as_ref();
        assert_eq!(
            stamped_cluster_id(annotations).as_deref(),
            Some("6f1c0b9e-0000-4000-8000-000000000001")
        );
        assert_eq!(b.revision(), 3, "the revision stamp stays");
        let body = &b.objects()[0].body;
        assert_eq!(
            body["metadata"]["annotations"][CLUSTER_ID_ANNOTATION],
            "6f1c0b9e-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn ephemeral_storage_and_object_counts_are_limited_when_configured() {
        let mut c = sample();
        let q0 = c.quota.as_mut().unwrap();
        q0.ephemeral_storage_bytes = 4 << 30;
        q0.objects = Some(mtp_proto::v1::ObjectCounts {
            secrets: 7,
            replica_sets: 0,
            ..Default::default()
        });
        let d = c.container_defaults.as_mut().unwrap();
        d.default_request_ephemeral_storage_bytes = 64 << 20;
        d.default_limit_ephemeral_storage_bytes = 1 << 30;
        d.max_ephemeral_storage_bytes = 2 << 30;
        let b = Bundle::render(&c);
        let hard = b.quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.ephemeral-storage"], q("4Gi"));
        assert!(!hard.contains_key("limits.ephemeral-storage"));
        assert_eq!(hard["count/secrets"], q("7"));
        // Zero is a limit too: none allowed.
        assert_eq!(hard["count/replicasets.apps"], q("0"));
        assert_eq!(hard.keys().filter(|k| k.starts_with("count/")).count(), 11);
        let item = &b.limits.spec.unwrap().limits[0];
        assert_eq!(
            item.default_request.as_ref().unwrap()["ephemeral-storage"],
            q("64Mi")
        );
        assert_eq!(
            item.default.as_ref().unwrap()["ephemeral-storage"],
            q("1Gi")
        );
        assert_eq!(item.max.as_ref().unwrap()["ephemeral-storage"], q("2Gi"));

        // A config from a control plane that predates these fields.
        let b = Bundle::render(&sample());
        let hard = b.quota.spec.unwrap().hard.unwrap();
        assert!(
            hard.keys()
                .all(|k| !k.contains("ephemeral") && !k.starts_with("count/"))
        );
        let item = &b.limits.spec.unwrap().limits[0];
        assert!(!item.max.as_ref().unwrap().contains_key("ephemeral-storage"));
    }

    #[test]
    fn quota_has_every_limit_and_blocks_node_ports_and_load_balancers() {
        let hard = Bundle::render(&sample()).quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"], q("1500m"));
        assert_eq!(hard["limits.cpu"], q("1500m"));
        assert_eq!(hard["requests.memory"], q("2Gi"));
        assert_eq!(hard["limits.memory"], q("2Gi"));
        assert_eq!(hard["requests.storage"], q("10Gi"));
        assert_eq!(hard["pods"], q("20"));
        assert_eq!(hard["services"], q("10"));
        assert_eq!(hard["persistentvolumeclaims"], q("5"));
        assert_eq!(hard["services.nodeports"], q("0"));
        assert_eq!(hard["services.loadbalancers"], q("0"));
        assert_eq!(hard.len(), 10);
    }

    #[test]
    fn limit_range_sets_container_defaults_and_maximum() {
        let spec = Bundle::render(&sample()).limits.spec.unwrap();
        let item = &spec.limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"], q("100m"));
        assert_eq!(item.default_request.as_ref().unwrap()["memory"], q("128Mi"));
        assert_eq!(item.default.as_ref().unwrap()["cpu"], q("500m"));
        assert_eq!(item.default.as_ref().unwrap()["memory"], q("512Mi"));
        assert_eq!(item.max.as_ref().unwrap()["cpu"], q("1"));
        assert_eq!(item.max.as_ref().unwrap()["memory"], q("1Gi"));
    }

    #[test]
    fn network_policies_deny_by_default_and_allow_only_what_is_configured() {
        let b = Bundle::render(&sample());
        let names: Vec<_> = b
            .network_policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                DEFAULT_DENY,
                ALLOW_SAME_NAMESPACE,
                ALLOW_DNS,
                ALLOW_INGRESS_CONTROLLER,
                ALLOW_SAME_TENANT
            ]
        );
        let deny = b.network_policies[0].spec.clone().unwrap();
        assert_eq!(deny.pod_selector, Some(LabelSelector::default()));
        assert_eq!(deny.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert!(deny.ingress.is_none() && deny.egress.is_none());

        let dns = b.network_policies[2].spec.clone().unwrap();
        let rule = &dns.egress.unwrap()[0];
        let ports = rule.ports.clone().unwrap();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p.port == Some(IntOrString::Int(53))));
        let peer = &rule.to.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap()[NAMESPACE_NAME_LABEL],
            "kube-system"
        );
        assert_eq!(
            peer.pod_selector.clone().unwrap().match_labels.unwrap()["k8s-app"],
            "kube-dns"
        );

        let tenant = b.network_policies[4].spec.clone().unwrap();
        let from = &tenant.ingress.unwrap()[0].from.clone().unwrap()[0];
        let sel = from
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(sel[TENANT_LABEL], "team-a");
        assert_eq!(sel[MANAGED_BY], "mtp");

        let mut closed = sample();
        closed.network = Some(NetworkConfig::default());
        assert_eq!(Bundle::render(&closed).network_policies.len(), 3);
    }

    #[test]
    fn owners_get_admin_and_ci_gets_edit_in_the_namespace_only() {
        let b = Bundle::render(&sample());
        let owners = &b.role_bindings[0];
        assert_eq!(owners.role_ref.kind, "ClusterRole");
        assert_eq!(owners.role_ref.name, "admin");
        let subjects = owners.subjects.clone().unwrap();
        let kinds: Vec<_> = subjects
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("User", "alice@example.com"),
                ("Group", "team-a-devs"),
                ("ServiceAccount", "deployer")
            ]
        );
        assert_eq!(subjects[2].namespace.as_deref(), Some("ci"));
        let ci = &b.role_bindings[1];
        assert_eq!(ci.role_ref.name, "edit");
        assert_eq!(ci.subjects.clone().unwrap()[0].name, CI_ACCOUNT);
        assert_eq!(
            ci.subjects.clone().unwrap()[0].namespace.as_deref(),
            Some("team-a-dev")
        );
    }

    #[test]
    fn every_object_is_labelled_namespaced_and_complete_for_apply() {
        let objects = Bundle::render(&sample()).objects();
        assert_eq!(objects.len(), 1 + 1 + 1 + 5 + 1 + 2);
        assert_eq!(objects[0].kind, Kind::Namespace);
        for o in &objects {
            let labels = &o.body["metadata"]["labels"];
            assert_eq!(labels[MANAGED_BY], "mtp", "{}", o.id());
            assert_eq!(labels[TENANT_LABEL], "team-a", "{}", o.id());
            assert!(o.body["apiVersion"].is_string() && o.body["kind"].is_string());
            if o.kind != Kind::Namespace {
                assert_eq!(o.namespace.as_deref(), Some("team-a-dev"), "{}", o.id());
            }
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(Bundle::render(&sample()), Bundle::render(&sample()));
    }
}
