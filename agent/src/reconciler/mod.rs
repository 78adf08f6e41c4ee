//! The agent's one writer: folds desired-state updates in, and — while this
//! agent holds the applier lease — applies, verifies, repairs drift, prunes
//! and acknowledges. Everything that writes to the cluster goes through here,
//! one step at a time, so two updates never race each other.
//!
//! This module is the actor (inputs, role, scheduling); `passes` is what one
//! pass does to the cluster, `apply` applies one namespace, `ledger` keeps
//! what may be acknowledged, `tombstones` the deletions owed, `namespaces`
//! what is known of each namespace. It speaks in [`Report`]s; the session
//! turns them into protobuf.

mod apply;
pub(crate) mod ledger;
mod namespaces;
mod passes;
mod tombstones;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::desired::{Changes, Delta, DesiredNamespaces, Snapshot, StateDir};
use crate::kubernetes::{ClusterApi, IfAbsent};
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::persist::StateWriter;
use crate::report::{Ack, NamespaceReport, Report, Results};
use crate::watch::Touched;

use ledger::Ledger;
use namespaces::Namespaces;
use tombstones::Tombstones;

/// What the reconciler reacts to.
#[derive(Debug)]
pub enum Input {
    Snapshot(Snapshot),
    Changes(Changes),
    /// A session to the control plane was (re)established: report the role
    /// and, if applying, the outcome of every namespace (an ack sent just
    /// before a cut may never have arrived).
    Connected,
    /// The control plane recorded the acknowledgement with this sequence number.
    AckRecorded(u64),
}

/// What the reconciler asks of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Report(Report),
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

/// How the reconciler talks to the other tasks.
pub struct Channels {
    /// The applier role as the lease elector last judged it (`None` until
    /// its first round).
    pub role: watch::Receiver<Option<bool>>,
    /// Reports for the control plane, to the session.
    pub out: mpsc::UnboundedSender<Outbound>,
    pub status: watch::Sender<AgentStatus>,
    /// What the watches saw change.
    pub touched: Touched,
    pub metrics: Metrics,
}

/// What the agent keeps on disk and starts from.
pub struct Stored {
    pub dir: StateDir,
    /// Writes the desired state off the reconciler's path.
    pub writer: StateWriter,
    /// The desired state read at start (possibly stale: see `authoritative`).
    pub desired: DesiredNamespaces,
}

pub struct Reconciler {
    cluster: ClusterApi,
    fence: Fence,
    config: ReconcilerConfig,
    channels: Channels,
    /// Shared with the state writer while it stores it (copied on change
    /// only if a write is under way).
    state: Arc<DesiredNamespaces>,
    writer: StateWriter,
    /// Whether this process received desired state from the control plane.
    /// Until then the stored state may be stale (other appliers may have
    /// moved on), so it is enforced on existing namespaces but never used to
    /// prune or to create them. (Staleness is also guarded on the cluster: a
    /// namespace stamped with a newer revision than this state is never
    /// overwritten or deleted.)
    authoritative: bool,
    applier: bool,
    /// Changes received but not (completely) applied: the fence closed
    /// mid-pass. Retried while applier; the revision is not acknowledged meanwhile.
    unapplied: Option<Delta>,
    ledger: Ledger,
    tombstones: Tombstones,
    namespaces: Namespaces,
}

