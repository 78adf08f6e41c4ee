//! Cost end to end: usage sent over the agent channel by two nodes of two
//! clusters, rolled up by the control plane, priced with the price book in
//! force each day, reported per tenant, environment and cluster — totals
//! checked against sums computed here by hand from the batches sent. Who
//! sees what (tenant tokens their own cost only, idle for admins only),
//! unit mistakes in prices refused, missing data shown as missing coverage
//! and gaps rather than zero, and budget alerts firing once per threshold
//! with two replicas evaluating them.

use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, TimeZone, Utc};
use mtp_control_plane::config::Config;
use mtp_e2e::agent::{ScriptedAgent, register};
use mtp_e2e::{Clients, TestPlane, quota};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use mtp_proto::v1::cost_service_client::CostServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const WAIT: Duration = Duration::from_secs(15);
const GIB: u64 = 1 << 30;

#[derive(Clone)]
struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Cost = CostServiceClient<InterceptedService<Channel, Auth>>;

async fn cost_client(plane: &TestPlane, secret: &str) -> Cost {
    let auth = Auth(format!("Bearer {secret}").parse().unwrap());
    CostServiceClient::with_interceptor(plane.channel().await, auth)
}

/// A plane that takes usage up to 45 days old (a simulated past month).
async fn plane_on(url: String) -> TestPlane {
    let mut config = Config::for_dev(url);
    config.usage_max_age = Duration::from_secs(45 * 86_400);
    config.usage_raw_retention_days = 50;
    TestPlane::start_with(config).await
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn midnight(days_ago: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::days(1)).unwrap() - TimeDelta::days(days_ago)
}

/// `n / d` rounded half to even, as the control plane rounds costs.
fn round(n: u128, d: u128) -> i128 {
    let (q, r) = (n / d, n % d);
    let up = 2 * r > d || (2 * r == d && q % 2 == 1);
    (q + u128::from(up)) as i128
}

fn nanos(m: &Option<pb::Money>) -> Option<i128> {
    m.as_ref().map(|m| {
        assert_eq!(m.currency_code, "EUR");
        i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)
    })
}

/// The standard load of one environment over `seconds`: 500m CPU
/// requested (250m used), 1 GiB memory requested (½ used), 10 GiB of
/// storage (2 GiB used). Billed = max(request, usage) = the request.
fn load(namespace: &str, seconds: u64) -> pb::NamespaceUsage {
    pb::NamespaceUsage {
        namespace: namespace.into(),
        cpu_requested_core_nanos: 500_000_000 * seconds,
        cpu_used_core_nanos: 250_000_000 * seconds,
        cpu_billed_core_nanos: 500_000_000 * seconds,
        memory_requested_byte_seconds: GIB * seconds,
        memory_used_byte_seconds: GIB / 2 * seconds,
        memory_billed_byte_seconds: GIB * seconds,
        storage_requested_byte_seconds: 10 * GIB * seconds,
        storage_used_byte_seconds: 2 * GIB * seconds,
        storage_billed_byte_seconds: 10 * GIB * seconds,
        network_receive_bytes: 1000,
        network_transmit_bytes: 10,
        container_seconds: seconds,
    }
}

/// An hour-long window of a 4-core, 16 GiB node.
fn hour(start: DateTime<Utc>, namespaces: Vec<pb::NamespaceUsage>) -> pb::UsageWindow {
    pb::UsageWindow {
        start: ts(start),
        duration_seconds: 3600,
        covered_seconds: 3600,
        node_cpu_millis: 4000,
        node_memory_bytes: (16 * GIB) as i64,
        namespaces,
    }
}

async fn send_and_confirm(agent: &mut ScriptedAgent, batch: pb::UsageBatch) {
    let (epoch, sequence) = (batch.spool_epoch, batch.sequence);
    agent.send(AgentKind::Usage(batch)).await;
    tokio::time::timeout(WAIT, async {
        loop {
            let message = agent.inbound.message().await.expect("session open");
            if let Some(pb::ControlMessage {
                kind: Some(ControlKind::UsageRecorded(r)),
            }) = message
            {
                assert_eq!((r.spool_epoch, r.sequence), (epoch, sequence));
                return;
            }
        }
    })
    .await
    .expect("the batch is answered");
}

