//! RBAC: the bootstrap `admin` and `edit` ClusterRoles as a fixture, and the MTB checks on what tenants are bound to.

use super::*;

pub(crate) struct Rule {
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
}

pub(crate) const READ: &[&str] = &["get", "list", "watch"];
pub(crate) const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
pub(crate) const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];
pub(crate) const WRITE_VERBS: &[&str] = &[
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
pub(crate) const AGGREGATE_TO_VIEW: &[Rule] = &[
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
pub(crate) const AGGREGATE_TO_EDIT: &[Rule] = &[
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
pub(crate) const AGGREGATE_TO_ADMIN: &[Rule] = &[
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
pub(crate) fn bindable_role(name: &str) -> Option<Vec<&'static Rule>> {
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

pub(crate) fn allows(rules: &[&Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        (r.groups.contains(&group) || r.groups.contains(&"*"))
            && (r.resources.contains(&resource) || r.resources.contains(&"*"))
            && (r.verbs.contains(&verb) || r.verbs.contains(&"*"))
    })
}

pub(crate) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub(crate) fn bound_roles(
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
pub(crate) fn check_quota_not_modifiable(
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
pub(crate) fn check_no_cluster_access(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
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
pub(crate) fn check_subjects(c: &NamespaceConfig, objects: &[ManagedObject]) -> Result<(), String> {
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
pub(crate) fn mtb_block_modification_of_resource_quotas_by_admin_and_edit() {
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
pub(crate) fn mtb_block_access_to_cluster_resources() {
    assert_holds(check_no_cluster_access);
}

#[test]
pub(crate) fn mtb_block_access_to_other_tenant_resources() {
    assert_holds(check_subjects);
}
