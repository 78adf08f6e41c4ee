//! The agent's watches on a real kube-apiserver whose history is compacted
//! away: a watch that comes back after a cut gets 410 Gone, lists again, and
//! the drift made while it was away is still repaired — without waiting for
//! the periodic verification.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, PostParams};
use mtp_e2e::fleet::{FreezableProxy, TestAgent, eventually};
use mtp_e2e::{TestPlane, quota};
use mtp_kube_harness::{AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, KubeServer, Options};
use mtp_proto::v1 as pb;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn drift_made_while_a_watch_was_cut_and_compacted_away_is_repaired() {
    // Watches served by etcd itself, compacted every second: a watch resumed
    // from a version a few seconds old is told 410 Gone.
    let server = tokio::task::spawn_blocking(|| {
        KubeServer::start(Options {
            compaction_interval: Duration::from_secs(1),
            watch_cache: false,
            ..Options::default()
        })
    })
    .await
    .unwrap()
    .expect("a dedicated real apiserver starts");
    let upstream: std::net::SocketAddr =
        server.url().trim_start_matches("https://").parse().unwrap();
    let proxy = FreezableProxy::start(upstream).await;
    let agent_client = server
        .service_account_via(
            AGENT_NAMESPACE,
            AGENT_SERVICE_ACCOUNT,
            &format!("https://{}", proxy.addr),
        )
        .await;

    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin
        .create_tenant("team-a", quota("64", "128Gi", "1Ti", 2000, 10))
        .await
        .unwrap();
    admin.create_cluster("real").await.unwrap();
    let token = admin.join_token("real").await;
    let mut agent = TestAgent::start_on(agent_client, &plane.url(), &token, "node-1").await;
    // Only the watches may find the drift in time: no periodic check, and a
    // Lease that outlives the cut (losing and regaining it means a full pass).
    agent.stop().await;
    agent.config.reconciler.resync_interval = Duration::from_secs(3600);
    agent.config.lease.duration = Duration::from_secs(60);
    agent.restart().await;
    admin
        .create_env("team-a", "dev", "real", "small")
        .await
        .unwrap();
    eventually("team-a/dev to be Ready", WAIT, || {
        let mut admin = admin.clone();
        async move {
            (admin.env("team-a", "dev").await.status == pb::EnvironmentStatus::Ready as i32)
                .then_some(())
        }
    })
    .await;

    // The agent's connections to the API server are cut; meanwhile its
    // default-deny policy is deleted (by the agent's identity: nobody else
    // gets past the admission policy) and the history moves on and is
    // compacted.
    proxy.cut();
    let direct = server.agent().await;
    let policies = Api::<NetworkPolicy>::namespaced(direct.clone(), "team-a-dev");
    policies
        .delete("mtp-default-deny", &DeleteParams::default())
        .await
        .expect("deleting the policy behind the agent's back");
    let scratch = Api::<ConfigMap>::namespaced(server.admin().await, "default");
    for i in 0..5 {
        scratch
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    serde_json::json!({ "metadata": { "name": format!("tick-{i}") } }),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    proxy.mend();

    eventually(
        "the deleted policy to be restored after the watch re-listed",
        WAIT,
        || {
            let policies = policies.clone();
            async move {
                policies
                    .get_opt("mtp-default-deny")
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            }
        },
    )
    .await;
    agent.stop().await;
}