impl Reconciler {
    pub fn new(
        cluster: ClusterApi,
        fence: Fence,
        stored: Stored,
        config: ReconcilerConfig,
        channels: Channels,
    ) -> Self {
        Reconciler {
            cluster,
            fence,
            config,
            channels,
            state: Arc::new(stored.desired),
            writer: stored.writer,
            authoritative: false,
            applier: false,
            unapplied: None,
            ledger: Ledger::default(),
            tombstones: Tombstones::load(stored.dir),
            namespaces: Namespaces::default(),
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
                changed = self.channels.role.changed() => {
                    if changed.is_err() { return }
                    let held = self.channels.role.borrow_and_update().unwrap_or(false);
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
                        self.retry_tick(&mut last_retry).await;
                    }
                }
            }
        }
    }

    async fn retry_tick(&mut self, last_retry: &mut Instant) {
        // A watch that lost its place cannot say what changed meanwhile:
        // one full check instead of waiting for the periodic one.
        if self.channels.touched.take_relisted() && !self.resync().await {
            // Not done (fence not held, listing failed): keep asking.
            self.channels.touched.mark_relisted();
        }
        self.check_touched().await;
        if last_retry.elapsed() >= self.config.retry_interval {
            *last_retry = Instant::now();
            self.retry_unapplied().await;
            self.retry_failed().await;
        }
    }

    /// Handles one input, and whatever inputs a pass over updates deferred.
    async fn handle(&mut self, first: Input, inputs: &mut mpsc::Receiver<Input>) {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            match input {
                Input::Connected => self.connected(),
                Input::AckRecorded(sequence) => self.ack_recorded(sequence),
                update @ (Input::Snapshot(_) | Input::Changes(_)) => {
                    let deferred = self.update(update, inputs).await;
                    queue.extend(deferred);
                }
            }
        }
    }

    fn connected(&mut self) {
        self.send(Report::Role {
            applier: self.applier,
        });
        // Acks of an earlier session that were never confirmed: their
        // deletions are still tombstones and are reported again now.
        self.ledger.new_session();
        if self.applier {
            // An ack sent just before a cut may never have arrived.
            let mut results = self.namespaces.results();
            let deleted = self.tombstones.reportable(self.ledger.applied_revision());
            results.extend(deleted.into_iter().map(|ns| (ns, NamespaceReport::Deleted)));
            self.acknowledge(results);
        }
    }

    /// Folds in everything already queued, then applies once: a burst of
    /// commits becomes one pass over the union of their changes. Returns the
    /// other inputs met on the way, to handle after the pass.
    async fn update(&mut self, first: Input, inputs: &mut mpsc::Receiver<Input>) -> Vec<Input> {
        let mut delta = Delta::default();
        let mut next = Some(first);
        let mut deferred = Vec::new();
        while let Some(input) = next.take() {
            match input {
                Input::Snapshot(s) => merge(&mut delta, self.fold_snapshot(s)),
                Input::Changes(c) => {
                    if let Some(d) = self.fold_changes(c) {
                        merge(&mut delta, d);
                    }
                }
                other => deferred.push(other),
            }
            next = inputs.try_recv().ok();
        }
        self.pass(delta).await;
        deferred
    }

    fn fold_snapshot(&mut self, s: Snapshot) -> Delta {
        if s.revision < self.ledger.applied_revision() {
            // The control plane's history went back (a restored database):
            // never acknowledge a revision it has not issued.
            tracing::warn!(
                revision = s.revision,
                applied = self.ledger.applied_revision(),
                "snapshot older than what this agent applied"
            );
            self.ledger.forget_applied();
        }
        tracing::info!(
            revision = s.revision,
            namespaces = s.namespaces.len(),
            "received a snapshot"
        );
        self.channels
            .status
            .send_modify(|st| st.snapshots_received += 1);
        self.authoritative = true;
        Arc::make_mut(&mut self.state).apply_snapshot(s)
    }

    fn fold_changes(&mut self, c: Changes) -> Option<Delta> {
        let (from, to) = (c.from_revision, c.revision);
        self.channels
            .status
            .send_modify(|st| st.changes_received += 1);
        match Arc::make_mut(&mut self.state).apply_changes(c) {
            Ok(d) => {
                tracing::debug!(
                    from,
                    to,
                    upserts = d.upserts.len(),
                    removals = d.removals.len(),
                    "received changes"
                );
                self.authoritative = true;
                Some(d)
            }
            Err(e) => {
                tracing::warn!(error = %e, "changes do not continue the stored state; asking for a snapshot");
                let _ = self.channels.out.send(Outbound::NeedSnapshot);
                None
            }
        }
    }

    /// Stores what an update changed and, as applier, reconciles it.
    async fn pass(&mut self, mut delta: Delta) {
        if self.authoritative {
            // Confirmed now: what stale state held back is due (if it is
            // still desired).
            let withheld = self.namespaces.take_withheld();
            delta.upserts.extend(
                withheld
                    .into_iter()
                    .filter(|ns| self.state.namespaces.contains_key(ns)),
            );
        }
        let started = Instant::now();
        // Tombstones before any deletion (an fsync: only when they
        // changed); the desired state in the background.
        self.tombstones
            .update(&delta.upserts, &delta.removals, self.state.revision);
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
    }

    async fn set_role(&mut self, held: bool) {
        if held == self.applier {
            return;
        }
        self.applier = held;
        tracing::info!(applier = held, "applier role changed");
        self.send(Report::Role { applier: held });
        if held {
            // A new applier trusts nothing it did not check itself: a full
            // pass, including deletions the previous applier may not have
            // finished or reported.
            let delta = Delta {
                upserts: self.state.namespaces.keys().cloned().collect(),
                removals: self.tombstones.names(),
                full: true,
            };
            self.unapplied = None;
            self.reconcile_and_acknowledge(delta).await;
        } else {
            // Whatever was under way is the next applier's business now.
            self.tombstones.forget_deleted_here();
            self.ledger.forget_applied();
        }
        self.publish();
    }

    /// The control plane recorded an acknowledgement: the deletions it
    /// carried need not be reported again.
    fn ack_recorded(&mut self, sequence: u64) {
        if let Some((revision, names)) = self.ledger.recorded(sequence) {
            self.tombstones.confirmed(revision, &names);
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

    /// "Everything up to the applied revision is applied", with results.
    /// Only sent by the applier, and only after the work is done.
    fn acknowledge(&mut self, results: Results) {
        if !self.applier {
            return;
        }
        if let Some(ack) = self.ledger.acknowledge(results) {
            self.emit(ack);
        }
    }

    fn emit(&mut self, ack: Ack) {
        // Status first: whoever reads the ack sees the status that goes with it.
        let revision = ack.revision;
        self.channels
            .status
            .send_modify(|s| s.acknowledged_revision = revision);
        self.channels.metrics.set_applied_revision(revision);
        self.send(Report::Ack(ack));
    }

    fn send(&self, report: Report) {
        let _ = self.channels.out.send(Outbound::Report(report));
    }

    fn publish(&self) {
        let failing = self.namespaces.failing();
        let withheld = self.namespaces.withheld();
        self.channels.status.send_modify(|s| {
            s.applier = self.applier;
            s.desired_revision = self.state.revision;
            s.failing = failing;
            s.withheld = withheld;
        });
        self.channels.metrics.set_applier(self.applier);
        self.channels
            .metrics
            .set_applied_revision(self.ledger.applied_revision());
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
