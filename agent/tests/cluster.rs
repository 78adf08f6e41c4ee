//! The agent's cluster side with the real kube-rs client against kube-sim:
//! what server-side apply leaves in the cluster, field by field; read-back
//! verification catching drift; pruning; never touching foreign objects;
//! the applier lease.
//!
//! Set `MTP_TEST_KUBECONFIG` to run the same scenarios against a real cluster
//! (see `real_cluster.rs`); here kube-sim stands in for K3s.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::bundle::{self, Bundle};
use mtp_agent::kubernetes::{Applied, ClusterApi, FIELD_MANAGER, Removal};
use mtp_agent::lease::{Elector, LeaseConfig};
use mtp_proto::v1::NetworkConfig;
use serde_json::json;

mod support;
use support::config;

async fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default())
        .await
        .expect("kube-sim starts")
}

#[tokio::test]
async fn apply_leaves_every_object_as_specified() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let b = Bundle::render(&config("team-a-dev", "team-a"));
    cluster.apply(&b).await.expect("applies");
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);

    let client = sim.client();
    let ns = Api::<Namespace>::all(client.clone())
        .get("team-a-dev")
        .await
        .unwrap();
    let labels = ns.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "mtp");
    assert_eq!(labels["mtp.io/tenant"], "team-a");
    assert_eq!(labels["mtp.io/environment"], "dev");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    // One field manager, by server-side apply.
    let managers = ns.metadata.managed_fields.unwrap();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")),
        "{managers:?}"
    );

    let quota = Api::<ResourceQuota>::namespaced(client.clone(), "team-a-dev")
        .get(bundle::QUOTA_NAME)
        .await
        .unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["requests.cpu"].0, "2");
    assert_eq!(hard["limits.memory"].0, "4Gi");
    assert_eq!(hard["requests.storage"].0, "20Gi");
    assert_eq!(hard["pods"].0, "30");
    assert_eq!(hard["services.nodeports"].0, "0");
    assert_eq!(hard["services.loadbalancers"].0, "0");
    assert_eq!(
        quota.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "mtp"
    );

    let limits = Api::<LimitRange>::namespaced(client.clone(), "team-a-dev")
        .get(bundle::LIMITS_NAME)
        .await
        .unwrap();
    let item = &limits.spec.unwrap().limits[0];
    assert_eq!(item.default.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(item.max.as_ref().unwrap()["memory"].0, "4Gi");

    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), "team-a-dev");
    let deny = policies.get(bundle::DEFAULT_DENY).await.unwrap();
    let spec = deny.spec.unwrap();
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
    assert!(spec.ingress.unwrap_or_default().is_empty());
    let dns = policies.get(bundle::ALLOW_DNS).await.unwrap().spec.unwrap();
    let rule = &dns.egress.unwrap()[0];
    let ports: Vec<_> = rule
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.protocol.unwrap(), p.port.unwrap()))
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().any(|(p, _)| p == "UDP"));
    let tenant = policies
        .get(bundle::ALLOW_SAME_TENANT)
        .await
        .unwrap()
        .spec
        .unwrap();
    let sel = tenant.ingress.unwrap()[0].from.clone().unwrap()[0]
        .namespace_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(sel["mtp.io/tenant"], "team-a");

    let bindings = Api::<RoleBinding>::namespaced(client.clone(), "team-a-dev");
    let owners = bindings.get(bundle::OWNERS_BINDING).await.unwrap();
    assert_eq!(owners.role_ref.name, "admin");
    let subjects = owners.subjects.unwrap();
    assert_eq!(subjects[0].kind, "User");
    assert_eq!(subjects[0].name, "alice@example.com");
    assert_eq!(subjects[1].kind, "Group");
    let ci = bindings.get(bundle::CI_BINDING).await.unwrap();
    assert_eq!(ci.role_ref.name, "edit");
    Api::<ServiceAccount>::namespaced(client, "team-a-dev")
        .get(bundle::CI_ACCOUNT)
        .await
        .expect("CI service account");

    // Applying the same bundle again changes nothing and still verifies.
    cluster.apply(&b).await.unwrap();
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);
    sim.shutdown().await;
}

