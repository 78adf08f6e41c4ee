//! The agent's cluster side with the real kube-rs client against kube-sim:
//! what server-side apply leaves in the cluster, field by field; read-back
//! verification catching drift; pruning; never touching foreign objects;
//! the applier lease.
//!
//! The scenarios a real cluster must pass too live in `support/scenarios.rs`
//! and run here on kube-sim; `real_cluster/` runs them on a real
//! kube-apiserver as the agent's ServiceAccount. The tests written out here need kube-sim's
//! fault injection or its direct view of the stored objects.

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::bundle::{self, Bundle};
use mtp_agent::kubernetes::{Applied, ClusterApi, FIELD_MANAGER, IfAbsent, Removal};
use serde_json::json;

mod support;
use support::{Ctx, config, scenarios};

async fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default())
        .await
        .expect("kube-sim starts")
}

/// Runs a scenario shared with the real-cluster suite on a fresh kube-sim,
/// where namespace deletion waits 300 ms as if for a finalizer.
async fn on_sim<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sim = SimCluster::start(SimOptions {
        namespace_finalize_delay: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await
    .expect("kube-sim starts");
    let ctx = Ctx::new(sim.client(), "team-a".into(), Duration::from_secs(1), true);
    scenario(ctx.clone()).await;
    ctx.cleanup().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn apply_leaves_every_object_as_specified() {
    on_sim(scenarios::apply_leaves_every_object_as_specified).await;
}

#[tokio::test]
async fn verification_catches_deleted_and_edited_objects_and_apply_repairs_them() {
    on_sim(scenarios::verification_catches_deleted_and_edited_objects_and_apply_repairs_them).await;
}

#[tokio::test]
async fn switched_off_policies_are_pruned_but_foreign_ones_are_kept() {
    on_sim(scenarios::switched_off_policies_are_pruned_but_foreign_ones_are_kept).await;
}

/// An agent whose desired state is older than what a newer applier wrote
/// (it was offline, its control plane lags) must neither roll the namespace
/// back nor delete it; and a closed fence stops writes and deletes.
#[tokio::test]
async fn stale_state_never_overwrites_or_deletes_a_newer_namespace() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let mut newer = config("team-a-dev", "team-a");
    newer.revision = 5;
    let mut stale = newer.clone();
    stale.revision = 3;
    stale.quota.as_mut().unwrap().cpu_millis = 64_000;
    let newer_bundle = Bundle::render(&newer);
    assert_eq!(newer_bundle.revision(), 5);
    assert_eq!(cluster.apply(&newer_bundle).await.unwrap(), Applied::Done);
    let stamped = sim.object("namespaces", "", "team-a-dev").unwrap().unwrap();
    assert_eq!(
        stamped["metadata"]["annotations"][bundle::REVISION_ANNOTATION],
        "5"
    );

    assert_eq!(
        cluster.apply(&Bundle::render(&stale)).await.unwrap(),
        Applied::Newer(5)
    );
    let quota = sim
        .object("resourcequotas", "team-a-dev", bundle::QUOTA_NAME)
        .unwrap()
        .unwrap();
    assert_eq!(
        quota["spec"]["hard"]["requests.cpu"], "2",
        "not rolled back"
    );
    assert_eq!(
        cluster
            .remove_namespace_fenced("team-a-dev", 3, None, || true)
            .await
            .unwrap(),
        Removal::Newer(5)
    );
    assert_eq!(
        cluster
            .remove_namespace_fenced("team-a-dev", 5, None, || false)
            .await
            .unwrap(),
        Removal::Fenced
    );
    let mut next = newer.clone();
    next.revision = 6;
    next.quota.as_mut().unwrap().cpu_millis = 4000;
    assert_eq!(
        cluster
            .apply_fenced(&Bundle::render(&next), IfAbsent::Create, || false)
            .await
            .unwrap(),
        Applied::Fenced
    );
    let live = sim.object("namespaces", "", "team-a-dev").unwrap().unwrap();
    assert!(live["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(
        live["metadata"]["annotations"][bundle::REVISION_ANNOTATION],
        "5"
    );
    // The same or a newer state may do both.
    assert_eq!(
        cluster.apply(&Bundle::render(&next)).await.unwrap(),
        Applied::Done
    );
    assert_ne!(
        cluster
            .remove_namespace_fenced("team-a-dev", 6, None, || true)
            .await
            .unwrap(),
        Removal::Newer(6)
    );
    sim.shutdown().await;
}

/// Unconfirmed state only keeps what exists: a missing namespace is left
/// missing (it may have been deleted at a later revision), an existing one
/// is brought back to its configuration.
#[tokio::test]
async fn a_namespace_stamped_for_another_cluster_identity_is_not_rewritten() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let config = config("team-a-dev", "team-a");
    let ours = Bundle::render(&config).stamped(Some("11111111-1111-1111-1111-111111111111"));
    assert_eq!(cluster.apply(&ours).await.unwrap(), Applied::Done);
    // Another control-plane database's desired state for the same name:
    // refused, naming both identities; the namespace keeps its objects.
    let mut other = config.clone();
    other.quota.as_mut().unwrap().cpu_millis = 64_000;
    let theirs = Bundle::render(&other).stamped(Some("22222222-2222-2222-2222-222222222222"));
    let err = cluster.apply(&theirs).await.unwrap_err().to_string();
    assert!(err.contains("refuse to overwrite"), "{err}");
    assert!(
        err.contains("11111111-1111-1111-1111-111111111111"),
        "{err}"
    );
    assert_eq!(cluster.verify(&ours).await.unwrap(), vec![]);
    // Unstamped bundles (identity not known yet) still repair it.
    assert_eq!(
        cluster.apply(&Bundle::render(&config)).await.unwrap(),
        Applied::Done
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn skipping_absent_namespaces_creates_nothing_but_repairs_what_exists() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let b = Bundle::render(&config("team-a-dev", "team-a"));
    assert_eq!(
        cluster
            .apply_fenced(&b, IfAbsent::Skip, || true)
            .await
            .unwrap(),
        Applied::Absent
    );
    assert!(
        sim.object("namespaces", "", "team-a-dev")
            .unwrap()
            .is_none()
    );
    assert!(
        sim.object("resourcequotas", "team-a-dev", bundle::QUOTA_NAME)
            .unwrap()
            .is_none()
    );

    cluster.apply(&b).await.unwrap();
    Api::<ResourceQuota>::namespaced(sim.client(), "team-a-dev")
        .delete(bundle::QUOTA_NAME, &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        cluster
            .apply_fenced(&b, IfAbsent::Skip, || true)
            .await
            .unwrap(),
        Applied::Done
    );
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_foreign_namespace_is_neither_adopted_nor_deleted() {
    on_sim(scenarios::a_foreign_namespace_is_neither_adopted_nor_deleted).await;
}

#[tokio::test]
async fn removing_a_namespace_takes_everything_in_it() {
    on_sim(scenarios::removing_a_namespace_takes_everything_in_it).await;
}

#[tokio::test]
async fn apply_failures_name_the_object() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    sim.faults().deny("patch", "networkpolicies");
    let err = cluster
        .apply(&Bundle::render(&config("team-a-dev", "team-a")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("apply NetworkPolicy/mtp-default-deny"),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn exactly_one_contender_wins_a_free_lease() {
    on_sim(scenarios::exactly_one_contender_wins_a_free_lease).await;
}

#[tokio::test]
async fn a_silent_holder_is_replaced_and_its_fence_closes_first() {
    on_sim(scenarios::a_silent_holder_is_replaced_and_its_fence_closes_first).await;
}

#[tokio::test]
async fn one_listing_per_kind_verifies_like_reading_each_object() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let dev = Bundle::render(&config("team-a-dev", "team-a"));
    let qa = Bundle::render(&config("team-a-qa", "team-a"));
    cluster.apply(&dev).await.unwrap();
    cluster.apply(&qa).await.unwrap();
    let live = cluster.managed_objects().await.unwrap();
    assert_eq!(live.verify(&dev), vec![]);
    assert_eq!(live.verify(&qa), vec![]);
    assert_eq!(
        live.namespaces(),
        ["team-a-dev".to_string(), "team-a-qa".to_string()].into()
    );

    // Raise a quota in one namespace, strip the label off a policy in the other.
    let client = sim.client();
    Api::<ResourceQuota>::namespaced(client.clone(), "team-a-dev")
        .patch(
            bundle::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "999"}}})),
        )
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(client, "team-a-qa")
        .patch(
            bundle::DEFAULT_DENY,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await
        .unwrap();
    let live = cluster.managed_objects().await.unwrap();
    let dev_drift = live.verify(&dev);
    assert_eq!(dev_drift, cluster.verify(&dev).await.unwrap());
    assert_eq!(dev_drift[0].object, "ResourceQuota/mtp-quota");
    let qa_drift = live.verify(&qa);
    assert_eq!(qa_drift.len(), 1);
    assert_eq!(qa_drift[0].object, "NetworkPolicy/mtp-default-deny");
    // Re-applying puts the label back (mtp-agent owns that field).
    cluster.apply(&qa).await.unwrap();
    assert_eq!(cluster.managed_objects().await.unwrap().verify(&qa), vec![]);
    sim.shutdown().await;
}

