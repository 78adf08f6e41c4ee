//! Namespace deletion as the real namespace controller does it: the tenant's
//! content and mtp's objects are removed by the controller (which the
//! admission policy lets through), and the agent reports the namespace gone
//! only once it is.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use mtp_agent::kubernetes::{ClusterApi, Removal};
use serde_json::json;

use crate::env::{Env, object};

#[tokio::test]
async fn the_namespace_controller_empties_it_and_only_then_is_it_gone() {
    let env = Env::create("alice@example.com").await;
    let owner = env.owner().await;
    let post = PostParams::default();
    env.api::<Secret>(owner.clone())
        .create(
            &post,
            &object(json!({ "metadata": { "name": "db" }, "stringData": { "k": "v" } })),
        )
        .await
        .unwrap();
    env.api::<ConfigMap>(owner.clone())
        .create(
            &post,
            &object(json!({ "metadata": { "name": "settings" }, "data": { "k": "v" } })),
        )
        .await
        .unwrap();
    env.api::<Deployment>(owner)
        .create(
            &post,
            &object(json!({
                "metadata": { "name": "web" },
                "spec": {
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": {
                        "metadata": { "labels": { "app": "web" } },
                        "spec": { "containers": [{ "name": "app", "image": "registry.example/app:1" }] },
                    },
                },
            })),
        )
        .await
        .unwrap();

    let cluster = ClusterApi::new(env.agent().await);
    let namespaces = Api::<Namespace>::all(env.admin().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut terminating_seen = 0;
    loop {
        match cluster.remove_namespace(&env.ns).await.unwrap() {
            Removal::Gone => break,
            Removal::Terminating => {
                terminating_seen += 1;
                // Reported Terminating: it must really still be there.
                let live = namespaces.get_opt(&env.ns).await.unwrap();
                if let Some(live) = live {
                    assert!(live.metadata.deletion_timestamp.is_some(), "{live:?}");
                }
            }
            other => panic!("a managed namespace of no newer revision: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the namespace controller did not finish {} in 120 s",
            env.ns
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        terminating_seen > 0,
        "a namespace with content is not gone at the first call"
    );
    assert!(namespaces.get_opt(&env.ns).await.unwrap().is_none());
    let admin = env.admin().await;
    let left = Api::<Secret>::namespaced(admin, &env.ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
}
