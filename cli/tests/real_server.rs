//! `mtp env create --wait` and `mtp env delete --wait` against a real
//! kube-apiserver and kube-controller-manager (mtp-kube-harness), through the
//! real agent authenticated as its shipped ServiceAccount: Ready once the
//! agent applied and read back the namespace the real server admitted;
//! Deleted only after the real namespace controller emptied and removed it.

use std::process::Output;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use kube::api::{Api, PostParams};
use mtp_e2e::TestPlane;
use mtp_e2e::fleet::TestAgent;
use mtp_kube_harness::KubeServer;
use serde_json::{Value, json};

/// Runs `mtp` with only the given settings (none of the caller's MTP_*).
async fn mtp(plane_url: &str, token: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mtp"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MTP_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path())
        .env("MTP_ADDR", plane_url)
        .env("MTP_CA_CERT", mtp_e2e::pki().ca_path())
        .env("MTP_TOKEN", token)
        .args(args);
    cmd.output().await.expect("mtp runs")
}

#[track_caller]
fn json_of(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "mtp failed ({:?}):\nstdout: {out}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_becomes_ready_and_is_deleted_on_a_real_api_server() {
    let server = KubeServer::shared();
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    // A tenant name of this run: the shared server outlives one test.
    let tenant = format!("real-{:06x}", rand_suffix());
    let namespace = format!("{tenant}-dev");

    let cluster = json_of(&mtp(&url, &admin, &["cluster", "create", "real", "-o", "json"]).await);
    let join = cluster["join_token"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(
        &mtp(
            &url,
            &admin,
            &[
                "tenant",
                "create",
                &tenant,
                "--owner-user",
                "alice@example.com",
                "--cpu",
                "8",
                "--memory",
                "16Gi",
                "--storage",
                "100Gi",
                "--pods",
                "200",
                "--max-environments",
                "5",
                "-o",
                "json",
            ],
        )
        .await,
    );
    let mut agent = TestAgent::start_on(server.agent().await, &url, &join, "node-1").await;

    let created = mtp(
        &url,
        &admin,
        &[
            "env",
            "create",
            &tenant,
            "dev",
            "--cluster",
            "real",
            "--profile",
            "small",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    let env = json_of(&created);
    assert_eq!(env["status"], "ready", "{env}");

    // What Ready promised is on the real server, as the bundle says.
    let admin_client = server.admin().await;
    let live = Api::<Namespace>::all(admin_client.clone())
        .get(&namespace)
        .await
        .expect("the namespace exists on the real server");
    let labels = live.metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["mtp.io/tenant"], tenant.as_str());
    Api::<ResourceQuota>::namespaced(admin_client.clone(), &namespace)
        .get("mtp-quota")
        .await
        .expect("the quota exists");

    // The owner puts something in it, so the namespace controller has work.
    let owner = server.impersonating("alice@example.com", &[]).await;
    Api::<Secret>::namespaced(owner, &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": "db" }, "stringData": { "k": "v" } }),
            )
            .unwrap(),
        )
        .await
        .expect("the owner writes into their environment");

    let deleted = mtp(&url, &admin, &["env", "delete", &tenant, "dev", "--wait"]).await;
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    // Deleted was reported only once the real namespace controller was done.
    assert!(
        Api::<Namespace>::all(admin_client)
            .get_opt(&namespace)
            .await
            .unwrap()
            .is_none(),
        "mtp said Deleted while the namespace still exists"
    );
    let got = json_of(&mtp(&url, &admin, &["env", "get", &tenant, "dev", "-o", "json"]).await);
    assert_eq!(got["status"], "deleted", "{got}");
    agent.stop().await;
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xff_ffff
}
