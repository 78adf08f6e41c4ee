//! The environment's ResourceQuota and LimitRange as the real quota and
//! LimitRanger admission plugins enforce them, and the Service rules of the
//! bundle's admission policy.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::env::{Env, assert_refused, object, restricted_container, restricted_pod};

fn pod(name: &str, containers: Vec<Value>) -> Pod {
    object(restricted_pod(name, containers))
}

fn container(name: &str, resources: Value) -> Value {
    restricted_container(name, resources)
}

fn cpu(millis: u32) -> Value {
    json!({ "requests": { "cpu": format!("{millis}m") }, "limits": { "cpu": format!("{millis}m") } })
}

#[tokio::test]
async fn pods_get_limit_range_defaults_and_are_held_to_maximum_and_quota() {
    let env = Env::create("alice@example.com").await;
    let pods = env.api::<Pod>(env.owner().await);
    let post = PostParams::default();

    // No resources at all: LimitRanger fills in the environment's defaults.
    let defaulted = pods
        .create(&post, &pod("defaults", vec![container("app", json!({}))]))
        .await
        .expect("a pod without resources is admitted with the defaults");
    let resources = defaulted.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    let requests = resources.requests.unwrap();
    let limits = resources.limits.unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(requests["memory"].0, "128Mi");
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, "512Mi");
    assert_eq!(requests["ephemeral-storage"].0, "64Mi");
    assert_eq!(limits["ephemeral-storage"].0, "1Gi");

    assert_refused(
        "a container above the ephemeral-storage maximum",
        pods.create(
            &post,
            &pod(
                "scratch-hog",
                vec![container(
                    "app",
                    json!({ "limits": { "ephemeral-storage": "3Gi" } }),
                )],
            ),
        )
        .await,
        403,
        &["maximum ephemeral-storage usage per Container is 2Gi"],
    );

    // One container above the per-container maximum (2 CPUs).
    assert_refused(
        "a container above the LimitRange maximum",
        pods.create(&post, &pod("too-big", vec![container("app", cpu(3000))]))
            .await,
        403,
        &["maximum cpu usage per Container is 2"],
    );

    // Each container within the maximum, together above the quota (2 CPUs,
    // 100m of which the first pod already uses).
    assert_refused(
        "a pod over the namespace quota",
        pods.create(
            &post,
            &pod(
                "over-quota",
                vec![container("a", cpu(1500)), container("b", cpu(1500))],
            ),
        )
        .await,
        403,
        &["exceeded quota: mtp-quota", "requests.cpu"],
    );
}

fn service(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    spec["ports"] = json!([{ "port": 80 }]);
    object(json!({ "metadata": { "name": name }, "spec": spec }))
}

#[tokio::test]
async fn node_ports_load_balancers_and_external_ips_are_refused() {
    let env = Env::create("alice@example.com").await;
    let services = env.api::<Service>(env.owner().await);
    let post = PostParams::default();

    assert_refused(
        "a NodePort Service",
        services
            .create(&post, &service("np", json!({ "type": "NodePort" })))
            .await,
        403,
        &["exceeded quota: mtp-quota", "services.nodeports"],
    );
    assert_refused(
        "a LoadBalancer Service",
        services
            .create(&post, &service("lb", json!({ "type": "LoadBalancer" })))
            .await,
        403,
        &["exceeded quota: mtp-quota", "services.loadbalancers"],
    );
    // CVE-2020-8554: externalIPs let a tenant intercept another's traffic.
    assert_refused(
        "a Service with externalIPs",
        services
            .create(
                &post,
                &service("ext", json!({ "externalIPs": ["203.0.113.7"] })),
            )
            .await,
        403,
        &["externalIPs"],
    );
    // Adding them later is refused as well.
    services
        .create(&post, &service("plain", json!({})))
        .await
        .expect("a ClusterIP Service is admitted");
    assert_refused(
        "externalIPs added to an existing Service",
        services
            .patch(
                "plain",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "spec": { "externalIPs": ["203.0.113.7"] } })),
            )
            .await,
        403,
        &["externalIPs"],
    );
}

#[tokio::test]
async fn object_counts_protect_the_datastore() {
    let env = Env::create("alice@example.com").await;
    // The environment's config allows 3 Secrets.
    let secrets = env.api::<k8s_openapi::api::core::v1::Secret>(env.owner().await);
    let post = PostParams::default();
    for i in 0..3 {
        secrets
            .create(
                &post,
                &object(
                    json!({ "metadata": { "name": format!("s{i}") }, "stringData": { "k": "v" } }),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("secret {i} of 3: {e}"));
    }
    assert_refused(
        "a fourth Secret",
        secrets
            .create(
                &post,
                &object(json!({ "metadata": { "name": "s3" }, "stringData": { "k": "v" } })),
            )
            .await,
        403,
        &["exceeded quota: mtp-quota", "count/secrets"],
    );
}
