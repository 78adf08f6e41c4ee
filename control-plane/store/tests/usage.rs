//! Usage storage against real PostgreSQL: a batch is stored once however
//! often and however concurrently it arrives (invariant 6), rollups computed
//! while batches stream in lose nothing, gaps are kept, and retention drops
//! raw partitions while the rollups stay.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::*;
use mtp_core::agents::AgentIdentity;
use mtp_core::usage::{GapClaim, NamespaceWindow, UsageAmounts, UsageBatchClaim, WindowClaim};
use mtp_store::Store;

fn hour_ago(hours: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(hours)
}

/// Amounts that satisfy the claim rules (billed = max(request, used) per
/// container, here one container), scaled by `k`.
fn amounts(k: u64) -> UsageAmounts {
    UsageAmounts {
        cpu_requested_core_nanos: 30_000_000_000 * k,
        cpu_used_core_nanos: 12_000_000_000 * k,
        cpu_billed_core_nanos: 30_000_000_000 * k,
        memory_requested_byte_seconds: 60 * GI * k,
        memory_used_byte_seconds: 90 * GI * k,
        memory_billed_byte_seconds: 90 * GI * k,
        storage_requested_byte_seconds: 0,
        storage_used_byte_seconds: 60 * k,
        storage_billed_byte_seconds: 60 * k,
        network_receive_bytes: 1000 * k,
        network_transmit_bytes: 10 * k,
        container_seconds: 60,
    }
}

fn window(start: DateTime<Utc>, namespaces: &[(&str, u64)]) -> WindowClaim {
    WindowClaim {
        start,
        duration_seconds: 60,
        covered_seconds: 60,
        node_cpu_millis: 4000,
        node_memory_bytes: (16 * GI) as i64,
        namespaces: namespaces
            .iter()
            .map(|(ns, k)| NamespaceWindow {
                namespace: ns.to_string(),
                amounts: amounts(*k),
            })
            .collect(),
    }
}

fn batch(
    epoch: u64,
    sequence: u64,
    windows: Vec<WindowClaim>,
    gaps: Vec<GapClaim>,
) -> UsageBatchClaim {
    let now = Utc::now();
    UsageBatchClaim::new(epoch, sequence, windows, gaps, now, now - Duration::days(3))
        .expect("a valid batch")
}

async fn fixture() -> (Store, AgentIdentity, String, String) {
    let store = store().await;
    cluster(&store, "k3s-eu-1").await;
    tenant(&store, "team-a", 10).await;
    let a = env(&store, "team-a", "dev", "k3s-eu-1").await;
    let b = env(&store, "team-a", "ci", "k3s-eu-1").await;
    let agent = agent(&store, "k3s-eu-1", "node-1").await;
    (store, agent, a.namespace, b.namespace)
}

async fn roll_up_all(store: &Store) {
    while store.roll_up_usage(100).await.expect("rolls up") > 0 {}
}

fn days_around(t: DateTime<Utc>) -> (chrono::NaiveDate, chrono::NaiveDate) {
    let d = t.date_naive();
    (d - Duration::days(3), d + Duration::days(2))
}

#[tokio::test]
async fn a_batch_sent_many_times_at_once_is_stored_once() {
    let (store, agent, a, b) = fixture().await;
    let start = hour_ago(2);
    let one = batch(
        7,
        1,
        vec![
            window(start, &[(&a, 1), (&b, 2)]),
            window(start + Duration::minutes(1), &[(&a, 1)]),
        ],
        vec![],
    );
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, agent, one) = (store.clone(), agent.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            store.record_usage(&agent, &one, Utc::now()).await
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let record = t.await.unwrap().expect("every copy is answered");
        if !record.duplicate {
            fresh += 1;
            assert_eq!(record.namespace_windows, 3);
        }
    }
    assert_eq!(fresh, 1, "exactly one copy stores the batch");
    roll_up_all(&store).await;
    let (from, to) = days_around(start);
    let usage = store.environment_usage(from, to).await.unwrap();
    let cpu: u128 = usage.iter().map(|u| u.totals.cpu_billed_core_nanos).sum();
    assert_eq!(
        cpu,
        4 * 30_000_000_000,
        "1 + 1 windows of a, one of b at twice the amount"
    );
    let coverage = store.node_coverage(from, to).await.unwrap();
    assert_eq!(
        coverage,
        vec![(agent.agent_id.clone(), agent.cluster_id, 120)]
    );
}

