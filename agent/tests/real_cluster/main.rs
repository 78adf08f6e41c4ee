//! The agent's cluster scenarios (written once, in `support/scenarios.rs`)
//! and the guardrails of `deploy/k3s`, on a real kube-apiserver and
//! kube-controller-manager (built from source by `mtp-kube-harness`, one
//! server for this test process), with the bundle installed as shipped.
//!
//! The agent authenticates as the `mtp-system/mtp-agent` ServiceAccount with
//! the shipped RBAC and admission policies, never as an admin; tenants are
//! impersonated users and groups; the CI ServiceAccount uses its own token.
//! A test that cannot start or reach its server fails.
//!
//! What this server cannot show (no kubelet, scheduler or CNI): pods
//! running, NetworkPolicy enforcement, the kubelet stats API.

mod admission_policy;
mod agent_rights;
mod env;
mod namespaces;
mod pod_security;
mod quota;
mod rbac;
#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use mtp_kube_harness::KubeServer;
use support::{Ctx, scenarios};

/// The one Lease the shipped RBAC lets the agent use.
const AGENT_LEASE: &str = "mtp-agent-applier";

/// Lease scenarios share [`AGENT_LEASE`], so they run one at a time.
static LEASE_SCENARIOS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh id for this test's names (`mtp-e2e-<8 hex>`).
pub fn test_id() -> String {
    format!("mtp-e2e-{:08x}", rand::random::<u32>())
}

/// Runs a scenario on the real server as the agent, cleaning up after it
/// whether it passes or panics.
async fn run<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = KubeServer::shared();
    let ctx = Ctx::new(
        server.agent().await,
        test_id(),
        // Two seconds, so that a real API server's latency stays small against it.
        Duration::from_secs(2),
        false,
    )
    .with_identities(server.admin().await, AGENT_LEASE);
    let outcome = AssertUnwindSafe(scenario(ctx.clone())).catch_unwind().await;
    ctx.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn apply_leaves_every_object_as_specified() {
    run(scenarios::apply_leaves_every_object_as_specified).await;
}

#[tokio::test]
async fn verification_catches_deleted_and_edited_objects_and_apply_repairs_them() {
    run(scenarios::verification_catches_deleted_and_edited_objects_and_apply_repairs_them).await;
}

#[tokio::test]
async fn switched_off_policies_are_pruned_but_foreign_ones_are_kept() {
    run(scenarios::switched_off_policies_are_pruned_but_foreign_ones_are_kept).await;
}

#[tokio::test]
async fn a_foreign_namespace_is_neither_adopted_nor_deleted() {
    run(scenarios::a_foreign_namespace_is_neither_adopted_nor_deleted).await;
}

#[tokio::test]
async fn removing_a_namespace_takes_everything_in_it() {
    run(scenarios::removing_a_namespace_takes_everything_in_it).await;
}

#[tokio::test]
async fn exactly_one_contender_wins_a_free_lease() {
    let _one_at_a_time = LEASE_SCENARIOS.lock().await;
    run(scenarios::exactly_one_contender_wins_a_free_lease).await;
}

#[tokio::test]
async fn a_silent_holder_is_replaced_and_its_fence_closes_first() {
    let _one_at_a_time = LEASE_SCENARIOS.lock().await;
    run(scenarios::a_silent_holder_is_replaced_and_its_fence_closes_first).await;
}
