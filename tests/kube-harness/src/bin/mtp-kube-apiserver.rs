//! Runs the test harness's real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager, `deploy/k3s` installed) until it
//! is stopped, for the quick start (`deploy/local/up.sh --real-apiserver`).

use std::path::PathBuf;

use clap::Parser;
use mtp_kube_harness::{AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, KubeServer, Options};

/// A real kube-apiserver and kube-controller-manager (built from source) on a
/// random loopback port, with RBAC, the default admission plugins and the
/// agent's RBAC and admission policies from deploy/k3s. Everything lives in
/// a temporary directory that is removed when this process ends (SIGINT or
/// SIGTERM); the data does not survive a restart.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Write a cluster-admin (system:masters) kubeconfig here, for kubectl.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// Write a kubeconfig for the mtp-agent ServiceAccount here (its token
    /// is valid for 24 hours), for the agent.
    #[arg(long, value_name = "FILE")]
    agent_kubeconfig: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| "installing the ring crypto provider failed".to_string())?;
    let server = KubeServer::start(Options::default())?;
    let copy = |from: &std::path::Path, to: &PathBuf| {
        std::fs::copy(from, to).map_err(|e| format!("writing {}: {e}", to.display()))
    };
    copy(server.admin_kubeconfig(), &args.kubeconfig)?;
    let agent = server
        .service_account_kubeconfig(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
        .await;
    copy(&agent, &args.agent_kubeconfig)?;
    eprintln!(
        "mtp-kube-apiserver: Kubernetes {} at {} (logs in {}); admin kubeconfig {}, agent kubeconfig {}",
        server.version(),
        server.url(),
        server.dir().display(),
        args.kubeconfig.display(),
        args.agent_kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("listening for SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("mtp-kube-apiserver: stopping");
    // Dropping the server closes the supervisor's pipe: it stops the
    // components and removes the directory.
    drop(server);
    Ok(())
}
