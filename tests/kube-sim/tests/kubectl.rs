//! The real `kubectl` binary against kube-sim: the one built from source with
//! the test apiserver (`mtp-kube-harness`), so no installed kubectl is needed
//! and nothing is skipped.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::within;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn kubectl_command() -> Command {
    let binary = mtp_kube_harness::kubectl_binary()
        .unwrap_or_else(|e| panic!("building kubectl from source (tests/kube-harness/tools): {e}"));
    Command::new(binary)
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = kubectl_command()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const BUNDLE: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    env: prod
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bot
  namespace: demo
  labels:
    env: prod
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: helper
  namespace: demo
  labels:
    env: dev
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: demo
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#;

#[tokio::test]
async fn kubectl_would_get_apply_delete_and_watch_as_on_a_real_cluster() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions {
        tls: true,
        bearer_token: Some("t0ken".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).unwrap();
    let file = dir.path().join("bundle.yaml");
    std::fs::write(&file, BUNDLE).unwrap();
    within(async {
        let out = kubectl(
            &kc,
            &["apply", "--server-side", "-f", file.to_str().unwrap()],
        )
        .await;
        assert!(out.contains("serverside-applied"), "{out}");
        let stored = sim
            .object("serviceaccounts", "demo", "bot")
            .unwrap()
            .unwrap();
        assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "kubectl");

        let out = kubectl(&kc, &["get", "namespaces"]).await;
        assert!(out.contains("demo") && out.contains("Active"), "{out}");
        let out = kubectl(
            &kc,
            &[
                "get",
                "sa",
                "-n",
                "demo",
                "-l",
                "env in (prod)",
                "-o",
                "name",
            ],
        )
        .await;
        assert_eq!(out.trim(), "serviceaccount/bot");
        let out = kubectl(
            &kc,
            &[
                "get",
                "sa",
                "-n",
                "demo",
                "-l",
                "env notin (prod)",
                "-o",
                "name",
            ],
        )
        .await;
        assert_eq!(out.trim(), "serviceaccount/helper");
        let out = kubectl(
            &kc,
            &["describe", "networkpolicy", "-n", "demo", "deny-all"],
        )
        .await;
        assert!(out.contains("deny-all"), "{out}");

        // get -w: read the initial line, make a change, read the change, then kill it.
        let mut child = kubectl_command()
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "sa", "-n", "demo", "-w", "--no-headers"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(lines.next_line().await.unwrap().expect("watch output"));
        }
        kubectl(&kc, &["delete", "sa", "-n", "demo", "helper"]).await;
        // kubectl prints the deleted object once more when its DELETED event arrives.
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("watch line")
            .unwrap()
            .unwrap();
        assert!(line.starts_with("helper"), "{line}");
        child.kill().await.unwrap();

        let out = kubectl(&kc, &["get", "sa", "-n", "demo", "-o", "name"]).await;
        assert_eq!(out.trim(), "serviceaccount/bot");
        kubectl(&kc, &["delete", "namespace", "demo"]).await;
        let out = kubectl(&kc, &["get", "namespaces", "-o", "name"]).await;
        assert_eq!(out.trim(), "");
    })
    .await;
}

/// `kubectl create`, `run` and `expose` send built-in kinds as protobuf and
/// never fall back to JSON: kube-sim decodes them (`src/protobuf.rs`).
#[tokio::test]
async fn kubectl_would_create_run_and_expose_with_protobuf_bodies() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).unwrap();
    within(async {
        kubectl(&kc, &["create", "namespace", "demo"]).await;
        kubectl(
            &kc,
            &[
                "create",
                "configmap",
                "cfg",
                "-n",
                "demo",
                "--from-literal=a=b",
            ],
        )
        .await;
        kubectl(
            &kc,
            &[
                "create",
                "secret",
                "generic",
                "s",
                "-n",
                "demo",
                "--from-literal=k=v",
            ],
        )
        .await;
        kubectl(&kc, &["create", "serviceaccount", "bot", "-n", "demo"]).await;
        kubectl(
            &kc,
            &[
                "run",
                "web",
                "-n",
                "demo",
                "--image=nginx",
                "--port=80",
                "--labels=app=web",
            ],
        )
        .await;
        kubectl(
            &kc,
            &[
                "expose",
                "pod",
                "web",
                "-n",
                "demo",
                "--port=8080",
                "--target-port=80",
            ],
        )
        .await;
        kubectl(
            &kc,
            &[
                "create",
                "deployment",
                "api",
                "-n",
                "demo",
                "--image=nginx",
                "--replicas=0",
            ],
        )
        .await;

        let object = |resource: &str, name: &str| {
            sim.object(resource, "demo", name)
                .unwrap()
                .unwrap_or_else(|| panic!("{resource}/{name} was not stored"))
        };
        assert_eq!(
            sim.object("namespaces", "", "demo").unwrap().unwrap()["kind"],
            "Namespace"
        );
        assert_eq!(object("configmaps", "cfg")["data"]["a"], "b");
        // Secret data arrives as bytes and is stored base64, as JSON has it.
        assert_eq!(object("secrets", "s")["data"]["k"], "dg==");
        assert_eq!(object("serviceaccounts", "bot")["kind"], "ServiceAccount");
        let pod = object("pods", "web");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        let service = object("services", "web");
        assert_eq!(service["spec"]["selector"]["app"], "web");
        assert_eq!(service["spec"]["ports"][0]["port"], 8080);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 80);
        // replicas is a pointer in Go: its zero travels and is kept.
        let deployment = object("deployments", "api");
        assert_eq!(deployment["spec"]["replicas"], 0, "{deployment}");
        assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "api");

        let out = kubectl(
            &kc,
            &[
                "get",
                "pods,services,deployments",
                "-n",
                "demo",
                "-o",
                "name",
            ],
        )
        .await;
        for name in ["pod/web", "service/web", "deployment.apps/api"] {
            assert!(out.contains(name), "{out}");
        }
    })
    .await;
}
