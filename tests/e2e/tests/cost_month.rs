//! A month of usage, end to end and by hand: kube-sim runs pods with
//! requests and usage curves on two clusters, on a simulated clock driven a
//! month forward an hour at a time; the real agents sample their node's
//! kubelet Summary, spool windows and send them; the control plane stores,
//! rolls up and prices them; the report must be exactly what this file
//! computes by hand — including a 30-second job no sample saw, a container
//! restart, a pod above its request and one below it, a price changed at a
//! midnight in the month, and ten hours with the agent down and its spool
//! wiped, which show as missing coverage and a gap, never as zero.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube_sim::{ContainerUsage, SimClock, SimCluster, SimOptions, UsageCurve};
use mtp_control_plane::config::Config;
use mtp_e2e::fleet::{TestAgent, cluster_with, eventually};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const MONTH_HOURS: i64 = 720;

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn usage(cpu_millis: u64, memory: u64) -> ContainerUsage {
    ContainerUsage {
        cpu_nano_cores: cpu_millis * 1_000_000,
        memory_working_set_bytes: memory,
        ..Default::default()
    }
}

/// A pod on `node` with one container per `(name, cpu request, memory
/// request)`, mounting claim `pvc` if given.
fn pod(name: &str, node: &str, containers: &[(&str, &str, &str)], pvc: Option<&str>) -> Pod {
    let containers: Vec<_> = containers
        .iter()
        .map(|(c, cpu, memory)| {
            json!({
                "name": c,
                "image": "registry.example/app:1",
                "resources": { "requests": { "cpu": cpu, "memory": memory } },
            })
        })
        .collect();
    let volumes: Vec<_> = pvc
        .map(|claim| json!({ "name": "data", "persistentVolumeClaim": { "claimName": claim } }))
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": { "nodeName": node, "containers": containers, "volumes": volumes },
    }))
    .expect("a pod")
}

async fn create_pod(sim: &SimCluster, namespace: &str, pod: Pod) {
    Api::<Pod>::namespaced(sim.client(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
}

async fn create_node(sim: &SimCluster, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name },
        "status": {
            "capacity": { "cpu": "8", "memory": "32Gi" },
            "allocatable": { "cpu": "8", "memory": "32Gi" },
        },
    }))
    .unwrap();
    Api::<Node>::all(sim.client())
        .create(&PostParams::default(), &node)
        .await
        .expect("node created");
}

