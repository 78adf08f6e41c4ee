//! CRUD, namespaces, selectors and errors; every test runs on kube-sim and on the real apiserver.

mod common;

use std::time::Duration;

use common::{Cluster, api_err, on_both, within};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

on_both!(
    a_real_apiserver_would_create_get_and_list_namespaces,
    a_real_apiserver_would_answer_not_found_and_already_exists,
    a_real_apiserver_would_reject_a_namespace_name_that_is_not_a_dns_label,
    a_real_apiserver_would_refuse_objects_in_a_missing_namespace,
    a_real_apiserver_would_conflict_on_a_stale_resource_version,
    a_real_apiserver_would_merge_patch_and_remove_null_fields,
    a_real_apiserver_would_select_pods_by_node_name,
    a_real_apiserver_would_filter_lists_with_set_based_label_selectors,
    a_real_apiserver_would_page_lists_with_limit_and_continue,
    a_real_apiserver_would_terminate_a_namespace_and_remove_its_contents,
    // kube-sim holds the namespace in Terminating by its finalize delay; the real server by a
    // finalizer on an object inside it (kube-sim ignores object finalizers).
    a_real_apiserver_would_forbid_creating_in_a_terminating_namespace with kube_sim::SimOptions {
        namespace_finalize_delay: Duration::from_secs(3600),
        ..Default::default()
    },
    a_real_apiserver_would_arbitrate_lease_updates_by_resource_version,
    a_real_apiserver_would_omit_kind_and_api_version_from_list_items,
    a_real_apiserver_would_refuse_to_change_the_role_ref_of_a_role_binding,
);

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": "a"}}})).unwrap()
}

/// The names of a list's items that this test created, sorted.
fn our_names<K: kube::Resource + Clone>(
    c: &Cluster,
    list: kube::core::ObjectList<K>,
) -> Vec<String> {
    let mut v: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .filter(|n| c.is_ours(n))
        .collect();
    v.sort();
    v
}

/// Waits until namespace `name` is gone (the real namespace controller takes seconds).
async fn until_gone(nss: &Api<Namespace>, name: &str) {
    while nss.get_opt(name).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_real_apiserver_would_create_get_and_list_namespaces(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("team-a");
    within(async {
        let created = api
            .create(&PostParams::default(), &ns(&name))
            .await
            .unwrap();
        assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.resource_version.is_some());
        // Defaulting labels every namespace with its name (NetworkPolicies select on it).
        let labels = created.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.get("kubernetes.io/metadata.name"),
            Some(&name),
            "{labels:?}"
        );
        // The creator owns what it sent and the defaulted label, not what the server's
        // create strategy sets (spec.finalizers, status.phase).
        let mf = created.metadata.managed_fields.clone().unwrap();
        assert_eq!(mf.len(), 1, "{mf:?}");
        assert_eq!(mf[0].operation.as_deref(), Some("Update"));
        let fields = serde_json::to_value(mf[0].fields_v1.as_ref().unwrap()).unwrap();
        for owned in ["f:team", "f:kubernetes.io/metadata.name"] {
            assert!(
                fields["f:metadata"]["f:labels"].get(owned).is_some(),
                "{fields}"
            );
        }
        assert!(
            fields.get("f:spec").is_none() && fields.get("f:status").is_none(),
            "{fields}"
        );
        assert_eq!(
            created.spec.unwrap().finalizers,
            Some(vec!["kubernetes".to_string()])
        );
        assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
        let got = api.get(&name).await.unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid);
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(our_names(&c, list), vec![name.clone()]);
    })
    .await;
}

async fn a_real_apiserver_would_answer_not_found_and_already_exists(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let dup = c.name("dup");
    within(async {
        assert_eq!(
            api_err(api.get(&c.name("nope")).await),
            (404, "NotFound".into())
        );
        api.create(&PostParams::default(), &ns(&dup)).await.unwrap();
        assert_eq!(
            api_err(api.create(&PostParams::default(), &ns(&dup)).await),
            (409, "AlreadyExists".into())
        );
    })
    .await;
}

async fn a_real_apiserver_would_reject_a_namespace_name_that_is_not_a_dns_label(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        assert_eq!(
            api_err(api.create(&PostParams::default(), &ns("Bad_Name")).await),
            (422, "Invalid".into())
        );
        assert_eq!(
            api_err(
                api.create(&PostParams::default(), &ns(&c.name("a.b")))
                    .await
            ),
            (422, "Invalid".into())
        );
    })
    .await;
}

async fn a_real_apiserver_would_refuse_objects_in_a_missing_namespace(c: Cluster) {
    let sa: Api<ServiceAccount> = Api::namespaced(c.client(), &c.name("ghost"));
    within(async {
        let obj: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(
            api_err(sa.create(&PostParams::default(), &obj).await),
            (404, "NotFound".into())
        );
    })
    .await;
}

