//! mtp-agent: connects out to the control plane, receives the desired
//! namespaces of its own cluster, and — when it holds the cluster's applier
//! lease — applies, verifies, repairs and prunes them.
//!
//! Tasks: `session` (control plane), `lease` (election), `watch` (drift
//! prompts) feed the `reconciler`, the only one that writes to the cluster.
//! `usage` samples this node's kubelet (every agent, applier or not) into
//! a spool that the session drains when no report is waiting.

pub mod admin;
pub mod bundle;
pub mod config;
pub mod desired;
pub mod identity;
pub mod kubernetes;
pub mod lease;
pub mod metrics;
pub mod outbox;
pub mod persist;
pub mod quantity;
pub mod reconciler;
pub mod report;
pub mod runtime;
pub mod session;
pub mod telemetry;
pub mod usage;
pub mod verify;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::{mpsc, watch as channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::Readiness;
use crate::desired::{DesiredNamespaces, StateDir};
use crate::kubernetes::ClusterApi;
use crate::lease::{Elector, Fence, LeaseConfig};
use crate::metrics::Metrics;
pub use crate::reconciler::AgentStatus;
use crate::reconciler::{Channels, Reconciler, ReconcilerConfig, Stored};
use crate::session::{SessionConfig, Sessions};
pub use crate::usage::UsageConfig;
use crate::usage::UsageLink;

/// Everything an agent needs besides its Kubernetes client.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub session: SessionConfig,
    pub lease: LeaseConfig,
    pub reconciler: ReconcilerConfig,
    /// Where the identity (key, certificate) and the last desired state are kept.
    pub state_dir: PathBuf,
    /// Usage sampling of this node (`UsageConfig::disabled()`: off).
    pub usage: UsageConfig,
}

/// A started agent. Dropping it leaves the tasks running; use `stop` or `kill`.
pub struct RunningAgent {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    status: channel::Receiver<AgentStatus>,
    connected: channel::Receiver<bool>,
    readiness: Readiness,
    metrics: Metrics,
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

