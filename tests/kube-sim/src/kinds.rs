//! The table of resource kinds the simulator serves; adding a kind is one entry here.

/// One served resource type (group/version/resource) and how the API treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub resource: &'static str,
    /// Singular name, used by discovery.
    pub singular: &'static str,
    /// The `kind` of objects of this resource.
    pub kind: &'static str,
    /// Whether objects live inside a namespace.
    pub namespaced: bool,
    /// Short names kubectl resolves (`ns`, `po`, ...).
    pub short_names: &'static [&'static str],
    /// Field selector labels accepted besides `metadata.name` and `metadata.namespace`,
    /// as a real apiserver registers them per kind.
    pub field_labels: &'static [&'static str],
}

impl ResourceKind {
    /// `apiVersion` string for objects of this kind (`v1`, `rbac.authorization.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Human name used in error messages, as the real apiserver prints it (`roles.rbac.authorization.k8s.io`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

const fn core(
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    field_labels: &'static [&'static str],
) -> ResourceKind {
    ResourceKind {
        group: "",
        version: "v1",
        resource,
        singular,
        kind,
        namespaced,
        short_names,
        field_labels,
    }
}

/// Every resource kind served by the simulator.
pub static KINDS: &[ResourceKind] = &[
    core(
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &["status.phase"],
    ),
    core(
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        &[],
    ),
    core(
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        &[],
    ),
    core(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
    ),
    core(
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &[
            "spec.nodeName",
            "status.phase",
            "spec.serviceAccountName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "status.podIP",
        ],
    ),
    core(
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &["spec.unschedulable"],
    ),
    core("configmaps", "configmap", "ConfigMap", true, &["cm"], &[]),
    // Stored as given: no clusterIP allocation, no endpoints (README, known
    // differences). Here so that kubectl create/expose work as on a server.
    core("secrets", "secret", "Secret", true, &[], &["type"]),
    core("services", "service", "Service", true, &["svc"], &[]),
    core(
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    ),
    // No controller: a Deployment is stored, no ReplicaSet or Pod follows.
    ResourceKind {
        group: "apps",
        version: "v1",
        resource: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        field_labels: &[],
    },
    ResourceKind {
        group: "networking.k8s.io",
        version: "v1",
        resource: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        field_labels: &[],
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        field_labels: &[],
    },
    ResourceKind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        field_labels: &[],
    },
    ResourceKind {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        field_labels: &[],
    },
];

/// Looks up a kind by group, version and plural resource name.
pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.resource == resource)
}

/// The kind registered for namespaces (used by the lifecycle logic).
pub fn namespaces() -> &'static ResourceKind {
    &KINDS[0]
}

/// The kind registered for pods (kubelet stats and pod life).
pub fn pods() -> &'static ResourceKind {
    find("", "v1", "pods").expect("pods are in the table")
}

/// The kind registered for nodes (kubelet endpoints).
pub fn nodes() -> &'static ResourceKind {
    find("", "v1", "nodes").expect("nodes are in the table")
}

/// Distinct API groups (excluding core) with their versions, in table order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}
