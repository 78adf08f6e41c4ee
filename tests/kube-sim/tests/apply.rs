//! Server-side apply and managedFields; every test runs on kube-sim and on the real apiserver.

mod common;

use common::{Cluster, api_err, on_both, within};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

on_both!(
    a_real_apiserver_would_create_on_apply_and_record_the_manager,
    a_real_apiserver_would_remove_a_field_the_manager_stops_applying,
    a_real_apiserver_would_keep_a_field_another_manager_still_owns,
    a_real_apiserver_would_conflict_when_another_manager_owns_the_field,
    a_real_apiserver_would_let_an_update_take_ownership_without_conflict,
    a_real_apiserver_would_require_a_field_manager_for_apply,
    a_real_apiserver_would_treat_lists_as_atomic_and_maps_as_granular,
    a_real_apiserver_would_not_bump_the_version_for_an_identical_apply,
    a_real_apiserver_would_keep_a_field_added_by_an_update_on_a_forced_reapply_but_not_on_a_put,
);

fn ns_config(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// The `Status` of a 409 apply conflict.
fn conflict<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict" => *s,
        other => panic!("expected an apply conflict, got {other:?}"),
    }
}

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

async fn a_real_apiserver_would_create_on_apply_and_record_the_manager(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        let cfg = ns_config(
            &name,
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        );
        let out = api
            .patch(&name, &PatchParams::apply("mtp-agent"), &Patch::Apply(&cfg))
            .await
            .unwrap();
        let mf = out.metadata.managed_fields.unwrap();
        assert_eq!(mf.len(), 1, "{mf:?}");
        assert_eq!(mf[0].manager.as_deref(), Some("mtp-agent"));
        assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
        let fields = serde_json::to_value(mf[0].fields_v1.as_ref().unwrap()).unwrap();
        assert_eq!(
            fields,
            json!({"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}}}})
        );
        // The stored object says the same.
        if let Some(sim) = c.sim() {
            let stored = sim.object("namespaces", "", &name).unwrap().unwrap();
            assert_eq!(
                stored["metadata"]["managedFields"][0]["manager"],
                "mtp-agent"
            );
        }
    })
    .await;
}

async fn a_real_apiserver_would_remove_a_field_the_manager_stops_applying(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        let pp = PatchParams::apply("mtp-agent");
        api.patch(
            &name,
            &pp,
            &Patch::Apply(ns_config(&name, json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
        let out = api
            .patch(
                &name,
                &pp,
                &Patch::Apply(ns_config(&name, json!({"a": "1"}))),
            )
            .await
            .unwrap();
        let labels = out.metadata.labels.unwrap();
        assert!(labels.contains_key("a"));
        assert!(!labels.contains_key("b"));
    })
    .await;
}

async fn a_real_apiserver_would_keep_a_field_another_manager_still_owns(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        api.patch(
            &name,
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(&name, json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
        // Another manager applies the same value for b: shared ownership, no conflict.
        api.patch(
            &name,
            &PatchParams::apply("other"),
            &Patch::Apply(ns_config(&name, json!({"b": "2"}))),
        )
        .await
        .unwrap();
        let out = api
            .patch(
                &name,
                &PatchParams::apply("mtp-agent"),
                &Patch::Apply(ns_config(&name, json!({"a": "1"}))),
            )
            .await
            .unwrap();
        assert_eq!(
            out.metadata.labels.unwrap().get("b").map(String::as_str),
            Some("2")
        );
    })
    .await;
}

async fn a_real_apiserver_would_conflict_when_another_manager_owns_the_field(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        api.patch(
            &name,
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(&name, json!({"tier": "gold", "zone": "a"}))),
        )
        .await
        .unwrap();
        // One conflict: one line naming the applier (an applier has no "using <version>").
        let r = api
            .patch(
                &name,
                &PatchParams::apply("intruder"),
                &Patch::Apply(ns_config(&name, json!({"tier": "free"}))),
            )
            .await;
        let s = conflict(r);
        assert_eq!(
            s.message,
            "Apply failed with 1 conflict: conflict with \"mtp-agent\": .metadata.labels.tier"
        );
        let causes = s.details.unwrap().causes;
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            (
                causes[0].reason.as_str(),
                causes[0].message.as_str(),
                causes[0].field.as_str()
            ),
            (
                "FieldManagerConflict",
                "conflict with \"mtp-agent\"",
                ".metadata.labels.tier"
            )
        );
        // Several: grouped by owner.
        let r = api
            .patch(
                &name,
                &PatchParams::apply("intruder"),
                &Patch::Apply(ns_config(&name, json!({"tier": "free", "zone": "b"}))),
            )
            .await;
        assert_eq!(
            conflict(r).message,
            "Apply failed with 2 conflicts: conflicts with \"mtp-agent\":\n- .metadata.labels.tier\n- .metadata.labels.zone"
        );
        // With force the intruder takes the fields over.
        let out = api
            .patch(
                &name,
                &PatchParams::apply("intruder").force(),
                &Patch::Apply(ns_config(&name, json!({"tier": "free", "zone": "b"}))),
            )
            .await
            .unwrap();
        assert_eq!(out.metadata.labels.unwrap()["tier"], "free");
        let mf = out.metadata.managed_fields.unwrap();
        assert!(
            mf.iter().all(|e| e.manager.as_deref() != Some("mtp-agent")),
            "{mf:?}"
        );
    })
    .await;
}

