//! The environment's network policies: deny by default, then allow the
//! namespace itself, cluster DNS, and — as configured — the ingress
//! controller and the tenant's other namespaces.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mtp_proto::v1::NamespaceConfig;

use super::{
    ALLOW_DNS, ALLOW_INGRESS_CONTROLLER, ALLOW_SAME_NAMESPACE, ALLOW_SAME_TENANT, DEFAULT_DENY,
    MANAGED_BY, MANAGED_BY_VALUE, TENANT_LABEL, meta,
};

/// Namespace of the cluster DNS (CoreDNS on K3s) and its pod label.
const DNS_NAMESPACE: &str = "kube-system";
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// Set by the API server on every namespace since Kubernetes 1.21.
pub(super) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) fn policies(
    config: &NamespaceConfig,
    labels: &BTreeMap<String, String>,
) -> Vec<NetworkPolicy> {
    let policy = |name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: meta(name, &config.namespace, labels),
        spec: Some(spec),
    };
    let mut out: Vec<NetworkPolicy> = always()
        .into_iter()
        .map(|(name, spec)| policy(name, spec))
        .collect();
    let net = config.network.clone().unwrap_or_default();
    if net.allow_ingress_controller && !net.ingress_namespace.is_empty() {
        out.push(policy(
            ALLOW_INGRESS_CONTROLLER,
            from_ingress_controller(&net.ingress_namespace),
        ));
    }
    if net.allow_same_tenant {
        out.push(policy(ALLOW_SAME_TENANT, same_tenant(&config.tenant)));
    }
    out
}

fn all_pods() -> Option<LabelSelector> {
    Some(LabelSelector::default())
}

/// What every environment gets: default deny, its own namespace, DNS.
fn always() -> [(&'static str, NetworkPolicySpec); 3] {
    let same_namespace_peer = NetworkPolicyPeer {
        pod_selector: all_pods(),
        ..Default::default()
    };
    [
        // No rules: everything in and out is denied unless another policy allows it.
        (
            DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            },
        ),
        (
            ALLOW_SAME_NAMESPACE,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![same_namespace_peer.clone()]),
                    ..Default::default()
                }]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![same_namespace_peer]),
                    ..Default::default()
                }]),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            },
        ),
        (
            ALLOW_DNS,
            NetworkPolicySpec {
                pod_selector: all_pods(),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(match_labels(NAMESPACE_NAME_LABEL, DNS_NAMESPACE)),
                        pod_selector: Some(match_labels(DNS_POD_LABEL.0, DNS_POD_LABEL.1)),
                        ..Default::default()
                    }]),
                    ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                }]),
                policy_types: Some(vec!["Egress".into()]),
                ..Default::default()
            },
        ),
    ]
}

/// Ingress from the ingress controller's namespace.
fn from_ingress_controller(ingress_namespace: &str) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: all_pods(),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels(NAMESPACE_NAME_LABEL, ingress_namespace)),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
        policy_types: Some(vec!["Ingress".into()]),
        ..Default::default()
    }
}

/// Traffic both ways with the tenant's other mtp namespaces.
fn same_tenant(tenant: &str) -> NetworkPolicySpec {
    // Both ends must be mtp namespaces of this tenant: the managed-by
    // label keeps a tenant from joining another's traffic by labelling
    // its own namespace (it cannot label namespaces at all with `admin`).
    let tenant_peer = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
                (TENANT_LABEL.to_string(), tenant.to_string()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicySpec {
        pod_selector: all_pods(),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![tenant_peer.clone()]),
            ..Default::default()
        }]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![tenant_peer]),
            ..Default::default()
        }]),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
    }
}

fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        ..Default::default()
    }
}

fn dns_port(protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(53)),
        ..Default::default()
    }
}
