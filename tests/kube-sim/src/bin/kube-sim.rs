//! `kube-sim`: serves one or many simulated clusters until stopped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_sim::demo::DemoPods;
use kube_sim::{SimCluster, SimOptions};

/// Serve simulated Kubernetes API servers.
#[derive(Parser, Debug)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Kubeconfig file to write once listening; with --clusters > 1, a directory that gets
    /// one `cluster-<i>.yaml` per cluster.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Start with no namespaces at all, instead of the ones a fresh cluster
    /// has (default, kube-system, kube-public, kube-node-lease).
    #[arg(long)]
    empty: bool,
    /// Number of clusters to serve (one port each).
    #[arg(long, default_value_t = 1)]
    clusters: usize,
    /// Serve HTTPS with a generated self-signed CA.
    #[arg(long)]
    tls: bool,
    /// Require this bearer token.
    #[arg(long, env = "KUBE_SIM_TOKEN")]
    token: Option<String>,
    /// Listen address (port 0 = any; with several clusters, ports count up from a
    /// non-zero port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
    /// Fixed latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra latency (0..=jitter), in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Error rate per verb, e.g. `patch=0.1` (repeatable).
    #[arg(long = "error-rate", value_name = "VERB=RATE")]
    error_rates: Vec<String>,
    /// Deny a verb on a resource with 403, e.g. `delete:networkpolicies` (repeatable).
    #[arg(long = "deny", value_name = "VERB:RESOURCE")]
    deny: Vec<String>,
    /// Drop all watch connections every N seconds.
    #[arg(long)]
    drop_watches_every: Option<u64>,
    /// Make the server unreachable for N seconds after M seconds: `M:N`.
    #[arg(long, value_name = "AFTER:FOR")]
    outage: Option<String>,
    /// Retained watch history (events) per cluster.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Demo workload for the quick start: keep N pods (`demo-0`..) running on the
    /// simulated node in every namespace labelled `app.kubernetes.io/managed-by=mtp`
    /// (re-checked every second), with CPU/memory requests (100m..500m, 128Mi..512Mi)
    /// and usage curves (some below, some above their requests, stepping after two
    /// minutes), served by the node's kubelet at `<url>/kubelet/<node>/stats/summary`.
    /// 0 disables it.
    #[arg(long, default_value_t = 0, value_name = "N")]
    simulate_pods: usize,
    /// The node the demo pods run on; its Node object (8 CPUs, 32Gi) is created if absent.
    #[arg(long, default_value = "node-1", value_name = "NAME")]
    simulate_node: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut sims = Vec::new();
    for i in 0..args.clusters {
        let mut bind = args.bind;
        if bind.port() != 0 {
            bind.set_port(bind.port() + i as u16);
        }
        let opts = SimOptions {
            tls: args.tls,
            bearer_token: args.token.clone(),
            name: if args.clusters == 1 {
                "kube-sim".into()
            } else {
                format!("kube-sim-{i}")
            },
            bind,
            watch_history: args.watch_history,
            ..SimOptions::default()
        };
        let sim = SimCluster::start(opts).await.context("starting cluster")?;
        let f = sim.faults();
        f.set_latency(
            Duration::from_millis(args.latency_ms),
            Duration::from_millis(args.jitter_ms),
        );
        for e in &args.error_rates {
            let (verb, rate) = e.split_once('=').context("--error-rate wants VERB=RATE")?;
            f.set_error_rate(verb, rate.parse().context("rate must be a number")?);
        }
        for d in &args.deny {
            let (verb, res) = d.split_once(':').context("--deny wants VERB:RESOURCE")?;
            f.deny(verb, res);
        }
        if !args.empty {
            seed_system_namespaces(&sim).await?;
        }
        sims.push(sim);
    }
    if args.clusters == 1 {
        sims[0]
            .write_kubeconfig(&args.kubeconfig)
            .context("writing kubeconfig")?;
        eprintln!(
            "kube-sim serving {} (kubeconfig {})",
            sims[0].url(),
            args.kubeconfig.display()
        );
    } else {
        std::fs::create_dir_all(&args.kubeconfig).context("creating kubeconfig directory")?;
        for (i, s) in sims.iter().enumerate() {
            s.write_kubeconfig(args.kubeconfig.join(format!("cluster-{i}.yaml")))?;
        }
        eprintln!(
            "kube-sim serving {} clusters (kubeconfigs in {})",
            args.clusters,
            args.kubeconfig.display()
        );
    }
    let sims = std::sync::Arc::new(sims);
    if args.simulate_pods > 0 {
        let demo = DemoPods {
            node: args.simulate_node.clone(),
            pods_per_namespace: args.simulate_pods,
        };
        for s in sims.iter() {
            demo.ensure_node(s.store())
                .map_err(|e| anyhow::anyhow!("creating node {}: {}", demo.node, e.message))?;
            eprintln!(
                "kube-sim: {} demo pods per managed namespace on node {} (kubelet {})",
                demo.pods_per_namespace,
                demo.node,
                s.kubelet_url(&demo.node)
            );
        }
        let sims = sims.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for s in sims.iter() {
                    if let Err(e) = demo.reconcile(s) {
                        tracing::warn!(error = %e.message, "demo pods");
                    }
                }
            }
        });
    }
    if let Some(every) = args.drop_watches_every.filter(|s| *s > 0) {
        let sims = sims.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                sims.iter().for_each(|s| s.faults().drop_watches());
            }
        });
    }
    if let Some(spec) = &args.outage {
        let (after, dur) = spec.split_once(':').context("--outage wants AFTER:FOR")?;
        let (after, dur): (u64, u64) = (after.parse()?, dur.parse()?);
        let sims = sims.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(after)).await;
            sims.iter()
                .for_each(|s| s.faults().unreachable_for(Duration::from_secs(dur)));
        });
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}

/// Creates the namespaces every fresh cluster has, so that agents and
/// kubectl find e.g. `kube-system` (where the agent keeps its Lease).
async fn seed_system_namespaces(sim: &SimCluster) -> anyhow::Result<()> {
    let api: kube::Api<kube::core::DynamicObject> = kube::Api::all_with(
        sim.client(),
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "",
            "v1",
            "Namespace",
        )),
    );
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ns: kube::core::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name}
        }))?;
        api.create(&kube::api::PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
    }
    Ok(())
}
