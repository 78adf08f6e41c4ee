//! Real agents (the `mtp-agent` library) on kube-sim clusters against the real
//! control plane on a real PostgreSQL: Ready and Deleted only once the
//! cluster says so, drift repaired and audited, one applier per cluster with
//! takeover, and convergence across control-plane, agent and PostgreSQL
//! restarts.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::SimCluster;
use mtp_control_plane::config::Config;
use mtp_e2e::fleet::{self, TestAgent, eventually};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;

const WAIT: Duration = Duration::from_secs(20);

async fn setup(plane: &TestPlane, clusters: &[&str]) -> Clients {
    let team = |name| (name, quota("64", "128Gi", "1Ti", 2000, 100));
    plane
        .admin_with(&[team("team-a"), team("team-b")], clusters)
        .await
}

async fn wait_for_status(
    admin: &mut Clients,
    tenant: &str,
    env: &str,
    status: pb::EnvironmentStatus,
) -> pb::Environment {
    admin.wait_status(tenant, env, status, WAIT).await
}

fn namespace_exists(sim: &SimCluster, ns: &str) -> bool {
    sim.object("namespaces", "", ns).unwrap().is_some()
}

/// There and not being deleted (a deleted namespace lingers while it terminates).
fn namespace_alive(sim: &SimCluster, ns: &str) -> bool {
    sim.object("namespaces", "", ns)
        .unwrap()
        .is_some_and(|n| n["metadata"]["deletionTimestamp"].is_null())
}

/// Cluster `k3s-1` on a fresh kube-sim with one agent (`node-1`) connected
/// straight to `plane`.
async fn one_agent(plane: &TestPlane) -> (Clients, SimCluster, TestAgent) {
    let mut admin = setup(plane, &["k3s-1"]).await;
    let sim = fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let agent = TestAgent::start(&sim, &plane.url(), &token, "node-1").await;
    (admin, sim, agent)
}

/// Creates an environment (small profile) and waits until it is Ready.
async fn create_ready(admin: &mut Clients, tenant: &str, env: &str, cluster: &str) {
    admin
        .create_env(tenant, env, cluster, "small")
        .await
        .unwrap();
    wait_for_status(admin, tenant, env, pb::EnvironmentStatus::Ready).await;
}

/// Someone other than the agent (another field manager) edits one hard
/// limit of an environment's quota.
async fn edit_quota(sim: &SimCluster, namespace: &str, resource: &str, value: &str) {
    Api::<ResourceQuota>::namespaced(sim.client(), namespace)
        .patch(
            "mtp-quota",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"hard": {resource: value}}})),
        )
        .await
        .unwrap();
}

