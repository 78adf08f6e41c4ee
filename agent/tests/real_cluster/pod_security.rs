//! Pod Security admission `restricted`, as the environment namespace's labels
//! ask for, enforced by the real apiserver against the tenant's own pods.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::env::{Env, assert_refused, object, restricted_container, restricted_pod};

/// A pod `restricted` admits: non-root, no privilege escalation, every
/// capability dropped, the runtime's seccomp profile.
fn compliant(name: &str) -> Value {
    restricted_pod(name, vec![restricted_container("app", json!({}))])
}

/// `compliant` with one change merged in (objects merge, the rest replaces).
fn with(name: &str, change: Value) -> Value {
    let mut pod = compliant(name);
    merge(&mut pod, change);
    pod
}

fn merge(into: &mut Value, change: Value) {
    match (into, change) {
        (Value::Object(into), Value::Object(change)) => {
            for (k, v) in change {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, change) => *into = change,
    }
}

fn container(extra: Value) -> Value {
    let mut c = compliant("x")["spec"]["containers"][0].clone();
    merge(&mut c, extra);
    json!({ "spec": { "containers": [c] } })
}

#[tokio::test]
async fn restricted_refuses_every_privileged_pod_and_admits_a_compliant_one() {
    let env = Env::create("alice@example.com").await;
    let pods = env.api::<Pod>(env.owner().await);
    let post = PostParams::default();

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "privileged",
            // (Validation itself refuses privileged with allowPrivilegeEscalation=false.)
            container(
                json!({ "securityContext": { "privileged": true, "allowPrivilegeEscalation": null } }),
            ),
            "privileged",
        ),
        (
            "host-path",
            json!({ "spec": { "volumes": [{ "name": "root", "hostPath": { "path": "/" } }] } }),
            "uses restricted volume type \"hostPath\"",
        ),
        (
            "host-network",
            json!({ "spec": { "hostNetwork": true } }),
            "hostNetwork=true",
        ),
        (
            "host-pid",
            json!({ "spec": { "hostPID": true } }),
            "hostPID=true",
        ),
        (
            "host-ipc",
            json!({ "spec": { "hostIPC": true } }),
            "hostIPC=true",
        ),
        (
            "host-port",
            container(json!({ "ports": [{ "containerPort": 8080, "hostPort": 8080 }] })),
            "hostPort",
        ),
        (
            "added-capability",
            container(
                json!({ "securityContext": { "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] } } }),
            ),
            "NET_ADMIN",
        ),
        (
            "privilege-escalation",
            container(json!({ "securityContext": { "allowPrivilegeEscalation": true } })),
            "allowPrivilegeEscalation",
        ),
        (
            "root",
            json!({ "spec": { "securityContext": { "runAsNonRoot": false, "runAsUser": 0 } } }),
            "runAs",
        ),
    ];
    for (name, change, reason) in cases {
        let pod: Pod = object(with(name, change));
        assert_refused(
            &format!("pod {name}"),
            pods.create(&post, &pod).await,
            403,
            &["violates PodSecurity \"restricted:latest\"", reason],
        );
    }

    let admitted = pods
        .create(&post, &object(compliant("compliant")))
        .await
        .expect("a restricted-compliant pod is admitted");
    assert_eq!(
        admitted.metadata.namespace.as_deref(),
        Some(env.ns.as_str())
    );
}