#[tokio::test]
async fn verification_catches_deleted_and_edited_objects_and_apply_repairs_them() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let b = Bundle::render(&config("team-a-dev", "team-a"));
    cluster.apply(&b).await.unwrap();

    let client = sim.client();
    Api::<NetworkPolicy>::namespaced(client.clone(), "team-a-dev")
        .delete(bundle::DEFAULT_DENY, &DeleteParams::default())
        .await
        .unwrap();
    // A tenant admin (another field manager) raises its own quota.
    Api::<ResourceQuota>::namespaced(client.clone(), "team-a-dev")
        .patch(
            bundle::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "1000"}}})),
        )
        .await
        .unwrap();
    // And adds an outsider to the owners.
    Api::<RoleBinding>::namespaced(client.clone(), "team-a-dev")
        .patch(
            bundle::OWNERS_BINDING,
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]})),
        )
        .await
        .unwrap();

    let found = cluster.verify(&b).await.unwrap();
    let objects: Vec<_> = found.iter().map(|m| m.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "ResourceQuota/mtp-quota",
            "NetworkPolicy/mtp-default-deny",
            "RoleBinding/mtp-owners"
        ],
        "{found:?}"
    );
    assert!(found[0].description.contains("pods"), "{found:?}");
    assert_eq!(found[1].description, "deleted");

    cluster.apply(&b).await.unwrap();
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);
    let hard = Api::<ResourceQuota>::namespaced(client, "team-a-dev")
        .get(bundle::QUOTA_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();
    assert_eq!(hard["pods"].0, "30");
    sim.shutdown().await;
}

