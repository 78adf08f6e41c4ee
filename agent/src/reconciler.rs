//! The agent's one writer: folds desired-state updates in, and — while this
//! agent holds the applier lease — applies, verifies, repairs drift, prunes
//! and acknowledges. Everything that writes to the cluster goes through here,
//! one step at a time, so two updates never race each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bundle::Bundle;
use crate::desired::{Delta, DesiredState, StateDir};
use crate::kubernetes::{Applied, ClusterApi, IfAbsent, Removal, Versions};
use crate::lease::Fence;
use crate::persist::StateWriter;
use crate::watch::Touched;

/// Deletions remembered for re-reporting, at most.
const MAX_TOMBSTONES: usize = 10_000;
/// Acknowledgements carrying deletions that wait for confirmation, at most.
const MAX_UNCONFIRMED_ACKS: usize = 1_000;

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Input {
    Snapshot(pb::DesiredSnapshot),
    Changes(pb::DesiredChanges),
    /// A session to the control plane was (re)established: report the role
    /// and, if applying, the outcome of every namespace (an ack sent just
    /// before a cut may never have arrived).
    Connected,
    /// The control plane recorded the acknowledgement with this sequence number.
    AckRecorded(u64),
}

/// What the reconciler asks of the session.
#[derive(Debug)]
pub enum Outbound {
    Message(pb::AgentMessage),
    /// The received changes did not continue this agent's revision: start a
    /// new session that asks for a full snapshot.
    NeedSnapshot,
}

/// For tests and the log: where this agent stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub applier: bool,
    /// Revision of the desired state held (received, stored).
    pub desired_revision: i64,
    /// Last revision this agent applied and acknowledged as applier.
    pub acknowledged_revision: i64,
    /// Namespaces whose last apply or verification failed.
    pub failing: BTreeSet<String>,
    /// Desired namespaces missing from the cluster that stored state not yet
    /// confirmed by the control plane did not create.
    pub withheld: BTreeSet<String>,
    /// Snapshots and change sets received since start (a restarted agent
    /// that resumes from its revision gets changes, not a snapshot).
    pub snapshots_received: u64,
    pub changes_received: u64,
}

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Full read-back of every namespace, as a backstop to the watches.
    pub resync_interval: Duration,
    /// How often failed namespaces and unfinished deletions are retried.
    pub retry_interval: Duration,
    /// A touched namespace is checked once it has been quiet this long, so the
    /// agent's own writes do not each trigger a read-back.
    pub drift_quiet: Duration,
    /// Namespaces applied in parallel.
    pub concurrency: usize,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            resync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(2),
            drift_quiet: Duration::from_millis(500),
            concurrency: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Verified,
    Failed(String),
}

