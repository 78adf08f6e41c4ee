//! The agent's usage source against kube-sim: the pods of its node are read
//! in pages (a node with thousands of pods is never listed at once), all of
//! them, and only those of the namespaces it manages and of its own node.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::usage::source::NodeSource;
use serde_json::json;

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn every_pod_of_the_node_is_read_across_pages() {
    let sim = SimCluster::start(SimOptions::default()).await.unwrap();
    let namespaces = Api::<Namespace>::all(sim.client());
    for ns in ["team-a-dev", "other"] {
        create(&namespaces, json!({ "metadata": { "name": ns } })).await;
    }
    let pod = |name: String, node: &str| {
        json!({
            "metadata": { "name": name },
            "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "app:1",
                "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } } }] },
        })
    };
    let managed = Api::<Pod>::namespaced(sim.client(), "team-a-dev");
    for i in 0..620 {
        create(&managed, pod(format!("p{i}"), "node-1")).await;
    }
    for i in 0..5 {
        create(&managed, pod(format!("elsewhere-{i}"), "node-2")).await;
    }
    let unmanaged = Api::<Pod>::namespaced(sim.client(), "other");
    create(&unmanaged, pod("foreign".into(), "node-1")).await;

    let credentials = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(sim.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let source = NodeSource::new(
        &credentials,
        &sim.kubelet_url("node-1"),
        sim.client(),
        "node-1".into(),
    )
    .unwrap();
    let pods = source
        .pods(&BTreeSet::from(["team-a-dev".to_owned()]))
        .await
        .unwrap();
    let names: BTreeSet<_> = pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pods.len(), 620, "every page, each pod once");
    assert_eq!(names.len(), 620);
    assert!(names.iter().all(|n| n.starts_with('p')), "{names:?}");
}