async fn a_real_apiserver_would_let_an_update_take_ownership_without_conflict(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        api.patch(
            &name,
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(&name, json!({"tier": "gold"}))),
        )
        .await
        .unwrap();
        let mut obj = api.get(&name).await.unwrap();
        obj.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "hacked".into());
        let pp = PostParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        let out = api.replace(&name, &pp, &obj).await.unwrap();
        let mf = out.metadata.managed_fields.unwrap();
        let editor = mf
            .iter()
            .find(|e| e.manager.as_deref() == Some("kubectl-edit"))
            .expect("editor entry");
        assert_eq!(editor.operation.as_deref(), Some("Update"));
        // The agent's re-apply now conflicts (drift), and force repairs it. An updater is
        // named with the version it wrote.
        let cfg = ns_config(&name, json!({"tier": "gold"}));
        let s = conflict(
            api.patch(&name, &PatchParams::apply("mtp-agent"), &Patch::Apply(&cfg))
                .await,
        );
        assert_eq!(
            s.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .metadata.labels.tier"
        );
        let fixed = api
            .patch(
                &name,
                &PatchParams::apply("mtp-agent").force(),
                &Patch::Apply(&cfg),
            )
            .await
            .unwrap();
        assert_eq!(fixed.metadata.labels.unwrap()["tier"], "gold");
    })
    .await;
}

async fn a_real_apiserver_would_require_a_field_manager_for_apply(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        let r = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Apply(ns_config(&name, json!({}))),
            )
            .await;
        // kube-rs refuses client-side before sending; the server answers 422 to raw requests.
        match r {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 422),
            Err(_) => {}
            Ok(_) => panic!("apply without fieldManager must fail"),
        }
        let req = http::Request::patch(format!("/api/v1/namespaces/{name}"))
            .header("content-type", "application/apply-patch+yaml")
            .body(serde_json::to_vec(&ns_config(&name, json!({}))).unwrap())
            .unwrap();
        let r = c.client().request::<Namespace>(req).await;
        assert_eq!(api_err(r), (422, "Invalid".into()));
    })
    .await;
}

async fn a_real_apiserver_would_treat_lists_as_atomic_and_maps_as_granular(c: Cluster) {
    let client = c.client();
    let ns = c.name("q");
    within(async {
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(&PostParams::default(), &namespace(&ns))
            .await
            .unwrap();
        let rq: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
        let quota = |hard: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota"}, "spec": {"hard": hard}})
        };
        rq.patch("quota", &PatchParams::apply("mtp-agent"), &Patch::Apply(quota(json!({"pods": "10", "requests.cpu": "2"}))))
            .await
            .unwrap();
        // A second manager adds its own key in the same map: both keys survive.
        rq.patch("quota", &PatchParams::apply("ops"), &Patch::Apply(quota(json!({"services": "3"}))))
            .await
            .unwrap();
        let out = rq.get("quota").await.unwrap();
        let hard = out.spec.unwrap().hard.unwrap();
        assert_eq!(hard.len(), 3);

        let np: Api<NetworkPolicy> = Api::namespaced(client, &ns);
        let pol = |types: serde_json::Value| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"},
                   "spec": {"podSelector": {}, "policyTypes": types}})
        };
        np.patch("deny", &PatchParams::apply("mtp-agent"), &Patch::Apply(pol(json!(["Ingress", "Egress"]))))
            .await
            .unwrap();
        let out = np
            .patch("deny", &PatchParams::apply("mtp-agent"), &Patch::Apply(pol(json!(["Ingress"]))))
            .await
            .unwrap();
        assert_eq!(out.spec.unwrap().policy_types.unwrap(), vec!["Ingress".to_string()]);
        // Another manager replacing the atomic list conflicts.
        let r = np.patch("deny", &PatchParams::apply("ops"), &Patch::Apply(pol(json!(["Egress"])))).await;
        assert_eq!(api_err(r).0, 409);
    })
    .await;
}

