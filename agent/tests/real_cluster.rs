//! The scenarios of `cluster.rs` (written once, in `support/scenarios.rs`),
//! against a real cluster — opt-in.
//!
//! Set `MTP_TEST_KUBECONFIG=/path/to/kubeconfig` (a cluster-admin kubeconfig of
//! a disposable K3s/kind cluster) to run them; without it every test prints a
//! `skipped:` line to stderr and passes. Each test works in namespaces named
//! `mtp-e2e-<8 hex>-…` and with leases `mtp-e2e-<8 hex>-…` in `kube-system`,
//! and deletes them afterwards, also when it fails. `kube-system` is created
//! only if it does not exist (kube-sim starts without any namespace).
//!
//! kube-sim (`cluster.rs`) checks the agent's API traffic: server-side apply
//! field by field, read-back verification, pruning, refusing foreign objects,
//! the lease. It cannot prove what only the real components of a cluster do,
//! and neither does this suite by itself — it only shows that the agent's
//! writes are accepted and read back as applied on a real API server. What
//! needs a real cluster (and, for the first three, workloads or
//! impersonation on top of these scenarios):
//!
//! * Pod Security admission actually rejecting privileged pods, host
//!   namespaces/ports/paths, added capabilities, privilege escalation and
//!   root in a namespace labelled `enforce=restricted` (kube-sim has no
//!   admission plugins at all);
//! * NetworkPolicy enforcement by the CNI (K3s: kube-router's policy
//!   controller) — kube-sim stores policies, nothing enforces them;
//! * RBAC evaluation of the bound `admin`/`edit` ClusterRoles (tenants unable
//!   to write quotas, limit ranges and namespaces) — kube-sim has no RBAC
//!   beyond injected denials, and no bootstrap roles;
//! * the API server's canonicalisation of quantities and its defaulting
//!   (e.g. `1000m` read back as `1`, LimitRange and NetworkPolicy defaults),
//!   which would surface here as permanent drift if the bundle's canonical
//!   forms were wrong;
//! * namespace finalizers of the real controllers: deletion waits for the
//!   namespace controller (and any other finalizer) to empty the namespace,
//!   which takes seconds, not kube-sim's fixed delay.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

mod support;
use support::{Ctx, scenarios};

const VAR: &str = "MTP_TEST_KUBECONFIG";

/// A client for the cluster named by `MTP_TEST_KUBECONFIG`, or `None` (after
/// saying so on stderr) when the variable is not set.
async fn client_from_env() -> Option<Client> {
    let Some(path) = std::env::var_os(VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
    else {
        eprintln!("skipped: set {VAR}=/path/to/kubeconfig to run against a real cluster");
        return None;
    };
    // Pick ring explicitly, as the agent does: with several providers linked
    // rustls refuses to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {VAR}={}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading {VAR}={}: {e}", path.display()));
    Some(Client::try_from(config).expect("building the kube client"))
}

/// Runs a scenario against the real cluster (or skips), cleaning up after it
/// whether it passes or panics.
async fn run<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(client) = client_from_env().await else {
        return;
    };
    let ctx = Ctx::new(
        client,
        format!("mtp-e2e-{:08x}", rand::random::<u32>()),
        // Two seconds, so that a real API server's latency stays small against it.
        Duration::from_secs(2),
        false,
    );
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
    run(scenarios::exactly_one_contender_wins_a_free_lease).await;
}

#[tokio::test]
async fn a_silent_holder_is_replaced_and_its_fence_closes_first() {
    run(scenarios::a_silent_holder_is_replaced_and_its_fence_closes_first).await;
}
