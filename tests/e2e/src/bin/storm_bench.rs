//! `mtp-storm-bench`: a reconnect storm against the real `mtp-control-plane`
//! binary (its own process, so its memory and CPU are its own) on a
//! throwaway PostgreSQL, over mutual TLS: many clusters with many
//! environments, several agents per cluster, every session cut and opened
//! again at the same moment. Prints the time until every agent is resynced
//! (its whole update received, the appliers fenced in again), and the control
//! plane's RSS and CPU over the storm.
//!
//! `cargo build --release -p mtp-control-plane -p mtp-e2e && ./target/release/mtp-storm-bench`

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use mtp_e2e::agent::{Enrollment, ScriptedAgent, register};
use mtp_e2e::process::{cpu_time, rss_kib};
use mtp_e2e::{Clients, pki, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::control_message::Kind as ControlKind;

/// Reconnect storm: time to resync every agent, control-plane RSS and CPU.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Agents per cluster (the first of each is its applier).
    #[arg(long, default_value_t = 3)]
    agents_per_cluster: usize,
    /// Environments in all, spread evenly over the clusters.
    #[arg(long, default_value_t = 10_000)]
    environments: usize,
    /// Reconnect with revision 0 (a full snapshot each, as after lost agent
    /// state) instead of the revision held (changes since: none).
    #[arg(long)]
    snapshot: bool,
    /// The control-plane binary [default: next to this benchmark].
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Plane {
    child: tokio::process::Child,
    url: String,
    admin: Clients,
}

async fn start_plane(args: &Args, database_url: &str) -> anyhow::Result<Plane> {
    let bin = match &args.control_plane_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("mtp-control-plane"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it (cargo build --release -p mtp-control-plane) or pass --control-plane-bin",
        bin.display()
    );
    let dir = tempfile::tempdir()?.keep();
    let tls = pki().server_tls();
    std::fs::write(dir.join("server.crt"), &tls.cert_pem)?;
    std::fs::write(dir.join("server.key"), &tls.key_pem)?;
    let ca = pki().agent_ca_files();
    let (grpc, admin) = (free_port(), free_port());
    let token_file = dir.join("admin-token");
    let child = tokio::process::Command::new(&bin)
        .arg("--database-url")
        .arg(database_url)
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--tls-cert")
        .arg(dir.join("server.crt"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .arg("--agent-ca-cert")
        .arg(&ca.cert)
        .arg("--agent-ca-key")
        .arg(&ca.key)
        .arg("--bootstrap-token-file")
        .arg(&token_file)
        .args(["--db-max-connections", "20", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("https://127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        if let Ok(c) = mtp_e2e::endpoint(&url).connect().await
            && token_file.exists()
        {
            break c;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the control plane did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secret = std::fs::read_to_string(&token_file)?.trim().to_owned();
    Ok(Plane {
        child,
        url,
        admin: Clients::new(channel, Some(secret)),
    })
}

/// Opens every session at once; returns when each has its whole update
/// (and each applier its grant), with the time that took.
async fn connect_all(
    url: &str,
    agents: &[(Enrollment, bool)],
    held: impl Fn(usize) -> i64,
) -> anyhow::Result<(Duration, Vec<ScriptedAgent>)> {
    let started = Instant::now();
    let sessions = agents.iter().enumerate().map(|(i, (who, candidate))| {
        let (url, who, candidate, held) = (url.to_owned(), who.clone(), *candidate, held(i));
        tokio::spawn(async move {
            let mut s = ScriptedAgent::connect(&url, &who, held, candidate).await?;
            let update = s.next_desired(Duration::from_secs(300)).await;
            anyhow::ensure!(
                matches!(update, ControlKind::Snapshot(_) | ControlKind::Changes(_)),
                "{update:?}"
            );
            if candidate {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !s.granted() {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "applier {} never granted",
                        who.agent_id
                    );
                    s.quiet_for(Duration::from_millis(50)).await;
                }
            }
            Ok::<_, anyhow::Error>(s)
        })
    });
    let mut open = Vec::new();
    for s in futures::future::join_all(sessions).await {
        open.push(s??);
    }
    Ok((started.elapsed(), open))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    anyhow::ensure!(
        args.clusters > 0 && args.agents_per_cluster > 0,
        "--clusters and --agents-per-cluster must be positive"
    );
    eprintln!("mtp-storm-bench: starting PostgreSQL and the control plane…");
    let db = mtp_e2e::mtp_pg_harness::fresh_database().await;
    let mut plane = start_plane(&args, db.url()).await?;
    let pid = plane.child.id().expect("running");
    let admin = &mut plane.admin;

    let per_cluster = args.environments.div_ceil(args.clusters);
    let tenants = args.environments.div_ceil(1000);
    for t in 0..tenants {
        let q = quota("100000", "100000Ti", "100000Ti", 1_000_000, 1000);
        admin.create_tenant(&format!("team-{t}"), q).await?;
    }
    let started = Instant::now();
    let mut created = 0;
    for c in 0..args.clusters {
        let cluster = format!("k3s-{c}");
        admin.create_cluster(&cluster).await?;
        let here = per_cluster.min(args.environments - created);
        let creates: Vec<_> = (created..created + here)
            .map(|i| {
                let mut admin = admin.clone();
                let (tenant, cluster) = (format!("team-{}", i / 1000), cluster.clone());
                async move {
                    admin
                        .create_env(&tenant, &format!("e{i}"), &cluster, "small")
                        .await
                }
            })
            .collect();
        created += here;
        for r in futures::future::join_all(creates).await {
            r?;
        }
    }
    eprintln!(
        "  {created} environments on {} clusters in {:.1} s",
        args.clusters,
        started.elapsed().as_secs_f64()
    );

    let mut agents = Vec::new();
    for c in 0..args.clusters {
        let token = admin.join_token(&format!("k3s-{c}")).await;
        for a in 0..args.agents_per_cluster {
            agents.push((
                register(&plane.url, &token, &format!("node-{c}-{a}")).await?,
                a == 0,
            ));
        }
    }
    let (first, sessions) = connect_all(&plane.url, &agents, |_| 0).await?;
    eprintln!(
        "  {} agents connected and synced from empty in {:.2} s",
        agents.len(),
        first.as_secs_f64()
    );
    let revisions: Vec<i64> = {
        let mut clusters = admin.clusters.clone();
        let mut by_cluster = std::collections::HashMap::new();
        for c in clusters
            .list_clusters(pb::ListClustersRequest {})
            .await?
            .into_inner()
            .clusters
        {
            by_cluster.insert(c.name, c.revision);
        }
        agents
            .iter()
            .map(|(who, _)| by_cluster.get(&who.cluster).copied().unwrap_or(0))
            .collect()
    };
    let (rss_before, _) = rss_kib(pid).unwrap_or_default();

    // The storm: every session cut at once, every agent back at once.
    drop(sessions);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let held = |i: usize| if args.snapshot { 0 } else { revisions[i] };
    let (storm, sessions) = connect_all(&plane.url, &agents, held).await?;
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let (rss, peak) = rss_kib(pid).unwrap_or_default();

    println!(
        "reconnect storm: {} agents over {} clusters with {} environments, resuming from {}",
        agents.len(),
        args.clusters,
        created,
        if args.snapshot {
            "nothing (a full snapshot each)"
        } else {
            "the revision each held"
        }
    );
    println!(
        "  every agent resynced (whole update received, appliers fenced in) after {:.2} s",
        storm.as_secs_f64()
    );
    println!(
        "  control plane CPU during the storm: {:.2} s ({:.0}% of one core over the storm)",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / storm.as_secs_f64().max(1e-9)
    );
    println!(
        "  control plane RSS: {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    drop(sessions);
    plane.child.kill().await.ok();
    Ok(())
}
