//! What one pass of the reconciler does to the cluster: a delta (removals,
//! prune, upserts in parallel), the periodic full read-back, the prompt check
//! of namespaces the watches saw change, and the retries.

use std::collections::BTreeSet;

use futures::StreamExt;
use mtp_proto::v1::NamespaceConfig;
use tokio::time::Instant;

use super::Reconciler;
use super::apply::{Attempt, apply_one};
use super::cluster_identity::Check;
use crate::bundle::Bundle;
use crate::desired::Delta;
use crate::kubernetes::{Mismatch, Owner, Removal, Stamps};
use crate::report::{Drift, NamespaceReport, Report, Results};

impl Reconciler {
    /// Reconciles a delta; acknowledges the revision only if every part of it
    /// was done, otherwise keeps it for the retry tick.
    pub(super) async fn reconcile_and_acknowledge(&mut self, delta: Delta) {
        let revision = self.state.revision;
        let delta = match self.unapplied.take() {
            Some(mut pending) => {
                super::merge(&mut pending, delta);
                pending
            }
            None => delta,
        };
        match self.reconcile(delta.clone()).await {
            Some(results) if self.namespaces.withheld().is_empty() => {
                if let Some(ack) = self.ledger.complete(revision, results)
                    && self.applier
                {
                    self.emit(ack);
                }
            }
            Some(results) => {
                self.ledger.owe(results);
                tracing::warn!(
                    revision,
                    missing = ?self.namespaces.withheld(),
                    "stored state not yet confirmed by the control plane: missing namespaces are not created (they may have been deleted since); not acknowledged"
                );
            }
            None => {
                tracing::warn!(
                    revision,
                    "pass interrupted (applier lease not held); not acknowledged, will retry"
                );
                self.unapplied = Some(delta);
            }
        }
    }

    pub(super) async fn retry_unapplied(&mut self) {
        if let Some(delta) = self.unapplied.take() {
            self.reconcile_and_acknowledge(delta).await;
        }
    }

    /// Applies a delta: removals first (freeing names), then prune if it was
    /// a full pass, then upserts in parallel. Returns per-namespace results,
    /// or `None` if the fence closed before everything was done (then the
    /// revision must not be acknowledged).
    async fn reconcile(&mut self, delta: Delta) -> Option<Results> {
        let started = Instant::now();
        let mut results = Vec::new();
        let mut removals = delta.removals;
        let mut complete = true;
        if !removals.is_empty() {
            // Asked for one by one by the control plane (each an audited
            // deletion there), so not held like a prune pass; logged so
            // that a mass deletion is visible here too.
            tracing::info!(
                revision = self.state.revision,
                deletions = removals.len(),
                "removing namespaces the control plane deleted"
            );
        }
        if delta.full && self.authoritative {
            match self.cluster.managed_namespace_stamps().await {
                Ok(live) => removals.extend(self.prune_candidates(live)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list managed namespaces to prune");
                    // Not pruned: the pass is not complete.
                    complete = false;
                }
            }
        }
        complete &= self.remove_all(removals, &mut results).await;
        complete &= self.apply_all(&delta.upserts, &mut results).await;
        self.publish();
        self.channels
            .metrics
            .observe_pass("delta", started.elapsed());
        complete.then_some(results)
    }

