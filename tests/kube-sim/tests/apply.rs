//! Server-side apply and managedFields, driven by the real kube-rs client.

mod common;

use common::{api_err, sim, within};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn ns_config(labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "env-a", "labels": labels}})
}

#[tokio::test]
async fn a_real_apiserver_would_create_on_apply_and_record_the_manager() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let cfg = ns_config(json!({"pod-security.kubernetes.io/enforce": "restricted"}));
        let out = api
            .patch(
                "env-a",
                &PatchParams::apply("mtp-agent"),
                &Patch::Apply(&cfg),
            )
            .await
            .unwrap();
        let mf = out.metadata.managed_fields.unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0].manager.as_deref(), Some("mtp-agent"));
        assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
        let fields = serde_json::to_value(mf[0].fields_v1.as_ref().unwrap()).unwrap();
        assert_eq!(
            fields,
            json!({"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}}}})
        );
        // The stored object says the same.
        let stored = sim.object("namespaces", "", "env-a").unwrap().unwrap();
        assert_eq!(
            stored["metadata"]["managedFields"][0]["manager"],
            "mtp-agent"
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_remove_a_field_the_manager_stops_applying() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let pp = PatchParams::apply("mtp-agent");
        api.patch(
            "env-a",
            &pp,
            &Patch::Apply(ns_config(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
        let out = api
            .patch("env-a", &pp, &Patch::Apply(ns_config(json!({"a": "1"}))))
            .await
            .unwrap();
        let labels = out.metadata.labels.unwrap();
        assert!(labels.contains_key("a"));
        assert!(!labels.contains_key("b"));
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_keep_a_field_another_manager_still_owns() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.patch(
            "env-a",
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
        // Another manager applies the same value for b: shared ownership, no conflict.
        api.patch(
            "env-a",
            &PatchParams::apply("other"),
            &Patch::Apply(ns_config(json!({"b": "2"}))),
        )
        .await
        .unwrap();
        let out = api
            .patch(
                "env-a",
                &PatchParams::apply("mtp-agent"),
                &Patch::Apply(ns_config(json!({"a": "1"}))),
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

#[tokio::test]
async fn a_real_apiserver_would_conflict_when_another_manager_owns_the_field() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.patch(
            "env-a",
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(json!({"tier": "gold"}))),
        )
        .await
        .unwrap();
        let r = api
            .patch(
                "env-a",
                &PatchParams::apply("intruder"),
                &Patch::Apply(ns_config(json!({"tier": "free"}))),
            )
            .await;
        match r {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
                assert!(s.message.contains("mtp-agent"), "{}", s.message);
                assert!(s.message.contains(".metadata.labels.tier"), "{}", s.message);
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        // With force the intruder takes the field over.
        let out = api
            .patch(
                "env-a",
                &PatchParams::apply("intruder").force(),
                &Patch::Apply(ns_config(json!({"tier": "free"}))),
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

#[tokio::test]
async fn a_real_apiserver_would_let_an_update_take_ownership_without_conflict() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.patch(
            "env-a",
            &PatchParams::apply("mtp-agent"),
            &Patch::Apply(ns_config(json!({"tier": "gold"}))),
        )
        .await
        .unwrap();
        let mut obj = api.get("env-a").await.unwrap();
        obj.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "hacked".into());
        let pp = PostParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        let out = api.replace("env-a", &pp, &obj).await.unwrap();
        let mf = out.metadata.managed_fields.unwrap();
        let editor = mf
            .iter()
            .find(|e| e.manager.as_deref() == Some("kubectl-edit"))
            .expect("editor entry");
        assert_eq!(editor.operation.as_deref(), Some("Update"));
        // The agent's re-apply now conflicts (drift), and force repairs it.
        let cfg = ns_config(json!({"tier": "gold"}));
        assert_eq!(
            api_err(
                api.patch(
                    "env-a",
                    &PatchParams::apply("mtp-agent"),
                    &Patch::Apply(&cfg)
                )
                .await
            )
            .0,
            409
        );
        let fixed = api
            .patch(
                "env-a",
                &PatchParams::apply("mtp-agent").force(),
                &Patch::Apply(&cfg),
            )
            .await
            .unwrap();
        assert_eq!(fixed.metadata.labels.unwrap()["tier"], "gold");
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_require_a_field_manager_for_apply() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let r = api
            .patch(
                "env-a",
                &PatchParams::default(),
                &Patch::Apply(ns_config(json!({}))),
            )
            .await;
        // kube-rs refuses client-side before sending; the server answers 422 to raw requests.
        match r {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 422),
            Err(_) => {}
            Ok(_) => panic!("apply without fieldManager must fail"),
        }
        let req = http::Request::patch("/api/v1/namespaces/env-a")
            .header("content-type", "application/apply-patch+yaml")
            .body(serde_json::to_vec(&ns_config(json!({}))).unwrap())
            .unwrap();
        let r = sim.client().request::<Namespace>(req).await;
        assert_eq!(api_err(r), (422, "Invalid".into()));
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_treat_lists_as_atomic_and_maps_as_granular() {
    let sim = sim().await;
    let client = sim.client();
    within(async {
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "q"}})).unwrap())
            .await
            .unwrap();
        let rq: Api<ResourceQuota> = Api::namespaced(client.clone(), "q");
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

        let np: Api<NetworkPolicy> = Api::namespaced(client, "q");
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

#[tokio::test]
async fn a_real_apiserver_would_not_bump_the_version_for_an_identical_apply() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let cfg = ns_config(json!({"a": "1"}));
        let first = api
            .patch(
                "env-a",
                &PatchParams::apply("mtp-agent"),
                &Patch::Apply(&cfg),
            )
            .await
            .unwrap();
        let second = api
            .patch(
                "env-a",
                &PatchParams::apply("mtp-agent"),
                &Patch::Apply(&cfg),
            )
            .await
            .unwrap();
        assert_eq!(
            first.metadata.resource_version,
            second.metadata.resource_version
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_keep_a_field_added_by_an_update_on_a_forced_reapply_but_not_on_a_put()
 {
    let sim = sim().await;
    let client = sim.client();
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "np"}})).unwrap(),
            )
            .await
            .unwrap();
        let np: Api<NetworkPolicy> = Api::namespaced(client, "np");
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
        let live = sim
            .object("networkpolicies", "np", "default-deny")
            .unwrap()
            .unwrap();
        assert!(live.pointer("/spec/ingress").is_none(), "{live}");
    })
    .await;
}