#[tokio::test]
async fn a_window_sent_again_under_another_batch_id_is_stored_once() {
    let (store, agent, a, _) = fixture().await;
    let start = hour_ago(1);
    let first = store
        .record_usage(
            &agent,
            &batch(1, 1, vec![window(start, &[(&a, 1)])], vec![]),
            Utc::now(),
        )
        .await
        .unwrap();
    // A spool that lost its epoch file re-sends what it still had.
    let again = store
        .record_usage(
            &agent,
            &batch(2, 1, vec![window(start, &[(&a, 1)])], vec![]),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(!first.duplicate && !again.duplicate);
    assert_eq!(
        again.namespace_windows, 0,
        "the raw key holds the window once"
    );
    roll_up_all(&store).await;
    let (from, to) = days_around(start);
    let usage = store.environment_usage(from, to).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].totals.cpu_billed_core_nanos, 30_000_000_000);
}

#[tokio::test]
async fn rollups_running_while_batches_arrive_lose_nothing() {
    let (store, agent, a, b) = fixture().await;
    let start = hour_ago(3);
    let minutes = 120u64;
    let ingest = {
        let (store, agent, a, b) = (store.clone(), agent.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for m in 0..minutes {
                let w = window(start + Duration::minutes(m as i64), &[(&a, 1), (&b, 3)]);
                store
                    .record_usage(&agent, &batch(9, m + 1, vec![w], vec![]), Utc::now())
                    .await
                    .expect("stored");
            }
        })
    };
    let rollups: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..60 {
                    store.roll_up_usage(5).await.expect("rolls up");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    ingest.await.unwrap();
    for r in rollups {
        r.await.unwrap();
    }
    roll_up_all(&store).await;
    let (from, to) = days_around(start);
    let usage = store.environment_usage(from, to).await.unwrap();
    let cpu: u128 = usage.iter().map(|u| u.totals.cpu_billed_core_nanos).sum();
    assert_eq!(cpu, u128::from(minutes) * 4 * 30_000_000_000);
    let memory: u128 = usage
        .iter()
        .map(|u| u.totals.memory_billed_byte_seconds)
        .sum();
    assert_eq!(memory, u128::from(minutes) * 4 * 90 * u128::from(GI));
}

#[tokio::test]
async fn unknown_namespaces_are_ignored_and_counted_gaps_are_kept() {
    let (store, agent, a, _) = fixture().await;
    let start = hour_ago(1);
    let gap = GapClaim {
        start: start - Duration::minutes(30),
        end: start,
        reason: "spool-full".into(),
    };
    let record = store
        .record_usage(
            &agent,
            &batch(
                3,
                1,
                vec![window(start, &[(&a, 1), ("kube-system", 5)])],
                vec![gap.clone()],
            ),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        (record.namespace_windows, record.unknown_namespaces),
        (1, 1)
    );
    let gaps = store
        .usage_gaps(start - Duration::hours(1), start + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        gaps,
        vec![(
            agent.agent_id.clone(),
            gap.start,
            gap.end,
            "spool-full".to_string()
        )]
    );
}

#[tokio::test]
async fn retention_drops_raw_partitions_and_keeps_the_rollups() {
    let (store, agent, a, _) = fixture().await;
    let old = hour_ago(49);
    store
        .record_usage(
            &agent,
            &batch(4, 1, vec![window(old, &[(&a, 1)])], vec![]),
            Utc::now(),
        )
        .await
        .unwrap();
    roll_up_all(&store).await;
    // A later window of the same hour marks it dirty again, and retention
    // comes before the next rollup pass.
    store
        .record_usage(
            &agent,
            &batch(
                4,
                2,
                vec![window(old + Duration::minutes(1), &[(&a, 1)])],
                vec![],
            ),
            Utc::now(),
        )
        .await
        .unwrap();
    let keep_from = Utc::now().date_naive() - Duration::days(1);
    let dropped = store.drop_usage_partitions_before(keep_from).await.unwrap();
    let day = old.date_naive().format("%Y%m%d").to_string();
    assert!(
        dropped.contains(&format!("usage_windows_p{day}")),
        "dropped {dropped:?}"
    );
    let (from, to) = days_around(old);
    let usage = store.environment_usage(from, to).await.unwrap();
    assert_eq!(usage[0].totals.cpu_billed_core_nanos, 30_000_000_000);
    // A later pass must not recompute the dropped hour into nothing.
    roll_up_all(&store).await;
    let usage = store.environment_usage(from, to).await.unwrap();
    assert_eq!(usage[0].totals.cpu_billed_core_nanos, 30_000_000_000);
    // Partitions are made on demand again for a day that has none.
    store
        .ensure_usage_partitions(&BTreeSet::from([Utc::now().date_naive()]))
        .await
        .unwrap();
}
