//! The agent's cluster scenarios, written once against a [`Ctx`] and run by
//! both suites: on kube-sim (`cluster.rs`) and on a real kube-apiserver
//! (`real_cluster/`), so the two can never drift apart.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mtp_agent::bundle::{self, Bundle};
use mtp_agent::kubernetes::{ClusterApi, FIELD_MANAGER, Removal};
use mtp_agent::lease::{Elector, LeaseConfig};
use mtp_proto::v1::NetworkConfig;
use serde_json::json;

use super::{Ctx, LEASE_NAMESPACE, config};

pub async fn apply_leaves_every_object_as_specified(ctx: Ctx) {
    let ns = ctx.namespace("dev");
    let tenant = ctx.tenant();
    let cluster = ClusterApi::new(ctx.client());
    let b = Bundle::render(&config(&ns, &tenant));
    cluster.apply(&b).await.expect("applies");
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);

    let client = ctx.client();
    let live = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap();
    let labels = live.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "mtp");
    assert_eq!(labels["mtp.io/tenant"], tenant.as_str());
    assert_eq!(labels["mtp.io/environment"], "dev");
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
    }
    let managers = live.metadata.managed_fields.unwrap();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")),
        "{managers:?}"
    );

    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
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

    let limits = Api::<LimitRange>::namespaced(client.clone(), &ns)
        .get(bundle::LIMITS_NAME)
        .await
        .unwrap();
    let item = &limits.spec.unwrap().limits[0];
    assert_eq!(item.default.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(item.max.as_ref().unwrap()["memory"].0, "4Gi");

    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let spec = policies
        .get(bundle::DEFAULT_DENY)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
    assert!(spec.ingress.unwrap_or_default().is_empty());
    let dns = policies.get(bundle::ALLOW_DNS).await.unwrap().spec.unwrap();
    let ports: Vec<_> = dns.egress.unwrap()[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.protocol.unwrap(), p.port.unwrap()))
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().any(|(p, _)| p == "UDP"));
    let same_tenant = policies
        .get(bundle::ALLOW_SAME_TENANT)
        .await
        .unwrap()
        .spec
        .unwrap();
    let selector = same_tenant.ingress.unwrap()[0].from.clone().unwrap()[0]
        .namespace_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(selector["mtp.io/tenant"], tenant.as_str());
    assert_eq!(selector["app.kubernetes.io/managed-by"], "mtp");

    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    let owners = bindings.get(bundle::OWNERS_BINDING).await.unwrap();
    assert_eq!(owners.role_ref.name, "admin");
    let subjects = owners.subjects.unwrap();
    assert_eq!(subjects[0].kind, "User");
    assert_eq!(subjects[0].name, "alice@example.com");
    assert_eq!(subjects[1].kind, "Group");
    let ci = bindings.get(bundle::CI_BINDING).await.unwrap();
    assert_eq!(ci.role_ref.name, "edit");
    Api::<ServiceAccount>::namespaced(client, &ns)
        .get(bundle::CI_ACCOUNT)
        .await
        .expect("CI service account");

    // Applying again changes nothing and still verifies.
    cluster.apply(&b).await.unwrap();
    assert_eq!(cluster.verify(&b).await.unwrap(), vec![]);
}

pub async fn verification_catches_deleted_and_edited_objects_and_apply_repairs_them(ctx: Ctx) {
    let ns = ctx.namespace("dev");
    let cluster = ClusterApi::new(ctx.client());
    let b = Bundle::render(&config(&ns, &ctx.tenant()));
    cluster.apply(&b).await.unwrap();

    let client = ctx.client();
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .delete(bundle::DEFAULT_DENY, &DeleteParams::default())
        .await
        .unwrap();
    // A tenant admin (another field manager) raises its own quota.
    Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .patch(
            bundle::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "1000"}}})),
        )
        .await
        .unwrap();
    // And adds an outsider to the owners.
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
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
    let hard = Api::<ResourceQuota>::namespaced(client, &ns)
        .get(bundle::QUOTA_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();
    assert_eq!(hard["pods"].0, "30");
}

pub async fn switched_off_policies_are_pruned_but_foreign_ones_are_kept(ctx: Ctx) {
    let ns = ctx.namespace("dev");
    let cluster = ClusterApi::new(ctx.client());
    let mut c = config(&ns, &ctx.tenant());
    cluster.apply(&Bundle::render(&c)).await.unwrap();
    // The tenant's own policy, without mtp's label: never mtp's to delete.
    let policies = Api::<NetworkPolicy>::namespaced(ctx.outsider(), &ns);
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
    for gone in [bundle::ALLOW_SAME_TENANT, bundle::ALLOW_INGRESS_CONTROLLER] {
        assert!(policies.get_opt(gone).await.unwrap().is_none(), "{gone}");
    }
    assert!(policies.get_opt("tenant-own").await.unwrap().is_some());
}