async fn a_real_apiserver_would_conflict_on_a_stale_resource_version(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("occ");
    within(async {
        let first = api
            .create(&PostParams::default(), &ns(&name))
            .await
            .unwrap();
        let mut a = first.clone();
        a.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "1".into());
        let updated = api
            .replace(&name, &PostParams::default(), &a)
            .await
            .unwrap();
        assert_ne!(
            updated.metadata.resource_version,
            first.metadata.resource_version
        );
        let mut stale = first.clone();
        stale
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "2".into());
        assert_eq!(
            api_err(api.replace(&name, &PostParams::default(), &stale).await),
            (409, "Conflict".into())
        );
    })
    .await;
}

async fn a_real_apiserver_would_merge_patch_and_remove_null_fields(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let name = c.name("mp");
    within(async {
        api.create(&PostParams::default(), &ns(&name))
            .await
            .unwrap();
        let p = json!({"metadata": {"labels": {"team": null, "env": "dev"}}});
        let out = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
        let labels = out.metadata.labels.unwrap();
        assert_eq!(labels.get("env").map(String::as_str), Some("dev"));
        assert!(!labels.contains_key("team"));
    })
    .await;
}

async fn a_real_apiserver_would_select_pods_by_node_name(c: Cluster) {
    let client = c.client();
    let w = c.name("w");
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns(&w))
            .await
            .unwrap();
        c.ready_for_pods(&w).await;
        let pods: Api<Pod> = Api::namespaced(client, &w);
        for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1")] {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
            }))
            .unwrap();
            pods.create(&PostParams::default(), &p).await.unwrap();
        }
        let on_n1 = pods
            .list(&ListParams::default().fields("spec.nodeName=n1"))
            .await
            .unwrap();
        let names: Vec<_> = on_n1
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "c"]);
        let not_a = pods
            .list(&ListParams::default().fields("metadata.name!=a"))
            .await
            .unwrap();
        assert_eq!(not_a.items.len(), 2);
        let bad = pods
            .list(&ListParams::default().fields("spec.bogus=x"))
            .await;
        assert_eq!(api_err(bad), (400, "BadRequest".into()));
    })
    .await;
}

async fn a_real_apiserver_would_filter_lists_with_set_based_label_selectors(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        for (name, env) in [
            ("p1", Some("prod")),
            ("d1", Some("dev")),
            ("s1", Some("staging")),
            ("none", None),
        ] {
            let mut labels = c.run_labels();
            if let Some(e) = env {
                labels["env"] = json!(e);
            }
            let n: Namespace = serde_json::from_value(
                json!({"metadata": {"name": c.name(name), "labels": labels}}),
            )
            .unwrap();
            api.create(&PostParams::default(), &n).await.unwrap();
        }
        let names = |l: kube::core::ObjectList<Namespace>| our_names(&c, l);
        let want = |v: &[&str]| v.iter().map(|n| c.name(n)).collect::<Vec<_>>();
        let lp = |s: &str| ListParams::default().labels(s);
        assert_eq!(
            names(api.list(&lp("env in (prod,dev)")).await.unwrap()),
            want(&["d1", "p1"])
        );
        assert_eq!(
            names(api.list(&lp("env notin (prod,dev)")).await.unwrap()),
            want(&["none", "s1"])
        );
        assert_eq!(
            names(api.list(&lp("env")).await.unwrap()),
            want(&["d1", "p1", "s1"])
        );
        assert_eq!(names(api.list(&lp("!env")).await.unwrap()), want(&["none"]));
        assert_eq!(
            names(
                api.list(&lp(&format!(
                    "env!=prod,{}=={}",
                    common::RUN_LABEL,
                    c.run()
                )))
                .await
                .unwrap()
            ),
            want(&["d1", "none", "s1"])
        );
        assert_eq!(
            names(api.list(&lp("env=staging")).await.unwrap()),
            want(&["s1"])
        );
    })
    .await;
}

async fn a_real_apiserver_would_page_lists_with_limit_and_continue(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        for i in 0..5 {
            let n: Namespace = serde_json::from_value(json!({
                "metadata": {"name": c.name(&format!("n{i}")), "labels": c.run_labels()}
            }))
            .unwrap();
            api.create(&PostParams::default(), &n).await.unwrap();
        }
        // The selector keeps the pages to this test's namespaces on the shared real server.
        let lp = || ListParams::default().labels(&c.run_selector());
        let page = api.list(&lp().limit(2)).await.unwrap();
        assert_eq!(page.items.len(), 2);
        let token = page.metadata.continue_.clone().expect("continue token");
        let rest = api
            .list(&lp().limit(10).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 3);
        assert!(rest.metadata.continue_.is_none());
    })
    .await;
}

