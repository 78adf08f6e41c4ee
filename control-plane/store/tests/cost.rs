//! The price book, budget alerts and the grouped usage reads against real
//! PostgreSQL.

mod common;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use common::*;
use mtp_core::cost::{BudgetSpec, PriceVersion};
use mtp_core::usage::{NamespaceWindow, UsageAmounts, UsageBatchClaim, WindowClaim};
use mtp_store::{CostGrouping, Rollup, UsageQuery};

fn midnight(days_ago: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::days(1)).unwrap() - Duration::days(days_ago)
}

fn price(cluster: Option<&str>, effective: DateTime<Utc>, currency: &str) -> PriceVersion {
    PriceVersion::parse(
        "price",
        cluster.map(Into::into),
        effective,
        currency,
        ["0.03", "0.004", "0.1"],
        false,
    )
    .unwrap()
}

#[tokio::test]
async fn price_versions_are_append_only_in_one_currency_and_audited() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    let day = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    store
        .set_price(&ctx(), &price(None, day, "EUR"))
        .await
        .unwrap();
    store
        .set_price(&ctx(), &price(Some("k3s-1"), day, "EUR"))
        .await
        .unwrap();
    let e = store
        .set_price(&ctx(), &price(None, day, "EUR"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("price.effective_time"), "{e}");
    assert!(matches!(
        e,
        mtp_store::Error::Domain(mtp_core::Error::AlreadyExists { .. })
    ));
    let e = store
        .set_price(&ctx(), &price(None, day + Duration::days(1), "USD"))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("price.currency_code: "), "{e}");
    let e = store
        .set_price(&ctx(), &price(Some("nope"), day, "EUR"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");

    assert_eq!(store.list_prices(None).await.unwrap().len(), 2);
    let own = store.list_prices(Some("k3s-1")).await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].version.cluster.as_deref(), Some("k3s-1"));
    let book = store.price_book().await.unwrap();
    assert_eq!(book.currency(), Some("EUR"));
    let events = store
        .list_audit_events(&mtp_store::AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().filter(|e| e.action == "price.set").count(),
        2,
        "refused versions are not audited"
    );
}

#[tokio::test]
async fn a_threshold_fires_once_however_many_evaluate_it() {
    let store = store().await;
    tenant(&store, "team-a", 1).await;
    let spec = BudgetSpec::parse("m", "100", "t", &[]).unwrap();
    let budget = store.set_budget(&ctx(), "team-a", &spec).await.unwrap();
    assert_eq!(store.get_budget("team-a").await.unwrap().spec, spec);
    assert!(store.get_budget("team-b").await.is_err());
    let month = midnight(0).date_naive();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, budget) = (store.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            store
                .record_budget_alerts(&budget, month, &[50, 80], 85_000_000_000, "EUR")
                .await
                .unwrap()
        }));
    }
    let mut fired = Vec::new();
    for t in tasks {
        fired.extend(t.await.unwrap());
    }
    fired.sort_unstable();
    assert_eq!(fired, vec![50, 80]);
    let again = store
        .record_budget_alerts(&budget, month, &[50, 80, 100], 100_000_000_000, "EUR")
        .await
        .unwrap();
    assert_eq!(again, vec![100]);
    let events = store
        .list_audit_events(&mtp_store::AuditFilter::default())
        .await
        .unwrap();
    let crossed: Vec<_> = events
        .iter()
        .filter(|e| e.action == "budget.threshold_crossed")
        .collect();
    assert_eq!(crossed.len(), 3);
    assert!(
        crossed
            .iter()
            .all(|e| e.tenant.as_deref() == Some("team-a"))
    );
}