async fn a_real_apiserver_would_not_bump_the_version_for_an_identical_apply(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("env-a");
    within(async {
        let cfg = ns_config(&name, json!({"a": "1"}));
        let first = api
            .patch(&name, &PatchParams::apply("mtp-agent"), &Patch::Apply(&cfg))
            .await
            .unwrap();
        let second = api
            .patch(&name, &PatchParams::apply("mtp-agent"), &Patch::Apply(&cfg))
            .await
            .unwrap();
        assert_eq!(
            first.metadata.resource_version,
            second.metadata.resource_version
        );
    })
    .await;
}

async fn a_real_apiserver_would_keep_a_field_added_by_an_update_on_a_forced_reapply_but_not_on_a_put(
    c: Cluster,
) {
    let client = c.client();
    let ns = c.name("np");
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace(&ns))
            .await
            .unwrap();
        let np: Api<NetworkPolicy> = Api::namespaced(client, &ns);
        let desired = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        });
        let mtp = PatchParams::apply("mtp").force();
        np.patch("default-deny", &mtp, &Patch::Apply(&desired))
            .await
            .unwrap();
        // Someone else opens the policy with a PUT (an allow-all ingress rule).
        let mut edited = np.get("default-deny").await.unwrap();
        edited.spec.as_mut().unwrap().ingress = Some(vec![Default::default()]);
        let pp = PostParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        let edited = np.replace("default-deny", &pp, &edited).await.unwrap();
        assert_eq!(edited.spec.unwrap().ingress.map(|i| i.len()), Some(1));
        let owns_ingress = |p: &NetworkPolicy, manager: &str| {
            p.metadata
                .managed_fields
                .iter()
                .flatten()
                .filter(|e| e.manager.as_deref() == Some(manager))
                .any(|e| {
                    let f = serde_json::to_value(e.fields_v1.as_ref().unwrap()).unwrap();
                    f.pointer("/f:spec/f:ingress").is_some()
                })
        };

        // A forced re-apply that does not mention spec.ingress leaves it alone: the field
        // belongs to kubectl-edit, and apply only removes fields its own manager dropped.
        let reapplied = np
            .patch("default-deny", &mtp, &Patch::Apply(&desired))
            .await
            .unwrap();
        assert!(owns_ingress(&reapplied, "kubectl-edit"));
        let spec = reapplied.clone().spec.unwrap();
        assert_eq!(spec.ingress.map(|i| i.len()), Some(1));
        assert_eq!(
            spec.policy_types.unwrap(),
            vec!["Ingress".to_string(), "Egress".to_string()]
        );

        // A PUT by mtp of the full desired object at the live version replaces it: gone.
        let mut put: NetworkPolicy = serde_json::from_value(desired.clone()).unwrap();
        put.metadata.resource_version = reapplied.metadata.resource_version.clone();
        let pp = PostParams {
            field_manager: Some("mtp".into()),
            ..Default::default()
        };
        let replaced = np.replace("default-deny", &pp, &put).await.unwrap();
        assert!(!owns_ingress(&replaced, "kubectl-edit"));
        assert!(replaced.spec.as_ref().unwrap().ingress.is_none());
        if let Some(sim) = c.sim() {
            let live = sim
                .object("networkpolicies", &ns, "default-deny")
                .unwrap()
                .unwrap();
            assert!(live.pointer("/spec/ingress").is_none(), "{live}");
        }
        // The same through the API (what the store check above shows on kube-sim).
        let live = np.get("default-deny").await.unwrap();
        assert!(live.spec.unwrap().ingress.is_none());
    })
    .await;
}
