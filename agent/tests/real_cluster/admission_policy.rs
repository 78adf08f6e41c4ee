//! The bundle's ValidatingAdmissionPolicies, their CEL evaluated by the real
//! apiserver: nobody but the agent changes what mtp manages. The owner's
//! `admin` role allows editing NetworkPolicies and RoleBindings, and a
//! cluster admin bypasses RBAC altogether, so for both only the policy
//! stands in the way.

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mtp_agent::bundle;
use serde_json::json;

use crate::env::{Env, assert_refused, object, relax_pod_security};

const MANAGED: &str = "is managed by k8s-mtp";

async fn assert_cannot_touch_managed_objects(env: &Env, who: &str, client: Client) {
    let delete = DeleteParams::default();
    let edit = PatchParams::default();
    let policies = env.api::<NetworkPolicy>(client.clone());
    let bindings = env.api::<RoleBinding>(client.clone());

    assert_refused(
        &format!("{who} deletes the default-deny policy"),
        policies.delete(bundle::DEFAULT_DENY, &delete).await,
        403,
        &[MANAGED, who_name(who)],
    );
    assert_refused(
        &format!("{who} opens the default-deny policy"),
        policies
            .patch(
                bundle::DEFAULT_DENY,
                &edit,
                &Patch::Merge(json!({ "spec": { "ingress": [{}] } })),
            )
            .await,
        403,
        &[MANAGED],
    );
    assert_refused(
        &format!("{who} strips the managed-by label off a policy"),
        policies
            .patch(
                bundle::ALLOW_DNS,
                &edit,
                &Patch::Merge(
                    json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": null } } }),
                ),
            )
            .await,
        403,
        &[MANAGED],
    );
    assert_refused(
        &format!("{who} deletes the owners' RoleBinding"),
        bindings.delete(bundle::OWNERS_BINDING, &delete).await,
        403,
        &[MANAGED],
    );
    assert_refused(
        &format!("{who} adds a subject to the owners' RoleBinding"),
        bindings
            .patch(
                bundle::OWNERS_BINDING,
                &edit,
                &Patch::Merge(json!({ "subjects": [{ "kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io" }] })),
            )
            .await,
        403,
        &[MANAGED],
    );
    assert_refused(
        &format!("{who} deletes the CI ServiceAccount"),
        env.api::<ServiceAccount>(client.clone())
            .delete(bundle::CI_ACCOUNT, &delete)
            .await,
        403,
        &[MANAGED],
    );
    // A tenant may not dress its own object up as mtp's either.
    assert_refused(
        &format!("{who} creates a policy labelled as mtp's"),
        policies
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": { "name": format!("fake-{}", who.len()), "labels": { "app.kubernetes.io/managed-by": "mtp" } },
                    "spec": { "podSelector": {}, "ingress": [{}] },
                })),
            )
            .await,
        403,
        &[MANAGED],
    );
}

fn who_name(who: &str) -> &str {
    match who {
        "the owner" => "alice@example.com",
        _ => "mtp-harness-admin",
    }
}

#[tokio::test]
async fn the_owner_cannot_change_or_remove_what_mtp_placed() {
    let env = Env::create("alice@example.com").await;
    assert_cannot_touch_managed_objects(&env, "the owner", env.owner().await).await;
    // What the owner may do with objects that are theirs stays allowed.
    let policies = env.api::<NetworkPolicy>(env.owner().await);
    policies
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "own" }, "spec": { "podSelector": {} } })),
        )
        .await
        .expect("the owner creates a policy of their own");
    policies
        .delete("own", &DeleteParams::default())
        .await
        .expect("and deletes it");
}

#[tokio::test]
async fn a_cluster_admin_is_held_to_the_policy_too() {
    let env = Env::create("alice@example.com").await;
    let admin = env.admin().await;
    assert_cannot_touch_managed_objects(&env, "a cluster admin", admin.clone()).await;
    let delete = DeleteParams::default();
    assert_refused(
        "a cluster admin raises the quota",
        env.raise_quota(admin.clone()).await,
        403,
        &[MANAGED],
    );
    assert_refused(
        "a cluster admin deletes the LimitRange",
        env.api::<LimitRange>(admin.clone())
            .delete(bundle::LIMITS_NAME, &delete)
            .await,
        403,
        &[MANAGED],
    );
    assert_refused(
        "a cluster admin relaxes Pod Security on the namespace",
        relax_pod_security(admin.clone(), &env.ns).await,
        403,
        &[MANAGED],
    );
    assert_refused(
        "a cluster admin deletes the namespace",
        Api::<Namespace>::all(admin).delete(&env.ns, &delete).await,
        403,
        &[MANAGED],
    );
}