/// Waits until every dirty hour is rolled up by the plane's loop.
async fn rolled_up(plane: &TestPlane) {
    let sql = plane.sql().await;
    tokio::time::timeout(WAIT, async {
        loop {
            let dirty: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_dirty_hours")
                .fetch_one(&sql)
                .await
                .unwrap();
            if dirty == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("rollups catch up");
}

async fn agent_of(
    admin: &mut Clients,
    plane: &TestPlane,
    cluster: &str,
    node: &str,
) -> ScriptedAgent {
    let token = admin.join_token(cluster).await;
    let enrollment = register(&plane.url(), &token, node).await.unwrap();
    ScriptedAgent::connect(&plane.url(), &enrollment, 0, false)
        .await
        .unwrap()
}

fn price(
    cluster: &str,
    effective: DateTime<Utc>,
    cpu: &str,
    memory: &str,
    storage: &str,
) -> pb::SetPriceRequest {
    pb::SetPriceRequest {
        price: Some(pb::Price {
            cluster: cluster.into(),
            effective_time: ts(effective),
            currency_code: "EUR".into(),
            cpu_core_hour: cpu.into(),
            memory_gib_hour: memory.into(),
            storage_gib_month: storage.into(),
            ..Default::default()
        }),
        allow_high: false,
    }
}

/// Two clusters of one 4-core node each; team-a has `dev` on k3s-1 and
/// `ci` on k3s-2, team-b has `web` on k3s-1. Day D (10 days ago) and D+1
/// carry the standard load every hour, except that node-2 (k3s-2) sent
/// nothing for D 12:00–18:00 (and said so: "spool-full"), and node-1 sent
/// two hours of `web` on D-1, when no price was in force yet. Prices: the
/// default from D (CPU 0.04, memory 0.005, storage 0.1 per GiB-month),
/// k3s-1's own from D+1 with CPU at 0.08.
struct Fleet {
    plane: TestPlane,
    admin: Clients,
    cost: Cost,
    day: DateTime<Utc>,
}

async fn fleet() -> Fleet {
    let db = mtp_pg_harness::fresh_database().await;
    let plane = plane_on(db.url().to_owned()).await;
    let q = || quota("100", "400Gi", "4Ti", 10_000, 1000);
    let mut admin = plane
        .admin_with(&[("team-a", q()), ("team-b", q())], &["k3s-1", "k3s-2"])
        .await;
    let dev = admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap()
        .namespace;
    let ci = admin
        .create_env("team-a", "ci", "k3s-2", "small")
        .await
        .unwrap()
        .namespace;
    let web = admin
        .create_env("team-b", "web", "k3s-1", "small")
        .await
        .unwrap()
        .namespace;
    let day = midnight(10);
    let mut node1 = agent_of(&mut admin, &plane, "k3s-1", "node-1").await;
    let mut node2 = agent_of(&mut admin, &plane, "k3s-2", "node-2").await;

    let mut windows1: Vec<_> = (0..2)
        .map(|h| {
            hour(
                day - TimeDelta::days(1) + TimeDelta::hours(h),
                vec![load(&web, 3600)],
            )
        })
        .collect();
    windows1.extend((0..48).map(|h| {
        hour(
            day + TimeDelta::hours(h),
            vec![load(&dev, 3600), load(&web, 3600)],
        )
    }));
    send_and_confirm(
        &mut node1,
        pb::UsageBatch {
            spool_epoch: 1,
            sequence: 1,
            windows: windows1,
            gaps: vec![],
        },
    )
    .await;
    let windows2 = (0..48)
        .filter(|h| !(12..18).contains(h))
        .map(|h| hour(day + TimeDelta::hours(h), vec![load(&ci, 3600)]))
        .collect();
    send_and_confirm(
        &mut node2,
        pb::UsageBatch {
            spool_epoch: 1,
            sequence: 1,
            windows: windows2,
            gaps: vec![pb::UsageGap {
                start: ts(day + TimeDelta::hours(12)),
                end: ts(day + TimeDelta::hours(18)),
                reason: "spool-full".into(),
            }],
        },
    )
    .await;
    let mut cost = cost_client(&plane, &plane.admin_secret).await;
    cost.set_price(price("", day, "0.04", "0.005", "0.1"))
        .await
        .unwrap();
    cost.set_price(price(
        "k3s-1",
        day + TimeDelta::days(1),
        "0.08",
        "0.005",
        "0.1",
    ))
    .await
    .unwrap();
    rolled_up(&plane).await;
    Fleet {
        plane,
        admin,
        cost,
        day,
    }
}

fn request(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group: pb::CostGrouping,
) -> pb::GetCostReportRequest {
    pb::GetCostReportRequest {
        start_time: ts(from),
        end_time: ts(to),
        group_by: group as i32,
        ..Default::default()
    }
}

async fn report(cost: &mut Cost, r: pb::GetCostReportRequest) -> pb::CostReport {
    cost.get_cost_report(r).await.expect("report").into_inner()
}

fn row(report: &pb::CostReport, f: impl Fn(&pb::CostRow) -> bool) -> &pb::CostRow {
    report.rows.iter().find(|r| f(r)).expect("the row is there")
}

fn costs(r: &pb::CostRow) -> [Option<i128>; 4] {
    [
        nanos(&r.cpu.as_ref().unwrap().cost),
        nanos(&r.memory.as_ref().unwrap().cost),
        nanos(&r.storage.as_ref().unwrap().cost),
        nanos(&r.total_cost),
    ]
}

// Hand-computed over [D, D+2):
// team-a: dev 48 h on k3s-1 (CPU 12 core-h at 0.04 on D, 12 at 0.08 on D+1),
//         ci 42 h on k3s-2 (21 core-h at 0.04).
//   CPU 0.48 + 0.96 + 0.84 = 2.28; memory (48 + 42) GiB-h × 0.005 = 0.45;
//   storage 900 GiB-h × 0.1 / 730 = 0.123287671232…; total 2.853287671232…
// team-b: web 48 h on k3s-1: CPU 1.44, memory 0.24, storage 480 × 0.1 / 730.
const E9: i128 = 1_000_000_000;

#[tokio::test]
async fn a_tenant_report_spans_both_clusters_with_exact_totals_and_prices_by_day() {
    let Fleet { mut cost, day, .. } = fleet().await;
    let two_days = day + TimeDelta::days(2);
    let r = report(&mut cost, request(day, two_days, pb::CostGrouping::Tenant)).await;
    assert_eq!(r.currency_code, "EUR");
    assert_eq!(r.rows.len(), 2, "{r:?}");
    let a = row(&r, |r| r.tenant == "team-a");
    let storage_a = round(900 * 100_000_000, 730);
    assert_eq!(
        costs(a),
        [
            Some(2_280_000_000),
            Some(450_000_000),
            Some(storage_a),
            Some(round(2_730_000_000 * 730 + 900 * 100_000_000, 730)),
        ]
    );
    assert_eq!(storage_a, 123_287_671);
    assert_eq!(
        nanos(&a.total_cost),
        Some(2_853_287_671),
        "rounded once per row"
    );
    let cpu = a.cpu.as_ref().unwrap();
    assert_eq!((cpu.requested, cpu.used, cpu.billed), (45.0, 22.5, 45.0));
    assert_eq!(cpu.efficiency, 0.5);
    assert_eq!(a.memory.as_ref().unwrap().billed, 90.0);
    assert_eq!(a.storage.as_ref().unwrap().billed, 900.0, "GiB-hours");
    assert!((a.efficiency - 0.5).abs() < 1e-12, "{}", a.efficiency);
    assert_eq!(a.network_receive_bytes, 90 * 1000);
    let b = row(&r, |r| r.tenant == "team-b");
    assert_eq!(
        costs(b),
        [
            Some(1_440_000_000),
            Some(240_000_000),
            Some(round(480 * 100_000_000, 730)),
            Some(round(1_680_000_000 * 730 + 480 * 100_000_000, 730)),
        ]
    );
    // The total over all rows, rounded once too.
    let total = r.total.as_ref().unwrap();
    assert_eq!(
        nanos(&total.total_cost),
        Some(round(
            (2_730_000_000 + 1_680_000_000) * 730 + 1380 * 100_000_000,
            730
        ))
    );

    // Per environment: the tenant spans both clusters.
    let mut req = request(day, two_days, pb::CostGrouping::Environment);
    req.tenant = "team-a".into();
    let r = report(&mut cost, req).await;
    assert_eq!(r.rows.len(), 2);
    let dev = row(&r, |r| r.environment == "dev");
    let ci = row(&r, |r| r.environment == "ci");
    assert_eq!(costs(dev)[0], Some(1_440_000_000));
    assert_eq!(costs(ci)[0], Some(840_000_000));
    // dev: 1.44 + 0.24 + 480 × 0.1 / 730 = 1.745753424657…; ci: 0.84 + 0.21
    // + 420 × 0.1 / 730 = 1.107534246575…. Each row is rounded once, so the
    // two rounded rows (…425 + …247) are a nano above the tenant's row,
    // which is rounded once from the exact sum.
    assert_eq!(
        costs(dev)[3],
        Some(round(1_680_000_000 * 730 + 480 * 100_000_000, 730))
    );
    assert_eq!(
        costs(ci)[3],
        Some(round(1_050_000_000 * 730 + 420 * 100_000_000, 730))
    );
    assert_eq!(
        costs(dev)[3].unwrap() + costs(ci)[3].unwrap(),
        2_853_287_672
    );

    // Daily steps on k3s-1: its own price took effect at D+1's midnight.
    let mut req = request(day, two_days, pb::CostGrouping::Environment);
    req.tenant = "team-a".into();
    req.cluster = "k3s-1".into();
    req.step_seconds = 86_400;
    let r = report(&mut cost, req).await;
    let by_day: Vec<_> = r
        .rows
        .iter()
        .map(|r| (r.start_time.unwrap().seconds, costs(r)[0]))
        .collect();
    assert_eq!(
        by_day,
        vec![
            (day.timestamp(), Some(480_000_000)),
            ((day + TimeDelta::days(1)).timestamp(), Some(960_000_000)),
        ]
    );

    // Hourly steps from the hourly rollups: the hour at D 10:00 on k3s-1.
    let mut req = request(
        day + TimeDelta::hours(10),
        day + TimeDelta::hours(12),
        pb::CostGrouping::Cluster,
    );
    req.step_seconds = 3600;
    let r = report(&mut cost, req).await;
    let k1 = row(&r, |r| r.cluster == "k3s-1");
    // dev + web: 1 core-h × 0.04, 2 GiB-h × 0.005, 20 GiB-h × 0.1 / 730.
    assert_eq!(costs(k1)[0], Some(40_000_000));
    assert_eq!(costs(k1)[2], Some(round(20 * 100_000_000, 730)));
    assert_eq!(r.rows.len(), 4, "two clusters × two hours");
}

#[tokio::test]
async fn usage_without_a_price_is_reported_with_its_cost_missing() {
    let Fleet { mut cost, day, .. } = fleet().await;
    let r = report(
        &mut cost,
        request(
            day - TimeDelta::days(1),
            day + TimeDelta::days(2),
            pb::CostGrouping::Tenant,
        ),
    )
    .await;
    let b = row(&r, |r| r.tenant == "team-b");
    assert_eq!(b.total_cost, None, "not zero, not a lower number");
    assert_eq!(b.cpu.as_ref().unwrap().cost, None);
    assert_eq!(
        b.cpu.as_ref().unwrap().billed,
        25.0,
        "the usage is still there"
    );
    let a = row(&r, |r| r.tenant == "team-a");
    assert_eq!(nanos(&a.total_cost), Some(2_853_287_671));
    assert_eq!(r.total.as_ref().unwrap().total_cost, None);
}

#[tokio::test]
async fn a_node_silent_for_part_of_the_range_lowers_coverage_and_is_listed_as_a_gap() {
    let Fleet { mut cost, day, .. } = fleet().await;
    let two_days = day + TimeDelta::days(2);
    let r = report(
        &mut cost,
        request(day, two_days, pb::CostGrouping::Environment),
    )
    .await;
    let ci = row(&r, |r| r.environment == "ci");
    assert_eq!(ci.coverage, 42.0 / 48.0);
    // The missing six hours are not filled in: 42 hours are charged.
    assert_eq!(ci.cpu.as_ref().unwrap().billed, 21.0);
    assert_eq!(costs(ci)[0], Some(840_000_000));
    assert_eq!(row(&r, |r| r.environment == "dev").coverage, 1.0);
    let t = report(&mut cost, request(day, two_days, pb::CostGrouping::Tenant)).await;
    assert_eq!(row(&t, |r| r.tenant == "team-a").coverage, 90.0 / 96.0);
    assert_eq!(row(&t, |r| r.tenant == "team-b").coverage, 1.0);

    let gaps: Vec<_> = r
        .gaps
        .iter()
        .map(|g| {
            (
                g.cluster.as_str(),
                g.node.as_str(),
                g.start_time.unwrap().seconds,
                g.end_time.unwrap().seconds,
                g.reason.as_str(),
            )
        })
        .collect();
    let (from, to) = (
        (day + TimeDelta::hours(12)).timestamp(),
        (day + TimeDelta::hours(18)).timestamp(),
    );
    assert!(
        gaps.contains(&("k3s-2", "node-2", from, to, "no-data")),
        "{gaps:?}"
    );
    assert!(
        gaps.contains(&("k3s-2", "node-2", from, to, "spool-full")),
        "{gaps:?}"
    );
    assert_eq!(gaps.len(), 2, "node-1 sent everything: {gaps:?}");

    // Hourly rollups find the same stretch.
    let mut req = request(
        day + TimeDelta::hours(6),
        day + TimeDelta::hours(20),
        pb::CostGrouping::Cluster,
    );
    req.cluster = "k3s-2".into();
    let r = report(&mut cost, req).await;
    assert!(
        r.gaps.iter().any(|g| g.reason == "no-data"
            && g.start_time.unwrap().seconds == from
            && g.end_time.unwrap().seconds == to),
        "{:?}",
        r.gaps
    );
    assert_eq!(r.rows[0].coverage, 8.0 / 14.0);

    // Before its first data node-1 was not expected; from D-1 on it was.
    let r = report(
        &mut cost,
        request(day - TimeDelta::days(1), day, pb::CostGrouping::Cluster),
    )
    .await;
    let k1 = row(&r, |r| r.cluster == "k3s-1");
    assert_eq!(k1.coverage, 2.0 / 24.0);
    assert!(
        r.gaps.iter().any(|g| g.node == "node-1"
            && g.start_time.unwrap().seconds == (day - TimeDelta::hours(22)).timestamp()
            && g.end_time.unwrap().seconds == day.timestamp()),
        "{:?}",
        r.gaps
    );
}

#[tokio::test]
async fn a_tenant_token_sees_only_its_own_cost_and_idle_is_for_admins() {
    let Fleet {
        plane,
        mut admin,
        mut cost,
        day,
    } = fleet().await;
    let two_days = day + TimeDelta::days(2);
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;
    let mut own = cost_client(&plane, &owner).await;

    let mut req = request(day, two_days, pb::CostGrouping::Tenant);
    req.tenant = "team-b".into();
    let e = own.get_cost_report(req).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut req = request(day, two_days, pb::CostGrouping::Tenant);
    req.tenant = "no-such-team".into();
    let e = own.get_cost_report(req).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "no hint whether it exists"
    );

    let r = report(&mut own, request(day, two_days, pb::CostGrouping::Tenant)).await;
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].tenant, "team-a");
    assert_eq!(nanos(&r.rows[0].total_cost), Some(2_853_287_671));
    assert!(r.idle.is_empty());

    // By cluster: k3s-1 shows team-a's dev only, not team-b's web.
    let r = report(&mut own, request(day, two_days, pb::CostGrouping::Cluster)).await;
    let k1 = row(&r, |r| r.cluster == "k3s-1");
    assert_eq!(costs(k1)[0], Some(1_440_000_000));
    assert_eq!(k1.cpu.as_ref().unwrap().billed, 24.0);
    assert!(
        r.idle.is_empty(),
        "idle is the cluster's, shown to admins only"
    );
    let r = report(
        &mut own,
        request(day, two_days, pb::CostGrouping::Environment),
    )
    .await;
    assert!(r.rows.iter().all(|r| r.tenant == "team-a"), "{:?}", r.rows);

    // Budgets: the owner reads its own, not another's, and sets none.
    cost.set_budget(pb::SetBudgetRequest {
        tenant: "team-b".into(),
        monthly_amount: "100".into(),
        thresholds_percent: vec![],
    })
    .await
    .unwrap();
    let e = own
        .get_budget(pb::GetBudgetRequest {
            tenant: "team-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = own
        .set_budget(pb::SetBudgetRequest {
            tenant: "team-a".into(),
            monthly_amount: "100".into(),
            thresholds_percent: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = own
        .get_budget(pb::GetBudgetRequest {
            tenant: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "team-a has no budget");

    // Admins get idle: allocatable minus billed, priced per day.
    let r = report(&mut cost, request(day, two_days, pb::CostGrouping::Cluster)).await;
    let idle: Vec<_> = r
        .idle
        .iter()
        .map(|r| (r.cluster.as_str(), nanos(&r.total_cost)))
        .collect();
    // k3s-1: 4 cores × 24 h − 24 core-h billed per day = 72 core-h, at 0.04
    // on D and 0.08 on D+1 = 8.64; memory (16 − 2) GiB × 48 h × 0.005 = 3.36.
    // k3s-2: 4 × 42 − 21 = 147 core-h × 0.04 = 5.88; (16 − 1) × 42 × 0.005 = 3.15.
    assert_eq!(
        idle,
        vec![("k3s-1", Some(12 * E9)), ("k3s-2", Some(9_030_000_000))]
    );
}

#[tokio::test]
async fn a_monthly_price_given_per_hour_is_refused_naming_the_field() {
    let db = mtp_pg_harness::fresh_database().await;
    let plane = plane_on(db.url().to_owned()).await;
    let mut admin = plane.admin_with(&[], &["k3s-1"]).await;
    let mut cost = cost_client(&plane, &plane.admin_secret).await;
    let day = midnight(3);
    // €25 a core per month, typed as per core-hour.
    let e = cost
        .set_price(price("", day, "25", "0.004", "0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("price.cpu_core_hour: "),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("÷730 gives 0.034246575"),
        "{}",
        e.message()
    );
    let e = cost
        .set_price(price("", day, "0.03", "2.92", "0.1"))
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("price.memory_gib_hour: "),
        "{}",
        e.message()
    );
    let e = cost
        .set_price(price("", day + TimeDelta::hours(1), "0.03", "0.004", "0.1"))
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("price.effective_time: "),
        "{}",
        e.message()
    );
    let e = cost
        .set_price(price("", day, "0.0300000001", "0.004", "0.1"))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("10 fractional digits"),
        "{}",
        e.message()
    );

    // Meant: allow_high keeps it.
    let mut high = price("k3s-1", day, "25", "0.004", "0.1");
    high.allow_high = true;
    cost.set_price(high).await.unwrap();
    cost.set_price(price("", day, "0.034246575", "0.004", "0.1"))
        .await
        .unwrap();
    // A version never changes.
    let e = cost
        .set_price(price("", day, "0.05", "0.004", "0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("effective_time"), "{}", e.message());
    // One currency.
    let mut usd = price("", day + TimeDelta::days(1), "0.03", "0.004", "0.1");
    usd.price.as_mut().unwrap().currency_code = "USD".into();
    let e = cost.set_price(usd).await.unwrap_err();
    assert!(
        e.message().starts_with("price.currency_code: "),
        "{}",
        e.message()
    );
    cost.set_price(price("", day + TimeDelta::days(1), "0.035", "0.004", "0.1"))
        .await
        .unwrap();

    let prices = cost
        .list_prices(pb::ListPricesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .prices;
    let listed: Vec<_> = prices
        .iter()
        .map(|p| {
            (
                p.cluster.as_str(),
                p.effective_time.unwrap().seconds,
                p.cpu_core_hour.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("", (day + TimeDelta::days(1)).timestamp(), "0.035"),
            ("", day.timestamp(), "0.034246575"),
            ("k3s-1", day.timestamp(), "25"),
        ],
        "newest effective first"
    );
    let own = cost
        .list_prices(pb::ListPricesRequest {
            cluster: "k3s-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .prices;
    assert_eq!(own.len(), 1);
    assert!(prices.iter().all(|p| p.created_by.starts_with("token:")));

    // Admins only, and audited once per version added.
    admin
        .create_tenant("team-a", quota("1", "1Gi", "1Gi", 1, 1))
        .await
        .unwrap();
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;
    let e = cost_client(&plane, &owner)
        .await
        .set_price(price("", day + TimeDelta::days(2), "0.03", "0.004", "0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let audited = admin
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "price.set")
        .count();
    assert_eq!(audited, 3);
}

/// Budget alerts with two replicas on one database: each threshold fires
/// once, however many passes and replicas evaluate it.
#[tokio::test]
async fn budget_thresholds_fire_once_each_across_passes_and_replicas() {
    let db = mtp_pg_harness::fresh_database().await;
    let a = plane_on(db.url().to_owned()).await;
    let b = plane_on(db.url().to_owned()).await;
    let mut admin = a
        .admin_with(
            &[("team-a", quota("100", "400Gi", "4Ti", 100, 10))],
            &["k3s-1"],
        )
        .await;
    let dev = admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap()
        .namespace;
    let mut node = agent_of(&mut admin, &a, "k3s-1", "node-1").await;
    let mut cost = cost_client(&a, &a.admin_secret).await;
    let now = Utc::now();
    let month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    cost.set_price(price("", month, "1", "0", "0"))
        .await
        .unwrap();
    let budget = cost
        .set_budget(pb::SetBudgetRequest {
            tenant: "team-a".into(),
            monthly_amount: "10".into(),
            thresholds_percent: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(budget.thresholds_percent, vec![50, 80, 100]);
    let e = cost
        .set_budget(pb::SetBudgetRequest {
            tenant: "team-a".into(),
            monthly_amount: "10".into(),
            thresholds_percent: vec![80, 50],
        })
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("thresholds_percent[1]: "),
        "{}",
        e.message()
    );

    // One-minute windows from the first of the month, each 120 cores
    // for a minute = 2 core-hours = €2.
    let minute = |i: i64| pb::UsageWindow {
        start: ts(month + TimeDelta::minutes(i)),
        duration_seconds: 60,
        covered_seconds: 60,
        node_cpu_millis: 128_000,
        node_memory_bytes: (16 * GIB) as i64,
        namespaces: vec![pb::NamespaceUsage {
            namespace: dev.clone(),
            cpu_requested_core_nanos: 120 * 60 * 1_000_000_000,
            cpu_used_core_nanos: 60 * 60 * 1_000_000_000,
            cpu_billed_core_nanos: 120 * 60 * 1_000_000_000,
            container_seconds: 60,
            ..Default::default()
        }],
    };
    let sql = a.sql().await;
    let counts = || async {
        let alerts: Vec<i32> =
            sqlx::query_scalar("SELECT threshold FROM budget_alerts ORDER BY threshold")
                .fetch_all(&sql)
                .await
                .unwrap();
        let audited: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'budget.threshold_crossed'",
        )
        .fetch_one(&sql)
        .await
        .unwrap();
        (alerts, audited)
    };
    let settle = |want: Vec<i32>| async move {
        tokio::time::timeout(WAIT, async {
            while counts().await.0 != want {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the alerts fire");
        // Both replicas run several more passes (every 200 ms).
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };

    // €6 of €10: 50 % crossed.
    send_and_confirm(
        &mut node,
        pb::UsageBatch {
            spool_epoch: 1,
            sequence: 1,
            windows: (0..3).map(minute).collect(),
            gaps: vec![],
        },
    )
    .await;
    settle(vec![50]).await;
    assert_eq!(counts().await, (vec![50], 1));
    // €10: 80 % and 100 %, each once.
    send_and_confirm(
        &mut node,
        pb::UsageBatch {
            spool_epoch: 1,
            sequence: 2,
            windows: (3..5).map(minute).collect(),
            gaps: vec![],
        },
    )
    .await;
    settle(vec![50, 80, 100]).await;
    assert_eq!(counts().await, (vec![50, 80, 100], 3));
    let events: Vec<_> = admin
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.action == "budget.threshold_crossed")
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e.tenant == "team-a" && e.actor == "system:budgets")
    );
    let set = admin
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.action == "budget.set")
        .count();
    assert_eq!(set, 1, "the refused budget left no event");

    // The owner reads its budget with the exact month-to-date cost.
    let owner = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;
    let got = cost_client(&b, &owner)
        .await
        .get_budget(pb::GetBudgetRequest {
            tenant: "team-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nanos(&got.month_to_date_cost), Some(10 * E9));
    assert_eq!(got.crossed_percent, vec![50, 80, 100]);
    assert_eq!(got.currency_code, "EUR");
    assert!(
        got.coverage > 0.0 && got.coverage < 1.0,
        "5 minutes of the month: {}",
        got.coverage
    );

    // Prometheus sees the same on the replica that evaluated last (the
    // other catches up within a minute; take `max`), the per-environment
    // series within ten rollup intervals.
    let want: [(&str, &[&str], &str); 4] = [
        (
            "mtp_tenant_cost_month_to_date",
            &["tenant=\"team-a\"", "currency=\"EUR\""],
            "10",
        ),
        ("mtp_tenant_budget_monthly", &["tenant=\"team-a\""], "10"),
        (
            "mtp_budget_threshold_crossed",
            &["tenant=\"team-a\"", "threshold=\"100\""],
            "1",
        ),
        (
            "mtp_environment_cost_month_to_date",
            &["environment=\"dev\"", "tenant=\"team-a\""],
            "10",
        ),
    ];
    let value = |metrics: &str, name: &str, labels: &[&str]| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    let mut last = String::new();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            for plane in [&a, &b] {
                last = http_get(plane.running.admin_addr, "/metrics").await;
                if want
                    .iter()
                    .all(|(name, labels, v)| value(&last, name, labels).as_deref() == Some(*v))
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "{want:?} in\n{last}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_report_comes_in_pages_with_the_total_idle_and_gaps_on_the_last() {
    let Fleet { mut cost, day, .. } = fleet().await;
    let mut req = request(day, day + TimeDelta::days(2), pb::CostGrouping::Environment);
    req.page_size = 2;
    let first = report(&mut cost, req.clone()).await;
    assert_eq!(first.rows.len(), 2);
    assert!(first.total.is_none() && first.idle.is_empty() && first.gaps.is_empty());
    assert!(!first.next_page_token.is_empty());
    req.page_token = first.next_page_token.clone();
    let last = report(&mut cost, req.clone()).await;
    assert_eq!(last.rows.len(), 1);
    assert_eq!(last.next_page_token, "");
    assert!(last.total.is_some() && !last.idle.is_empty() && !last.gaps.is_empty());
    let mut seen: Vec<_> = first
        .rows
        .iter()
        .chain(&last.rows)
        .map(|r| r.environment.as_str())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ["ci", "dev", "web"]);
    req.page_token = "rows:99".into();
    let e = cost.get_cost_report(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    req.page_token = "garbage".into();
    let e = cost.get_cost_report(req).await.unwrap_err();
    assert!(e.message().starts_with("page_token: "), "{}", e.message());
}

/// A 30-day report over 10,000 environments on two clusters is exact, by
/// tenant (from the per-tenant daily sums) and by environment (paged): rows
/// written straight into the rollup table. How fast it is, is measured by
/// `mtp-usage-bench`, not here.
#[tokio::test]
async fn a_month_over_ten_thousand_environments_is_summed_exactly() {
    let db = mtp_pg_harness::fresh_database().await;
    let plane = plane_on(db.url().to_owned()).await;
    plane
        .admin_with(
            &[("team-a", quota("100", "400Gi", "4Ti", 100, 10))],
            &["k3s-1", "k3s-2"],
        )
        .await;
    let mut cost = cost_client(&plane, &plane.admin_secret).await;
    let from = midnight(31);
    cost.set_price(price("", from, "0.04", "0.005", "0.1"))
        .await
        .unwrap();
    let sql = plane.sql().await;
    sqlx::query(
        "INSERT INTO usage_daily (day, environment_id, cluster_id, tenant_id, cpu_requested, cpu_used, \
           cpu_billed, memory_requested, memory_used, memory_billed, storage_requested, storage_used, \
           storage_billed, network_receive, network_transmit, container_seconds) \
         SELECT d.day, e.id, CASE WHEN e.n % 2 = 0 THEN c1.id ELSE c2.id END, t.id, \
           43200000000000, 21600000000000, 43200000000000, 92771293593600, 46385646796800, 92771293593600, \
           0, 0, 0, 1000, 10, 86400 \
         FROM generate_series($1::timestamptz, $1::timestamptz + interval '29 days', interval '1 day') AS d(day), \
           (SELECT gen_random_uuid() AS id, n FROM generate_series(1, 10000) AS n) AS e, \
           (SELECT id FROM clusters WHERE name = 'k3s-1') AS c1, \
           (SELECT id FROM clusters WHERE name = 'k3s-2') AS c2, \
           (SELECT id FROM tenants WHERE name = 'team-a') AS t",
    )
    .bind(from)
    .execute(&sql)
    .await
    .unwrap();
    sqlx::query("ANALYZE usage_daily")
        .execute(&sql)
        .await
        .unwrap();
    let to = from + TimeDelta::days(30);
    for group in [pb::CostGrouping::Tenant, pb::CostGrouping::Environment] {
        let r = report(&mut cost, request(from, to, group)).await;
        if group == pb::CostGrouping::Tenant {
            // 0.5 core × 24 h × 30 days × 10,000 × 0.04 = 144,000.
            assert_eq!(
                nanos(&r.rows[0].cpu.as_ref().unwrap().cost),
                Some(144_000 * E9)
            );
        } else {
            assert_eq!(r.rows.len(), 500, "the first page");
            // 0.5 core × 24 h × 30 days × 0.04 = 14.40 each.
            for row in &r.rows {
                assert_eq!(
                    nanos(&row.cpu.as_ref().unwrap().cost),
                    Some(14_400_000_000),
                    "{}",
                    row.environment
                );
            }
        }
    }
}

/// A one-step report on whole hours reads its whole days from the daily
/// rollups and the partial days at either end from the hourly ones: it must
/// come to what the hourly rollups alone give (here: the same range in
/// hourly steps, summed), across a price change and both clusters.
#[tokio::test]
async fn a_range_on_whole_hours_reads_whole_days_from_daily_rollups_and_sums_the_same() {
    let Fleet { mut cost, day, .. } = fleet().await;
    let from = day - TimeDelta::days(1) + TimeDelta::hours(1);
    let to = day + TimeDelta::days(2) - TimeDelta::hours(1);
    let one = report(&mut cost, request(from, to, pb::CostGrouping::Tenant)).await;
    let mut hourly = request(from, to, pb::CostGrouping::Tenant);
    hourly.step_seconds = 3600;
    hourly.page_size = 5000;
    let steps = report(&mut cost, hourly).await;
    let a = row(&one, |r| r.tenant == "team-a");
    let team_a: Vec<&pb::CostRow> = steps.rows.iter().filter(|r| r.tenant == "team-a").collect();
    assert!(team_a.len() > 24, "hourly rows: {}", team_a.len());
    let sum = |f: &dyn Fn(&pb::CostRow) -> f64| team_a.iter().map(|r| f(r)).sum::<f64>();
    let cpu = |r: &pb::CostRow| r.cpu.as_ref().unwrap().billed;
    let memory = |r: &pb::CostRow| r.memory.as_ref().unwrap().billed;
    let storage = |r: &pb::CostRow| r.storage.as_ref().unwrap().billed;
    for (what, f) in [
        ("cpu", &cpu as &dyn Fn(&pb::CostRow) -> f64),
        ("memory", &memory),
        ("storage", &storage),
    ] {
        assert!(
            (f(a) - sum(f)).abs() < 1e-6,
            "{what}: {} vs {}",
            f(a),
            sum(f)
        );
    }
    // The one-step total is rounded once; the hourly rows each once.
    let total = nanos(&a.total_cost).expect("priced");
    let summed: i128 = team_a
        .iter()
        .map(|r| nanos(&r.total_cost).expect("priced"))
        .sum();
    assert!(
        (total - summed).abs() <= team_a.len() as i128,
        "{total} vs {summed}"
    );
    assert!(total > 0);
}
