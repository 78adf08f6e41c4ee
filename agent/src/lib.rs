//! mtp-agent: connects out to the control plane, receives the desired
//! namespaces of its own cluster, and — when it holds the cluster's applier
//! lease — applies, verifies, repairs and prunes them.
//!
//! Tasks: `session` (control plane), `lease` (election), `watch` (drift
//! prompts) feed the `reconciler`, the only one that writes to the cluster.

pub mod bundle;
pub mod desired;
pub mod kubernetes;
pub mod lease;
pub mod persist;
pub mod reconciler;
pub mod session;
pub mod verify;
pub mod watch;

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::{mpsc, watch as channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::desired::StateDir;
use crate::kubernetes::ClusterApi;
use crate::lease::{Elector, LeaseConfig};
pub use crate::reconciler::AgentStatus;
use crate::reconciler::{Reconciler, ReconcilerConfig};
use crate::session::{SessionConfig, Sessions};

/// Everything an agent needs besides its Kubernetes client.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub session: SessionConfig,
    pub lease: LeaseConfig,
    pub reconciler: ReconcilerConfig,
    /// Where the credential and the last desired state are kept.
    pub state_dir: PathBuf,
}

/// A started agent. Dropping it leaves the tasks running; use `stop` or `kill`.
pub struct RunningAgent {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    status: channel::Receiver<AgentStatus>,
    connected: channel::Receiver<bool>,
}

impl RunningAgent {
    /// Where the agent stands (role, revisions, failing namespaces).
    pub fn status(&self) -> channel::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Whether a session to the control plane is up.
    pub fn connected(&self) -> channel::Receiver<bool> {
        self.connected.clone()
    }

    /// Clean shutdown: close the session and hand back the lease.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A crash: every task stops where it is; the lease is not released.
    pub async fn kill(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.shutdown.cancel();
    }

    /// Runs until `stop`, `kill` or the shutdown token given to `start`.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts an agent's tasks. Fails only on local problems (state directory);
/// an unreachable control plane or cluster is retried, not fatal.
pub async fn start(
    config: AgentConfig,
    client: kube::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningAgent> {
    let state_dir = StateDir::new(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    let desired = state_dir.desired().with_context(|| {
        format!(
            "reading the stored desired state in {} (delete desired.pb to start from a snapshot)",
            config.state_dir.display()
        )
    })?;
    if desired.revision > 0 {
        tracing::info!(
            revision = desired.revision,
            namespaces = desired.namespaces.len(),
            "enforcing the stored desired state on existing namespaces until the control plane answers"
        );
    }

    let (inputs_tx, inputs_rx) = mpsc::channel(1024);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = channel::channel(AgentStatus::default());
    let (role_tx, role_rx) = channel::channel(false);
    let (connected_tx, connected_rx) = channel::channel(false);

    let mut elector = Elector::new(
        client.clone(),
        config.session.node_name.clone(),
        config.lease.clone(),
    );
    let fence = elector.fence();
    let mut tasks = JoinSet::new();

    let lease_shutdown = shutdown.clone();
    let retry = config.lease.retry_interval;
    tasks.spawn(async move {
        loop {
            let held = elector.round().await;
            role_tx.send_if_modified(|r| std::mem::replace(r, held) != held);
            tokio::select! {
                () = lease_shutdown.cancelled() => {
                    elector.release().await;
                    role_tx.send_replace(false);
                    return;
                }
                () = tokio::time::sleep(retry) => {}
            }
        }
    });

    let touched = watch::Touched::default();
    let (writer, write_task) = persist::StateWriter::new(state_dir.clone());
    // Ends after the reconciler (which owns the writer) with the last state written.
    tasks.spawn(write_task);
    let reconciler = Reconciler::new(
        ClusterApi::new(client.clone()),
        state_dir.clone(),
        writer,
        desired,
        fence.clone(),
        role_rx,
        config.reconciler.clone(),
        out_tx,
        status_tx,
        touched.clone(),
    );
    tasks.spawn(reconciler.run(inputs_rx, shutdown.clone()));

    watch::spawn_all(&client, &touched, &shutdown);

    let sessions = Sessions {
        config: config.session.clone(),
        state_dir,
        to_reconciler: inputs_tx,
        outbound: out_rx,
        status: status_rx.clone(),
        fence,
        connected: connected_tx,
    };
    tasks.spawn(sessions.run(shutdown.clone()));

    Ok(RunningAgent {
        shutdown,
        tasks,
        status: status_rx,
        connected: connected_rx,
    })
}