    /// A prune pass over the managed namespaces `live`: which of those
    /// nobody wants are to be deleted now (they become tombstones first),
    /// by the prune guard. Never one stamped for another cluster identity,
    /// nothing at all while the identity is unknown or does not match the
    /// stored one, and not more than the configured share without an
    /// operator's confirmation. Namespaces snapshots dropped that are gone
    /// already are included: removing them only reports them deleted.
    fn prune_candidates(&mut self, live: Stamps) -> Vec<String> {
        let revision = self.state.revision;
        let Some(session) = self.cluster_identity.session().map(str::to_string) else {
            tracing::warn!(
                revision,
                "the control plane has not said which cluster it serves; nothing is pruned"
            );
            return Vec::new();
        };
        let check = self.cluster_identity.check();
        let trusted = check == Check::Matches;
        let managed = live.len();
        let mut candidates = BTreeSet::new();
        let mut foreign = Vec::new();
        for (ns, stamp) in live.iter() {
            if self.state.namespaces.contains_key(ns) {
                continue;
            }
            match stamp {
                // Never pruned; while the identities differ everything is
                // held anyway, and they are part of what the hold shows.
                Some(other) if *other != session && trusted => {
                    foreign.push(format!("{ns} ({other})"))
                }
                _ => {
                    candidates.insert(ns.clone());
                }
            }
        }
        if !foreign.is_empty() && self.prune.first_foreign_notice(revision) {
            tracing::warn!(
                revision,
                cluster_id = %session,
                namespaces = ?foreign,
                "not desired but stamped for another cluster identity: never pruned (delete them by hand if they should go)"
            );
        }
        let gone: Vec<String> = std::mem::take(&mut self.dropped)
            .into_iter()
            .filter(|ns| !live.contains_key(ns) && !self.state.namespaces.contains_key(ns))
            .collect();
        let decision = self.prune.decide(revision, candidates, managed, trusted);
        if let Some(held) = decision.report {
            match &check {
                Check::Mismatch { stored, session } => tracing::error!(
                    revision,
                    would_delete = held.would_delete,
                    managed,
                    "prune pass held: {}",
                    self.cluster_identity.mismatch_help(stored, session)
                ),
                _ => tracing::error!(
                    revision,
                    would_delete = held.would_delete,
                    managed,
                    max_share = self.config.prune_max_share,
                    sample = ?held.sample,
                    "prune pass held: it would delete more than the allowed share of the managed namespaces. Check the control plane's desired state; if these namespaces really should go, confirm with `mtp cluster confirm-prune`"
                ),
            }
            self.send(Report::PruneHeld(held));
        }
        let mut prune = decision.prune;
        prune.extend(gone);
        self.tombstones.entomb(&prune, revision);
        prune
    }

