//! Entry point of `mtp-agent`: flags and `MTP_AGENT_*` variables, logging,
//! the Kubernetes client (kubeconfig or in-cluster), signals.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mtp_agent::lease::LeaseConfig;
use mtp_agent::reconciler::ReconcilerConfig;
use mtp_agent::session::SessionConfig;
use mtp_agent::{AgentConfig, start};
use tokio_util::sync::CancellationToken;

/// mtp-agent — runs on every K3s node (DaemonSet). Connects out to the
/// k8s-mtp control plane, receives its cluster's environments and, while it
/// holds the cluster's applier lease, applies them with server-side apply,
/// verifies them, repairs drift and prunes what was deleted.
#[derive(Debug, Parser)]
#[command(name = "mtp-agent", version)]
struct Args {
    /// Control plane gRPC URL (http:// only with a --dev control plane).
    #[arg(long, env = "MTP_AGENT_CONTROL_PLANE", value_name = "URL")]
    control_plane: String,
    /// PEM CA certificate to trust for an https:// control plane.
    #[arg(long, env = "MTP_AGENT_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// Join token from `mtp cluster create` / `mtp cluster join-token`; only
    /// needed until the agent has registered (the credential is then kept in
    /// --state-dir). Prefer --join-token-file or the environment variable.
    #[arg(
        long,
        env = "MTP_AGENT_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    join_token: Option<String>,
    /// File holding the join token.
    #[arg(
        long,
        env = "MTP_AGENT_JOIN_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "join_token"
    )]
    join_token_file: Option<PathBuf>,
    /// This node's name (in a DaemonSet: from the downward API, spec.nodeName).
    #[arg(long, env = "MTP_AGENT_NODE_NAME", value_name = "NAME")]
    node_name: String,
    /// Kubeconfig to use; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "MTP_AGENT_KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Directory for the agent credential and the last desired state.
    #[arg(
        long,
        env = "MTP_AGENT_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/mtp-agent"
    )]
    state_dir: PathBuf,
    /// Namespace of the applier Lease.
    #[arg(long, env = "MTP_AGENT_LEASE_NAMESPACE", default_value = "kube-system")]
    lease_namespace: String,
    /// Name of the applier Lease.
    #[arg(
        long,
        env = "MTP_AGENT_LEASE_NAME",
        default_value = "mtp-agent-applier"
    )]
    lease_name: String,
    /// A dead applier is replaced after at most this long (seconds).
    #[arg(long, env = "MTP_AGENT_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_duration_secs: u64,
    /// Lease renewal / contention period (milliseconds).
    #[arg(long, env = "MTP_AGENT_LEASE_RETRY_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..))]
    lease_retry_ms: u64,
    /// Full read-back of every namespace, as a backstop to the watches (seconds).
    #[arg(long, env = "MTP_AGENT_RESYNC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    resync_secs: u64,
    /// A changed managed object is checked once quiet this long (milliseconds).
    #[arg(long, env = "MTP_AGENT_DRIFT_QUIET_MS", default_value_t = 500)]
    drift_quiet_ms: u64,
    /// Keepalive period on the control plane stream (milliseconds).
    #[arg(long, env = "MTP_AGENT_KEEPALIVE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    keepalive_ms: u64,
    /// Longest wait between reconnection attempts (seconds).
    #[arg(long, env = "MTP_AGENT_BACKOFF_MAX", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    backoff_max_secs: u64,
    /// Namespaces applied in parallel.
    #[arg(long, env = "MTP_AGENT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// Log format.
    #[arg(long, env = "MTP_AGENT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    // Pick ring explicitly: with both ring and aws-lc linked, rustls panics otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logging(&args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MTP_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let join_token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(p)) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--join-token-file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no usable kubeconfig (set --kubeconfig)")?,
    };
    let cluster_url = kube_config.cluster_url.to_string();
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;

    let config = AgentConfig {
        session: SessionConfig {
            control_plane: args.control_plane.clone(),
            ca_cert: args.ca_cert,
            join_token,
            node_name: args.node_name.clone(),
            keepalive: Duration::from_millis(args.keepalive_ms),
            missed_keepalives: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(args.backoff_max_secs),
        },
        lease: LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            duration: Duration::from_secs(args.lease_duration_secs),
            retry_interval: Duration::from_millis(args.lease_retry_ms),
        },
        reconciler: ReconcilerConfig {
            resync_interval: Duration::from_secs(args.resync_secs),
            drift_quiet: Duration::from_millis(args.drift_quiet_ms),
            concurrency: usize::try_from(args.concurrency).unwrap_or(16),
            ..ReconcilerConfig::default()
        },
        state_dir: args.state_dir,
    };
    tracing::info!(control_plane = %args.control_plane, cluster_api = %cluster_url, node = %args.node_name, "mtp-agent starting");

    let shutdown = CancellationToken::new();
    let agent = start(config, client, shutdown.clone()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing the session and releasing the lease");
        signal.cancel();
    });
    agent.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
