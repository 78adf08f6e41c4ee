//! `mtp-bench`: measures CreateEnvironment latency against a real control
//! plane on a real PostgreSQL (a throwaway one, or DATABASE_URL), over gRPC on
//! loopback, and prints the figures. Run it in release mode for real numbers:
//! `cargo run --release -p mtp-e2e --bin mtp-bench`.

use std::time::{Duration, Instant};

use clap::Parser;
use mtp_e2e::{TestPlane, quota};

/// Measure CreateEnvironment latency (p50/p90/p99/max) and throughput.
#[derive(Debug, Parser)]
struct Args {
    /// How many environments to create.
    #[arg(long, default_value_t = 1000)]
    creations: usize,
    /// How many clients create at the same time (all in one tenant, so they
    /// contend on the tenant's quota lock as real concurrent users would).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    anyhow::ensure!(
        args.creations > 0 && args.concurrency > 0,
        "--creations and --concurrency must be positive"
    );
    eprintln!("mtp-bench: starting PostgreSQL and the control plane…");
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("bench-1").await?;
    let max_envs = i64::try_from(args.creations)
        .unwrap_or(i64::MAX)
        .min(10_000);
    admin
        .create_tenant(
            "bench",
            quota("1000000", "1000Ti", "1000Ti", 1_000_000, max_envs),
        )
        .await?;

    eprintln!(
        "mtp-bench: creating {} environments with {} client(s)…",
        args.creations, args.concurrency
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let mut client = plane.admin().await;
        let (creations, concurrency) = (args.creations, args.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..creations).step_by(concurrency) {
                let t = Instant::now();
                client
                    .create_env("bench", &format!("env-{i}"), "bench-1", "small")
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(args.creations);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let wall = started.elapsed();
    latencies.sort();
    println!(
        "CreateEnvironment over gRPC (loopback) on PostgreSQL, {} calls, concurrency {}:",
        latencies.len(),
        args.concurrency
    );
    println!("  p50  {}", ms(percentile(&latencies, 50.0)));
    println!("  p90  {}", ms(percentile(&latencies, 90.0)));
    println!("  p99  {}", ms(percentile(&latencies, 99.0)));
    println!(
        "  max  {}",
        ms(*latencies.last().expect("at least one call"))
    );
    println!(
        "  throughput {:.0} creates/s (wall {:.2} s)",
        latencies.len() as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    plane.running.shutdown().await;
    Ok(())
}