async fn drift_events(admin: &mut Clients) -> Vec<pb::AuditEvent> {
    admin
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.action == "environment.drift_repaired")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_becomes_ready_on_its_cluster_and_is_gone_after_delete() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, agent) = one_agent(&plane).await;

    let created = admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    assert_eq!(created.status, pb::EnvironmentStatus::Pending as i32);
    let ready = wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Ready).await;
    assert!(ready.applied_revision >= ready.revision && ready.revision > 0);
    assert!(ready.ready_time.is_some());
    // Ready means the objects are really there, as specified.
    let quota = sim
        .object("resourcequotas", "team-a-dev", "mtp-quota")
        .unwrap()
        .expect("quota applied");
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "1");
    assert_eq!(quota["spec"]["hard"]["services.nodeports"], "0");
    assert!(
        sim.object("networkpolicies", "team-a-dev", "mtp-default-deny")
            .unwrap()
            .is_some()
    );
    assert!(agent.is_applier());

    admin.delete_env("team-a", "dev").await.unwrap();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Deleted).await;
    assert!(
        !namespace_exists(&sim, "team-a-dev"),
        "Deleted is reported only once the namespace is gone"
    );
    assert!(
        sim.object("resourcequotas", "team-a-dev", "mtp-quota")
            .unwrap()
            .is_none()
    );
    let events = admin.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "environment.deleted" && e.target == "environment/team-a/dev")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_and_lands_in_the_audit_log() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, _agent) = one_agent(&plane).await;
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;

    // Someone deletes the default-deny policy and raises the quota.
    let client = sim.client();
    Api::<NetworkPolicy>::namespaced(client.clone(), "team-a-dev")
        .delete("mtp-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    edit_quota(&sim, "team-a-dev", "requests.cpu", "64").await;

    eventually("the policy and quota to be restored", WAIT, || async {
        let policy = sim
            .object("networkpolicies", "team-a-dev", "mtp-default-deny")
            .unwrap();
        let quota = sim
            .object("resourcequotas", "team-a-dev", "mtp-quota")
            .unwrap()?;
        (policy.is_some() && quota["spec"]["hard"]["requests.cpu"] == "1").then_some(())
    })
    .await;
    let drift = eventually("both drifts to be audited", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let drift = drift_events(&mut admin).await;
            let text = format!("{drift:?}");
            (text.contains("NetworkPolicy/mtp-default-deny")
                && text.contains("ResourceQuota/mtp-quota"))
            .then_some(drift)
        }
    })
    .await;
    assert!(
        drift
            .iter()
            .all(|e| e.target == "environment/team-a/dev" && e.tenant == "team-a")
    );
    // Still Ready: drift was repaired, not a failure.
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Ready as i32
    );

    // Someone else opens the default-deny policy with a rule of their own:
    // a field mtp never set, which a server-side apply alone cannot remove.
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), "team-a-dev");
    let mut opened = policies.get("mtp-default-deny").await.unwrap();
    opened.spec.as_mut().unwrap().ingress = Some(vec![Default::default()]);
    opened.metadata.managed_fields = None;
    policies
        .replace(
            "mtp-default-deny",
            &PostParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &opened,
        )
        .await
        .unwrap();
    eventually("the added ingress rule to be removed", WAIT, || async {
        let policy = sim
            .object("networkpolicies", "team-a-dev", "mtp-default-deny")
            .unwrap()?;
        let ingress = &policy["spec"]["ingress"];
        (ingress.is_null() || ingress.as_array().is_some_and(Vec::is_empty)).then_some(())
    })
    .await;
    eventually("the opened policy to be audited", WAIT, || {
        let mut admin = admin.clone();
        async move {
            drift_events(&mut admin)
                .await
                .iter()
                .any(|e| format!("{e:?}").contains("spec.ingress"))
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Ready as i32
    );
}

/// The watches alone catch drift: with the periodic verification an hour
/// away, someone else's change is still repaired at once, while the agent's
/// own writes (seen by the same watches) are not mistaken for drift.
#[tokio::test(flavor = "multi_thread")]
async fn drift_is_caught_by_the_watches_without_waiting_for_the_periodic_check() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, mut agent) = one_agent(&plane).await;
    agent.stop().await;
    agent.config.reconciler.resync_interval = Duration::from_secs(3600);
    agent.restart().await;
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;
    create_ready(&mut admin, "team-a", "qa", "k3s-1").await;

    edit_quota(&sim, "team-a-dev", "pods", "1000").await;
    eventually("the quota to be restored", WAIT, || async {
        let quota = sim
            .object("resourcequotas", "team-a-dev", "mtp-quota")
            .unwrap()?;
        (quota["spec"]["hard"]["pods"] != "1000").then_some(())
    })
    .await;
    eventually("the drift to be audited", WAIT, || {
        let mut admin = admin.clone();
        async move {
            drift_events(&mut admin)
                .await
                .iter()
                .any(|e| {
                    e.target == "environment/team-a/dev"
                        && e.details_json.contains("ResourceQuota/mtp-quota")
                })
                .then_some(())
        }
    })
    .await;
    // Only that change was drift: creating and repairing (the agent's own
    // writes) reported nothing else, for either namespace.
    let drift = drift_events(&mut admin).await;
    assert_eq!(drift.len(), 1, "{drift:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clusters_two_agents_each_one_applier_isolation_and_takeover() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-a", "k3s-b"]).await;
    let sim_a = fleet::cluster().await;
    let sim_b = fleet::cluster().await;
    let token_a = admin.join_token("k3s-a").await;
    let token_b = admin.join_token("k3s-b").await;
    let mut a1 = TestAgent::start(&sim_a, &plane.url(), &token_a, "a-node-1").await;
    let mut a2 = TestAgent::start(&sim_a, &plane.url(), &token_a, "a-node-2").await;
    let b1 = TestAgent::start(&sim_b, &plane.url(), &token_b, "b-node-1").await;
    let b2 = TestAgent::start(&sim_b, &plane.url(), &token_b, "b-node-2").await;

    admin
        .create_env("team-a", "dev", "k3s-a", "small")
        .await
        .unwrap();
    admin
        .create_env("team-b", "dev", "k3s-b", "small")
        .await
        .unwrap();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Ready).await;
    wait_for_status(&mut admin, "team-b", "dev", pb::EnvironmentStatus::Ready).await;

    // Each cluster holds only its own environments.
    assert!(namespace_exists(&sim_a, "team-a-dev"));
    assert!(!namespace_exists(&sim_a, "team-b-dev"));
    assert!(namespace_exists(&sim_b, "team-b-dev"));
    assert!(!namespace_exists(&sim_b, "team-a-dev"));
    // And every agent received only its cluster's configurations.
    for (agent, theirs) in [
        (&a1, "team-b-dev"),
        (&a2, "team-b-dev"),
        (&b1, "team-a-dev"),
        (&b2, "team-a-dev"),
    ] {
        let state = mtp_agent::desired::StateDir::new(&agent.config.state_dir)
            .unwrap()
            .desired()
            .unwrap();
        assert!(
            !state.namespaces.contains_key(theirs),
            "{:?}",
            state.namespaces.keys()
        );
    }

    // Exactly one applier per cluster; every agent stays connected.
    let appliers =
        |x: &TestAgent, y: &TestAgent| usize::from(x.is_applier()) + usize::from(y.is_applier());
    assert_eq!(appliers(&a1, &a2), 1);
    assert_eq!(appliers(&b1, &b2), 1);
    let agents = admin
        .clusters
        .list_agents(pb::ListAgentsRequest {
            cluster: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 4);
    assert!(agents.iter().all(|a| a.connected), "{agents:?}");

    // The applier of cluster A dies; the other takes over and applies.
    let (dead, survivor) = if a1.is_applier() {
        (&mut a1, &mut a2)
    } else {
        (&mut a2, &mut a1)
    };
    dead.kill().await;
    admin
        .create_env("team-a", "qa", "k3s-a", "small")
        .await
        .unwrap();
    let took_over = std::time::Instant::now();
    wait_for_status(&mut admin, "team-a", "qa", pb::EnvironmentStatus::Ready).await;
    eprintln!(
        "takeover + apply took {:?} (lease {:?})",
        took_over.elapsed(),
        fleet::LEASE
    );
    assert!(survivor.is_applier());
    assert!(namespace_exists(&sim_a, "team-a-qa"));

    // The dead one comes back: it does not fight the new applier.
    dead.restart().await;
    tokio::time::sleep(fleet::LEASE * 2).await;
    assert!(!dead.is_applier());
    assert!(survivor.is_applier());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_offline_during_50_changes_catches_up_from_its_revision() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, mut agent) = one_agent(&plane).await;
    for i in 0..5 {
        admin
            .create_env("team-a", &format!("keep-{i}"), "k3s-1", "small")
            .await
            .unwrap();
    }
    for i in 0..5 {
        wait_for_status(
            &mut admin,
            "team-a",
            &format!("keep-{i}"),
            pb::EnvironmentStatus::Ready,
        )
        .await;
    }
    agent.stop().await;

    // 50 changes while it is away: 45 creates and 5 deletes.
    admin.fifty_changes("team-a", "k3s-1", "new", "keep").await;
    assert!(
        !namespace_exists(&sim, "team-a-new-0"),
        "nothing applied while offline"
    );

    agent.restart().await;
    for i in 0..45 {
        wait_for_status(
            &mut admin,
            "team-a",
            &format!("new-{i}"),
            pb::EnvironmentStatus::Ready,
        )
        .await;
    }
    for i in 0..5 {
        wait_for_status(
            &mut admin,
            "team-a",
            &format!("keep-{i}"),
            pb::EnvironmentStatus::Deleted,
        )
        .await;
        assert!(!namespace_exists(&sim, &format!("team-a-keep-{i}")));
    }
    let status = agent.status();
    assert_eq!(
        status.snapshots_received, 0,
        "resumed from its revision, not a snapshot: {status:?}"
    );
    assert!(status.changes_received >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_killed_mid_stream_and_restarted_converges() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let addr = plane.running.grpc_addr;
    let url = plane.url();
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let sim = fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let agent = TestAgent::start(&sim, &url, &token, "node-1").await;
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;

    // A second replica stays up; the agent's replica is killed.
    let replica = TestPlane::start_on(db.url().to_owned()).await;
    let mut admin = replica.admin().await;
    plane.running.kill();
    for i in 0..10 {
        admin
            .create_env("team-a", &format!("during-{i}"), "k3s-1", "small")
            .await
            .unwrap();
    }
    // While its control plane is away the agent keeps enforcing.
    Api::<NetworkPolicy>::namespaced(sim.client(), "team-a-dev")
        .delete("mtp-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    eventually("drift repaired while disconnected", WAIT, || async {
        sim.object("networkpolicies", "team-a-dev", "mtp-default-deny")
            .unwrap()
            .map(|_| ())
    })
    .await;

    // The control plane comes back on the same address.
    let mut config = Config::for_dev(db.url().to_owned());
    config.grpc_listen = addr;
    let _restarted = TestPlane::start_with(config).await;
    for i in 0..10 {
        wait_for_status(
            &mut admin,
            "team-a",
            &format!("during-{i}"),
            pb::EnvironmentStatus::Ready,
        )
        .await;
    }
    assert_eq!(
        admin.env("team-a", "dev").await.status,
        pb::EnvironmentStatus::Ready as i32,
        "what was acknowledged before the crash stays acknowledged"
    );
    // The drift repaired while disconnected reaches the audit log after reconnecting.
    eventually("offline drift audited", WAIT, || {
        let mut admin = admin.clone();
        async move { (!drift_events(&mut admin).await.is_empty()).then_some(()) }
    })
    .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_and_agent_restart_lose_nothing() {
    let server = mtp_e2e::mtp_pg_harness::DedicatedServer::start()
        .await
        .unwrap();
    let url = server.create_database().await.unwrap();
    let plane = TestPlane::start_on(url.clone()).await;
    let (mut admin, sim, mut agent) = one_agent(&plane).await;
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;

    // A crash (no shutdown checkpoint, connections cut), then a start.
    server.kill().await.unwrap();
    server.restart().await.unwrap();
    // Creates may fail while the pool reconnects; retry until one lands.
    eventually("a create after the PostgreSQL restart", WAIT, || {
        let mut admin = admin.clone();
        async move {
            admin
                .create_env("team-a", "after-pg", "k3s-1", "small")
                .await
                .ok()
        }
    })
    .await;
    wait_for_status(
        &mut admin,
        "team-a",
        "after-pg",
        pb::EnvironmentStatus::Ready,
    )
    .await;

    // Agent crash and restart with its state directory.
    agent.kill().await;
    admin
        .create_env("team-a", "after-agent", "k3s-1", "small")
        .await
        .unwrap();
    agent.restart().await;
    wait_for_status(
        &mut admin,
        "team-a",
        "after-agent",
        pb::EnvironmentStatus::Ready,
    )
    .await;
    for env in ["dev", "after-pg"] {
        assert_eq!(
            admin.env("team-a", env).await.status,
            pb::EnvironmentStatus::Ready as i32
        );
        assert!(namespace_alive(&sim, &format!("team-a-{env}")));
    }
    server.stop().await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_environments_are_removed_from_the_cluster() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, _agent) = one_agent(&plane).await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    admin
        .create_expiring_env("team-a", "short", "k3s-1", soon)
        .await
        .unwrap();
    wait_for_status(&mut admin, "team-a", "short", pb::EnvironmentStatus::Ready).await;
    assert!(namespace_exists(&sim, "team-a-short"));
    let gone = wait_for_status(
        &mut admin,
        "team-a",
        "short",
        pb::EnvironmentStatus::Deleted,
    )
    .await;
    assert!(!namespace_exists(&sim, "team-a-short"));
    assert!(gone.applied_revision > 0);
    let events = admin.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "environment.delete" && e.actor == "system:expiry")
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "environment.deleted" && e.target == "environment/team-a/short")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_cluster_reports_the_reason_and_recovers() {
    let plane = TestPlane::start().await;
    let (mut admin, sim, _agent) = one_agent(&plane).await;
    eventually("the agent to connect", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let agents = admin
                .clusters
                .list_agents(pb::ListAgentsRequest::default())
                .await
                .ok()?
                .into_inner()
                .agents;
            agents
                .iter()
                .any(|a| a.connected && a.applier)
                .then_some(())
        }
    })
    .await;
    sim.faults().deny("patch", "networkpolicies");
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    let failed = wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Failed).await;
    assert!(
        failed.reason.contains("NetworkPolicy/mtp-default-deny"),
        "{}",
        failed.reason
    );
    sim.faults().clear();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Ready).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_open_connection_is_detected_and_the_agent_reconnects() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let sim = fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let proxy = fleet::FreezableProxy::start(plane.running.grpc_addr).await;
    let agent = TestAgent::start(&sim, &proxy.https_url(), &token, "node-1").await;
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;
    let connected = agent.running.as_ref().unwrap().connected();
    assert!(*connected.borrow());

    // The network goes silent: no FIN, no RST, nothing.
    proxy.freeze();
    let mut watch = connected.clone();
    eventually("the agent to notice the silent stream", WAIT, || {
        let up = *watch.borrow_and_update();
        async move { (!up).then_some(()) }
    })
    .await;
    // Changes made meanwhile arrive once the network is back.
    admin
        .create_env("team-a", "qa", "k3s-1", "small")
        .await
        .unwrap();
    proxy.thaw();
    wait_for_status(&mut admin, "team-a", "qa", pb::EnvironmentStatus::Ready).await;
    assert!(*connected.borrow());
}