pub async fn a_foreign_namespace_is_neither_adopted_nor_deleted(ctx: Ctx) {
    let ns = ctx.namespace("foreign");
    let cluster = ClusterApi::new(ctx.client());
    let namespaces = Api::<Namespace>::all(ctx.outsider());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let err = cluster
        .apply(&Bundle::render(&config(&ns, &ctx.tenant())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refuse to adopt"), "{err}");
    assert!(
        Api::<ResourceQuota>::namespaced(ctx.client(), &ns)
            .get_opt(bundle::QUOTA_NAME)
            .await
            .unwrap()
            .is_none(),
        "nothing written into a namespace mtp does not own"
    );
    assert_eq!(
        cluster.remove_namespace(&ns).await.unwrap(),
        Removal::NotManaged
    );
    let live = namespaces.get_opt(&ns).await.unwrap().expect("still there");
    assert!(live.metadata.deletion_timestamp.is_none(), "not deleted");
    assert!(!cluster.managed_namespaces().await.unwrap().contains(&ns));
}

pub async fn removing_a_namespace_takes_everything_in_it(ctx: Ctx) {
    let dev = ctx.namespace("dev");
    let qa = ctx.namespace("qa");
    let cluster = ClusterApi::new(ctx.client());
    for ns in [&dev, &qa] {
        cluster
            .apply(&Bundle::render(&config(ns, &ctx.tenant())))
            .await
            .unwrap();
    }
    let managed = cluster.managed_namespaces().await.unwrap();
    assert!(
        managed.contains(&dev) && managed.contains(&qa),
        "{managed:?}"
    );

    // Namespace controllers take their time; a fast one may already be done
    // at the first look.
    let first = cluster.remove_namespace(&dev).await.unwrap();
    assert_ne!(first, Removal::NotManaged);
    if ctx.namespace_deletion_is_slow {
        assert_eq!(first, Removal::Terminating, "finalization takes a while");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        // Calling again while it terminates is safe and does not re-delete.
        match cluster.remove_namespace(&dev).await.unwrap() {
            Removal::Gone => break,
            Removal::Terminating => {}
            other => panic!("it was managed, unfenced, of no newer revision: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never went away"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        Api::<ResourceQuota>::namespaced(ctx.client(), &dev)
            .get_opt(bundle::QUOTA_NAME)
            .await
            .unwrap()
            .is_none()
    );
    let managed = cluster.managed_namespaces().await.unwrap();
    assert!(
        !managed.contains(&dev) && managed.contains(&qa),
        "{managed:?}"
    );
}

pub async fn exactly_one_contender_wins_a_free_lease(ctx: Ctx) {
    ensure_lease_namespace(ctx.client()).await;
    for round in 0..5 {
        let name = ctx.fresh_lease(&format!("race-{round}")).await;
        let mut electors: Vec<Elector> = (0..4)
            .map(|i| {
                Elector::new(
                    ctx.client(),
                    format!("{}-node-{i}", ctx.id),
                    lease(name.clone(), Duration::from_secs(5)),
                )
            })
            .collect();
        let results = futures::future::join_all(electors.iter_mut().map(|e| e.round())).await;
        assert_eq!(
            results.iter().filter(|held| **held).count(),
            1,
            "round {round}: {results:?}"
        );
        let fences: Vec<_> = electors.iter().map(|e| e.fence().is_held()).collect();
        assert_eq!(fences.iter().filter(|h| **h).count(), 1, "{fences:?}");
    }
}

pub async fn a_silent_holder_is_replaced_and_its_fence_closes_first(ctx: Ctx) {
    ensure_lease_namespace(ctx.client()).await;
    let duration = ctx.lease_duration;
    let name = ctx.fresh_lease("applier").await;
    let mut a = Elector::new(
        ctx.client(),
        format!("{}-node-a", ctx.id),
        lease(name.clone(), duration),
    );
    let mut b = Elector::new(
        ctx.client(),
        format!("{}-node-b", ctx.id),
        lease(name, duration),
    );
    assert!(a.round().await);
    assert!(!b.round().await);
    // While a renews, b never gets it.
    for _ in 0..5 {
        tokio::time::sleep(duration / 4).await;
        assert!(a.round().await);
        assert!(!b.round().await);
    }
    // a dies (stops renewing). b takes over only after a full lease
    // duration of silence, by which time a's fence has closed.
    let a_fence = a.fence();
    let died = tokio::time::Instant::now();
    loop {
        if b.round().await {
            break;
        }
        assert!(died.elapsed() < duration * 5, "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        died.elapsed() >= duration * 9 / 10,
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
}

/// Creates kube-system only where it is missing (kube-sim); a real cluster
/// always has it.
async fn ensure_lease_namespace(client: Client) {
    let api = Api::<Namespace>::all(client);
    if api.get_opt(LEASE_NAMESPACE).await.unwrap().is_some() {
        return;
    }
    eprintln!("{LEASE_NAMESPACE} does not exist (kube-sim starts without namespaces): creating it");
    let ns = serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        // Another test got there first.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating {LEASE_NAMESPACE}: {e}"),
    }
}

fn lease(name: String, duration: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: LEASE_NAMESPACE.into(),
        name,
        duration,
        retry_interval: Duration::from_millis(100),
    }
}
