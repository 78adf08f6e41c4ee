//! Kubelet stats and fault injection (kube-sim only: the real server has neither).

mod common;

use std::time::Duration;

use common::{api_err, sim, within};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_sim::PodUsage;
use serde_json::json;

async fn setup(sim: &kube_sim::SimCluster) {
    let c = sim.client();
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Node>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "node-1"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c, "t");
    for (name, node) in [("web", "node-1"), ("db", "node-2")] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
}

async fn summary(sim: &kube_sim::SimCluster, node: &str) -> Result<serde_json::Value, kube::Error> {
    let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
        .body(Vec::new())
        .unwrap();
    sim.client().request::<serde_json::Value>(req).await
}

#[tokio::test]
async fn a_real_kubelet_would_report_usage_of_the_pods_on_its_node() {
    let sim = sim().await;
    within(async {
        setup(&sim).await;
        sim.set_pod_usage(
            "t",
            "web",
            PodUsage {
                cpu_nano_cores: 250_000_000,
                memory_working_set_bytes: 64 << 20,
            },
        );
        let s = summary(&sim, "node-1").await.unwrap();
        assert_eq!(s["node"]["nodeName"], "node-1");
        let pods = s["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 1, "only pods scheduled on node-1");
        assert_eq!(pods[0]["podRef"]["name"], "web");
        assert_eq!(pods[0]["cpu"]["usageNanoCores"], 250_000_000u64);
        assert_eq!(pods[0]["memory"]["workingSetBytes"], 64u64 << 20);
        assert_eq!(pods[0]["containers"][0]["name"], "main");
        assert_eq!(api_err(summary(&sim, "no-such-node").await).0, 404);
    })
    .await;
}

#[tokio::test]
async fn a_real_kubelet_would_report_usage_that_changes_over_time() {
    let sim = sim().await;
    within(async {
        setup(&sim).await;
        // A step profile: idle first, then busy — the test only checks the step happens.
        sim.set_pod_usage_profile("t", "web", |t| PodUsage {
            cpu_nano_cores: if t < Duration::from_millis(200) { 1 } else { 2 },
            memory_working_set_bytes: 1,
        });
        loop {
            let s = summary(&sim, "node-1").await.unwrap();
            if s["pods"][0]["cpu"]["usageNanoCores"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_forbid_a_verb_missing_from_rbac() {
    let sim = sim().await;
    within(async {
        setup(&sim).await;
        let np: Api<NetworkPolicy> = Api::namespaced(sim.client(), "t");
        let cfg = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {"podSelector": {}}});
        np.patch("p", &PatchParams::apply("mtp-agent"), &Patch::Apply(&cfg)).await.unwrap();
        sim.faults().deny("delete", "networkpolicies");
        assert_eq!(api_err(np.delete("p", &DeleteParams::default()).await), (403, "Forbidden".into()));
        assert!(np.get("p").await.is_ok(), "other verbs still work");
        sim.faults().allow("delete", "networkpolicies");
        np.delete("p", &DeleteParams::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_flaky_apiserver_would_fail_the_configured_share_of_requests() {
    let sim = sim().await;
    within(async {
        setup(&sim).await;
        sim.faults().set_error_rate("list", 1.0);
        let pods: Api<Pod> = Api::namespaced(sim.client(), "t");
        assert_eq!(api_err(pods.list(&ListParams::default()).await).0, 500);
        assert!(pods.get("web").await.is_ok());
        sim.faults().set_error_rate("list", 0.0);
        assert!(pods.list(&ListParams::default()).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_apiserver_would_fail_requests_then_come_back() {
    let sim = sim().await;
    within(async {
        setup(&sim).await;
        let pods: Api<Pod> = Api::namespaced(sim.client(), "t");
        sim.faults().unreachable_for(Duration::from_secs(3600));
        match pods.get("web").await {
            Err(kube::Error::Api(s)) => panic!("expected a transport error, got status {s:?}"),
            Err(_) => {}
            Ok(_) => panic!("expected failure while unreachable"),
        }
        sim.faults().reachable();
        // The client's pool may hold a dead connection; a retry gets through.
        let mut ok = false;
        for _ in 0..5 {
            if pods.get("web").await.is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok);
    })
    .await;
}

#[tokio::test]
async fn a_slow_apiserver_would_still_answer() {
    let sim = sim().await;
    within(async {
        sim.faults()
            .set_latency(Duration::from_millis(20), Duration::from_millis(10));
        let nss: Api<Namespace> = Api::all(sim.client());
        assert!(
            nss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_serve_https_and_check_the_bearer_token() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions {
        tls: true,
        bearer_token: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    within(async {
        assert!(sim.url().starts_with("https://"));
        let nss: Api<Namespace> = Api::all(sim.client());
        nss.list(&ListParams::default()).await.unwrap();
        let wrong = sim.kubeconfig_yaml().replace("s3cret", "wrong");
        let bad = kube_sim::client_from_kubeconfig(&wrong).await.unwrap();
        assert_eq!(
            api_err(
                Api::<Namespace>::all(bad)
                    .list(&ListParams::default())
                    .await
            )
            .0,
            401
        );
    })
    .await;
}
