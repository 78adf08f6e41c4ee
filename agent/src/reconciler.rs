//! The agent's one writer: folds desired-state updates in, and — while this
//! agent holds the applier lease — applies, verifies, repairs drift, prunes
//! and acknowledges. Everything that writes to the cluster goes through here,
//! one step at a time, so two updates never race each other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bundle::Bundle;
use crate::desired::{Delta, DesiredState, StateDir};
use crate::kubernetes::{ClusterApi, Removal};
use crate::lease::Fence;

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Input {
    Snapshot(pb::DesiredSnapshot),
    Changes(pb::DesiredChanges),
    /// A session to the control plane was (re)established: report the role
    /// and, if applying, the outcome of every namespace (an ack sent just
    /// before a cut may never have arrived).
    Connected,
    /// A watch saw a managed object of this namespace change.
    Touched(String),
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
    state: DesiredState,
    state_dir: StateDir,
    fence: Fence,
    role: watch::Receiver<bool>,
    config: ReconcilerConfig,
    out: mpsc::UnboundedSender<Outbound>,
    status: watch::Sender<AgentStatus>,
    /// Whether the state came from the control plane (not just an empty
    /// start): pruning an empty state would delete every environment.
    authoritative: bool,
    applier: bool,
    outcomes: BTreeMap<String, Outcome>,
    /// Namespaces deleted but still terminating; acknowledged once gone.
    removing: BTreeSet<String>,
    /// Touched namespaces waiting to be checked, with when they were last touched.
    touched: BTreeMap<String, Instant>,
    /// When each namespace was last written by this agent.
    last_written: BTreeMap<String, Instant>,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: ClusterApi,
        state_dir: StateDir,
        state: DesiredState,
        fence: Fence,
        role: watch::Receiver<bool>,
        config: ReconcilerConfig,
        out: mpsc::UnboundedSender<Outbound>,
        status: watch::Sender<AgentStatus>,
    ) -> Self {
        let authoritative = state.revision > 0;
        Reconciler {
            cluster,
            state,
            state_dir,
            fence,
            role,
            config,
            out,
            status,
            authoritative,
            applier: false,
            outcomes: BTreeMap::new(),
            removing: BTreeSet::new(),
            touched: BTreeMap::new(),
            last_written: BTreeMap::new(),
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
                        self.check_touched().await;
                        if last_retry.elapsed() >= self.config.retry_interval {
                            last_retry = Instant::now();
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
                if self.applier {
                    let results = self.all_results();
                    self.acknowledge(results);
                }
            }
            Input::Touched(ns) => {
                self.touched.insert(ns, Instant::now());
            }
            Input::Snapshot(_) | Input::Changes(_) => {
                // Fold in everything already queued, then apply once: a burst
                // of commits becomes one pass over the union of their changes.
                let mut delta = Delta::default();
                let mut next = Some(input);
                let mut deferred = Vec::new();
                while let Some(input) = next.take() {
                    match input {
                        Input::Snapshot(s) => {
                            tracing::info!(
                                revision = s.revision,
                                namespaces = s.namespaces.len(),
                                "received a snapshot"
                            );
                            merge(&mut delta, self.state.apply_snapshot(s));
                            self.authoritative = true;
                        }
                        Input::Changes(c) => {
                            let (from, to) = (c.from_revision, c.revision);
                            self.status.send_modify(|st| st.changes_received += 1);
                            match self.state.apply_changes(c) {
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
                if let Err(e) = self.state_dir.save_desired(&self.state) {
                    tracing::error!(error = %e, dir = %self.state_dir.path().display(), "could not store the desired state; a restart will need a snapshot");
                }
                self.publish();
                if self.applier
                    && let Some(results) = self.reconcile(delta).await
                {
                    self.acknowledge(results);
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
            // A new applier trusts nothing it did not check itself: full pass.
            let delta = Delta {
                upserts: self.state.namespaces.keys().cloned().collect(),
                removals: BTreeSet::new(),
                full: true,
            };
            if let Some(results) = self.reconcile(delta).await {
                self.acknowledge(results);
            }
        }
        self.publish();
    }

    /// Applies a delta: removals first (freeing names), then prune if it was
    /// a full pass, then upserts in parallel. Returns per-namespace results,
    /// or `None` if the fence closed before everything was done (then the
    /// revision must not be acknowledged).
    async fn reconcile(&mut self, delta: Delta) -> Option<Vec<pb::NamespaceResult>> {
        let mut results = Vec::new();
        let mut removals = delta.removals;
        if delta.full && self.authoritative {
            match self.cluster.managed_namespaces().await {
                Ok(live) => {
                    for ns in live {
                        if !self.state.namespaces.contains_key(&ns) {
                            removals.insert(ns);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list managed namespaces to prune"),
            }
        }
        let mut complete = true;
        for ns in removals {
            if self.state.namespaces.contains_key(&ns) {
                continue;
            }
            if !self.fence.is_held() {
                complete = false;
                break;
            }
            if let Some(r) = self.remove(&ns).await {
                results.push(r);
            }
        }

        let configs: Vec<pb::NamespaceConfig> = delta
            .upserts
            .iter()
            .filter_map(|ns| self.state.namespaces.get(ns).cloned())
            .collect();
        let cluster = self.cluster.clone();
        let fence = self.fence.clone();
        let applied: Vec<(String, Option<Outcome>)> = futures::stream::iter(configs)
            .map(|config| {
                let cluster = cluster.clone();
                let fence = fence.clone();
                async move {
                    let outcome = apply_one(&cluster, &fence, &config).await;
                    (config.namespace, outcome)
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        for (ns, outcome) in applied {
            let Some(outcome) = outcome else {
                // The fence closed mid-pass: not applied, not acknowledged.
                complete = false;
                continue;
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

    /// Deletes a namespace that is no longer desired; `Some` once the outcome is known.
    async fn remove(&mut self, ns: &str) -> Option<pb::NamespaceResult> {
        if !self.fence.is_held() {
            return None;
        }
        self.outcomes.remove(ns);
        match self.cluster.remove_namespace(ns).await {
            Ok(Removal::Gone) => {
                tracing::info!(namespace = %ns, "namespace removed");
                self.removing.remove(ns);
                Some(deleted(ns))
            }
            Ok(Removal::NotManaged) => {
                tracing::warn!(namespace = %ns, "a namespace of this name exists but is not managed by mtp; left alone");
                self.removing.remove(ns);
                Some(deleted(ns))
            }
            Ok(Removal::Terminating) => {
                self.removing.insert(ns.to_string());
                None
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "namespace removal failed; will retry");
                self.removing.insert(ns.to_string());
                None
            }
        }
    }

    /// Full read-back of every desired namespace (one LIST per kind);
    /// repairs what drifted and prunes managed namespaces nobody wants.
    async fn resync(&mut self) {
        if !self.fence.is_held() {
            return;
        }
        let live = match self.cluster.managed_objects().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "periodic verification could not list managed objects");
                return;
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
            let mut results = Vec::new();
            for ns in live.namespaces() {
                if !self.state.namespaces.contains_key(&ns)
                    && let Some(r) = self.remove(&ns).await
                {
                    results.push(r);
                }
            }
            if !results.is_empty() {
                self.acknowledge(results);
            }
        }
    }

    async fn check_touched(&mut self) {
        let quiet = self.config.drift_quiet;
        let due: Vec<String> = self
            .touched
            .iter()
            .filter(|(ns, at)| {
                at.elapsed() >= quiet
                    && self
                        .last_written
                        .get(*ns)
                        .is_none_or(|w| w.elapsed() >= quiet)
            })
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in due {
            self.touched.remove(&ns);
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
        if !self.fence.is_held() || self.removing.contains(ns) {
            return;
        }
        let bundle = Bundle::render(&config);
        let mismatches = match self.cluster.verify(&bundle).await {
            Ok(m) => m,
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
        if !self.fence.is_held() || self.removing.contains(ns) {
            return;
        }
        if mismatches.is_empty() {
            if self.outcomes.get(ns) != Some(&Outcome::Verified) {
                self.outcomes.insert(ns.to_string(), Outcome::Verified);
                self.acknowledge(vec![result(ns, &Outcome::Verified)]);
            }
            return;
        }
        let Some(outcome) = apply_one(&self.cluster, &self.fence, &config).await else {
            return;
        };
        self.last_written.insert(ns.to_string(), Instant::now());
        let repaired = outcome == Outcome::Verified;
        for m in &mismatches {
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
        let removing: Vec<String> = self.removing.iter().cloned().collect();
        for ns in removing {
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

    fn all_results(&self) -> Vec<pb::NamespaceResult> {
        self.outcomes.iter().map(|(ns, o)| result(ns, o)).collect()
    }

    /// "Everything up to the current revision is applied", with results.
    /// Only sent by the applier, and only after the work is done.
    fn acknowledge(&mut self, results: Vec<pb::NamespaceResult>) {
        if !self.applier {
            return;
        }
        let revision = self.state.revision;
        self.send(AgentKind::Ack(pb::RevisionAck { revision, results }));
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
        });
    }
}

/// Applies and verifies one namespace. `None` when this agent may not write
/// (fence closed): nothing was done and nothing may be acknowledged.
async fn apply_one(
    cluster: &ClusterApi,
    fence: &Fence,
    config: &pb::NamespaceConfig,
) -> Option<Outcome> {
    if !fence.is_held() {
        return None;
    }
    let bundle = Bundle::render(config);
    if let Err(e) = cluster.apply(&bundle).await {
        return Some(Outcome::Failed(e.to_string()));
    }
    match cluster.verify(&bundle).await {
        Ok(m) if m.is_empty() => Some(Outcome::Verified),
        Ok(m) => Some(Outcome::Failed(format!(
            "read back differs: {}: {}",
            m[0].object, m[0].description
        ))),
        Err(e) => Some(Outcome::Failed(e.to_string())),
    }
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