/// An agent of `sim`'s node sampling every few milliseconds of real time,
/// in one-hour windows, bridging the simulated clock's one-hour steps.
async fn sampling_agent(sim: &SimCluster, plane: &TestPlane, token: &str, node: &str) -> TestAgent {
    let credentials = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(sim.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let kubelet = sim.kubelet_url(node);
    TestAgent::start_configured(sim.client(), &plane.url(), token, node, move |config| {
        config.usage = mtp_agent::UsageConfig {
            sample_interval: Duration::from_millis(5),
            window_seconds: 3600,
            max_sample_gap: Some(Duration::from_secs(2 * 3600)),
            ..mtp_agent::UsageConfig::enabled(kubelet, credentials)
        };
    })
    .await
}

/// Waits until every running agent has sampled its kubelet at `at` (so
/// every change the test makes next falls on a sample).
async fn sampled(agents: &[&TestAgent], at: DateTime<Utc>) {
    let want = at.timestamp() as f64;
    let deadline = tokio::time::Instant::now() + WAIT;
    for agent in agents {
        while agent.metric("mtp_agent_usage_last_sample_timestamp_seconds") != Some(want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no sample at {at} (last: {:?})",
                agent.metric("mtp_agent_usage_last_sample_timestamp_seconds")
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Waits until the node window of `cluster` starting at `start` is stored
/// (an agent's sample closes a window a moment after it is counted, and
/// sends it a moment later).
async fn window_stored(sql: &sqlx::PgPool, cluster: &str, start: DateTime<Utc>) {
    eventually(
        &format!("{cluster}'s window at {start} stored"),
        WAIT,
        || async {
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM usage_node_windows w JOIN clusters c ON c.id = w.cluster_id \
             WHERE c.name = $1 AND w.window_start = $2",
            )
            .bind(cluster)
            .bind(start)
            .fetch_one(sql)
            .await
            .unwrap();
            (stored > 0).then_some(())
        },
    )
    .await;
}

/// Waits until every hour with stored windows is rolled up.
async fn rolled_up(sql: &sqlx::PgPool) {
    eventually("every hour rolled up", WAIT, || async {
        let dirty: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_dirty_hours")
            .fetch_one(sql)
            .await
            .unwrap();
        (dirty == 0).then_some(())
    })
    .await;
}

fn money(m: &Option<pb::Money>) -> Option<i128> {
    m.as_ref().map(|m| {
        assert_eq!(m.currency_code, "EUR");
        i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)
    })
}

/// (cpu, memory, storage, total) cost of a row, in nanos of a euro.
fn costs(r: &pb::CostRow) -> [Option<i128>; 4] {
    [
        money(&r.cpu.as_ref().unwrap().cost),
        money(&r.memory.as_ref().unwrap().cost),
        money(&r.storage.as_ref().unwrap().cost),
        money(&r.total_cost),
    ]
}

async fn report(
    cost: &mut Clients,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group: pb::CostGrouping,
) -> pb::CostReport {
    cost.cost
        .get_cost_report(pb::GetCostReportRequest {
            start_time: ts(from),
            end_time: ts(to),
            group_by: group as i32,
            ..Default::default()
        })
        .await
        .expect("a report")
        .into_inner()
}

fn price(cluster: &str, from: DateTime<Utc>, cpu: &str) -> pb::SetPriceRequest {
    pb::SetPriceRequest {
        price: Some(pb::Price {
            cluster: cluster.into(),
            effective_time: ts(from),
            currency_code: "EUR".into(),
            cpu_core_hour: cpu.into(),
            memory_gib_hour: "0.004".into(),
            storage_gib_month: "0.1".into(),
            ..Default::default()
        }),
        allow_high: false,
    }
}

#[tokio::test]
async fn a_simulated_month_costs_exactly_what_was_computed_by_hand() {
    // The month: 30 days from a midnight 32 days ago (the plane takes usage
    // that old here; its default horizon is 2 days).
    mtp_e2e::show_logs_if_asked();
    let t0 = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap() - TimeDelta::days(32);
    let db = mtp_pg_harness::fresh_database().await;
    let mut config = Config::for_dev(db.url().to_owned());
    config.usage_max_age = Duration::from_secs(40 * 86_400);
    config.usage_raw_retention_days = 45;
    let plane = TestPlane::start_with(config).await;
    let mut admin = plane
        .admin_with(
            &[
                ("team-a", quota("100", "400Gi", "4Ti", 10_000, 100)),
                ("team-b", quota("100", "400Gi", "4Ti", 10_000, 100)),
            ],
            &["k3s-1", "k3s-2"],
        )
        .await;
    for (tenant, env, cluster) in [
        ("team-a", "dev", "k3s-1"),
        ("team-b", "web", "k3s-1"),
        ("team-a", "prod", "k3s-2"),
    ] {
        admin
            .create_env(tenant, env, cluster, "small")
            .await
            .unwrap();
    }
    // Default prices from the start; k3s-2's CPU dearer from day 15.
    admin.cost.set_price(price("", t0, "0.03")).await.unwrap();
    admin
        .cost
        .set_price(price("k3s-2", t0 + TimeDelta::days(15), "0.05"))
        .await
        .unwrap();

    let clock = SimClock::manual(t0);
    let options = || SimOptions {
        clock: clock.clone(),
        ..SimOptions::default()
    };
    let sim1 = cluster_with(options()).await;
    let sim2 = cluster_with(options()).await;
    create_node(&sim1, "node-1").await;
    create_node(&sim2, "node-2").await;
    let token1 = admin.join_token("k3s-1").await;
    let token2 = admin.join_token("k3s-2").await;
    let agent1 = sampling_agent(&sim1, &plane, &token1, "node-1").await;
    let mut agent2 = sampling_agent(&sim2, &plane, &token2, "node-2").await;
    for (tenant, env) in [("team-a", "dev"), ("team-b", "web"), ("team-a", "prod")] {
        admin
            .wait_status(tenant, env, pb::EnvironmentStatus::Ready, WAIT)
            .await;
    }

    // k3s-1, team-a-dev: `api` below its request, `worker` above it (and
    // restarted at hour 100). team-b-web: under its request, then over it
    // from hour 360. k3s-2, team-a-prod: `db` above its CPU request, below
    // its memory request, with a 20 GiB claim of which 10 GiB are used.
    create_pod(
        &sim1,
        "team-a-dev",
        pod("api", "node-1", &[("api", "500m", "256Mi")], None),
    )
    .await;
    sim1.set_container_curve(
        "team-a-dev",
        "api",
        "api",
        UsageCurve::constant(usage(250, 128 * MIB)),
    );
    create_pod(
        &sim1,
        "team-a-dev",
        pod("worker", "node-1", &[("worker", "200m", "128Mi")], None),
    )
    .await;
    sim1.set_container_curve(
        "team-a-dev",
        "worker",
        "worker",
        UsageCurve::constant(usage(700, 512 * MIB)),
    );
    create_pod(
        &sim1,
        "team-b-web",
        pod("web", "node-1", &[("web", "100m", "64Mi")], None),
    )
    .await;
    sim1.set_container_curve(
        "team-b-web",
        "web",
        "web",
        UsageCurve::new(vec![
            (Duration::ZERO, usage(50, 32 * MIB)),
            (360 * HOUR, usage(300, 32 * MIB)),
        ]),
    );
    create_pod(
        &sim2,
        "team-a-prod",
        pod("db", "node-2", &[("db", "1", "2Gi")], Some("db-data")),
    )
    .await;
    sim2.set_container_curve(
        "team-a-prod",
        "db",
        "db",
        UsageCurve::constant(usage(1500, GIB)),
    );
    sim2.set_volume_usage("team-a-prod", "db-data", 10 * GIB, 20 * GIB);

    let sql = plane.sql().await;
    sampled(&[&agent1, &agent2], t0).await;
    for hour in 1..=MONTH_HOURS {
        let now = t0 + TimeDelta::hours(hour);
        clock.set(now);
        match hour {
            // Down: the agent of k3s-2 dies after everything it had was
            // recorded, its spool is wiped, and it is away ten hours.
            500 => {
                sampled(&[&agent2], now).await;
                window_stored(&sql, "k3s-2", now - TimeDelta::hours(1)).await;
                agent2.kill().await;
                std::fs::remove_dir_all(agent2.config.state_dir.join("usage-spool"))
                    .expect("the spool is there to wipe");
                sampled(&[&agent1], now).await;
                continue;
            }
            501..510 => {
                sampled(&[&agent1], now).await;
                continue;
            }
            510 => {
                agent2.restart().await;
                // It knows its namespaces from the state it kept before the
                // next hour's sample.
                eventually("the restarted agent knows its namespaces", WAIT, || async {
                    agent2
                        .status()
                        .managed_namespaces
                        .contains("team-a-prod")
                        .then_some(())
                })
                .await;
            }
            _ => {}
        }
        sampled(&[&agent1, &agent2], now).await;
        match hour {
            100 => sim1
                .restart_container("team-a-dev", "worker", "worker")
                .unwrap(),
            // A job of 30 seconds, 1 core and 1 GiB requested, that no
            // sample sees running: it is charged from its status.
            200 => {
                create_pod(
                    &sim1,
                    "team-a-dev",
                    pod("job", "node-1", &[("job", "1", "1Gi")], None),
                )
                .await;
                clock.set(now + TimeDelta::seconds(30));
                sim1.finish_pod("team-a-dev", "job", true).unwrap();
            }
            _ => {}
        }
    }
    let end = t0 + TimeDelta::hours(MONTH_HOURS);
    for cluster in ["k3s-1", "k3s-2"] {
        window_stored(&sql, cluster, end - TimeDelta::hours(1)).await;
    }
    rolled_up(&sql).await;

    let by_env = report(&mut admin, t0, end, pb::CostGrouping::Environment).await;
    let env = |name: &str| {
        by_env
            .rows
            .iter()
            .find(|r| r.environment == name)
            .unwrap_or_else(|| panic!("no row for {name}: {:#?}", by_env.rows))
    };
    // team-a/dev, all at the default price (0.03 per core-hour, 0.004 per
    // GiB-hour), 720 hours:
    //   CPU billed: api 0.5 (its request) × 720 = 360 core-h; worker 0.7
    //   (its usage, across the restart) × 720 = 504; job 1 core × 30 s =
    //   1/120 core-h. 864 + 1/120 core-h × 0.03 = 25.92025.
    //   Memory billed: api 0.25 GiB (request) × 720 = 180; worker 0.5 GiB
    //   (usage) × 720 = 360; job 1/120 GiB-h. (540 + 1/120) × 0.004 =
    //   2.160033333… No storage. Total 28.080283333 (rounded once, half
    //   to even, to the nano).
    let dev = env("dev");
    assert_eq!(dev.tenant, "team-a");
    let cpu = dev.cpu.as_ref().unwrap();
    assert!(
        (cpu.billed - (864.0 + 1.0 / 120.0)).abs() < 1e-9,
        "dev CPU billed {cpu:?}"
    );
    assert!(
        (cpu.requested - (0.7 * 720.0 + 1.0 / 120.0)).abs() < 1e-9,
        "{cpu:?}"
    );
    assert!((cpu.used - 0.95 * 720.0).abs() < 1e-9, "{cpu:?}");
    assert_eq!(
        costs(dev),
        [
            Some(25_920_250_000),
            Some(2_160_033_333),
            Some(0),
            Some(28_080_283_333)
        ],
        "{dev:#?}"
    );
    assert_eq!(dev.coverage, 1.0, "{dev:#?}");

    // team-b/web: CPU billed 0.1 (request) × 360 + 0.3 (usage) × 360 = 144
    // core-h × 0.03 = 4.32; memory 1/16 GiB (request) × 720 = 45 GiB-h ×
    // 0.004 = 0.18.
    let web = env("web");
    assert_eq!(
        costs(web),
        [
            Some(4_320_000_000),
            Some(180_000_000),
            Some(0),
            Some(4_500_000_000)
        ],
        "{web:#?}"
    );

    // team-a/prod on k3s-2, 710 hours with data (hours 500..510 missing):
    //   CPU 1.5 (usage) × 360 h at 0.03 = 16.2, × 350 h at 0.05 = 26.25.
    //   Memory 2 GiB (request) × 710 = 1420 GiB-h × 0.004 = 5.68.
    //   Storage 20 GiB (capacity) × 710 h = 14200 GiB-h, at 0.1 per
    //   GiB-month of 730 h = 1.945205479452…
    //   Total 50.075205479452… → 50.075205479.
    let prod = env("prod");
    assert_eq!(
        costs(prod),
        [
            Some(42_450_000_000),
            Some(5_680_000_000),
            Some(1_945_205_479),
            Some(50_075_205_479)
        ],
        "{prod:#?}"
    );
    assert!(
        (prod.coverage - 710.0 / 720.0).abs() < 1e-9,
        "ten hours without data: {prod:#?}"
    );
    let gap_hours: i64 = by_env
        .gaps
        .iter()
        .filter(|g| g.cluster == "k3s-2")
        .map(|g| g.end_time.as_ref().unwrap().seconds - g.start_time.as_ref().unwrap().seconds)
        .sum::<i64>()
        / 3600;
    assert_eq!(gap_hours, 10, "the outage is listed: {:#?}", by_env.gaps);

    // By tenant: team-a spans both clusters.
    let by_tenant = report(&mut admin, t0, end, pb::CostGrouping::Tenant).await;
    let team_a = by_tenant
        .rows
        .iter()
        .find(|r| r.tenant == "team-a")
        .expect("team-a");
    // dev + prod, rounded once from the exact sum:
    // 28.080283333… + 50.075205479452… = 78.155488812785… → 78.155488813.
    assert_eq!(
        money(&team_a.total_cost),
        Some(78_155_488_813),
        "team-a is dev + prod across both clusters: {team_a:#?}"
    );
    // By cluster: k3s-1 carries dev and web.
    let by_cluster = report(&mut admin, t0, end, pb::CostGrouping::Cluster).await;
    let k3s_1 = by_cluster
        .rows
        .iter()
        .find(|r| r.cluster == "k3s-1")
        .expect("k3s-1");
    assert_eq!(
        money(&k3s_1.total_cost),
        Some(28_080_283_333 + 4_500_000_000)
    );

    // A team-b owner sees team-b only.
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-b").await;
    let mut as_b = plane.clients(Some(&owner)).await;
    let mine = report(&mut as_b, t0, end, pb::CostGrouping::Environment).await;
    assert_eq!(
        mine.rows
            .iter()
            .map(|r| r.environment.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert!(mine.idle.is_empty(), "idle cost is for platform admins");
}

/// No loss and no double count across the faults a platform meets: two
/// simulated days of one pod, with PostgreSQL crashed for four hours and the
/// control plane killed for four more (restarted on its address, and a
/// second replica beside it at the end). The agent keeps sampling into its
/// spool meanwhile and sends it all when it can: the cost is the full 48
/// hours, exactly, and coverage is whole.
#[tokio::test]
async fn usage_survives_a_postgresql_crash_and_a_control_plane_kill_exactly() {
    let t0 = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap() - TimeDelta::days(5);
    let server = mtp_e2e::mtp_pg_harness::DedicatedServer::start()
        .await
        .unwrap();
    let url = server.create_database().await.unwrap();
    let plane_config = |url: &str| {
        let mut config = Config::for_dev(url.to_owned());
        config.usage_max_age = Duration::from_secs(10 * 86_400);
        config.usage_raw_retention_days = 12;
        config
    };
    let plane = TestPlane::start_with(plane_config(&url)).await;
    let addr = plane.running.grpc_addr;
    let mut admin = plane
        .admin_with(
            &[("team-a", quota("100", "400Gi", "4Ti", 10_000, 100))],
            &["k3s-1"],
        )
        .await;
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin.cost.set_price(price("", t0, "0.03")).await.unwrap();
    let clock = SimClock::manual(t0);
    let sim = cluster_with(SimOptions {
        clock: clock.clone(),
        ..SimOptions::default()
    })
    .await;
    create_node(&sim, "node-1").await;
    let token = admin.join_token("k3s-1").await;
    let agent = sampling_agent(&sim, &plane, &token, "node-1").await;
    admin
        .wait_status("team-a", "dev", pb::EnvironmentStatus::Ready, WAIT)
        .await;
    // 250m requested, 1 core used; 1 GiB requested, 512 MiB used.
    create_pod(
        &sim,
        "team-a-dev",
        pod("app", "node-1", &[("app", "250m", "1Gi")], None),
    )
    .await;
    sim.set_container_curve(
        "team-a-dev",
        "app",
        "app",
        UsageCurve::constant(usage(1000, 512 * MIB)),
    );

    let mut restarted = None;
    let mut first = Some(plane);
    sampled(&[&agent], t0).await;
    for hour in 1..=48 {
        let now = t0 + TimeDelta::hours(hour);
        clock.set(now);
        sampled(&[&agent], now).await;
        match hour {
            12 => server.kill().await.unwrap(),
            16 => server.restart().await.unwrap(),
            30 => first.take().expect("running").running.kill(),
            34 => {
                let mut config = plane_config(&url);
                config.grpc_listen = addr;
                restarted = Some(TestPlane::start_with(config).await);
            }
            _ => {}
        }
    }
    let restarted = restarted.expect("the control plane came back");
    let _replica = TestPlane::start_with(plane_config(&url)).await;
    let sql = restarted.sql().await;
    let end = t0 + TimeDelta::hours(48);
    window_stored(&sql, "k3s-1", end - TimeDelta::hours(1)).await;
    rolled_up(&sql).await;

    let mut admin = restarted.admin().await;
    let r = report(&mut admin, t0, end, pb::CostGrouping::Environment).await;
    let dev = r
        .rows
        .iter()
        .find(|r| r.environment == "dev")
        .expect("the dev row");
    // CPU: 1 core (usage) × 48 h = 48 core-h × 0.03 = 1.44. Memory: 1 GiB
    // (request) × 48 h = 48 GiB-h × 0.004 = 0.192.
    assert_eq!(
        costs(dev),
        [
            Some(1_440_000_000),
            Some(192_000_000),
            Some(0),
            Some(1_632_000_000)
        ],
        "{dev:#?}"
    );
    assert_eq!(dev.coverage, 1.0, "{dev:#?}");
    assert!(r.gaps.is_empty(), "{:#?}", r.gaps);
    let windows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_windows")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(windows, 48, "one raw window per hour, none twice");
}