    /// A prune pass on its own (an operator confirmed a held one).
    pub(super) async fn prune_pass(&mut self) {
        if !self.authoritative || !self.fence.may_apply() {
            return;
        }
        let live = match self.cluster.managed_namespace_stamps().await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "could not list managed namespaces to prune");
                return;
            }
        };
        let mut results = Vec::new();
        for ns in self.prune_candidates(live) {
            if let Some(r) = self.remove(&ns, false).await {
                results.push(r);
            }
        }
        if !results.is_empty() {
            self.acknowledge(results);
        }
        self.publish();
    }

    /// Removes what is no longer desired; `false` if the fence closed first.
    async fn remove_all(&mut self, removals: BTreeSet<String>, results: &mut Results) -> bool {
        for ns in removals {
            if self.state.namespaces.contains_key(&ns) {
                continue;
            }
            if !self.fence.may_apply() {
                return false;
            }
            match self.remove(&ns, true).await {
                Some(r) => results.push(r),
                // The fence closed during the removal: stop here.
                None if !self.fence.may_apply() => return false,
                // Terminating, newer, or failed: the retry tick comes back.
                None => {}
            }
        }
        true
    }

    /// Applies the desired namespaces among `upserts` in parallel; `false`
    /// if the fence closed mid-pass.
    async fn apply_all(&mut self, upserts: &BTreeSet<String>, results: &mut Results) -> bool {
        let configs: Vec<NamespaceConfig> = upserts
            .iter()
            .filter_map(|ns| self.state.namespaces.get(ns).cloned())
            .collect();
        let cluster = self.cluster.clone();
        let fence = self.fence.clone();
        let if_absent = self.if_absent();
        let cluster_id = self.stamp().map(str::to_string);
        let applied: Vec<(String, Attempt)> = futures::stream::iter(configs)
            .map(|config| {
                let cluster = cluster.clone();
                let fence = fence.clone();
                let cluster_id = cluster_id.clone();
                async move {
                    let outcome =
                        apply_one(&cluster, &fence, &config, if_absent, cluster_id.as_deref())
                            .await;
                    (config.namespace, outcome)
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        let mut complete = true;
        for (ns, attempt) in applied {
            let outcome = match attempt {
                Attempt::Done(outcome, versions) => {
                    self.namespaces.remember_versions(&ns, versions);
                    outcome
                }
                Attempt::Fenced => {
                    // The fence closed mid-pass: not applied, not acknowledged.
                    complete = false;
                    continue;
                }
                // The cluster is past this revision for this namespace:
                // nothing applied; reported, so that the control plane
                // re-issues it above the live stamp.
                Attempt::Superseded(live_revision) => {
                    let outcome = NamespaceReport::Superseded { live_revision };
                    results.push((ns.clone(), outcome.clone()));
                    self.namespaces.set_outcome(&ns, outcome);
                    continue;
                }
                Attempt::Withheld => {
                    self.namespaces.withhold(&ns);
                    continue;
                }
            };
            self.namespaces.written(&ns, now);
            if let NamespaceReport::Failed(reason) = &outcome {
                tracing::warn!(namespace = %ns, %reason, "namespace not applied");
            }
            results.push((ns.clone(), outcome.clone()));
            self.namespaces.set_outcome(&ns, outcome);
        }
        complete
    }

    /// Deletes a namespace that is no longer desired. `Some` with the result
    /// to report: `Deleted` once it is gone; `Superseded` (stamped with a
    /// newer revision) or `Failed` (another cluster identity's) when it is
    /// left alone — those only when they change (the retry tick comes back
    /// every few seconds) unless `always`: a pass over an update reports
    /// what became of each of its removals.
    async fn remove(&mut self, ns: &str, always: bool) -> Option<(String, NamespaceReport)> {
        if self.state.namespaces.contains_key(ns) || !self.fence.may_apply() {
            return None;
        }
        // Nothing is deleted before a session said which cluster it serves.
        let owner = self.cluster_identity.owner()?;
        let (cluster_id, unstamped_as) = (
            owner.cluster_id.to_string(),
            owner.unstamped_as.map(str::to_string),
        );
        let owner = Owner {
            cluster_id: &cluster_id,
            unstamped_as: unstamped_as.as_deref(),
        };
        let fence = self.fence.clone();
        let removal = self
            .cluster
            .remove_namespace_fenced(ns, self.state.revision, Some(owner), || fence.may_apply())
            .await;
        let report = match removal {
            Ok(Removal::Gone) => {
                tracing::info!(namespace = %ns, "namespace removed");
                self.namespaces.forget(ns);
                self.tombstones.deleted_here(ns);
                return Some((ns.to_string(), NamespaceReport::Deleted));
            }
            Ok(Removal::NotManaged) => {
                tracing::warn!(namespace = %ns, "a namespace of this name exists but is not managed by mtp; left alone");
                self.namespaces.forget(ns);
                self.tombstones.deleted_here(ns);
                return Some((ns.to_string(), NamespaceReport::Deleted));
            }
            Ok(Removal::Newer(live)) => {
                tracing::info!(namespace = %ns, live_revision = live, known_revision = self.state.revision, "namespace re-created after this agent's state; not deleted (waiting for the newer state)");
                NamespaceReport::Superseded {
                    live_revision: live,
                }
            }
            Ok(Removal::OtherCluster(other)) => {
                tracing::error!(namespace = %ns, stamped_cluster_id = %other, cluster_id = %cluster_id, "not deleting a namespace of another cluster identity");
                NamespaceReport::Failed(format!(
                    "not deleted: the namespace belongs to cluster id {other}, not to this control plane's cluster id {cluster_id}; delete it by hand if it should go"
                ))
            }
            // Still terminating: the retry tick comes back.
            Ok(Removal::Terminating) => {
                self.namespaces.forget(ns);
                return None;
            }
            // The fence closed: the retry tick comes back.
            Ok(Removal::Fenced) => return None,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "namespace removal failed; will retry");
                return None;
            }
        };
        if !always && self.namespaces.outcome(ns) == Some(&report) {
            return None;
        }
        self.namespaces.set_outcome(ns, report.clone());
        Some((ns.to_string(), report))
    }

    /// Full read-back of every desired namespace (one LIST per kind);
    /// repairs what drifted and prunes managed namespaces nobody wants.
    /// Whether it ran: `false` when the fence is not held or listing failed.
    pub(super) async fn resync(&mut self) -> bool {
        if !self.fence.may_apply() {
            return false;
        }
        let started = Instant::now();
        let live = match self.cluster.managed_objects().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "periodic verification could not list managed objects");
                return false;
            }
        };
        let names: Vec<String> = self.state.namespaces.keys().cloned().collect();
        tracing::debug!(namespaces = names.len(), "periodic verification");
        let cluster_id = self.stamp().map(str::to_string);
        for ns in names {
            let Some(config) = self.state.namespaces.get(&ns) else {
                continue;
            };
            let mismatches = live.verify(&Bundle::render(config).stamped(cluster_id.as_deref()));
            self.settle(&ns, mismatches).await;
        }
        if self.authoritative {
            let unwanted = self.prune_candidates(live.namespace_stamps());
            let mut results = Vec::new();
            for ns in unwanted {
                if let Some(r) = self.remove(&ns, false).await {
                    results.push(r);
                }
            }
            if !results.is_empty() {
                self.acknowledge(results);
            }
            self.publish();
        }
        self.channels
            .metrics
            .observe_pass("resync", started.elapsed());
        true
    }

    pub(super) async fn check_touched(&mut self) {
        let quiet = self.config.drift_quiet;
        let due: Vec<String> = {
            let mut touched = self.channels.touched.sightings();
            let due: Vec<String> = touched
                .iter()
                .filter(|(ns, seen)| {
                    seen.at.elapsed() >= quiet && self.namespaces.quiet_for(ns, quiet)
                })
                .map(|(ns, _)| ns.clone())
                .collect();
            due.into_iter()
                .filter_map(|ns| touched.remove(&ns).map(|seen| (ns, seen)))
                .filter(|(ns, seen)| seen.needs_check(self.namespaces.verified_versions(ns)))
                .map(|(ns, _)| ns)
                .collect()
        };
        for ns in due {
            if self.state.namespaces.contains_key(&ns) {
                self.check(&ns).await;
            }
        }
    }

    /// Verifies one namespace; on a difference, re-applies, reports drift
    /// (for the audit log) and acknowledges a changed outcome.
    async fn check(&mut self, ns: &str) {
        let Some(config) = self.state.namespaces.get(ns).cloned() else {
            return;
        };
        if !self.fence.may_apply() {
            return;
        }
        let bundle = Bundle::render(&config).stamped(self.stamp());
        let mismatches = match self.cluster.verify_versions(&bundle).await {
            Ok((m, versions)) => {
                if m.is_empty() {
                    self.namespaces.remember_versions(ns, versions);
                }
                m
            }
            Err(e) => {
                tracing::debug!(namespace = %ns, error = %e, "verification read failed");
                return;
            }
        };
        self.settle(ns, mismatches).await;
    }

    /// Acts on a verification: records a clean one, or re-applies, reports
    /// each difference as drift and acknowledges a changed outcome.
    async fn settle(&mut self, ns: &str, mismatches: Vec<Mismatch>) {
        let Some(config) = self.state.namespaces.get(ns).cloned() else {
            return;
        };
        if !self.fence.may_apply() {
            return;
        }
        if mismatches.is_empty() {
            if !self.namespaces.is_verified(ns) {
                self.namespaces.set_outcome(ns, NamespaceReport::Verified);
                self.acknowledge(vec![(ns.to_string(), NamespaceReport::Verified)]);
            }
            return;
        }
        let attempt = apply_one(
            &self.cluster,
            &self.fence,
            &config,
            self.if_absent(),
            self.stamp(),
        )
        .await;
        let (outcome, versions) = match attempt {
            Attempt::Done(outcome, versions) => (outcome, versions),
            Attempt::Superseded(live_revision) => {
                let outcome = NamespaceReport::Superseded { live_revision };
                if self.namespaces.outcome(ns) != Some(&outcome) {
                    self.acknowledge(vec![(ns.to_string(), outcome.clone())]);
                    self.namespaces.set_outcome(ns, outcome);
                    self.publish();
                }
                return;
            }
            Attempt::Withheld => {
                self.namespaces.withhold(ns);
                return;
            }
            Attempt::Fenced => return,
        };
        self.namespaces.remember_versions(ns, versions);
        self.namespaces.written(ns, Instant::now());
        let repaired = outcome == NamespaceReport::Verified;
        // Drift is a change to something that was in place. A namespace that
        // never verified (or keeps failing) is retried, but not reported as
        // drift on every retry: that would flood the audit log.
        if self.namespaces.is_verified(ns) {
            self.report_drift(ns, &mismatches, repaired);
        }
        if self.namespaces.outcome(ns) != Some(&outcome) {
            self.acknowledge(vec![(ns.to_string(), outcome.clone())]);
            self.namespaces.set_outcome(ns, outcome);
            self.publish();
        }
    }

    fn report_drift(&mut self, ns: &str, mismatches: &[Mismatch], repaired: bool) {
        for m in mismatches {
            tracing::warn!(namespace = %ns, object = %m.object, drift = %m.description, repaired, "drift");
            self.send(Report::Drift(Drift {
                namespace: ns.to_string(),
                object: m.object.clone(),
                description: m.description.clone(),
                repaired,
            }));
        }
        if repaired {
            self.channels.metrics.drift_repaired(mismatches.len());
        }
    }

    pub(super) async fn retry_failed(&mut self) {
        let mut results = Vec::new();
        for ns in self.tombstones.pending() {
            if let Some(r) = self.remove(&ns, false).await {
                results.push(r);
            }
        }
        if !results.is_empty() {
            self.acknowledge(results);
        }
        for ns in self.namespaces.failing() {
            self.check(&ns).await;
        }
    }
}