/// Server-side apply never removes a field another manager added with an
/// update; the agent's repair replaces the object when a forced apply left
/// it different (here: someone opens the default-deny policy).
#[tokio::test]
async fn a_field_added_by_another_manager_is_removed_by_replacing() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let b = Bundle::render(&config("team-a-dev", "team-a"));
    cluster.apply(&b).await.unwrap();
    let policies = Api::<NetworkPolicy>::namespaced(sim.client(), "team-a-dev");
    let mut opened = policies.get(bundle::DEFAULT_DENY).await.unwrap();
    opened.spec.as_mut().unwrap().ingress = Some(vec![Default::default()]);
    opened
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("edited-by".into(), "someone".into());
    opened.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    policies
        .replace(
            bundle::DEFAULT_DENY,
            &PostParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &opened,
        )
        .await
        .unwrap();

    cluster.apply(&b).await.unwrap();
    let left = cluster.verify(&b).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].object, "NetworkPolicy/mtp-default-deny");
    assert!(left[0].description.contains("spec.ingress"), "{left:?}");

    let ids = left.iter().map(|m| m.object.clone()).collect();
    assert!(cluster.replace_fenced(&b, &ids, || true).await.unwrap());
    assert!(cluster.verify(&b).await.unwrap().is_empty());
    let live = policies.get(bundle::DEFAULT_DENY).await.unwrap();
    assert!(live.spec.unwrap().ingress.is_none());
    assert_eq!(
        live.metadata.labels.unwrap()["edited-by"],
        "someone",
        "labels others set are kept"
    );
    assert_eq!(
        live.metadata.finalizers.unwrap(),
        ["example.com/keep"],
        "and so are their finalizers"
    );
    sim.shutdown().await;
}

