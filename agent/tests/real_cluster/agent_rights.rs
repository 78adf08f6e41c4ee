//! What the agent's ServiceAccount cannot do with the shipped RBAC and
//! admission policies, tried as that ServiceAccount: a stolen agent token
//! must not be a way to cluster-admin. It writes only mtp-labelled objects
//! in mtp environment namespaces (and its one Lease), sets Pod Security only
//! to `restricted`, binds only `admin`/`edit` to the tenant's owners and its
//! CI ServiceAccount, and reads no Secrets.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mtp_agent::bundle::{self, Bundle};
use mtp_agent::kubernetes::ClusterApi;
use serde_json::{Value, json};

use crate::env::{Env, assert_refused, object, relax_pod_security};
use crate::support::config;
use crate::test_id;

fn managed_labels(extra: Value) -> Value {
    let mut labels = json!({ "app.kubernetes.io/managed-by": "mtp" });
    if let (Value::Object(l), Value::Object(e)) = (&mut labels, extra) {
        l.extend(e);
    }
    labels
}

fn binding(name: &str, role: &str, subjects: Value) -> RoleBinding {
    object(json!({
        "metadata": { "name": name, "labels": managed_labels(json!({})) },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": subjects,
    }))
}

fn user(name: &str) -> Value {
    json!({ "kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io" })
}

fn group(name: &str) -> Value {
    json!({ "kind": "Group", "name": name, "apiGroup": "rbac.authorization.k8s.io" })
}

fn service_account(name: &str, namespace: &str) -> Value {
    json!({ "kind": "ServiceAccount", "name": name, "namespace": namespace })
}

#[tokio::test]
async fn the_agent_writes_nothing_outside_environment_namespaces() {
    let env = Env::create("alice@example.com").await;
    let agent = env.agent().await;
    let post = PostParams::default();

    // The escalation the review found: bind `admin` in kube-system.
    assert_refused(
        "the agent binds admin in kube-system",
        Api::<RoleBinding>::namespaced(agent.clone(), "kube-system")
            .create(
                &post,
                &binding("mtp-owners", "admin", json!([user("mallory")])),
            )
            .await,
        403,
        &["mtp environment namespace"],
    );
    for (what, namespace) in [
        ("default", "default"),
        ("mtp-system (its own)", "mtp-system"),
    ] {
        assert_refused(
            &format!("the agent creates a labelled ServiceAccount in {what}"),
            Api::<ServiceAccount>::namespaced(agent.clone(), namespace)
                .create(
                    &post,
                    &object(
                        json!({ "metadata": { "name": "x", "labels": managed_labels(json!({})) } }),
                    ),
                )
                .await,
            403,
            &["mtp environment namespace"],
        );
        assert_refused(
            &format!("the agent creates a labelled NetworkPolicy in {what}"),
            Api::<NetworkPolicy>::namespaced(agent.clone(), namespace)
                .create(
                    &post,
                    &object(json!({
                        "metadata": { "name": "x", "labels": managed_labels(json!({})) },
                        "spec": { "podSelector": {}, "ingress": [{}] },
                    })),
                )
                .await,
            403,
            &["mtp environment namespace"],
        );
    }
    // Adopting a namespace by labelling it.
    assert_refused(
        "the agent labels kube-system as an environment",
        Api::<Namespace>::all(agent.clone())
            .patch(
                "kube-system",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": "mtp" } } }),
                ),
            )
            .await,
        403,
        &["only writes objects labelled"],
    );
    // Leases: only its own.
    assert_refused(
        "the agent creates another Lease",
        Api::<Lease>::namespaced(agent.clone(), "kube-system")
            .create(
                &post,
                &object(json!({ "metadata": { "name": "kube-scheduler" }, "spec": {} })),
            )
            .await,
        403,
        &["mtp-agent-applier"],
    );
    // And the environment's own objects it still writes.
    env.apply().await;
}

