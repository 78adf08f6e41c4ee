//! Real agents on simulated clusters: kube-sim clusters, agents started from
//! the `mtp-agent` library with test-speed timings, and waiting helpers.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::lease::LeaseConfig;
use mtp_agent::reconciler::ReconcilerConfig;
use mtp_agent::session::SessionConfig;
use mtp_agent::{AgentConfig, RunningAgent};
use tokio_util::sync::CancellationToken;

/// Lease duration used by test agents: a dead applier is replaced within
/// about this long (plus one retry interval).
pub const LEASE: Duration = Duration::from_millis(1500);

/// A simulated K3s cluster with the namespaces a real one starts with.
pub async fn cluster() -> SimCluster {
    let sim = SimCluster::start(SimOptions::default())
        .await
        .expect("kube-sim starts");
    let namespaces = Api::<Namespace>::all(sim.client());
    for name in ["default", "kube-system"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                    .expect("namespace"),
            )
            .await
            .expect("creates system namespace");
    }
    sim
}

/// An agent's configuration with timings fit for tests.
pub fn agent_config(
    control_plane: &str,
    join_token: &str,
    node: &str,
    state_dir: PathBuf,
) -> AgentConfig {
    AgentConfig {
        session: SessionConfig {
            control_plane: control_plane.to_string(),
            ca_cert: None,
            join_token: Some(join_token.to_string()),
            node_name: node.to_string(),
            keepalive: Duration::from_millis(300),
            missed_keepalives: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
        lease: LeaseConfig {
            namespace: "kube-system".into(),
            name: "mtp-agent-applier".into(),
            duration: LEASE,
            retry_interval: Duration::from_millis(100),
        },
        reconciler: ReconcilerConfig {
            resync_interval: Duration::from_secs(2),
            retry_interval: Duration::from_millis(300),
            drift_quiet: Duration::from_millis(100),
            concurrency: 8,
        },
        state_dir,
    }
}

/// One agent process stand-in: its state directory outlives restarts.
pub struct TestAgent {
    pub config: AgentConfig,
    pub client: kube::Client,
    pub running: Option<RunningAgent>,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    pub async fn start(
        sim: &SimCluster,
        control_plane: &str,
        join_token: &str,
        node: &str,
    ) -> TestAgent {
        let dir = tempfile::tempdir().expect("state dir");
        let config = agent_config(control_plane, join_token, node, dir.path().join("state"));
        let mut agent = TestAgent {
            config,
            client: sim.client(),
            running: None,
            _dir: dir,
        };
        agent.restart().await;
        agent
    }

    /// Starts (again) with the same state directory.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "agent already running");
        self.running = Some(
            mtp_agent::start(
                self.config.clone(),
                self.client.clone(),
                CancellationToken::new(),
            )
            .await
            .expect("agent starts"),
        );
    }

    /// Clean stop: the lease is handed back.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// Crash: nothing is released.
    pub async fn kill(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill().await;
        }
    }

    pub fn status(&self) -> mtp_agent::AgentStatus {
        self.running
            .as_ref()
            .map(|r| r.status().borrow().clone())
            .unwrap_or_default()
    }

    pub fn is_applier(&self) -> bool {
        self.status().applier
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
