//! What the RoleBindings of the bundle give the tenant's owners (`admin`)
//! and the CI ServiceAccount (`edit`), decided by the real RBAC authorizer
//! over the roles the controller-manager aggregated.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use mtp_agent::bundle;
use serde_json::json;

use crate::env::{Env, assert_refused, object, relax_pod_security};

fn deployment(name: &str) -> Deployment {
    object(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.example/app:1" }] },
            },
        },
    }))
}

#[tokio::test]
async fn owners_run_their_environment_and_nothing_else() {
    let env = Env::create("alice@example.com").await;
    let other = Env::create("bob@example.com").await;
    let post = PostParams::default();

    for (who, client) in [
        ("the owner", env.owner().await),
        ("a member of the owners' group", env.group_member().await),
    ] {
        let suffix = if who == "the owner" { "o" } else { "g" };
        env.api::<Deployment>(client.clone())
            .create(&post, &deployment(&format!("web-{suffix}")))
            .await
            .unwrap_or_else(|e| panic!("{who} creates a Deployment: {e}"));
        env.api::<Secret>(client.clone())
            .create(
                &post,
                &object(json!({ "metadata": { "name": format!("db-{suffix}") }, "stringData": { "password": "x" } })),
            )
            .await
            .unwrap_or_else(|e| panic!("{who} creates a Secret: {e}"));
        let role = format!("pod-reader-{suffix}");
        env.api::<Role>(client.clone())
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": role },
                    "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }],
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{who} creates a Role: {e}"));
        env.api::<RoleBinding>(client.clone())
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": role },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
                    "subjects": [{ "kind": "User", "name": "carol@example.com", "apiGroup": "rbac.authorization.k8s.io" }],
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{who} creates a RoleBinding: {e}"));

        // Another tenant's namespace: nothing, not even a listing.
        assert_refused(
            &format!("{who} lists pods of another tenant"),
            other
                .api::<Pod>(client.clone())
                .list(&ListParams::default())
                .await,
            403,
            &["forbidden"],
        );
        assert_refused(
            &format!("{who} reads a Secret of another tenant"),
            other.api::<Secret>(client.clone()).get("any").await,
            403,
            &["forbidden"],
        );
        // Their own limits: read-only.
        assert_refused(
            &format!("{who} raises the quota"),
            env.raise_quota(client.clone()).await,
            403,
            &["forbidden"],
        );
        assert_refused(
            &format!("{who} deletes the LimitRange"),
            env.api::<LimitRange>(client.clone())
                .delete(bundle::LIMITS_NAME, &Default::default())
                .await,
            403,
            &["forbidden"],
        );
        assert_refused(
            &format!("{who} relabels the namespace"),
            relax_pod_security(client.clone(), &env.ns).await,
            403,
            &["forbidden"],
        );
        // Nothing cluster-scoped.
        assert_refused(
            &format!("{who} lists namespaces"),
            Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await,
            403,
            &["forbidden"],
        );
        assert_refused(
            &format!("{who} lists nodes"),
            Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await,
            403,
            &["forbidden"],
        );
        assert_refused(
            &format!("{who} creates a ClusterRole"),
            Api::<ClusterRole>::all(client.clone())
                .create(
                    &post,
                    &object(json!({ "metadata": { "name": format!("{}-{suffix}", env.tenant) }, "rules": [] })),
                )
                .await,
            403,
            &["forbidden"],
        );
    }
}

#[tokio::test]
async fn the_ci_service_account_has_edit_and_no_more() {
    let env = Env::create("alice@example.com").await;
    let other = Env::create("bob@example.com").await;
    let ci = env.ci().await;
    let post = PostParams::default();

    env.api::<Deployment>(ci.clone())
        .create(&post, &deployment("deployed-by-ci"))
        .await
        .expect("CI deploys into its environment");
    env.api::<Secret>(ci.clone())
        .create(
            &post,
            &object(json!({ "metadata": { "name": "ci-secret" }, "stringData": { "k": "v" } })),
        )
        .await
        .expect("edit includes Secrets");
    // `edit` has no RBAC: CI cannot hand out rights.
    assert_refused(
        "CI creates a Role",
        env.api::<Role>(ci.clone())
            .create(
                &post,
                &object(json!({ "metadata": { "name": "r" }, "rules": [] })),
            )
            .await,
        403,
        &["forbidden"],
    );
    assert_refused(
        "CI creates a RoleBinding",
        env.api::<RoleBinding>(ci.clone())
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": "b" },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
                    "subjects": [{ "kind": "User", "name": "x", "apiGroup": "rbac.authorization.k8s.io" }],
                })),
            )
            .await,
        403,
        &["forbidden"],
    );
    assert_refused(
        "CI raises its quota",
        env.raise_quota(ci.clone()).await,
        403,
        &["forbidden"],
    );
    assert_refused(
        "CI deploys into another tenant's environment",
        other
            .api::<Deployment>(ci.clone())
            .create(&post, &deployment("intruder"))
            .await,
        403,
        &["forbidden"],
    );
    assert_refused(
        "CI lists namespaces",
        Api::<Namespace>::all(ci).list(&ListParams::default()).await,
        403,
        &["forbidden"],
    );
}