#[tokio::test]
async fn switched_off_policies_are_pruned_but_foreign_ones_are_kept() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let mut c = config("team-a-dev", "team-a");
    cluster.apply(&Bundle::render(&c)).await.unwrap();
    // The tenant's own policy, without mtp's label: never mtp's to delete.
    let policies = Api::<NetworkPolicy>::namespaced(sim.client(), "team-a-dev");
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "tenant-own"},
                "spec": {"podSelector": {}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    c.network = Some(NetworkConfig::default());
    let closed = Bundle::render(&c);
    cluster.apply(&closed).await.unwrap();
    assert_eq!(cluster.verify(&closed).await.unwrap(), vec![]);
    assert!(
        policies
            .get_opt(bundle::ALLOW_SAME_TENANT)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        policies
            .get_opt(bundle::ALLOW_INGRESS_CONTROLLER)
            .await
            .unwrap()
            .is_none()
    );
    assert!(policies.get_opt("tenant-own").await.unwrap().is_some());
    sim.shutdown().await;
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
            .remove_namespace_fenced("team-a-dev", 3, || true)
            .await
            .unwrap(),
        Removal::Newer(5)
    );
    assert_eq!(
        cluster
            .remove_namespace_fenced("team-a-dev", 5, || false)
            .await
            .unwrap(),
        Removal::Fenced
    );
    let mut next = newer.clone();
    next.revision = 6;
    next.quota.as_mut().unwrap().cpu_millis = 4000;
    assert_eq!(
        cluster
            .apply_fenced(&Bundle::render(&next), || false)
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
            .remove_namespace_fenced("team-a-dev", 6, || true)
            .await
            .unwrap(),
        Removal::Newer(6)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_foreign_namespace_is_neither_adopted_nor_deleted() {
    let sim = sim().await;
    let cluster = ClusterApi::new(sim.client());
    let namespaces = Api::<Namespace>::all(sim.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a-dev"}})).unwrap(),
        )
        .await
        .unwrap();
    let err = cluster
        .apply(&Bundle::render(&config("team-a-dev", "team-a")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refuse to adopt"), "{err}");
    assert!(
        sim.object("resourcequotas", "team-a-dev", bundle::QUOTA_NAME)
            .unwrap()
            .is_none(),
        "nothing written into a namespace mtp does not own"
    );
    assert_eq!(
        cluster.remove_namespace("team-a-dev").await.unwrap(),
        Removal::NotManaged
    );
    assert!(namespaces.get_opt("team-a-dev").await.unwrap().is_some());
    assert!(cluster.managed_namespaces().await.unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn removing_a_namespace_takes_everything_in_it() {
    let sim = SimCluster::start(SimOptions {
        namespace_finalize_delay: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let cluster = ClusterApi::new(sim.client());
    cluster
        .apply(&Bundle::render(&config("team-a-dev", "team-a")))
        .await
        .unwrap();
    cluster
        .apply(&Bundle::render(&config("team-a-qa", "team-a")))
        .await
        .unwrap();
    assert_eq!(cluster.managed_namespaces().await.unwrap().len(), 2);

    let first = cluster.remove_namespace("team-a-dev").await.unwrap();
    assert_eq!(first, Removal::Terminating, "finalization takes a while");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Calling again while it terminates is safe and does not re-delete.
        match cluster.remove_namespace("team-a-dev").await.unwrap() {
            Removal::Gone => break,
            Removal::Terminating => {}
            other => panic!("it was managed, unfenced, of no newer revision: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sim.object("resourcequotas", "team-a-dev", bundle::QUOTA_NAME)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        cluster.managed_namespaces().await.unwrap(),
        ["team-a-qa".to_string()].into()
    );
    sim.shutdown().await;
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

fn lease(duration_ms: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: "kube-system".into(),
        name: "mtp-agent-applier".into(),
        duration: Duration::from_millis(duration_ms),
        retry_interval: Duration::from_millis(50),
    }
}

async fn with_kube_system(sim: &SimCluster) {
    Api::<Namespace>::all(sim.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kube-system"}})).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn exactly_one_contender_wins_a_free_lease() {
    let sim = sim().await;
    with_kube_system(&sim).await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let mut electors: Vec<Elector> = (0..4)
            .map(|i| {
                let mut cfg = lease(2000);
                cfg.name = name.clone();
                Elector::new(sim.client(), format!("node-{i}"), cfg)
            })
            .collect();
        let results = futures::future::join_all(electors.iter_mut().map(|e| e.round())).await;
        assert_eq!(
            results.iter().filter(|held| **held).count(),
            1,
            "round {round}: {results:?}"
        );
        let fences: Vec<_> = electors.iter().map(|e| e.fence().is_held()).collect();
        assert_eq!(fences.iter().filter(|h| **h).count(), 1);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_silent_holder_is_replaced_and_its_fence_closes_first() {
    let sim = sim().await;
    with_kube_system(&sim).await;
    let mut a = Elector::new(sim.client(), "node-a".into(), lease(1000));
    let mut b = Elector::new(sim.client(), "node-b".into(), lease(1000));
    assert!(a.round().await);
    assert!(!b.round().await);
    // While a renews, b never gets it.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(a.round().await);
        assert!(!b.round().await);
    }
    // a dies (stops renewing). b takes over only after a full lease duration
    // of silence, by which time a's fence has closed.
    let a_fence = a.fence();
    let died = tokio::time::Instant::now();
    loop {
        if b.round().await {
            break;
        }
        assert!(died.elapsed() < Duration::from_secs(5), "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        died.elapsed() >= Duration::from_millis(900),
        "took over too early: {:?}",
        died.elapsed()
    );
    assert!(
        !a_fence.is_held(),
        "the old holder must stop writing before the takeover"
    );
    // a comes back: it does not get the lease back while b renews.
    assert!(!a.round().await);
    // A clean release lets the other take over at once.
    b.release().await;
    assert!(a.round().await);
    sim.shutdown().await;
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
    assert!(err.to_string().contains("cannot change roleRef"), "{err}");

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
