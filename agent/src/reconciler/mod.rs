//! The agent's one writer: folds desired-state updates in, and — while this
//! agent holds the applier lease and the control plane granted it the
//! applier role — applies, verifies, repairs drift, prunes and acknowledges.
//! Everything that writes to the cluster goes through here, one step at a
//! time, so two updates never race each other.
//!
//! This module is the actor (inputs, role, scheduling); `passes` is what one
//! pass does to the cluster, `apply` applies one namespace, `ledger` keeps
//! what may be acknowledged, `tombstones` the deletions owed, `namespaces`
//! what is known of each namespace, `cluster_identity` the cluster identity
//! the state was applied for, `prune` whether a prune pass may go ahead. It
//! speaks in [`Report`]s; the session turns them into protobuf.

mod apply;
mod cluster_identity;
pub(crate) mod ledger;
mod namespaces;
mod passes;
mod prune;
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

use cluster_identity::{Check, ClusterIdentity};
use ledger::Ledger;
use namespaces::Namespaces;
use prune::{Confirmation, PruneGuard};
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
    /// A session's first word: which cluster (identity) the control plane
    /// serves.
    Session(SessionInfo),
    /// The control plane's decision on whether this agent applies.
    Grant(Grant),
    /// The session ended: its grant with it; the Lease alone decides until
    /// the next session (see `lease::Fence`).
    SessionEnded,
    /// An operator confirmed the prune pass held at this revision.
    PruneConfirmed(i64),
}

/// Who the control plane says this session is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The cluster's identity (a UUID) in the control plane's database.
    pub cluster_id: String,
    pub cluster: String,
    pub agent_id: String,
}

/// The control plane's decision on who applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: bool,
    /// The epoch of the grant (epochs of a cluster only grow).
    pub epoch: i64,
}

impl Grant {
    /// Not (or no longer) granted: a withdrawal, or the session ended.
    pub const WITHDRAWN: Grant = Grant {
        granted: false,
        epoch: 0,
    };
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
    /// Applying: the lease is held and the control plane granted the role.
    pub applier: bool,
    /// Holding the lease (the candidacy told to the control plane).
    pub lease_held: bool,
    /// The epoch of the control plane's grant, while granted.
    pub grant_epoch: Option<i64>,
    /// The cluster identity the stored state was applied for (empty: none
    /// yet); the session's hello carries it.
    pub cluster_id: String,
    /// The revision of a prune pass held for confirmation.
    pub prune_held: Option<i64>,
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
    /// The namespaces of the desired state held (whose pods' usage this
    /// agent reports, applier or not).
    pub managed_namespaces: Arc<BTreeSet<String>>,
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
    /// A prune pass that would delete more than this share of the managed
    /// namespaces (or all of them) is held until an operator confirms it.
    pub prune_max_share: f64,
}