/// The agent deletes a namespace but its acknowledgement never arrives (the
/// network eats it, or the agent dies right after): the deletion is
/// remembered on disk and reported on the next session, so the environment
/// does not hang in Deleting.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_whose_acknowledgement_was_lost_is_reported_later() {
    let plane = TestPlane::start().await;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let sim = fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let proxy = fleet::FreezableProxy::start(plane.running.grpc_addr).await;
    let mut agent = TestAgent::start(&sim, &proxy.https_url(), &token, "node-1").await;
    for env in ["dev", "qa"] {
        admin
            .create_env("team-a", env, "k3s-1", "small")
            .await
            .unwrap();
        wait_for_status(&mut admin, "team-a", env, pb::EnvironmentStatus::Ready).await;
    }

    // Lost on the wire, then the session is re-established.
    proxy.freeze_upstream();
    admin.delete_env("team-a", "dev").await.unwrap();
    eventually("the agent to delete team-a-dev", WAIT, || {
        let gone = !namespace_exists(&sim, "team-a-dev");
        async move { gone.then_some(()) }
    })
    .await;
    let pending = admin.env("team-a", "dev").await;
    assert_eq!(
        pending.status,
        pb::EnvironmentStatus::Deleting as i32,
        "the acknowledgement must not have arrived yet"
    );
    proxy.thaw();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Deleted).await;

    // Lost because the agent died: the next process reports it.
    proxy.freeze_upstream();
    admin.delete_env("team-a", "qa").await.unwrap();
    eventually("the agent to delete team-a-qa", WAIT, || {
        let gone = !namespace_exists(&sim, "team-a-qa");
        async move { gone.then_some(()) }
    })
    .await;
    agent.kill().await;
    assert_eq!(
        admin.env("team-a", "qa").await.status,
        pb::EnvironmentStatus::Deleting as i32
    );
    proxy.thaw();
    agent.restart().await;
    wait_for_status(&mut admin, "team-a", "qa", pb::EnvironmentStatus::Deleted).await;
}

