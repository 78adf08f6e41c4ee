//! The real `mtp` binary against a hand-written `CostService` (the server
//! side is not there yet): paging through `GetCostReport`, what is sent, the
//! three output formats, the SVG file, the refused implausible price with its
//! `--allow-high` hint, and budgets. Replace with tests against the real
//! control plane once it serves `CostService`.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use mtp_proto::v1 as pb;
use mtp_proto::v1::cost_service_server::{CostService, CostServiceServer};
use serde_json::Value;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Mock {
    report_requests: Mutex<Vec<pb::GetCostReportRequest>>,
    prices: Mutex<Vec<pb::Price>>,
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn eur(units: i64, nanos: i32) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    })
}

fn row(tenant: &str, total: Option<pb::Money>, coverage: f64) -> pb::CostRow {
    pb::CostRow {
        start_time: ts("2026-11-01T00:00:00Z"),
        end_time: ts("2026-12-01T00:00:00Z"),
        tenant: tenant.into(),
        cpu: Some(pb::ResourceCost {
            requested: 10.0,
            used: 5.0,
            billed: 10.0,
            cost: total.clone(),
            efficiency: 0.5,
        }),
        total_cost: total,
        efficiency: 0.5,
        coverage,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl CostService for Mock {
    async fn get_cost_report(
        &self,
        req: Request<pb::GetCostReportRequest>,
    ) -> Result<Response<pb::CostReport>, Status> {
        let req = req.into_inner();
        self.report_requests.lock().unwrap().push(req.clone());
        let base = pb::CostReport {
            start_time: req.start_time,
            end_time: req.end_time,
            currency_code: "EUR".into(),
            ..Default::default()
        };
        let page = match req.page_token.as_str() {
            "" => pb::CostReport {
                rows: vec![row("team-a", eur(12, 345_678_900), 1.0)],
                next_page_token: "p2".into(),
                ..base
            },
            "p2" => pb::CostReport {
                rows: vec![row("team-b", eur(0, 5_000_000), 0.5)],
                idle: vec![pb::CostRow {
                    cluster: "eu-1".into(),
                    total_cost: eur(3, 0),
                    coverage: 1.0,
                    ..Default::default()
                }],
                gaps: vec![pb::CoverageGap {
                    cluster: "eu-1".into(),
                    node: "node-2".into(),
                    start_time: ts("2026-11-03T02:00:00Z"),
                    end_time: ts("2026-11-03T05:00:00Z"),
                    reason: "no-data".into(),
                }],
                total: Some(row("", eur(12, 350_678_900), 0.75)),
                ..base
            },
            other => return Err(Status::invalid_argument(format!("bad page token {other}"))),
        };
        Ok(Response::new(page))
    }

    async fn set_price(
        &self,
        req: Request<pb::SetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        let req = req.into_inner();
        let price = req.price.unwrap_or_default();
        if price.cpu_core_hour.parse::<f64>().unwrap_or(0.0) > 5.0 && !req.allow_high {
            return Err(Status::invalid_argument(format!(
                "cpu_core_hour {} is implausibly high for one core-hour (a monthly price?)",
                price.cpu_core_hour
            )));
        }
        let stored = pb::Price {
            create_time: ts("2026-12-02T10:00:00Z"),
            created_by: "admin".into(),
            ..price
        };
        self.prices.lock().unwrap().push(stored.clone());
        Ok(Response::new(stored))
    }

    async fn list_prices(
        &self,
        _req: Request<pb::ListPricesRequest>,
    ) -> Result<Response<pb::ListPricesResponse>, Status> {
        Ok(Response::new(pb::ListPricesResponse {
            prices: self.prices.lock().unwrap().clone(),
        }))
    }

    async fn set_budget(
        &self,
        req: Request<pb::SetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        let req = req.into_inner();
        Ok(Response::new(pb::Budget {
            tenant: req.tenant,
            monthly_amount: req.monthly_amount,
            currency_code: "EUR".into(),
            thresholds_percent: if req.thresholds_percent.is_empty() {
                vec![50, 80, 100]
            } else {
                req.thresholds_percent
            },
            month_to_date_cost: eur(0, 0),
            coverage: 1.0,
            ..Default::default()
        }))
    }

    async fn get_budget(
        &self,
        req: Request<pb::GetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        let req = req.into_inner();
        if req.tenant != "team-a" {
            return Err(Status::not_found(format!(
                "tenant {:?} has no budget",
                req.tenant
            )));
        }
        Ok(Response::new(pb::Budget {
            tenant: req.tenant,
            monthly_amount: "500".into(),
            currency_code: "EUR".into(),
            thresholds_percent: vec![50, 80, 100],
            month_to_date_cost: eur(410, 450_000_000),
            crossed_percent: vec![50, 80],
            coverage: 1.0,
            update_time: None,
        }))
    }
}

async fn serve(mock: Arc<Mock>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(CostServiceServer::from_arc(mock))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

/// Runs `mtp` against `addr` with none of the caller's MTP_* settings.
async fn mtp(addr: SocketAddr, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mtp"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MTP_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path())
        .env("MTP_ADDR", format!("http://{addr}"))
        .env("MTP_TOKEN", "mtp_test")
        .args(args);
    cmd.output().await.expect("mtp runs")
}

#[track_caller]
fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "mtp failed ({:?}):\nstdout: {out}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

const NOVEMBER: [&str; 4] = ["--from", "2026-11-01", "--to", "2026-12-01"];

#[tokio::test(flavor = "multi_thread")]
async fn cost_report_pages_and_renders_in_every_format() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;

    let args = [&["cost", "report", "-o", "json"], &NOVEMBER[..]].concat();
    let v: Value = serde_json::from_str(&ok(&mtp(addr, &args).await)).unwrap();
    let tenants: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["team-a", "team-b"], "both pages: {v}");
    assert_eq!(v["rows"][0]["total_cost"], "12.3456789");
    assert_eq!(v["total"]["total_cost"], "12.3506789");
    assert_eq!(v["idle"][0]["cluster"], "eu-1");
    assert_eq!(v["gaps"][0]["reason"], "no-data");
    assert_eq!(v["currency"], "EUR");
    {
        let reqs = mock.report_requests.lock().unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].page_token, "");
        assert_eq!(reqs[1].page_token, "p2");
        assert_eq!(reqs[0].group_by, pb::CostGrouping::Tenant as i32);
        assert_eq!(reqs[0].step_seconds, 0);
        assert_eq!(reqs[0].start_time, ts("2026-11-01T00:00:00Z"));
        assert_eq!(reqs[0].end_time, ts("2026-12-01T00:00:00Z"));
        assert_eq!(reqs[1].start_time, reqs[0].start_time);
    }

    let table = ok(&mtp(addr, &[&["cost", "report"], &NOVEMBER[..]].concat()).await);
    assert!(table.contains("\nteam-a "), "{table}");
    assert!(table.contains("EUR 12.35"), "{table}");
    assert!(table.contains("\nTOTAL "), "{table}");
    assert!(table.contains("50.0*"), "{table}");
    assert!(table.contains("missing, not zero"), "{table}");

    let csv = ok(&mtp(
        addr,
        &[&["cost", "report", "-o", "csv"], &NOVEMBER[..]].concat(),
    )
    .await);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().starts_with("row,team-a,"),
        "{csv}"
    );

    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("cost.svg");
    let svg_arg = svg_path.to_str().unwrap();
    ok(&mtp(
        addr,
        &[&["cost", "chart", "--out", svg_arg], &NOVEMBER[..]].concat(),
    )
    .await);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    let chart = ok(&mtp(
        addr,
        &[&["cost", "chart", "--width", "80"], &NOVEMBER[..]].concat(),
    )
    .await);
    assert!(chart.contains("Total: EUR 12.35"), "{chart}");

    // A bad range is refused before anything is sent.
    let before = mock.report_requests.lock().unwrap().len();
    let bad = mtp(
        addr,
        &[
            "cost",
            "report",
            "--from",
            "2026-12-01",
            "--to",
            "2026-11-01",
        ],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(mock.report_requests.lock().unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn prices_and_budgets() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let price = |cpu: &'static str| {
        vec![
            "price",
            "set",
            "--cpu-hour",
            cpu,
            "--memory-gib-hour",
            "0.004",
            "--storage-gib-month",
            "0.10",
            "--currency",
            "EUR",
            "--from",
            "2026-12-01",
        ]
    };
    let refused = mtp(addr, &price("22.63")).await;
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("implausibly high"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("--allow-high"),
        "{err}"
    );

    let mut allowed = price("22.63");
    allowed.push("--allow-high");
    ok(&mtp(addr, &allowed).await);
    let list = ok(&mtp(addr, &["price", "list"]).await);
    assert!(
        list.contains("(default)") && list.contains("22.63"),
        "{list}"
    );

    let b = ok(&mtp(addr, &["budget", "get", "team-a"]).await);
    assert!(b.contains("EUR 410.45 (82.1 % of the budget)"), "{b}");
    assert!(b.contains("Crossed:         50/80 %"), "{b}");
    let none = mtp(addr, &["budget", "get", "team-b"]).await;
    assert_eq!(none.status.code(), Some(3));
    let set = ok(&mtp(
        addr,
        &["budget", "set", "team-a", "--monthly", "500", "-o", "json"],
    )
    .await);
    let v: Value = serde_json::from_str(&set).unwrap();
    assert_eq!(v["thresholds_percent"], serde_json::json!([50, 80, 100]));
}
