//! CRUD, namespaces and errors, driven by the real kube-rs client.

mod common;

use common::{api_err, sim, within};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": "a"}}})).unwrap()
}

#[tokio::test]
async fn a_real_apiserver_would_create_get_and_list_namespaces() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let created = api
            .create(&PostParams::default(), &ns("team-a"))
            .await
            .unwrap();
        assert_eq!(created.metadata.name.as_deref(), Some("team-a"));
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.resource_version.is_some());
        assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
        let got = api.get("team-a").await.unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid);
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_answer_not_found_and_already_exists() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        assert_eq!(api_err(api.get("nope").await), (404, "NotFound".into()));
        api.create(&PostParams::default(), &ns("dup"))
            .await
            .unwrap();
        assert_eq!(
            api_err(api.create(&PostParams::default(), &ns("dup")).await),
            (409, "AlreadyExists".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_reject_a_namespace_name_that_is_not_a_dns_label() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        assert_eq!(
            api_err(api.create(&PostParams::default(), &ns("Bad_Name")).await),
            (422, "Invalid".into())
        );
        assert_eq!(
            api_err(api.create(&PostParams::default(), &ns("a.b")).await),
            (422, "Invalid".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_refuse_objects_in_a_missing_namespace() {
    let sim = sim().await;
    let sa: Api<ServiceAccount> = Api::namespaced(sim.client(), "ghost");
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

#[tokio::test]
async fn a_real_apiserver_would_conflict_on_a_stale_resource_version() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let first = api
            .create(&PostParams::default(), &ns("occ"))
            .await
            .unwrap();
        let mut a = first.clone();
        a.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "1".into());
        let updated = api
            .replace("occ", &PostParams::default(), &a)
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
            api_err(api.replace("occ", &PostParams::default(), &stale).await),
            (409, "Conflict".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_merge_patch_and_remove_null_fields() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.create(&PostParams::default(), &ns("mp")).await.unwrap();
        let p = json!({"metadata": {"labels": {"team": null, "env": "dev"}}});
        let out = api
            .patch("mp", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
        let labels = out.metadata.labels.unwrap();
        assert_eq!(labels.get("env").map(String::as_str), Some("dev"));
        assert!(!labels.contains_key("team"));
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_select_pods_by_node_name() {
    let sim = sim().await;
    let client = sim.client();
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns("w"))
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "w");
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

#[tokio::test]
async fn a_real_apiserver_would_filter_lists_with_set_based_label_selectors() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        for (name, env) in [
            ("p1", Some("prod")),
            ("d1", Some("dev")),
            ("s1", Some("staging")),
            ("none", None),
        ] {
            let mut labels = json!({"app.kubernetes.io/managed-by": "mtp"});
            if let Some(e) = env {
                labels["env"] = json!(e);
            }
            let n: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                    .unwrap();
            api.create(&PostParams::default(), &n).await.unwrap();
        }
        let names = |l: kube::core::ObjectList<Namespace>| {
            let mut v: Vec<String> = l
                .items
                .into_iter()
                .map(|n| n.metadata.name.unwrap())
                .collect();
            v.sort();
            v
        };
        let lp = |s: &str| ListParams::default().labels(s);
        assert_eq!(
            names(api.list(&lp("env in (prod,dev)")).await.unwrap()),
            vec!["d1", "p1"]
        );
        assert_eq!(
            names(api.list(&lp("env notin (prod,dev)")).await.unwrap()),
            vec!["none", "s1"]
        );
        assert_eq!(
            names(api.list(&lp("env")).await.unwrap()),
            vec!["d1", "p1", "s1"]
        );
        assert_eq!(names(api.list(&lp("!env")).await.unwrap()), vec!["none"]);
        assert_eq!(
            names(
                api.list(&lp("env!=prod,app.kubernetes.io/managed-by==mtp"))
                    .await
                    .unwrap()
            ),
            vec!["d1", "none", "s1"]
        );
        assert_eq!(
            names(api.list(&lp("env=staging")).await.unwrap()),
            vec!["s1"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_page_lists_with_limit_and_continue() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        for i in 0..5 {
            api.create(&PostParams::default(), &ns(&format!("n{i}")))
                .await
                .unwrap();
        }
        let page = api.list(&ListParams::default().limit(2)).await.unwrap();
        assert_eq!(page.items.len(), 2);
        let token = page.metadata.continue_.clone().expect("continue token");
        let rest = api
            .list(&ListParams::default().limit(10).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 3);
        assert!(rest.metadata.continue_.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_terminate_a_namespace_and_remove_its_contents() {
    let sim = sim().await;
    let client = sim.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    within(async {
        nss.create(&PostParams::default(), &ns("gone"))
            .await
            .unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "gone");
        let obj: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap();
        sa.create(&PostParams::default(), &obj).await.unwrap();
        let resp = nss.delete("gone", &DeleteParams::default()).await.unwrap();
        let terminating = resp.left().expect("namespaces answer with the object");
        assert_eq!(
            terminating.status.unwrap().phase.as_deref(),
            Some("Terminating")
        );
        // New content is refused while terminating (or 404 once it is gone).
        let other: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
        let (code, _) = api_err(sa.create(&PostParams::default(), &other).await);
        assert!(code == 403 || code == 404, "got {code}");
        loop {
            match nss.get_opt("gone").await.unwrap() {
                None => break,
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert_eq!(api_err(sa.get("bot").await).0, 404);
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_forbid_creating_in_a_terminating_namespace() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions {
        namespace_finalize_delay: std::time::Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = sim.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    within(async {
        nss.create(&PostParams::default(), &ns("held"))
            .await
            .unwrap();
        nss.delete("held", &DeleteParams::default()).await.unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "held");
        let obj: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
        assert_eq!(
            api_err(sa.create(&PostParams::default(), &obj).await),
            (403, "Forbidden".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_arbitrate_lease_updates_by_resource_version() {
    use k8s_openapi::api::coordination::v1::Lease;
    let sim = sim().await;
    let client = sim.client();
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns("mtp-system"))
            .await
            .unwrap();
        let leases: Api<Lease> = Api::namespaced(client, "mtp-system");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "mtp-agent"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        }))
        .unwrap();
        let held = leases.create(&PostParams::default(), &lease).await.unwrap();
        // Two candidates race from the same read: the first PUT wins, the second conflicts.
        let mut b = held.clone();
        b.spec.as_mut().unwrap().holder_identity = Some("b".into());
        let mut c = held.clone();
        c.spec.as_mut().unwrap().holder_identity = Some("c".into());
        leases
            .replace("mtp-agent", &PostParams::default(), &b)
            .await
            .unwrap();
        assert_eq!(
            api_err(
                leases
                    .replace("mtp-agent", &PostParams::default(), &c)
                    .await
            ),
            (409, "Conflict".into())
        );
        let now = leases.get("mtp-agent").await.unwrap();
        assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_omit_kind_and_api_version_from_list_items() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::WatchEvent;
    use serde_json::Value;
    let sim = sim().await;
    let client = sim.client();
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns("li"))
            .await
            .unwrap();
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        Api::<NetworkPolicy>::namespaced(client.clone(), "li")
            .create(&PostParams::default(), &np)
            .await
            .unwrap();
        let get = |path: &str| {
            http::Request::get(path.to_string())
                .body(Vec::new())
                .unwrap()
        };
        // LIST: only the list has kind/apiVersion (kubernetes/kubernetes#3030).
        for (path, list_kind, api_version) in [
            ("/api/v1/namespaces", "NamespaceList", "v1"),
            (
                "/apis/networking.k8s.io/v1/namespaces/li/networkpolicies",
                "NetworkPolicyList",
                "networking.k8s.io/v1",
            ),
            (
                "/apis/networking.k8s.io/v1/networkpolicies",
                "NetworkPolicyList",
                "networking.k8s.io/v1",
            ),
        ] {
            let list: Value = client.request(get(path)).await.unwrap();
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
            .request(get("/apis/networking.k8s.io/v1/namespaces/li/networkpolicies/deny"))
            .await
            .unwrap();
        assert_eq!(one["kind"], "NetworkPolicy");
        assert_eq!(one["apiVersion"], "networking.k8s.io/v1");
        // Watch events keep them too.
        let watch = get(
            "/apis/networking.k8s.io/v1/namespaces/li/networkpolicies?watch=true&resourceVersion=0&timeoutSeconds=5",
        );
        let mut events = client.request_events::<Value>(watch).await.unwrap().boxed();
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => {
                assert_eq!(o["kind"], "NetworkPolicy");
                assert_eq!(o["apiVersion"], "networking.k8s.io/v1");
            }
            other => panic!("expected ADDED, got {other:?}"),
        }
        // The typed kube-rs client still decodes the list.
        let typed = Api::<NetworkPolicy>::namespaced(client, "li")
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(typed.items[0].metadata.name.as_deref(), Some("deny"));
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_refuse_to_change_the_role_ref_of_a_role_binding() {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let sim = sim().await;
    let client = sim.client();
    within(async {
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns("rb"))
            .await
            .unwrap();
        let rbs: Api<RoleBinding> = Api::namespaced(client, "rb");
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
        let invalid = |r: Result<RoleBinding, kube::Error>| match r {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
                assert!(
                    s.message.starts_with(
                        "RoleBinding.rbac.authorization.k8s.io \"tenant\" is invalid: roleRef: Invalid value: "
                    ),
                    "{}",
                    s.message
                );
                assert!(s.message.ends_with(": cannot change roleRef"), "{}", s.message);
            }
            other => panic!("expected 422 Invalid, got {other:?}"),
        };
        // PUT with the live resourceVersion.
        let mut put = created.clone();
        put.role_ref.name = "admin".into();
        invalid(rbs.replace("tenant", &PostParams::default(), &put).await);
        // Merge and strategic merge patches.
        let p = json!({"roleRef": {"name": "admin"}});
        invalid(rbs.patch("tenant", &PatchParams::default(), &Patch::Merge(&p)).await);
        invalid(rbs.patch("tenant", &PatchParams::default(), &Patch::Strategic(&p)).await);
        // Server-side apply, forced or not, by the owner or another manager.
        invalid(rbs.patch("tenant", &pp, &Patch::Apply(binding("admin", "alice"))).await);
        invalid(
            rbs.patch("tenant", &pp.clone().force(), &Patch::Apply(binding("view", "alice")))
                .await,
        );
        invalid(
            rbs.patch(
                "tenant",
                &PatchParams::apply("other").force(),
                &Patch::Apply(binding("admin", "alice")),
            )
            .await,
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
