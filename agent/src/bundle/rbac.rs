//! The environment's CI ServiceAccount and its role bindings: the owners
//! get `admin`, the CI account `edit`, in the namespace only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use mtp_proto::v1::NamespaceConfig;

use super::{CI_ACCOUNT, CI_BINDING, OWNERS_BINDING, meta};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub(super) fn service_account(
    config: &NamespaceConfig,
    labels: &BTreeMap<String, String>,
) -> ServiceAccount {
    let ns = config.namespace.as_str();
    ServiceAccount {
        metadata: meta(CI_ACCOUNT, ns, labels),
        ..Default::default()
    }
}

pub(super) fn role_bindings(
    config: &NamespaceConfig,
    labels: &BTreeMap<String, String>,
) -> Vec<RoleBinding> {
    let ns = config.namespace.as_str();
    let owners = config.owners.clone().unwrap_or_default();
    let mut owner_subjects: Vec<Subject> = Vec::new();
    for user in &owners.users {
        owner_subjects.push(rbac_subject("User", user));
    }
    for group in &owners.groups {
        owner_subjects.push(rbac_subject("Group", group));
    }
    for sa in &owners.service_accounts {
        if let Some((sa_ns, sa_name)) = sa.split_once('/') {
            owner_subjects.push(service_account_subject(sa_ns, sa_name));
        }
    }
    vec![
        RoleBinding {
            metadata: meta(OWNERS_BINDING, ns, labels),
            role_ref: cluster_role("admin"),
            subjects: Some(owner_subjects),
        },
        RoleBinding {
            metadata: meta(CI_BINDING, ns, labels),
            role_ref: cluster_role("edit"),
            subjects: Some(vec![service_account_subject(ns, CI_ACCOUNT)]),
        },
    ]
}

fn cluster_role(name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: "ClusterRole".into(),
        name: name.into(),
    }
}

fn rbac_subject(kind: &str, name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    }
}

fn service_account_subject(namespace: &str, name: &str) -> Subject {
    Subject {
        api_group: Some(String::new()),
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
    }
}