async fn a_real_apiserver_would_terminate_a_namespace_and_remove_its_contents(c: Cluster) {
    let client = c.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let gone = c.name("gone");
    within(async {
        nss.create(&PostParams::default(), &ns(&gone))
            .await
            .unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &gone);
        let obj: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap();
        sa.create(&PostParams::default(), &obj).await.unwrap();
        let resp = nss.delete(&gone, &DeleteParams::default()).await.unwrap();
        let terminating = resp.left().expect("namespaces answer with the object");
        assert!(terminating.metadata.deletion_timestamp.is_some());
        // Namespaces are not deleted gracefully: no grace period is recorded.
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, None);
        assert_eq!(
            terminating.status.unwrap().phase.as_deref(),
            Some("Terminating")
        );
        // New content is refused while terminating (or 404 once it is gone).
        let other: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
        let (code, _) = api_err(sa.create(&PostParams::default(), &other).await);
        assert!(code == 403 || code == 404, "got {code}");
        until_gone(&nss, &gone).await;
        assert_eq!(api_err(sa.get("bot").await).0, 404);
    })
    .await;
}

async fn a_real_apiserver_would_forbid_creating_in_a_terminating_namespace(c: Cluster) {
    let client = c.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let held = c.name("held");
    let hold: Api<ConfigMap> = Api::namespaced(client.clone(), &held);
    within(async {
        nss.create(&PostParams::default(), &ns(&held))
            .await
            .unwrap();
        // An object the namespace controller cannot remove until its finalizer goes keeps a
        // real namespace Terminating (kube-sim: its finalize delay, see on_both! above).
        let pin: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "hold", "finalizers": ["kube-sim.test/hold"]}
        }))
        .unwrap();
        hold.create(&PostParams::default(), &pin).await.unwrap();
        nss.delete(&held, &DeleteParams::default()).await.unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &held);
        let obj: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
        assert_eq!(
            api_err(sa.create(&PostParams::default(), &obj).await),
            (403, "Forbidden".into())
        );
        // Let the real namespace go.
        if c.sim().is_none() {
            let p = json!({"metadata": {"finalizers": null}});
            hold.patch("hold", &PatchParams::default(), &Patch::Merge(&p))
                .await
                .unwrap();
            until_gone(&nss, &held).await;
        }
    })
    .await;
}

async fn a_real_apiserver_would_arbitrate_lease_updates_by_resource_version(c: Cluster) {
    use k8s_openapi::api::coordination::v1::Lease;
    let client = c.client();
    let system = c.name("mtp-system");
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns(&system))
            .await
            .unwrap();
        let leases: Api<Lease> = Api::namespaced(client, &system);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "mtp-agent"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        }))
        .unwrap();
        let held = leases.create(&PostParams::default(), &lease).await.unwrap();
        // Two candidates race from the same read: the first PUT wins, the second conflicts.
        let mut by_b = held.clone();
        by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
        let mut by_c = held.clone();
        by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
        leases
            .replace("mtp-agent", &PostParams::default(), &by_b)
            .await
            .unwrap();
        assert_eq!(
            api_err(
                leases
                    .replace("mtp-agent", &PostParams::default(), &by_c)
                    .await
            ),
            (409, "Conflict".into())
        );
        let now = leases.get("mtp-agent").await.unwrap();
        assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
    })
    .await;
}

