//! NetworkPolicy evaluation (networking.k8s.io/v1 semantics) and the MTB cross-tenant isolation checks.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Ns {
    name: String,
    labels: Labels,
}

#[derive(Debug, Clone)]
pub(crate) struct Pod {
    ns: Ns,
    labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
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

pub(crate) const PROBES: [(Proto, i32); 6] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 443),
    (Proto::Tcp, 8080),
    (Proto::Tcp, 53),
    (Proto::Udp, 53),
    (Proto::Udp, 5353),
];

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
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

pub(crate) fn policy_types(spec: &NetworkPolicySpec) -> Vec<String> {
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
pub(crate) fn peer_matches(peer: &NetworkPolicyPeer, home: &str, pod: &Pod) -> bool {
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

pub(crate) fn peers_match(peers: &Option<Vec<NetworkPolicyPeer>>, home: &str, pod: &Pod) -> bool {
    match peers {
        None => true,
        Some(p) if p.is_empty() => true,
        Some(p) => p.iter().any(|peer| peer_matches(peer, home, pod)),
    }
}

pub(crate) fn ports_match(ports: &Option<Vec<NetworkPolicyPort>>, proto: Proto, port: i32) -> bool {
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
pub(crate) struct Cluster {
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
pub(crate) fn ns_of(objects: &[ManagedObject]) -> Ns {
    let ns: Namespace = one(objects, Kind::Namespace).expect("namespace decodes");
    let name = ns.metadata.name.unwrap_or_default();
    let mut labels = ns.metadata.labels.unwrap_or_default();
    labels.insert(NAME_LABEL.into(), name.clone());
    Ns { name, labels }
}

pub(crate) fn unmanaged_ns(name: &str, extra: &[(&str, &str)]) -> Ns {
    let mut labels = labels(extra);
    labels.insert(NAME_LABEL.into(), name.into());
    Ns {
        name: name.into(),
        labels,
    }
}

pub(crate) fn pod(ns: &Ns, pairs: &[(&str, &str)]) -> Pod {
    Pod {
        ns: ns.clone(),
        labels: labels(pairs),
    }
}

pub(crate) fn app(ns: &Ns) -> Pod {
    pod(ns, &[("app", "web")])
}

/// The network config as the bundle reads it.
pub(crate) fn net(c: &NamespaceConfig) -> NetworkConfig {
    c.network.clone().unwrap_or_default()
}

/// Checks one environment's policies against pods of every kind of
/// neighbour; `sibling` is another namespace of the same tenant.
pub(crate) fn check_network(
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
pub(crate) fn check_default_deny(objects: &[ManagedObject]) -> Result<(), String> {
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
pub(crate) fn sibling_of(c: &NamespaceConfig) -> NamespaceConfig {
    NamespaceConfig {
        network: c.network.clone(),
        ..env(&format!("{}-sibling", c.namespace), &c.tenant, "sibling")
    }
}

pub(crate) fn check_network_isolation(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let sibling = Bundle::render(&sibling_of(c)).objects();
    let other = Bundle::render(&other_tenant()).objects();
    check_network(c, objects, &sibling, &other)
}

#[test]
pub(crate) fn mtb_default_deny_network_connections_across_tenants() {
    assert_holds(check_network_isolation);
}

#[test]
pub(crate) fn mtb_default_deny_network_connections_across_tenants_switches_follow_the_config() {
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
pub(crate) fn network_policy_evaluator_follows_the_api_semantics() {
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