/// A RoleBinding re-created by hand with another role cannot be changed
/// back in place (roleRef is immutable): apply replaces it as a whole.
#[tokio::test]
async fn a_binding_to_another_role_is_recreated() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let b = Bundle::render(&config("team-a-dev", "team-a"));
    cluster.apply(&b).await.unwrap();
    let bindings = Api::<RoleBinding>::namespaced(sim.client(), "team-a-dev");
    let mut swapped = bindings.get(bundle::CI_BINDING).await.unwrap();
    bindings
        .delete(bundle::CI_BINDING, &DeleteParams::default())
        .await
        .unwrap();
    swapped.role_ref.name = "admin".into();
    swapped.metadata.resource_version = None;
    swapped.metadata.uid = None;
    swapped.metadata.managed_fields = None;
    swapped.metadata.creation_timestamp = None;
    bindings
        .create(&PostParams::default(), &swapped)
        .await
        .unwrap();
    let err = bindings
        .patch(
            bundle::CI_BINDING,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": bundle::CI_BINDING},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            })),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field is immutable"), "{err}");

    let drift = cluster.verify(&b).await.unwrap();
    assert!(drift[0].description.contains("roleRef"), "{drift:?}");
    cluster.apply(&b).await.unwrap();
    assert!(cluster.verify(&b).await.unwrap().is_empty());
    assert_eq!(
        bindings
            .get(bundle::CI_BINDING)
            .await
            .unwrap()
            .role_ref
            .name,
        "edit"
    );
    sim.shutdown().await;
}