/// An agent restarted with stored state older than the cluster's (it was
/// down while another agent applied newer changes) and with no control plane
/// to ask: it enforces what it has, but never prunes a namespace it has not
/// heard of, nor deletes one it remembers deleting that was re-created since.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_stale_state_and_no_control_plane_deletes_nothing_newer() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let addr = plane.running.grpc_addr;
    let mut admin = setup(&plane, &["k3s-1"]).await;
    let sim = fleet::cluster().await;
    let token = admin.join_token("k3s-1").await;
    let mut first = TestAgent::start(&sim, &plane.url(), &token, "node-1").await;
    eventually("node-1 to apply", WAIT, || {
        let applier = first.is_applier();
        async move { applier.then_some(()) }
    })
    .await;
    let mut second = TestAgent::start(&sim, &plane.url(), &token, "node-2").await;

    // Both agents see dev created and deleted: the second remembers the
    // deletion. Both also see stage and prod created.
    create_ready(&mut admin, "team-a", "dev", "k3s-1").await;
    admin.delete_env("team-a", "dev").await.unwrap();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Deleted).await;
    create_ready(&mut admin, "team-a", "stage", "k3s-1").await;
    create_ready(&mut admin, "team-a", "prod", "k3s-1").await;
    let seen = admin.env("team-a", "prod").await.revision;
    eventually("node-2 to hold the deletion", WAIT, || {
        let revision = second.status().desired_revision;
        async move { (revision >= seen).then_some(()) }
    })
    .await;
    second.stop().await;

    // While the second is down, dev comes back, qa is created and stage is
    // deleted.
    admin.delete_env("team-a", "stage").await.unwrap();
    wait_for_status(
        &mut admin,
        "team-a",
        "stage",
        pb::EnvironmentStatus::Deleted,
    )
    .await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin
        .create_env("team-a", "qa", "k3s-1", "small")
        .await
        .unwrap();
    wait_for_status(&mut admin, "team-a", "dev", pb::EnvironmentStatus::Ready).await;
    wait_for_status(&mut admin, "team-a", "qa", pb::EnvironmentStatus::Ready).await;

    // Control plane and the applier die; someone deletes prod's namespace by
    // hand; the stale agent takes over alone.
    plane.running.kill();
    first.kill().await;
    Api::<Namespace>::all(sim.client())
        .delete("team-a-prod", &DeleteParams::default())
        .await
        .unwrap();
    eventually("prod's namespace to be gone", WAIT, || async {
        sim.object("namespaces", "", "team-a-prod")
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    second.restart().await;
    // Its pass is over once it has found stage and prod missing.
    eventually("node-2 to take over and finish a pass", WAIT, || {
        let status = second.status();
        async move { (status.applier && status.withheld.len() == 2).then_some(()) }
    })
    .await;
    assert!(
        !namespace_alive(&sim, "team-a-stage"),
        "stale state must not re-create a namespace deleted since"
    );
    assert!(
        !namespace_alive(&sim, "team-a-prod"),
        "nor one it cannot tell from such a deletion"
    );
    assert_eq!(
        second.status().acknowledged_revision,
        0,
        "a pass that left desired namespaces missing is not acknowledged"
    );
    assert!(
        namespace_alive(&sim, "team-a-qa"),
        "a namespace the stale state does not know must not be pruned"
    );
    assert!(
        namespace_alive(&sim, "team-a-dev"),
        "a remembered deletion must not remove the re-created namespace"
    );

    // The control plane comes back: everything converges, nothing was lost.
    let mut config = Config::for_dev(db.url().to_owned());
    config.grpc_listen = addr;
    let restarted = TestPlane::start_with(config).await;
    let mut admin = restarted.admin().await;
    eventually("node-2 to catch up", WAIT, || {
        let revision = second.status().acknowledged_revision;
        async move { (revision >= seen + 2).then_some(()) }
    })
    .await;
    // prod, still desired, is created once the state is confirmed.
    eventually("prod's namespace to be back", WAIT, || async {
        namespace_alive(&sim, "team-a-prod").then_some(())
    })
    .await;
    for env in ["dev", "qa", "prod"] {
        wait_for_status(&mut admin, "team-a", env, pb::EnvironmentStatus::Ready).await;
        assert!(namespace_alive(&sim, &format!("team-a-{env}")));
    }
    assert!(!namespace_alive(&sim, "team-a-stage"));
}

/// Copies a database as a backup would (the control plane must be stopped:
/// a template database may have no other sessions).
async fn backup_database(url: &str) -> String {
    use sqlx::Connection;
    let source = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let backup = format!("{source}_backup");
    let admin_url = mtp_e2e::mtp_pg_harness::with_database(url, "postgres");
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(source)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{backup}\" TEMPLATE \"{source}\""
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    mtp_e2e::mtp_pg_harness::with_database(url, &backup)
}

/// The control plane's database is restored from a backup: the agent holds
/// revisions (and namespaces stamped with them) the restored database never
/// issued. Every environment is re-issued above them, audited; the cluster
/// converges to the restored state (an environment created after the backup
/// is pruned) and nothing is stuck.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_database_reissues_revisions_and_the_cluster_converges() {
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let plane = TestPlane::start_on(db.url().to_owned()).await;
    let addr = plane.running.grpc_addr;
    let (mut admin, sim, agent) = one_agent(&plane).await;
    create_ready(&mut admin, "team-a", "kept", "k3s-1").await;

    plane.running.kill();
    let backup = backup_database(db.url()).await;
    let at = |url: &str| {
        let mut config = Config::for_dev(url.to_owned());
        config.grpc_listen = addr;
        config
    };
    let after_backup = TestPlane::start_with(at(db.url())).await;
    let mut admin = after_backup.admin().await;
    for env in ["later-1", "later-2"] {
        admin
            .create_env("team-a", env, "k3s-1", "small")
            .await
            .unwrap();
        wait_for_status(&mut admin, "team-a", env, pb::EnvironmentStatus::Ready).await;
    }
    let held = agent.status().acknowledged_revision;
    assert_eq!(held, 3);

    after_backup.running.kill();
    let restored = TestPlane::start_with(at(&backup)).await;
    let mut admin = restored.admin().await;
    // Two of the three managed namespaces are not in the restored state:
    // more than half, so the pass is held (nothing deleted) until an
    // operator confirms it.
    let hold = eventually("the prune pass to be held and shown", WAIT, || {
        let mut clusters = admin.clusters.clone();
        async move {
            clusters
                .get_cluster(pb::GetClusterRequest {
                    name: "k3s-1".into(),
                })
                .await
                .ok()?
                .into_inner()
                .held_prune
        }
    })
    .await;
    assert_eq!((hold.would_delete, hold.managed), (2, 3), "{hold:?}");
    assert!(namespace_exists(&sim, "team-a-later-1") && namespace_exists(&sim, "team-a-later-2"));
    admin
        .clusters
        .confirm_prune(pb::ConfirmPruneRequest {
            cluster: "k3s-1".into(),
            revision: hold.revision,
        })
        .await
        .unwrap();
    eventually(
        "the environments created after the backup to be pruned",
        WAIT,
        || {
            let gone = ["team-a-later-1", "team-a-later-2"]
                .iter()
                .all(|ns| !namespace_exists(&sim, ns));
            async move { gone.then_some(()) }
        },
    )
    .await;
    let kept = wait_for_status(&mut admin, "team-a", "kept", pb::EnvironmentStatus::Ready).await;
    assert!(kept.revision > held, "re-issued above what the agent held");
    let stamped = sim
        .object("namespaces", "", "team-a-kept")
        .unwrap()
        .unwrap();
    assert_eq!(
        stamped["metadata"]["annotations"]["mtp.io/revision"],
        kept.revision.to_string()
    );
    assert!(
        admin
            .audit_events()
            .await
            .iter()
            .any(|e| e.action == "cluster.revisions_reissued")
    );
    // Every namespace it deleted is on the record.
    let pruned = eventually("each pruned namespace to be audited", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let targets: Vec<String> = admin
                .audit_events()
                .await
                .into_iter()
                .filter(|e| e.action == "namespace.deleted_by_agent")
                .map(|e| e.target)
                .collect();
            (targets.len() >= 2).then_some(targets)
        }
    })
    .await;
    assert_eq!(
        pruned,
        [
            "namespace/k3s-1/team-a-later-1",
            "namespace/k3s-1/team-a-later-2"
        ]
    );
    // And the agent acknowledges the new history (no refused acks, no loop).
    eventually(
        "the agent to acknowledge the re-issued revision",
        WAIT,
        || {
            let revision = agent.status().acknowledged_revision;
            async move { (revision == kept.revision).then_some(()) }
        },
    )
    .await;
}