    /// What `/readyz` answers from.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The agent's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The admin HTTP routes (/healthz, /readyz, /metrics) of this agent.
    pub fn admin_router(&self) -> axum::Router {
        admin::router(self.readiness(), self.metrics())
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
    let (state_dir, desired) = open_state_dir(&config.state_dir)?;
    let metrics = Metrics::new();
    let usage = open_usage(&config, &client, &metrics)?;

    let (inputs_tx, inputs_rx) = mpsc::channel(1024);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = channel::channel(AgentStatus::default());
    // `None` until the elector's first round: the role is not known yet.
    let (role_tx, role_rx) = channel::channel(None);
    let (connected_tx, connected_rx) = channel::channel(false);
    let node = config.session.node_name.clone();

    let mut tasks = JoinSet::new();
    let elector = Elector::new(client.clone(), node.clone(), config.lease.clone());
    let fence = spawn_elector(&mut tasks, elector, role_tx, &shutdown);
    let touched = watch::Touched::default();
    let (writer, write_task) = persist::StateWriter::new(state_dir.clone());
    // Ends after the reconciler (which owns the writer) with the last state written.
    tasks.spawn(write_task.instrument(tracing::info_span!("state_writer")));
    let readiness = Readiness::new(connected_rx.clone(), role_rx.clone());
    let reconciler = Reconciler::new(
        ClusterApi::new(client.clone()),
        fence.clone(),
        Stored {
            dir: state_dir.clone(),
            writer,
            desired,
        },
        config.reconciler.clone(),
        Channels {
            role: role_rx,
            out: out_tx,
            status: status_tx,
            touched: touched.clone(),
            metrics: metrics.clone(),
        },
    );
    tasks.spawn(
        reconciler
            .run(inputs_rx, shutdown.clone())
            .instrument(tracing::info_span!("reconciler", %node)),
    );

    watch::spawn_all(&client, &touched, &shutdown);

    let sessions = Sessions {
        config: config.session.clone(),
        state_dir,
        to_reconciler: inputs_tx,
        outbound: out_rx,
        status: status_rx.clone(),
        fence,
        connected: connected_tx,
        metrics: metrics.clone(),
        identity: Default::default(),
        usage: usage.as_ref().map(|(link, _)| link.clone()),
    };
    tasks.spawn(
        sessions
            .run(shutdown.clone())
            .instrument(tracing::info_span!("session", %node)),
    );
    if let Some((link, source)) = usage {
        let sampling = usage::Sampling {
            source,
            link,
            config: config.usage.clone(),
            status: status_rx.clone(),
            metrics: metrics.clone(),
        };
        tasks.spawn(
            sampling
                .run(shutdown.clone())
                .instrument(tracing::info_span!("usage", %node)),
        );
    }

    Ok(RunningAgent {
        shutdown,
        tasks,
        status: status_rx,
        connected: connected_rx,
        readiness,
        metrics,
    })
}

/// With usage on: the spool (opened, so a bad state directory fails the
/// start) and the node's sources. Refused when the kubelet or the
/// credentials for it are not known.
fn open_usage(
    config: &AgentConfig,
    client: &kube::Client,
    metrics: &Metrics,
) -> anyhow::Result<Option<(UsageLink, usage::source::NodeSource)>> {
    let usage = &config.usage;
    if !usage.is_enabled() {
        return Ok(None);
    }
    if !usage::valid_window(usage.window_seconds) {
        anyhow::bail!(
            "--usage-window must divide 3600 s and be at least 10 s (got {} s)",
            usage.window_seconds
        );
    }
    let url = usage.kubelet_url.as_deref().context(
        "usage is on but the kubelet is not known: set --kubelet-url or MTP_AGENT_NODE_IP (or --no-usage)",
    )?;
    let credentials = usage
        .credentials
        .as_ref()
        .context("usage is on but no Kubernetes credentials were given for the kubelet")?;
    let source = usage::source::NodeSource::new(
        credentials,
        url,
        client.clone(),
        config.session.node_name.clone(),
    )?;
    let spool = usage::open_spool(&config.state_dir, usage, metrics).with_context(|| {
        format!(
            "opening the usage spool in {}",
            config.state_dir.join(usage::SPOOL_DIR).display()
        )
    })?;
    tracing::info!(kubelet = url, interval = ?usage.sample_interval, window_seconds = usage.window_seconds, spooled_windows = spool.windows(), "usage sampling on");
    Ok(Some((UsageLink::new(spool, metrics.clone()), source)))
}

/// The state directory and the desired state stored in it.
fn open_state_dir(path: &Path) -> anyhow::Result<(StateDir, DesiredNamespaces)> {
    let state_dir = StateDir::new(path)
        .with_context(|| format!("creating state directory {}", path.display()))?;
    let desired = state_dir.desired().with_context(|| {
        format!(
            "reading the stored desired state in {} (delete desired.pb to start from a snapshot)",
            path.display()
        )
    })?;
    if desired.revision > 0 {
        tracing::info!(
            revision = desired.revision,
            namespaces = desired.namespaces.len(),
            "enforcing the stored desired state on existing namespaces until the control plane answers"
        );
    }
    Ok((state_dir, desired))
}

/// Takes part in the lease election and publishes the role; on shutdown
/// hands the lease back. Returns the elector's fence.
fn spawn_elector(
    tasks: &mut JoinSet<()>,
    mut elector: Elector,
    role_tx: channel::Sender<Option<bool>>,
    shutdown: &CancellationToken,
) -> Fence {
    let fence = elector.fence();
    let retry = elector.config().retry_interval;
    let shutdown = shutdown.clone();
    let span = tracing::info_span!("lease_elector", lease = %elector.config().name);
    tasks.spawn(
        async move {
            loop {
                let held = elector.round().await;
                role_tx.send_if_modified(|r| r.replace(held) != Some(held));
                tokio::select! {
                    () = shutdown.cancelled() => {
                        elector.release().await;
                        role_tx.send_replace(Some(false));
                        return;
                    }
                    () = tokio::time::sleep(retry) => {}
                }
            }
        }
        .instrument(span),
    );
    fence
}