#[tokio::test]
async fn the_agent_sets_pod_security_to_restricted_only() {
    let agent = Env::create("alice@example.com").await.agent().await;
    let namespaces = Api::<Namespace>::all(agent.clone());
    let post = PostParams::default();
    let psa = |level: &str| {
        json!({
            "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        })
    };
    for (what, labels) in [
        ("privileged", managed_labels(psa("privileged"))),
        ("baseline", managed_labels(psa("baseline"))),
        ("no Pod Security labels", managed_labels(json!({}))),
        (
            "an audit level of privileged",
            managed_labels(json!({
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/audit": "privileged",
                "pod-security.kubernetes.io/warn": "restricted",
            })),
        ),
        (
            "an enforce-version pinned to an old release",
            managed_labels(json!({
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "v1.0",
                "pod-security.kubernetes.io/audit": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            })),
        ),
    ] {
        assert_refused(
            &format!("the agent creates a namespace with {what}"),
            namespaces
                .create(
                    &post,
                    &object(json!({ "metadata": { "name": test_id(), "labels": labels } })),
                )
                .await,
            403,
            &["Pod Security"],
        );
    }
    // Relaxing an existing environment namespace.
    let tenant = test_id();
    let ns = format!("{tenant}-psa");
    let cluster = ClusterApi::new(agent.clone());
    cluster
        .apply(&Bundle::render(&config(&ns, &tenant)))
        .await
        .expect("the agent applies an environment");
    assert_refused(
        "the agent relaxes Pod Security of an environment namespace",
        relax_pod_security(agent.clone(), &ns).await,
        403,
        &["Pod Security"],
    );
    cluster.remove_namespace(&ns).await.expect("removes it");
}

#[tokio::test]
async fn the_agent_binds_only_admin_and_edit_to_the_tenant() {
    let env = Env::create("alice@example.com").await;
    let bindings = env.api::<RoleBinding>(env.agent().await);
    let post = PostParams::default();
    let ci = service_account(bundle::CI_ACCOUNT, &env.ns);

    // RBAC: `bind` on admin and edit only.
    assert_refused(
        "the agent binds cluster-admin",
        bindings
            .create(
                &post,
                &binding("b1", "cluster-admin", json!([user("mallory")])),
            )
            .await,
        403,
        &["attempting to grant RBAC permissions not currently held"],
    );
    // The policy: whom admin and edit go to.
    for (what, role, subjects) in [
        (
            "admin to every authenticated user",
            "admin",
            json!([group("system:authenticated")]),
        ),
        (
            "admin to system:masters",
            "admin",
            json!([group("system:masters")]),
        ),
        (
            "admin to a ServiceAccount of kube-system",
            "admin",
            json!([service_account("default", "kube-system")]),
        ),
        (
            "edit to a ServiceAccount other than the CI one",
            "edit",
            json!([service_account("default", &env.ns)]),
        ),
        ("edit to a user", "edit", json!([user("mallory")])),
        (
            "edit to the CI ServiceAccount of another namespace",
            "edit",
            json!([service_account(bundle::CI_ACCOUNT, "kube-system")]),
        ),
    ] {
        assert_refused(
            &format!("the agent binds {what}"),
            bindings
                .create(&post, &binding("mtp-extra", role, subjects))
                .await,
            403,
            &["RoleBinding"],
        );
    }
    bindings
        .create(&post, &binding("mtp-extra", "edit", json!([ci])))
        .await
        .expect("edit to the environment's CI ServiceAccount is allowed");
    // Owners may be ServiceAccounts of ordinary namespaces (a tenant's own CD).
    bindings
        .create(
            &post,
            &binding(
                "mtp-owner-sa",
                "admin",
                json!([
                    user("alice@example.com"),
                    group("devs"),
                    service_account("deployer", "ci")
                ]),
            ),
        )
        .await
        .expect("admin to people, groups and an ordinary ServiceAccount is allowed");
}

#[tokio::test]
async fn the_agent_reads_no_secrets() {
    let env = Env::create("alice@example.com").await;
    let agent = env.agent().await;
    for namespace in ["kube-system", env.ns.as_str()] {
        assert_refused(
            &format!("the agent lists Secrets in {namespace}"),
            Api::<Secret>::namespaced(agent.clone(), namespace)
                .list(&ListParams::default())
                .await,
            403,
            &["forbidden"],
        );
    }
    assert_refused(
        "the agent lists Secrets cluster-wide",
        Api::<Secret>::all(agent).list(&ListParams::default()).await,
        403,
        &["forbidden"],
    );
}

/// Usage sampling needs the kubelet Summary API (`nodes/stats`), the pods of
/// the agent's node and its Node: the real RBAC engine, asked as the agent,
/// grants exactly that and none of the neighbours that would turn a stolen
/// token into a shell or a log reader (`nodes/proxy` also allows exec).
#[tokio::test]
async fn the_agent_reads_kubelet_stats_and_pods_but_cannot_exec_or_proxy() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let env = Env::create("alice@example.com").await;
    let agent = env.agent().await;
    let reviews = Api::<SelfSubjectAccessReview>::all(agent);
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        // verb, resource, subresource, namespace, allowed
        ("get", "nodes", "stats", "", true),
        ("get", "nodes", "", "", true),
        ("list", "pods", "", "", true),
        ("watch", "pods", "", "", true),
        ("get", "nodes", "proxy", "", false),
        ("create", "nodes", "proxy", "", false),
        ("get", "nodes", "log", "", false),
        ("list", "nodes", "", "", false),
        ("patch", "nodes", "", "", false),
        ("get", "pods", "log", "kube-system", false),
        ("create", "pods", "exec", "kube-system", false),
        ("create", "pods", "attach", "kube-system", false),
        ("create", "pods", "portforward", "kube-system", false),
        ("create", "pods", "", "kube-system", false),
        ("delete", "pods", "", "kube-system", false),
        ("create", "pods", "eviction", "kube-system", false),
    ];
    for &(verb, resource, subresource, namespace, allowed) in cases {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    subresource: (!subresource.is_empty()).then(|| subresource.into()),
                    namespace: (!namespace.is_empty()).then(|| namespace.into()),
                    name: (resource == "nodes").then(|| "node-1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        // The authorizer's RBAC cache may not hold a ClusterRole created a
        // moment ago: a grant is waited for (a refusal needs no wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let got = loop {
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .expect("the apiserver answers the access review");
            let got = answer.status.as_ref().is_some_and(|s| s.allowed);
            if got || !allowed || std::time::Instant::now() > deadline {
                break (got, answer.status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let (got, status) = got;
        assert_eq!(
            got, allowed,
            "{verb} {resource}/{subresource} in {namespace:?}: allowed={got}, want {allowed} ({status:?})"
        );
    }
}
