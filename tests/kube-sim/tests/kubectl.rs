//! The real `kubectl` binary against kube-sim (skipped when kubectl is not on PATH).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::within;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
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
    if !kubectl_available() {
        println!("skipping: kubectl is not on PATH");
        return;
    }
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
        let mut child = Command::new("kubectl")
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
