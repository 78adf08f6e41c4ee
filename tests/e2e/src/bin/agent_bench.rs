//! `mtp-agent-bench`: time from CreateEnvironment to Ready through the real
//! `mtp-agent` binary on kube-sim or on a real kube-apiserver, next to the
//! time kube-rs alone needs to server-side apply (and read back) the same
//! objects on the same server as the same identity, and the agent's memory
//! once it manages all of them.
//!
//! `cargo build --release -p mtp-agent -p mtp-e2e && ./target/release/mtp-agent-bench [--cluster real-apiserver]`

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mtp_agent::bundle::Bundle;
use mtp_agent::kubernetes::ClusterApi;
use mtp_e2e::process::{cpu_time, rss_kib};
use mtp_e2e::{TestPlane, fleet, quota};
use mtp_kube_harness::{AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, KubeServer};
use mtp_proto::v1 as pb;

/// Measure environment Ready latency through the agent, direct SSA time, agent RSS.
#[derive(Debug, Parser)]
struct Args {
    /// Environments to create, one after the other.
    #[arg(long, default_value_t = 1000)]
    environments: usize,
    /// The agent binary [default: mtp-agent next to this benchmark].
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Keep the agent's log in this file (level from `MTP_AGENT_LOG`, default
    /// `info`; `debug` adds per-pass timings).
    #[arg(long)]
    agent_log: Option<PathBuf>,
    /// How often the client polls GetEnvironment while waiting for Ready.
    /// Polling competes for the same two cores as the agent and the control
    /// plane; the server timestamps are the figure that does not depend on it.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// The cluster the agent applies to: kube-sim (in memory), or a real
    /// kube-apiserver + kube-controller-manager + etcd (tests/kube-harness,
    /// built from source on first use) with deploy/k3s installed, where the
    /// agent and the direct applies run as the agent's ServiceAccount.
    #[arg(long, value_enum, default_value_t = ClusterKind::KubeSim)]
    cluster: ClusterKind,
    /// kube-sim only: after the environments are Ready, run this many pods
    /// (spread over the environments, each with requests and a usage curve)
    /// on the agent's node and measure the agent's CPU and RSS while it
    /// samples them every `--usage-sample-interval`. 0: usage off.
    #[arg(long, default_value_t = 0)]
    usage_pods: usize,
    /// The agent's sampling period while measuring usage.
    #[arg(long, default_value = "10s")]
    usage_sample_interval: String,
    /// How long to measure the agent while it samples.
    #[arg(long, default_value_t = 60)]
    usage_seconds: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClusterKind {
    KubeSim,
    RealApiserver,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<44} n={:<5} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

fn to_duration(ts: Option<&prost_types::Timestamp>) -> Option<Duration> {
    let ts = ts?;
    Some(Duration::new(
        u64::try_from(ts.seconds).ok()?,
        u32::try_from(ts.nanos).ok()?,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    anyhow::ensure!(args.environments > 0, "--environments must be positive");
    let agent_bin = match args.agent_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("mtp-agent"),
    };
    anyhow::ensure!(
        agent_bin.exists(),
        "agent binary {} not found: build it first (cargo build --release -p mtp-agent)",
        agent_bin.display()
    );

    eprintln!(
        "mtp-agent-bench: starting PostgreSQL, the control plane and {:?}…",
        args.cluster
    );
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("bench-1").await?;
    let n = i64::try_from(args.environments)?;
    admin
        .create_tenant("bench", quota("1000000", "1000Ti", "1000Ti", 1_000_000, n))
        .await?;
    let work = tempfile::tempdir()?;
    let kubeconfig = work.path().join("kubeconfig");
    let (direct_client, sim, real) = match args.cluster {
        ClusterKind::KubeSim => {
            let sim = fleet::cluster().await;
            sim.write_kubeconfig(&kubeconfig)?;
            (sim.client(), Some(sim), None)
        }
        ClusterKind::RealApiserver => {
            let server = tokio::task::spawn_blocking(|| {
                KubeServer::start(mtp_kube_harness::Options::default())
            })
            .await?
            .map_err(anyhow::Error::msg)?;
            let agent_kubeconfig = server
                .service_account_kubeconfig(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
                .await;
            std::fs::copy(agent_kubeconfig, &kubeconfig)?;
            eprintln!(
                "mtp-agent-bench: Kubernetes {} at {}",
                server.version(),
                server.url()
            );
            (server.agent().await, None, Some(server))
        }
    };
    let token = admin.join_token("bench-1").await;
    let usage_args: Vec<String> = match (&sim, args.usage_pods) {
        (Some(sim), n) if n > 0 => vec![
            "--kubelet-url".into(),
            sim.kubelet_url("bench-node"),
            "--usage-sample-interval".into(),
            args.usage_sample_interval.clone(),
        ],
        (None, n) if n > 0 => {
            anyhow::bail!("--usage-pods needs --cluster kube-sim (a real apiserver has no kubelet)")
        }
        _ => vec!["--no-usage".into()],
    };

    let mut agent = tokio::process::Command::new(&agent_bin)
        .args(&usage_args)
        .args(["--control-plane", &plane.url(), "--node-name", "bench-node"])
        .arg("--ca-cert")
        .arg(mtp_e2e::pki().ca_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .args(["--lease-duration-secs", "5", "--lease-retry-ms", "500"])
        .env("MTP_AGENT_JOIN_TOKEN", &token)
        .env(
            "MTP_AGENT_LOG",
            match &args.agent_log {
                Some(_) => std::env::var("MTP_AGENT_LOG").unwrap_or_else(|_| "info".into()),
                None => "warn".into(),
            },
        )
        .stdout(match &args.agent_log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()?;
    let pid = agent.id().unwrap_or(0);

    // Wait until the agent is connected and applying.
    let started = Instant::now();
    loop {
        let agents = admin
            .clusters
            .list_agents(pb::ListAgentsRequest::default())
            .await?
            .into_inner()
            .agents;
        if agents.iter().any(|a| a.connected && a.applier) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the agent never became the applier"
        );
        if let Some(status) = agent.try_wait()? {
            anyhow::bail!("the agent exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_rss = rss_kib(pid);

    eprintln!(
        "mtp-agent-bench: {} environments, create → Ready, one at a time…",
        args.environments
    );
    let mut observed = Vec::with_capacity(args.environments);
    let mut recorded = Vec::with_capacity(args.environments);
    let mut configs = Vec::with_capacity(args.environments);
    let run = Instant::now();
    for i in 0..args.environments {
        let name = format!("e{i}");
        let t0 = Instant::now();
        let created = admin.create_env("bench", &name, "bench-1", "small").await?;
        let env = loop {
            let e = admin.env("bench", &name).await;
            if e.status == pb::EnvironmentStatus::Ready as i32 {
                break e;
            }
            anyhow::ensure!(
                e.status != pb::EnvironmentStatus::Failed as i32,
                "{name} failed: {}",
                e.reason
            );
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "{name} not Ready after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        };
        observed.push(t0.elapsed());
        if let (Some(c), Some(r)) = (
            to_duration(created.create_time.as_ref()),
            to_duration(env.ready_time.as_ref()),
        ) {
            recorded.push(r.saturating_sub(c));
        }
        configs.push(pb::NamespaceConfig {
            namespace: format!("direct-{i}"),
            tenant: "bench".into(),
            environment: name,
            ..Default::default()
        });
    }
    let total = run.elapsed();
    let loaded_rss = rss_kib(pid);

    // The same objects, applied by kube-rs directly on the same server.
    let direct = ClusterApi::new(direct_client);
    let mut apply_only = Vec::with_capacity(configs.len());
    let mut apply_verify = Vec::with_capacity(configs.len());
    let sample = {
        // A real config as the control plane sends it (quota, defaults, owners).
        let e0 = admin.env("bench", "e0").await;
        e0.namespace
    };
    eprintln!(
        "mtp-agent-bench: direct server-side apply of the same bundles (reference: {sample})…"
    );
    let reference = bench_config_for(&plane, &sample).await?;
    for (i, c) in configs.iter().enumerate() {
        let mut config = reference.clone();
        config.namespace = c.namespace.clone();
        config.environment = c.environment.clone();
        let bundle = Bundle::render(&config);
        let t0 = Instant::now();
        direct.apply(&bundle).await?;
        apply_only.push(t0.elapsed());
        let m = direct.verify(&bundle).await?;
        apply_verify.push(t0.elapsed());
        anyhow::ensure!(m.is_empty(), "direct apply {i} did not verify: {m:?}");
    }

    println!();
    println!(
        "environments: {}   total wall time for create→Ready loop: {:.1} s",
        args.environments,
        total.as_secs_f64()
    );
    report(
        &format!(
            "create → Ready, seen by the client ({} ms poll)",
            args.poll_ms
        ),
        observed,
    );
    report("create → Ready, server timestamps", recorded);
    report("direct kube-rs SSA of the same bundle", apply_only);
    report("direct kube-rs SSA + read-back verify", apply_verify);
    if let (Some((idle, _)), Some((rss, peak))) = (idle_rss, loaded_rss) {
        println!(
            "agent RSS: idle {:.1} MiB, with {} namespaces {:.1} MiB (peak {:.1} MiB)",
            idle as f64 / 1024.0,
            args.environments,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    if let (Some(sim), true) = (&sim, args.usage_pods > 0) {
        measure_usage(
            &plane,
            sim,
            pid,
            args.environments,
            args.usage_pods,
            args.usage_seconds,
        )
        .await?;
    }
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    drop(real);
    Ok(())
}

/// The NamespaceConfig the control plane sends for a namespace, read the way
/// an agent gets it (a registered scripted agent's snapshot).
async fn bench_config_for(
    plane: &TestPlane,
    namespace: &str,
) -> anyhow::Result<pb::NamespaceConfig> {
    let mut admin = plane.admin().await;
    let token = admin.join_token("bench-1").await;
    let reg = mtp_e2e::agent::register(&plane.url(), &token, "bench-reader").await?;
    let mut reader = mtp_e2e::agent::ScriptedAgent::connect(&plane.url(), &reg, 0, false).await?;
    match reader.next_desired(Duration::from_secs(10)).await {
        pb::control_message::Kind::Snapshot(s) => s
            .namespaces
            .into_iter()
            .find(|n| n.namespace == namespace)
            .ok_or_else(|| anyhow::anyhow!("{namespace} not in the snapshot")),
        _ => anyhow::bail!("expected a snapshot"),
    }
}

/// Runs `pods` pods over the `environments` namespaces on the agent's node
/// (kube-sim's kubelet serves their usage) and prints the agent's CPU and
/// RSS over `seconds` of sampling, and the namespace-windows the control
/// plane stored meanwhile.
async fn measure_usage(
    plane: &TestPlane,
    sim: &kube_sim::SimCluster,
    pid: u32,
    environments: usize,
    pods: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, PostParams};
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "bench-node" },
        "status": { "allocatable": { "cpu": "64", "memory": "256Gi" } },
    }))?;
    Api::<Node>::all(sim.client())
        .create(&PostParams::default(), &node)
        .await?;
    eprintln!(
        "mtp-agent-bench: {pods} pods over {environments} namespaces, then {seconds} s of sampling…"
    );
    let sql = plane.sql().await;
    let namespaces: Vec<String> =
        sqlx::query_scalar("SELECT namespace FROM environments ORDER BY namespace")
            .fetch_all(&sql)
            .await?;
    for i in 0..pods {
        let ns = &namespaces[i % namespaces.len()];
        let name = format!("p{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "nodeName": "bench-node",
                "containers": [{
                    "name": "app",
                    "image": "registry.example/app:1",
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
                }],
            },
        }))?;
        Api::<Pod>::namespaced(sim.client(), ns)
            .create(&PostParams::default(), &pod)
            .await?;
        sim.set_container_curve(
            ns,
            &name,
            "app",
            kube_sim::UsageCurve::constant(kube_sim::ContainerUsage {
                cpu_nano_cores: 50_000_000 + (i as u64 % 7) * 40_000_000,
                memory_working_set_bytes: (64 + (i as u64 % 5) * 32) << 20,
                ..Default::default()
            }),
        );
    }
    eprintln!(
        "mtp-agent-bench: agent RSS with the pods created: {:?} KiB",
        rss_kib(pid)
    );
    // Let the first windows close, then measure.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let stored = |sql: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM usage_windows")
            .fetch_one(&sql)
            .await
    };
    let windows_before = stored(sql.clone()).await?;
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let began = Instant::now();
    let mut rss_over_time = Vec::new();
    while began.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(seconds))).await;
        rss_over_time.push(rss_kib(pid).map_or(0, |(rss, _)| rss / 1024));
    }
    eprintln!("mtp-agent-bench: agent RSS every 10 s (MiB): {rss_over_time:?}");
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let wall = began.elapsed();
    let windows = stored(sql).await? - windows_before;
    let (rss, peak) = rss_kib(pid).unwrap_or_default();
    println!(
        "usage sampling, {environments} namespaces, {pods} pods: agent CPU {:.2} s over {:.0} s ({:.1} % of a core), RSS {:.1} MiB (peak {:.1} MiB); {windows} namespace-windows stored meanwhile",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    Ok(())
}