#[tokio::test]
async fn usage_cells_are_grouped_by_step_period_and_cluster() {
    let store = store().await;
    cluster(&store, "k3s-1").await;
    tenant(&store, "team-a", 10).await;
    let dev = env(&store, "team-a", "dev", "k3s-1").await;
    let identity = agent(&store, "k3s-1", "node-1").await;
    // One window at 01:00 two days ago and one at 01:00 yesterday.
    let amounts = UsageAmounts {
        cpu_requested_core_nanos: 60_000_000_000,
        cpu_used_core_nanos: 30_000_000_000,
        cpu_billed_core_nanos: 60_000_000_000,
        ..Default::default()
    };
    let w = |start| WindowClaim {
        start,
        duration_seconds: 60,
        covered_seconds: 60,
        node_cpu_millis: 4000,
        node_memory_bytes: 1 << 34,
        namespaces: vec![NamespaceWindow {
            namespace: dev.namespace.clone(),
            amounts,
        }],
    };
    let (d2, d1) = (midnight(2), midnight(1));
    let now = Utc::now();
    let batch = UsageBatchClaim::new(
        1,
        1,
        vec![w(d2 + Duration::hours(1)), w(d1 + Duration::hours(1))],
        vec![],
        now,
        now - Duration::days(3),
    )
    .unwrap();
    store.record_usage(&identity, &batch, now).await.unwrap();
    while store.roll_up_usage(100).await.unwrap() > 0 {}

    let query = |rollup, step, breaks: Vec<DateTime<Utc>>| UsageQuery {
        from: d2,
        to: midnight(0),
        rollup,
        step_seconds: step,
        grouping: CostGrouping::Environment,
        tenant: Some("team-a".into()),
        cluster: None,
        breaks,
    };
    // One step, no price change: one cell with both windows.
    let cells = store
        .usage_cells(&query(Rollup::Daily, 2 * 86_400, vec![]))
        .await
        .unwrap();
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(cells[0].totals.cpu_billed_core_nanos, 120_000_000_000);
    assert_eq!(cells[0].environment.as_deref(), Some("dev"));
    assert_eq!(cells[0].cluster, "k3s-1");
    // A price change yesterday at midnight splits it by period.
    let cells = store
        .usage_cells(&query(Rollup::Hourly, 2 * 86_400, vec![d1]))
        .await
        .unwrap();
    assert_eq!(
        cells
            .iter()
            .map(|c| (c.bucket, c.period))
            .collect::<Vec<_>>(),
        vec![(0, 0), (0, 1)]
    );
    // Daily steps.
    let cells = store
        .usage_cells(&query(Rollup::Daily, 86_400, vec![]))
        .await
        .unwrap();
    assert_eq!(
        cells.iter().map(|c| c.bucket).collect::<Vec<_>>(),
        vec![0, 1]
    );
    // By tenant and by cluster: the per-tenant daily rollup, equal to the
    // sums, also after an hour is rolled up again.
    let tenant_query = |grouping| UsageQuery {
        grouping,
        ..query(Rollup::Daily, 2 * 86_400, vec![])
    };
    for grouping in [CostGrouping::Tenant, CostGrouping::Cluster] {
        let cells = store.usage_cells(&tenant_query(grouping)).await.unwrap();
        assert_eq!(cells.len(), 1, "{cells:?}");
        assert_eq!(cells[0].totals.cpu_billed_core_nanos, 120_000_000_000);
        assert_eq!(cells[0].totals.cpu_used_core_nanos, 60_000_000_000);
    }
    let more = UsageBatchClaim::new(
        1,
        2,
        vec![w(d1 + Duration::hours(2))],
        vec![],
        now,
        now - Duration::days(3),
    )
    .unwrap();
    store.record_usage(&identity, &more, now).await.unwrap();
    while store.roll_up_usage(100).await.unwrap() > 0 {}
    let cells = store
        .usage_cells(&tenant_query(CostGrouping::Tenant))
        .await
        .unwrap();
    assert_eq!(cells[0].tenant.as_deref(), Some("team-a"));
    assert_eq!(cells[0].totals.cpu_billed_core_nanos, 180_000_000_000);

    // Another tenant's filter sees nothing.
    let mut other = query(Rollup::Daily, 86_400, vec![]);
    other.tenant = Some("team-b".into());
    assert!(store.usage_cells(&other).await.unwrap().is_empty());

    let nodes = store.reporting_nodes(None).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        nodes[0].since,
        d2 + Duration::hours(1),
        "first data before registration"
    );
    let cells = store
        .node_cells(Rollup::Daily, d2, midnight(0), Some("k3s-1"))
        .await
        .unwrap();
    assert_eq!(cells.len(), 2);
    assert_eq!(cells[0].covered_seconds, 60);
    assert_eq!(cells[0].cpu_millis_seconds, 4000 * 60);
    let hours = store
        .node_hours_of_days(&[(identity.agent_id.clone(), d1)])
        .await
        .unwrap();
    let times: Vec<_> = hours.iter().map(|h| h.time).collect();
    assert_eq!(times, [d1 + Duration::hours(1), d1 + Duration::hours(2)]);
}
