//! The checks are strict: bundles broken on purpose fail every one of them.

use super::*;

pub(crate) fn policy_named<'a>(b: &'a mut Bundle, name: &str) -> &'a mut NetworkPolicySpec {
    b.network_policies
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.spec.as_mut())
        .unwrap_or_else(|| panic!("no policy {name}"))
}

#[test]
pub(crate) fn the_checks_reject_broken_bundles() {
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