async fn a_real_apiserver_would_omit_kind_and_api_version_from_list_items(c: Cluster) {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::WatchEvent;
    use serde_json::Value;
    let client = c.client();
    let li = c.name("li");
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns(&li))
            .await
            .unwrap();
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        Api::<NetworkPolicy>::namespaced(client.clone(), &li)
            .create(&PostParams::default(), &np)
            .await
            .unwrap();
        let get = |path: &str| {
            http::Request::get(path.to_string())
                .body(Vec::new())
                .unwrap()
        };
        // LIST: only the list has kind/apiVersion (kubernetes/kubernetes#3030). The field
        // selectors keep the cluster-wide lists to this test's objects on the real server.
        for (path, list_kind, api_version) in [
            (
                format!("/api/v1/namespaces?fieldSelector=metadata.name%3D{li}"),
                "NamespaceList",
                "v1",
            ),
            (
                format!("/apis/networking.k8s.io/v1/namespaces/{li}/networkpolicies"),
                "NetworkPolicyList",
                "networking.k8s.io/v1",
            ),
            (
                format!(
                    "/apis/networking.k8s.io/v1/networkpolicies?fieldSelector=metadata.namespace%3D{li}"
                ),
                "NetworkPolicyList",
                "networking.k8s.io/v1",
            ),
        ] {
            let list: Value = client.request(get(&path)).await.unwrap();
            assert_eq!(list["kind"], list_kind, "{list}");
            assert_eq!(list["apiVersion"], api_version, "{list}");
            let items = list["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{list}");
            let item = items[0].as_object().unwrap();
            assert!(!item.contains_key("kind"), "{path}: {list}");
            assert!(!item.contains_key("apiVersion"), "{path}: {list}");
            assert!(item.contains_key("metadata") && item.contains_key("spec"));
        }
        // GET keeps them.
        let one: Value = client
            .request(get(&format!(
                "/apis/networking.k8s.io/v1/namespaces/{li}/networkpolicies/deny"
            )))
            .await
            .unwrap();
        assert_eq!(one["kind"], "NetworkPolicy");
        assert_eq!(one["apiVersion"], "networking.k8s.io/v1");
        // Watch events keep them too.
        let watch = get(&format!(
            "/apis/networking.k8s.io/v1/namespaces/{li}/networkpolicies?watch=true&resourceVersion=0&timeoutSeconds=5"
        ));
        let mut events = client.request_events::<Value>(watch).await.unwrap().boxed();
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => {
                assert_eq!(o["kind"], "NetworkPolicy");
                assert_eq!(o["apiVersion"], "networking.k8s.io/v1");
            }
            other => panic!("expected ADDED, got {other:?}"),
        }
        // The typed kube-rs client still decodes the list.
        let typed = Api::<NetworkPolicy>::namespaced(client, &li)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(typed.items[0].metadata.name.as_deref(), Some("deny"));
    })
    .await;
}

async fn a_real_apiserver_would_refuse_to_change_the_role_ref_of_a_role_binding(c: Cluster) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let client = c.client();
    let rb = c.name("rb");
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns(&rb))
            .await
            .unwrap();
        let rbs: Api<RoleBinding> = Api::namespaced(client, &rb);
        let binding = |role: &str, user: &str| {
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "tenant"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]
            })
        };
        let pp = PatchParams::apply("mtp");
        let created = rbs
            .patch("tenant", &pp, &Patch::Apply(binding("edit", "alice")))
            .await
            .unwrap();
        // The refused roleRef, as the internal Go struct marshals (no json tags).
        let invalid = |r: Result<RoleBinding, kube::Error>, role: &str| match r {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
                assert_eq!(
                    s.message,
                    format!(
                        "RoleBinding.rbac.authorization.k8s.io \"tenant\" is invalid: roleRef: Invalid value: \
                         {{\"APIGroup\":\"rbac.authorization.k8s.io\",\"Kind\":\"Role\",\"Name\":\"{role}\"}}: \
                         field is immutable"
                    )
                );
            }
            other => panic!("expected 422 Invalid, got {other:?}"),
        };
        // PUT with the live resourceVersion.
        let mut put = created.clone();
        put.role_ref.name = "admin".into();
        invalid(rbs.replace("tenant", &PostParams::default(), &put).await, "admin");
        // Merge and strategic merge patches.
        let p = json!({"roleRef": {"name": "admin"}});
        invalid(rbs.patch("tenant", &PatchParams::default(), &Patch::Merge(&p)).await, "admin");
        invalid(rbs.patch("tenant", &PatchParams::default(), &Patch::Strategic(&p)).await, "admin");
        // Server-side apply, forced or not, by the owner or another manager.
        invalid(rbs.patch("tenant", &pp, &Patch::Apply(binding("admin", "alice"))).await, "admin");
        invalid(
            rbs.patch("tenant", &pp.clone().force(), &Patch::Apply(binding("view", "alice")))
                .await,
            "view",
        );
        invalid(
            rbs.patch(
                "tenant",
                &PatchParams::apply("other").force(),
                &Patch::Apply(binding("admin", "alice")),
            )
            .await,
            "admin",
        );
        let live = rbs.get("tenant").await.unwrap();
        assert_eq!(live.role_ref.name, "edit");
        assert_eq!(live.metadata.resource_version, created.metadata.resource_version);
        // Changing anything else is fine.
        let out = rbs
            .patch("tenant", &pp, &Patch::Apply(binding("edit", "bob")))
            .await
            .unwrap();
        assert_eq!(out.subjects.as_ref().unwrap()[0].name, "bob");
        let mut put = out.clone();
        put.subjects.as_mut().unwrap()[0].name = "carol".into();
        rbs.replace("tenant", &PostParams::default(), &put).await.unwrap();
    })
    .await;
}