/// Default of [`ReconcilerConfig::prune_max_share`].
pub const DEFAULT_PRUNE_MAX_SHARE: f64 = 0.5;

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            resync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(2),
            drift_quiet: Duration::from_millis(500),
            concurrency: 16,
            prune_max_share: DEFAULT_PRUNE_MAX_SHARE,
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
    /// Applying: `lease_held` and `granted` both. Every write also checks
    /// the fence, which the session closes at once on a withdrawal.
    applier: bool,
    /// The lease, as the elector last judged it.
    lease_held: bool,
    /// The epoch of the control plane's grant, while granted.
    granted: Option<i64>,
    /// The lease has been held without a break since this process last
    /// applied: nobody else can have written since, so a new grant (after a
    /// reconnect, say) resumes with what arrived meanwhile instead of a
    /// full pass over every namespace.
    continuous: bool,
    cluster_identity: ClusterIdentity,
    prune: PruneGuard,
    /// Namespaces snapshots dropped from the desired state, for the next
    /// prune pass (reported deleted if already gone, pruned under the guard
    /// if not).
    dropped: BTreeSet<String>,
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
        let cluster_identity = ClusterIdentity::load(stored.dir.clone());
        // Before the session's first hello reads it.
        let cluster_id = cluster_identity.stored().unwrap_or_default().to_string();
        channels.status.send_modify(|s| s.cluster_id = cluster_id);
        Reconciler {
            cluster,
            fence,
            prune: PruneGuard::new(config.prune_max_share),
            config,
            channels,
            state: Arc::new(stored.desired),
            writer: stored.writer,
            authoritative: false,
            applier: false,
            lease_held: false,
            granted: None,
            continuous: false,
            cluster_identity,
            dropped: BTreeSet::new(),
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
                // (The session marks the fence before it sends these.)
                Input::Connected => {
                    // The role first: in a session the grant decides, so an
                    // agent that applied on its Lease alone while
                    // disconnected waits for it before it reports.
                    self.update_role().await;
                    self.connected();
                }
                Input::SessionEnded => {
                    self.granted = None;
                    self.update_role().await;
                    self.publish();
                }
                Input::AckRecorded(sequence) => self.ack_recorded(sequence),
                Input::Session(info) => self.session_started(&info),
                Input::Grant(grant) => self.on_grant(grant).await,
                Input::PruneConfirmed(revision) => self.prune_confirmed(revision).await,
                update @ (Input::Snapshot(_) | Input::Changes(_)) => {
                    let deferred = self.update(update, inputs).await;
                    queue.extend(deferred);
                }
            }
        }
    }

    fn connected(&mut self) {
        self.send(Report::Role {
            applier: self.lease_held,
        });
        // Acks of an earlier session that were never confirmed: their
        // deletions are still tombstones and are reported again now.
        self.ledger.new_session();
        // (The session withdrew the grant when the last one ended, so this
        // is for an applier only when no session came between.)
        if self.applier {
            self.status_ack();
        }
    }

    /// The outcome of every namespace, and the deletions not yet confirmed
    /// (an ack sent just before a cut may never have arrived); and a held
    /// prune pass, again.
    fn status_ack(&mut self) {
        let mut results = self.namespaces.results();
        let deleted = self.tombstones.reportable(self.ledger.applied_revision());
        results.extend(deleted.into_iter().map(|ns| (ns, NamespaceReport::Deleted)));
        self.acknowledge(results);
        if let Some(held) = self.prune.current() {
            self.send(Report::PruneHeld(held));
        }
    }

    /// A session said which cluster identity it serves.
    fn session_started(&mut self, info: &SessionInfo) {
        if let Check::Mismatch { stored, session } =
            self.cluster_identity.session_started(&info.cluster_id)
        {
            tracing::error!(
                stored_cluster_id = %stored,
                session_cluster_id = %session,
                cluster = %info.cluster,
                "{}",
                self.cluster_identity.mismatch_help(&stored, &session)
            );
        }
        let cluster_id = self
            .cluster_identity
            .stored()
            .unwrap_or_default()
            .to_string();
        self.channels
            .status
            .send_modify(|s| s.cluster_id = cluster_id);
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
        let delta = Arc::make_mut(&mut self.state).apply_snapshot(s);
        self.log_superseded_hold();
        delta
    }

    /// A newer state: a hold of an older revision no longer stands on its
    /// own (the next prune pass re-evaluates, and reports a new hold).
    fn log_superseded_hold(&self) {
        if self
            .prune
            .held_revision()
            .is_some_and(|r| r < self.state.revision)
        {
            tracing::info!(
                held = ?self.prune.held_revision(),
                revision = self.state.revision,
                "newer desired state: the held prune pass is evaluated again"
            );
        }
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
        // Snapshots' dropped namespaces wait for the next prune pass; one
        // desired again is no longer a candidate.
        self.dropped.extend(delta.dropped.iter().cloned());
        self.dropped
            .retain(|ns| !self.state.namespaces.contains_key(ns));
        let started = Instant::now();
        // Tombstones before any deletion (an fsync: only when they
        // changed); the desired state in the background.
        self.tombstones
            .update(&delta.upserts, &delta.removals, self.state.revision);
        self.writer.submit(&self.state);
        let stored = started.elapsed();
        self.publish();
        if !self.applier {
            // Kept for a grant under the same lease hold (which resumes
            // rather than starting over with a full pass).
            if self.continuous {
                let mut pending = self.unapplied.take().unwrap_or_default();
                merge(&mut pending, delta);
                self.unapplied = Some(pending);
            }
        } else {
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

    /// The lease was taken or lost: the candidacy the control plane hears.
    /// Losing it also gives up the grant (a new candidacy gets a new one).
    async fn set_role(&mut self, held: bool) {
        if held == self.lease_held {
            return;
        }
        self.lease_held = held;
        tracing::info!(lease_held = held, "applier lease changed");
        self.send(Report::Role { applier: held });
        if !held {
            self.continuous = false;
            if self.granted.take().is_some() {
                self.fence.withdraw();
            }
        }
        self.update_role().await;
        self.publish();
    }

    /// The control plane granted or withdrew the applier role.
    async fn on_grant(&mut self, grant: Grant) {
        if grant.granted {
            if !self.fence.grant(grant.epoch) {
                tracing::warn!(
                    epoch = grant.epoch,
                    held = ?self.fence.granted(),
                    "ignored a grant older than the one held"
                );
                return;
            }
            let renewed = self.granted.is_some();
            self.granted = Some(grant.epoch);
            tracing::info!(
                epoch = grant.epoch,
                lease_held = self.lease_held,
                "the control plane granted the applier role"
            );
            if renewed && self.applier {
                // Granted again (a new epoch) while applying: the control
                // plane wants the full status.
                self.status_ack();
            }
        } else {
            self.fence.withdraw();
            if self.granted.take().is_some() {
                tracing::info!("the applier role was withdrawn");
            }
        }
        self.update_role().await;
        self.publish();
    }

    /// Applies only with the lease and the grant (or no session at all);
    /// starts or stops applying as they change.
    async fn update_role(&mut self) {
        let applying = self.lease_held && (self.granted.is_some() || self.fence.is_standalone());
        if applying == self.applier {
            return;
        }
        self.applier = applying;
        tracing::info!(applier = applying, "applier role changed");
        if applying && self.continuous {
            // Applied under this very lease hold before: what arrived since
            // waits in `unapplied`.
            tracing::info!("resuming as applier");
            self.reconcile_and_acknowledge(Delta::default()).await;
            self.status_ack();
        } else if applying {
            // A new applier trusts nothing it did not check itself: a full
            // pass, including deletions the previous applier may not have
            // finished or reported.
            let delta = Delta {
                upserts: self.state.namespaces.keys().cloned().collect(),
                removals: self.tombstones.names(),
                full: true,
                dropped: BTreeSet::new(),
            };
            self.unapplied = None;
            self.continuous = true;
            self.reconcile_and_acknowledge(delta).await;
            // The control plane asked for the full status with its grant.
            self.status_ack();
        } else {
            // Whatever was under way is the next applier's business now.
            self.tombstones.forget_deleted_here();
            self.ledger.forget_applied();
        }
    }

    /// An operator confirmed the prune pass held at `revision`: carried out
    /// now (a newer revision is evaluated again instead).
    async fn prune_confirmed(&mut self, revision: i64) {
        if let Check::Mismatch { stored, session } = self.cluster_identity.check() {
            tracing::error!(
                revision,
                "prune confirmation ignored: {}",
                self.cluster_identity.mismatch_help(&stored, &session)
            );
            return;
        }
        match self.prune.confirm(revision) {
            Confirmation::Accepted => {
                tracing::warn!(
                    revision,
                    "prune pass confirmed by an operator; carrying it out"
                );
                if self.applier {
                    self.prune_pass().await;
                }
            }
            Confirmation::NothingHeld => {
                tracing::info!(revision, "prune confirmation, but no prune pass is held");
            }
            Confirmation::Stale { held } => {
                tracing::warn!(
                    revision,
                    held,
                    "prune confirmation for another revision than the held pass; confirm the held revision"
                );
            }
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

    /// The cluster identity namespaces are stamped with: that of the
    /// session's control plane once it sent desired state, until then that
    /// of the stored state (which is what is being enforced).
    fn stamp(&self) -> Option<&str> {
        if self.authoritative {
            self.cluster_identity.session()
        } else {
            self.cluster_identity.stored()
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
        let prune_held = self.prune.held_revision();
        self.channels.status.send_modify(|s| {
            if s.desired_revision != self.state.revision
                || s.managed_namespaces.len() != self.state.namespaces.len()
            {
                s.managed_namespaces = Arc::new(self.state.namespaces.keys().cloned().collect());
            }
            s.applier = self.applier;
            s.lease_held = self.lease_held;
            s.grant_epoch = self.granted;
            s.prune_held = prune_held;
            s.desired_revision = self.state.revision;
            s.failing = failing;
            s.withheld = withheld;
        });
        self.channels.metrics.set_applier(self.applier);
        self.channels.metrics.set_lease_held(self.lease_held);
        self.channels.metrics.set_prune_held(prune_held);
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
    into.dropped.extend(d.dropped);
    into.dropped.retain(|ns| !into.upserts.contains(ns));
}
