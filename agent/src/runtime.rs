//! The binary's wiring: the Kubernetes client (kubeconfig or in-cluster),
//! the agent's tasks, the admin port, and shutdown on SIGTERM / Ctrl-C.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;

/// Runs the agent until a signal asks it to stop.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let kube_config = match &config.kubeconfig {
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
    let mut config = config;
    if config.agent.usage.is_enabled() {
        // The kubelet is called with the same credentials and CA.
        config.agent.usage.credentials = Some(kube_config.clone());
    }
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}", config.admin_addr))?;
    let session = &config.agent.session;
    tracing::info!(control_plane = %session.control_plane, cluster_api = %cluster_url, node = %session.node_name, admin = %config.admin_addr, "mtp-agent starting");

    let shutdown = CancellationToken::new();
    let agent = crate::start(config.agent, client, shutdown.clone()).await?;
    tokio::spawn(
        {
            let router = agent.admin_router();
            let shutdown = shutdown.clone();
            async move {
                if let Err(e) = crate::admin::serve(admin, router, shutdown).await {
                    tracing::error!(error = %e, "admin port failed");
                }
            }
        }
        .instrument(tracing::info_span!("admin")),
    );
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
