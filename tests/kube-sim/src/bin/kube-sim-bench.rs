//! `kube-sim-bench`: loads N clusters × M namespaces in one process through real HTTP
//! clients (server-side apply) and prints objects, RSS, apply/s and list/s.

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_sim::{SimCluster, SimOptions};
use serde_json::json;

/// Scale benchmark for kube-sim.
#[derive(Parser, Debug)]
#[command(name = "kube-sim-bench")]
struct Args {
    /// Clusters to simulate in this process.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Namespaces to apply per cluster.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Requests in flight at once (across all clusters).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Label-selector list requests to time.
    #[arg(long, default_value_t = 2000)]
    lists: usize,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let rss_start = rss_kib();
    let t_load = Instant::now();
    let sims = SimCluster::start_many(args.clusters, SimOptions::default())
        .await
        .context("starting clusters")?;
    let clients: Vec<kube::Client> = sims.iter().map(SimCluster::client).collect();

    let tiers = ["gold", "silver", "bronze"];
    let t_apply = Instant::now();
    let jobs = (0..args.namespaces).flat_map(|n| (0..args.clusters).map(move |c| (c, n)));
    let errors = futures::stream::iter(jobs)
        .map(|(c, n)| {
            let api: Api<Namespace> = Api::all(clients[c].clone());
            async move {
                let name = format!("env-{n:05}");
                let cfg = json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "labels": {
                            "app.kubernetes.io/managed-by": "mtp",
                            "pod-security.kubernetes.io/enforce": "restricted",
                            "mtp.example/tier": tiers[n % 3],
                        },
                    },
                });
                api.patch(
                    &name,
                    &PatchParams::apply("mtp-agent").force(),
                    &Patch::Apply(&cfg),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let apply_secs = t_apply.elapsed().as_secs_f64();
    let applies = args.clusters * args.namespaces;
    let load_secs = t_load.elapsed().as_secs_f64();
    let objects: usize = sims.iter().map(SimCluster::object_count).sum();
    let rss_loaded = rss_kib();

    let t_list = Instant::now();
    let listed: usize = futures::stream::iter(0..args.lists)
        .map(|i| {
            let api: Api<Namespace> = Api::all(clients[i % clients.len()].clone());
            async move {
                api.list(
                    &ListParams::default()
                        .labels("app.kubernetes.io/managed-by=mtp,mtp.example/tier in (gold)"),
                )
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
            }
        })
        .buffer_unordered(args.concurrency)
        .fold(0, |a, n| futures::future::ready(a + n))
        .await;
    let list_secs = t_list.elapsed().as_secs_f64();

    println!(
        "kube-sim-bench: {} clusters x {} namespaces, concurrency {}",
        args.clusters, args.namespaces, args.concurrency
    );
    println!("objects stored:        {objects}");
    println!(
        "apply requests:        {applies} ({errors} failed) in {apply_secs:.2}s = {:.0} req/s",
        applies as f64 / apply_secs
    );
    println!("time to load:          {load_secs:.2}s (start clusters + apply)");
    println!(
        "RSS:                   {} MiB loaded (start {} MiB)",
        rss_loaded / 1024,
        rss_start / 1024
    );
    println!(
        "list requests:         {} in {list_secs:.2}s = {:.0} req/s (label selector, {} items/list avg)",
        args.lists,
        args.lists as f64 / list_secs,
        listed / args.lists.max(1)
    );
    for s in sims {
        s.shutdown().await;
    }
    Ok(())
}