pub struct Reconciler {
    cluster: ClusterApi,
    /// Shared with the state writer while it stores it (copied on change
    /// only if a write is under way).
    state: Arc<DesiredState>,
    state_dir: StateDir,
    writer: StateWriter,
    fence: Fence,
    role: watch::Receiver<bool>,
    config: ReconcilerConfig,
    out: mpsc::UnboundedSender<Outbound>,
    status: watch::Sender<AgentStatus>,
    /// Whether this process received desired state from the control plane.
    /// Until then the stored state may be stale (other appliers may have
    /// moved on), so it is enforced on existing namespaces but never used to
    /// prune or to create them. (Staleness is also guarded on the cluster: a
    /// namespace stamped with a newer revision than this state is never
    /// overwritten or deleted.)
    authoritative: bool,
    applier: bool,
    /// The revision this agent has completely applied (what it may acknowledge).
    applied_revision: i64,
    /// Changes received but not (completely) applied: the fence closed
    /// mid-pass. Retried while applier; the revision is not acknowledged meanwhile.
    unapplied: Option<Delta>,
    outcomes: BTreeMap<String, Outcome>,
    /// Namespaces removed from the desired state (or pruned), with the
    /// revision of the state that removed them, until the control plane
    /// confirms it recorded their deletion. Kept on disk. The applier works
    /// through those not yet seen gone on every retry tick.
    tombstones: BTreeMap<String, i64>,
    /// Tombstones this process, as applier, saw gone from the cluster: the
    /// only deletions it may report (again, after a reconnect).
    deleted_here: BTreeSet<String>,
    touched: Touched,
    /// Number of the last acknowledgement sent.
    ack_sequence: u64,
    /// Namespaces reported Deleted, by the acknowledgement that carried them
    /// (with its revision), until the control plane confirms it recorded
    /// that acknowledgement.
    unconfirmed_deletions: BTreeMap<u64, (i64, Vec<String>)>,
    /// When each namespace was last written by this agent.
    last_written: BTreeMap<String, Instant>,
    /// The resourceVersions of each namespace's objects when last read back
    /// and found right: watch events at these versions are this state (most
    /// often the agent's own writes) and need no second read.
    verified_versions: BTreeMap<String, Versions>,
    /// Desired namespaces missing from the cluster that a state not (yet)
    /// confirmed by the control plane did not create: another applier may
    /// have deleted them at a later revision. Created once the control plane
    /// confirms the state; until then the revision is not acknowledged.
    withheld: BTreeSet<String>,
    /// Results of passes that could not be acknowledged (namespaces were
    /// withheld), owed to the control plane with the next acknowledgement.
    owed: Vec<pb::NamespaceResult>,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: ClusterApi,
        state_dir: StateDir,
        writer: StateWriter,
        state: DesiredState,
        fence: Fence,
        role: watch::Receiver<bool>,
        config: ReconcilerConfig,
        out: mpsc::UnboundedSender<Outbound>,
        status: watch::Sender<AgentStatus>,
        touched: Touched,
    ) -> Self {
        let tombstones = state_dir.tombstones().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read stored tombstones");
            BTreeMap::new()
        });
        Reconciler {
            cluster,
            state: Arc::new(state),
            state_dir,
            writer,
            fence,
            role,
            config,
            out,
            status,
            authoritative: false,
            applier: false,
            applied_revision: 0,
            unapplied: None,
            outcomes: BTreeMap::new(),
            tombstones,
            deleted_here: BTreeSet::new(),
            touched,
            ack_sequence: 0,
            unconfirmed_deletions: BTreeMap::new(),
            last_written: BTreeMap::new(),
            verified_versions: BTreeMap::new(),
            withheld: BTreeSet::new(),
            owed: Vec::new(),
        }
    }

    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        self.publish();
        let mut resync = tokio::time::interval(self.config.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let mut retry =
            tokio::time::interval(self.config.retry_interval.min(self.config.drift_quiet));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retry = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = self.role.changed() => {
                    if changed.is_err() { return }
                    let held = *self.role.borrow_and_update();
                    self.set_role(held).await;
                }
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    self.handle(input, &mut inputs).await;
                }
                _ = resync.tick() => {
                    if self.applier {
                        self.resync().await;
                    }
                }
                _ = retry.tick() => {
                    if self.applier {
                        // A watch that lost its place cannot say what changed
                        // meanwhile: one full check instead of waiting for the
                        // periodic one.
                        if self.touched.take_relisted() && !self.resync().await {
                            // Not done (fence not held, listing failed): keep asking.
                            self.touched.mark_relisted();
                        }
                        self.check_touched().await;
                        if last_retry.elapsed() >= self.config.retry_interval {
                            last_retry = Instant::now();
                            self.retry_unapplied().await;
                            self.retry_failed().await;
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, input: Input, inputs: &mut mpsc::Receiver<Input>) {
        match input {
            Input::Connected => {
                self.send(AgentKind::Applier(pb::ApplierState {
                    applier: self.applier,
                }));
                // Acks of an earlier session that were never confirmed: their
                // deletions are still tombstones and are reported again now.
                self.unconfirmed_deletions.clear();
                if self.applier {
                    // An ack sent just before a cut may never have arrived.
                    let mut results = self.all_results();
                    results.extend(self.reportable_deletions().iter().map(|ns| deleted(ns)));
                    self.acknowledge(results);
                }
            }
            Input::AckRecorded(sequence) => self.ack_recorded(sequence),
            Input::Snapshot(_) | Input::Changes(_) => {
                // Fold in everything already queued, then apply once: a burst
                // of commits becomes one pass over the union of their changes.
                let mut delta = Delta::default();
                let mut next = Some(input);
                let mut deferred = Vec::new();
                while let Some(input) = next.take() {
                    match input {
                        Input::Snapshot(s) => {
                            if s.revision < self.applied_revision {
                                // The control plane's history went back (a
                                // restored database): never acknowledge a
                                // revision it has not issued.
                                tracing::warn!(
                                    revision = s.revision,
                                    applied = self.applied_revision,
                                    "snapshot older than what this agent applied"
                                );
                                self.applied_revision = 0;
                            }
                            tracing::info!(
                                revision = s.revision,
                                namespaces = s.namespaces.len(),
                                "received a snapshot"
                            );
                            merge(&mut delta, Arc::make_mut(&mut self.state).apply_snapshot(s));
                            self.authoritative = true;
                        }
                        Input::Changes(c) => {
                            let (from, to) = (c.from_revision, c.revision);
                            self.status.send_modify(|st| st.changes_received += 1);
                            match Arc::make_mut(&mut self.state).apply_changes(c) {
                                Ok(d) => {
                                    tracing::debug!(
                                        from,
                                        to,
                                        upserts = d.upserts.len(),
                                        removals = d.removals.len(),
                                        "received changes"
                                    );
                                    merge(&mut delta, d);
                                    self.authoritative = true;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "changes do not continue the stored state; asking for a snapshot");
                                    let _ = self.out.send(Outbound::NeedSnapshot);
                                }
                            }
                        }
                        other => deferred.push(other),
                    }
                    next = inputs.try_recv().ok();
                }
                if self.authoritative && !self.withheld.is_empty() {
                    // Confirmed now: what stale state held back is due (if
                    // it is still desired).
                    let withheld = std::mem::take(&mut self.withheld);
                    delta.upserts.extend(
                        withheld
                            .into_iter()
                            .filter(|ns| self.state.namespaces.contains_key(ns)),
                    );
                }
                let mut tombstones_changed = false;
                for ns in &delta.upserts {
                    tombstones_changed |= self.tombstones.remove(ns).is_some();
                    self.deleted_here.remove(ns);
                }
                let revision = self.state.revision;
                for ns in &delta.removals {
                    tombstones_changed |=
                        self.tombstones.insert(ns.clone(), revision) != Some(revision);
                }
                let started = Instant::now();
                // Tombstones before any deletion (an fsync: only when they
                // changed); the desired state in the background.
                if tombstones_changed {
                    self.save_tombstones();
                }
                self.writer.submit(&self.state);
                let stored = started.elapsed();
                self.publish();
                if self.applier {
                    let (upserts, removals) = (delta.upserts.len(), delta.removals.len());
                    self.reconcile_and_acknowledge(delta).await;
                    tracing::debug!(
                        revision = self.state.revision,
                        upserts,
                        removals,
                        store_ms = stored.as_secs_f64() * 1e3,
                        total_ms = started.elapsed().as_secs_f64() * 1e3,
                        "pass done"
                    );
                }
                for other in deferred {
                    Box::pin(self.handle(other, inputs)).await;
                }
            }
        }
    }

    async fn set_role(&mut self, held: bool) {
        if held == self.applier {
            return;
        }
        self.applier = held;
        tracing::info!(applier = held, "applier role changed");
        self.send(AgentKind::Applier(pb::ApplierState { applier: held }));
        if held {
            // A new applier trusts nothing it did not check itself: a full
            // pass, including deletions the previous applier may not have
            // finished or reported.
            let removals = self.tombstones.keys().cloned().collect();
            let delta = Delta {
                upserts: self.state.namespaces.keys().cloned().collect(),
                removals,
                full: true,
            };
            self.unapplied = None;
            self.reconcile_and_acknowledge(delta).await;
        } else {
            // Whatever was under way is the next applier's business now.
            self.deleted_here.clear();
            self.applied_revision = 0;
        }
        self.publish();
    }

    /// Reconciles a delta; acknowledges the revision only if every part of it
    /// was done, otherwise keeps it for the retry tick.
    async fn reconcile_and_acknowledge(&mut self, delta: Delta) {
        let revision = self.state.revision;
        let delta = match self.unapplied.take() {
            Some(mut pending) => {
                merge(&mut pending, delta);
                pending
            }
            None => delta,
        };
        match self.reconcile(delta.clone()).await {
            Some(results) if self.withheld.is_empty() => {
                self.applied_revision = revision;
                let owed = std::mem::take(&mut self.owed);
                self.acknowledge(combine(owed, results));
            }
            Some(results) => {
                self.owed = combine(std::mem::take(&mut self.owed), results);
                tracing::warn!(
                    revision,
                    missing = ?self.withheld,
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

    async fn retry_unapplied(&mut self) {
        if let Some(delta) = self.unapplied.take() {
            self.reconcile_and_acknowledge(delta).await;
        }
    }

    /// Applies a delta: removals first (freeing names), then prune if it was
    /// a full pass, then upserts in parallel. Returns per-namespace results,
    /// or `None` if the fence closed before everything was done (then the
    /// revision must not be acknowledged).
    async fn reconcile(&mut self, delta: Delta) -> Option<Vec<pb::NamespaceResult>> {
        let mut results = Vec::new();
        let mut removals = delta.removals;
        let mut complete = true;
        if delta.full && self.authoritative {
            match self.cluster.managed_namespaces().await {
                Ok(live) => {
                    let unwanted: Vec<String> = live
                        .into_iter()
                        .filter(|ns| !self.state.namespaces.contains_key(ns))
                        .collect();
                    self.entomb(&unwanted);
                    removals.extend(unwanted);
                }
                Err(e) => {
                    // Not pruned: the pass is not complete.
                    tracing::warn!(error = %e, "could not list managed namespaces to prune");
                    complete = false;
                }
            }
        }
        for ns in removals {
            if self.state.namespaces.contains_key(&ns) {
                continue;
            }
            if !self.fence.is_held() {
                complete = false;
                break;
            }
            match self.remove(&ns).await {
                Some(r) => results.push(r),
                // The fence closed during the removal: stop here.
                None if !self.fence.is_held() => {
                    complete = false;
                    break;
                }
                // Terminating, newer, or failed: the retry tick comes back.
                None => {}
            }
        }

        let configs: Vec<pb::NamespaceConfig> = delta
            .upserts
            .iter()
            .filter_map(|ns| self.state.namespaces.get(ns).cloned())
            .collect();
        let cluster = self.cluster.clone();
        let fence = self.fence.clone();
        let if_absent = self.if_absent();
        let applied: Vec<(String, Attempt)> = futures::stream::iter(configs)
            .map(|config| {
                let cluster = cluster.clone();
                let fence = fence.clone();
                async move {
                    let outcome = apply_one(&cluster, &fence, &config, if_absent).await;
                    (config.namespace, outcome)
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        for (ns, attempt) in applied {
            let outcome = match attempt {
                Attempt::Done(outcome, versions) => {
                    self.remember_versions(&ns, versions);
                    outcome
                }
                Attempt::Fenced => {
                    // The fence closed mid-pass: not applied, not acknowledged.
                    complete = false;
                    continue;
                }
                // The cluster is past this revision for this namespace: there
                // is nothing to apply, nor anything to report.
                Attempt::Superseded => continue,
                Attempt::Withheld => {
                    self.withheld.insert(ns);
                    continue;
                }
            };
            self.last_written.insert(ns.clone(), now);
            results.push(result(&ns, &outcome));
            if let Outcome::Failed(reason) = &outcome {
                tracing::warn!(namespace = %ns, %reason, "namespace not applied");
            }
            self.outcomes.insert(ns, outcome);
        }
        self.publish();
        complete.then_some(results)
    }

    /// Namespaces removed from the desired state become tombstones (before
    /// anything is deleted, so a lost report is never forgotten).
    fn entomb(&mut self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let revision = self.state.revision;
        for ns in names {
            self.tombstones.entry(ns.clone()).or_insert(revision);
        }
        self.save_tombstones();
    }

    /// Tombstones seen gone by this applier whose removal the revision it
    /// acknowledges covers: what the control plane will accept as Deleted.
    fn reportable_deletions(&self) -> Vec<String> {
        self.tombstones
            .iter()
            .filter(|(ns, removed_at)| {
                **removed_at <= self.applied_revision && self.deleted_here.contains(*ns)
            })
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// Deletes a namespace that is no longer desired; `Some` once it is gone.
    async fn remove(&mut self, ns: &str) -> Option<pb::NamespaceResult> {
        if self.state.namespaces.contains_key(ns) || !self.fence.is_held() {
            return None;
        }
        self.outcomes.remove(ns);
        self.verified_versions.remove(ns);
        let fence = self.fence.clone();
        match self
            .cluster
            .remove_namespace_fenced(ns, self.state.revision, || fence.is_held())
            .await
        {
            Ok(Removal::Gone) => {
                tracing::info!(namespace = %ns, "namespace removed");
                self.deleted_here.insert(ns.to_string());
                Some(deleted(ns))
            }
            Ok(Removal::NotManaged) => {
                tracing::warn!(namespace = %ns, "a namespace of this name exists but is not managed by mtp; left alone");
                self.deleted_here.insert(ns.to_string());
                Some(deleted(ns))
            }
            Ok(Removal::Newer(live)) => {
                tracing::info!(namespace = %ns, live_revision = live, known_revision = self.state.revision, "namespace re-created after this agent's state; not deleted (waiting for the newer state)");
                None
            }
            // Still terminating, or the fence closed: the retry tick comes back.
            Ok(Removal::Terminating | Removal::Fenced) => None,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "namespace removal failed; will retry");
                None
            }
        }
    }

    /// Full read-back of every desired namespace (one LIST per kind);
    /// repairs what drifted and prunes managed namespaces nobody wants.
    /// Whether it ran: `false` when the fence is not held or listing failed.
    async fn resync(&mut self) -> bool {
        if !self.fence.is_held() {
            return false;
        }
        let live = match self.cluster.managed_objects().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "periodic verification could not list managed objects");
                return false;
            }
        };
        let names: Vec<String> = self.state.namespaces.keys().cloned().collect();
        tracing::debug!(namespaces = names.len(), "periodic verification");
        for ns in names {
            let Some(config) = self.state.namespaces.get(&ns) else {
                continue;
            };
            let mismatches = live.verify(&Bundle::render(config));
            self.settle(&ns, mismatches).await;
        }
        if self.authoritative {
            let unwanted: Vec<String> = live
                .namespaces()
                .into_iter()
                .filter(|ns| !self.state.namespaces.contains_key(ns))
                .collect();
            self.entomb(&unwanted);
            let mut results = Vec::new();
            for ns in unwanted {
                if let Some(r) = self.remove(&ns).await {
                    results.push(r);
                }
            }
            if !results.is_empty() {
                self.acknowledge(results);
            }
        }
        true
    }

    async fn check_touched(&mut self) {
        let quiet = self.config.drift_quiet;
        let due: Vec<String> = {
            let mut touched = self.touched.sightings();
            let due: Vec<String> = touched
                .iter()
                .filter(|(ns, seen)| {
                    seen.at.elapsed() >= quiet
                        && self
                            .last_written
                            .get(*ns)
                            .is_none_or(|w| w.elapsed() >= quiet)
                })
                .map(|(ns, _)| ns.clone())
                .collect();
            due.into_iter()
                .filter_map(|ns| touched.remove(&ns).map(|seen| (ns, seen)))
                .filter(|(ns, seen)| seen.needs_check(self.verified_versions.get(ns)))
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
        if !self.fence.is_held() {
            return;
        }
        let bundle = Bundle::render(&config);
        let mismatches = match self.cluster.verify_versions(&bundle).await {
            Ok((m, versions)) => {
                if m.is_empty() {
                    self.remember_versions(ns, versions);
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
    async fn settle(&mut self, ns: &str, mismatches: Vec<crate::kubernetes::Mismatch>) {
        let Some(config) = self.state.namespaces.get(ns).cloned() else {
            return;
        };
        if !self.fence.is_held() {
            return;
        }
        if mismatches.is_empty() {
            if self.outcomes.get(ns) != Some(&Outcome::Verified) {
                self.outcomes.insert(ns.to_string(), Outcome::Verified);
                self.acknowledge(vec![result(ns, &Outcome::Verified)]);
            }
            return;
        }
        let attempt = apply_one(&self.cluster, &self.fence, &config, self.if_absent()).await;
        let Attempt::Done(outcome, versions) = attempt else {
            if let Attempt::Withheld = attempt {
                self.withheld.insert(ns.to_string());
            }
            return;
        };
        self.remember_versions(ns, versions);
        self.last_written.insert(ns.to_string(), Instant::now());
        let repaired = outcome == Outcome::Verified;
        // Drift is a change to something that was in place. A namespace that
        // never verified (or keeps failing) is retried, but not reported as
        // drift on every retry: that would flood the audit log.
        let was_in_place = self.outcomes.get(ns) == Some(&Outcome::Verified);
        for m in mismatches.iter().filter(|_| was_in_place) {
            tracing::warn!(namespace = %ns, object = %m.object, drift = %m.description, repaired, "drift");
            self.send(AgentKind::Drift(pb::DriftReport {
                namespace: ns.to_string(),
                object: m.object.clone(),
                description: m.description.clone(),
                repaired,
            }));
        }
        if self.outcomes.get(ns) != Some(&outcome) {
            self.acknowledge(vec![result(ns, &outcome)]);
            self.outcomes.insert(ns.to_string(), outcome);
            self.publish();
        }
    }

    async fn retry_failed(&mut self) {
        let mut results = Vec::new();
        let pending: Vec<String> = self
            .tombstones
            .keys()
            .filter(|ns| !self.deleted_here.contains(*ns))
            .cloned()
            .collect();
        for ns in pending {
            if let Some(r) = self.remove(&ns).await {
                results.push(r);
            }
        }
        if !results.is_empty() {
            self.acknowledge(results);
        }
        let failing: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in failing {
            self.check(&ns).await;
        }
    }

    /// The control plane recorded an acknowledgement: the deletions it
    /// carried need not be reported again.
    fn ack_recorded(&mut self, sequence: u64) {
        let Some((revision, names)) = self.unconfirmed_deletions.remove(&sequence) else {
            return;
        };
        let before = self.tombstones.len();
        for ns in &names {
            // Only a removal the acknowledged revision covers was accepted
            // (a namespace re-created and removed again since has a later one).
            if self.tombstones.get(ns).is_some_and(|at| *at <= revision) {
                self.tombstones.remove(ns);
                self.deleted_here.remove(ns);
            }
        }
        if self.tombstones.len() != before {
            self.save_tombstones();
        }
    }

    fn save_tombstones(&mut self) {
        // Bounded: a non-applier collects deletions it never reports. The
        // oldest go first; a pass with the control plane's state prunes
        // whatever they covered anyway.
        while self.tombstones.len() > MAX_TOMBSTONES {
            let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(ns, _)| ns.clone())
            else {
                break;
            };
            self.tombstones.remove(&oldest);
        }
        if let Err(e) = self.state_dir.save_tombstones(&self.tombstones) {
            tracing::warn!(error = %e, "could not store tombstones");
        }
    }

    /// A state the control plane has not confirmed in this process may be
    /// older than deletions made since: it only keeps existing namespaces.
    fn if_absent(&self) -> IfAbsent {
        if self.authoritative {
            IfAbsent::Create
        } else {
            IfAbsent::Skip
        }
    }

    /// Keeps the versions of a namespace's last clean read-back (forgets
    /// them after a failed one: every event is then worth a look).
    fn remember_versions(&mut self, ns: &str, versions: Versions) {
        if versions.is_empty() {
            self.verified_versions.remove(ns);
        } else {
            self.verified_versions.insert(ns.to_string(), versions);
        }
    }

    fn all_results(&self) -> Vec<pb::NamespaceResult> {
        self.outcomes.iter().map(|(ns, o)| result(ns, o)).collect()
    }

    /// "Everything up to the current revision is applied", with results.
    /// Only sent by the applier, and only after the work is done.
    fn acknowledge(&mut self, results: Vec<pb::NamespaceResult>) {
        if !self.applier || self.applied_revision == 0 {
            return;
        }
        let revision = self.applied_revision;
        self.ack_sequence += 1;
        let sequence = self.ack_sequence;
        let deletions: Vec<String> = results
            .iter()
            .filter(|r| r.outcome == pb::NamespaceOutcome::Deleted as i32)
            .map(|r| r.namespace.clone())
            .collect();
        if !deletions.is_empty() {
            self.unconfirmed_deletions
                .insert(sequence, (revision, deletions));
            // A control plane that never confirms must not grow this forever:
            // what falls off stays a tombstone and is reported next session.
            while self.unconfirmed_deletions.len() > MAX_UNCONFIRMED_ACKS {
                self.unconfirmed_deletions.pop_first();
            }
        }
        self.send(AgentKind::Ack(pb::RevisionAck {
            revision,
            results,
            sequence,
        }));
        self.status
            .send_modify(|s| s.acknowledged_revision = revision);
    }

    fn send(&self, kind: AgentKind) {
        let _ = self
            .out
            .send(Outbound::Message(pb::AgentMessage { kind: Some(kind) }));
    }

    fn publish(&self) {
        let failing = self
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .map(|(ns, _)| ns.clone())
            .collect();
        self.status.send_modify(|s| {
            s.applier = self.applier;
            s.desired_revision = self.state.revision;
            s.failing = failing;
            s.withheld = self.withheld.clone();
        });
    }
}

/// What became of applying one namespace.
enum Attempt {
    /// Applied and read back (with the versions read, when verified), or failed.
    Done(Outcome, Versions),
    /// The fence closed: not (completely) written, nothing to acknowledge.
    Fenced,
    /// The namespace carries a newer revision than this config: this agent's
    /// state is behind; nothing was written.
    Superseded,
    /// The namespace is missing and was not to be created. Nothing written.
    Withheld,
}

/// Applies and verifies one namespace.
async fn apply_one(
    cluster: &ClusterApi,
    fence: &Fence,
    config: &pb::NamespaceConfig,
    if_absent: IfAbsent,
) -> Attempt {
    if !fence.is_held() {
        return Attempt::Fenced;
    }
    let bundle = Bundle::render(config);
    match cluster
        .apply_fenced(&bundle, if_absent, || fence.is_held())
        .await
    {
        Ok(Applied::Done) => {}
        // The lease may have lapsed mid-way: stop, report nothing.
        Ok(Applied::Fenced) => return Attempt::Fenced,
        Ok(Applied::Newer(live)) => {
            // This agent's state is older than what a newer applier wrote:
            // touch nothing until the newer state arrives.
            tracing::info!(namespace = %config.namespace, live_revision = live, desired_revision = config.revision, "the cluster holds a newer revision of this namespace; not applying stale state");
            return Attempt::Superseded;
        }
        Ok(Applied::Absent) => return Attempt::Withheld,
        Err(e) => return failed(e),
    }
    let mismatches = match cluster.verify_versions(&bundle).await {
        Ok((m, versions)) if m.is_empty() => return Attempt::Done(Outcome::Verified, versions),
        Ok((m, _)) => m,
        Err(e) => return failed(e),
    };
    // Still different after a forced apply: someone else owns fields mtp
    // does not set (an added ingress rule, say). Replace those objects.
    let ids = mismatches.iter().map(|m| m.object.clone()).collect();
    match cluster
        .replace_fenced(&bundle, &ids, || fence.is_held())
        .await
    {
        Ok(true) => {}
        Ok(false) => return Attempt::Fenced,
        Err(e) => return failed(e),
    }
    match cluster.verify_versions(&bundle).await {
        Ok((m, versions)) if m.is_empty() => Attempt::Done(Outcome::Verified, versions),
        Ok((m, _)) => Attempt::Done(
            Outcome::Failed(format!(
                "read back differs: {}: {}",
                m[0].object, m[0].description
            )),
            Versions::new(),
        ),
        Err(e) => failed(e),
    }
}

fn failed(e: impl std::fmt::Display) -> Attempt {
    Attempt::Done(Outcome::Failed(e.to_string()), Versions::new())
}

/// Per-namespace results of two passes, the later one winning.
fn combine(
    earlier: Vec<pb::NamespaceResult>,
    later: Vec<pb::NamespaceResult>,
) -> Vec<pb::NamespaceResult> {
    let mut by_namespace: BTreeMap<String, pb::NamespaceResult> = BTreeMap::new();
    for r in earlier.into_iter().chain(later) {
        by_namespace.insert(r.namespace.clone(), r);
    }
    by_namespace.into_values().collect()
}

fn merge(into: &mut Delta, d: Delta) {
    for ns in d.removals {
        into.upserts.remove(&ns);
        into.removals.insert(ns);
    }
    for ns in d.upserts {
        into.removals.remove(&ns);
        into.upserts.insert(ns);
    }
    into.full |= d.full;
}

fn result(ns: &str, outcome: &Outcome) -> pb::NamespaceResult {
    match outcome {
        Outcome::Verified => pb::NamespaceResult {
            namespace: ns.to_string(),
            outcome: pb::NamespaceOutcome::Verified as i32,
            reason: String::new(),
        },
        Outcome::Failed(reason) => pb::NamespaceResult {
            namespace: ns.to_string(),
            outcome: pb::NamespaceOutcome::Failed as i32,
            reason: reason.clone(),
        },
    }
}

fn deleted(ns: &str) -> pb::NamespaceResult {
    pb::NamespaceResult {
        namespace: ns.to_string(),
        outcome: pb::NamespaceOutcome::Deleted as i32,
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_results_go_out_with_the_next_acknowledgement_the_later_winning() {
        let earlier = vec![
            result("a", &Outcome::Verified),
            result("b", &Outcome::Failed("quota refused".into())),
        ];
        let later = vec![result("b", &Outcome::Verified), deleted("c")];
        let combined = combine(earlier, later);
        let outcomes: Vec<(&str, i32)> = combined
            .iter()
            .map(|r| (r.namespace.as_str(), r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", pb::NamespaceOutcome::Verified as i32),
                ("b", pb::NamespaceOutcome::Verified as i32),
                ("c", pb::NamespaceOutcome::Deleted as i32),
            ]
        );
        assert!(combine(Vec::new(), Vec::new()).is_empty());
    }
}
