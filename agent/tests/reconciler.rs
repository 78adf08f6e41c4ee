//! The reconciler driven directly on kube-sim, with no control plane and no
//! PostgreSQL: desired state, role changes and confirmations go in as
//! `Input`s and role values, and the test reads the `Report`s that come out
//! and the objects that end up in the cluster — the acknowledgement ledger
//! (acks never ahead of the work; deletions confirmed, then forgotten) and
//! the tombstones (a deletion survives a restart; stale state never
//! re-creates what was deleted).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{Api, DeleteParams, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::AgentStatus;
use mtp_agent::bundle;
use mtp_agent::desired::{Changes, DesiredNamespaces, Snapshot, StateDir};
use mtp_agent::kubernetes::ClusterApi;
use mtp_agent::lease::{Elector, Fence, LeaseConfig};
use mtp_agent::metrics::Metrics;
use mtp_agent::persist::StateWriter;
use mtp_agent::reconciler::{
    Channels, Grant, Input, Outbound, Reconciler, ReconcilerConfig, SessionInfo, Stored,
};
use mtp_agent::report::{Ack, NamespaceReport, PruneHeld, Report};
use mtp_agent::watch::Touched;
use mtp_proto::v1::NamespaceConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[allow(dead_code)]
mod support;

/// Only guards against a hang; nothing here asserts how fast anything is.
const HANG: Duration = Duration::from_secs(60);

static LEASES: AtomicUsize = AtomicUsize::new(0);

/// One reconciler process on a state directory.
struct Agent {
    inputs: mpsc::Sender<Input>,
    out: mpsc::UnboundedReceiver<Outbound>,
    role: watch::Sender<Option<bool>>,
    status: watch::Receiver<AgentStatus>,
    /// The fence the reconciler writes under (the session's view of it).
    fence: Fence,
    touched: Touched,
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// The cluster identity the control plane of these tests serves.
const CLUSTER: &str = "0c1d5e7a-0000-4000-8000-000000000001";

impl Agent {
    /// Starts a reconciler on `dir`; as applier it holds a lease of its own
    /// first (long enough to outlast the test) and is granted the role by a
    /// session of cluster [`CLUSTER`].
    async fn start(sim: &SimCluster, dir: &Path, applier: bool) -> Agent {
        Agent::start_as(sim, dir, applier, applier.then_some(CLUSTER)).await
    }

    /// Starts a reconciler on `dir`, holding a lease if `lease`; with
    /// `granted`, a session of that cluster identity grants it the role.
    async fn start_as(sim: &SimCluster, dir: &Path, lease: bool, granted: Option<&str>) -> Agent {
        let applier = lease;
        let client = sim.client();
        ensure_namespace(&client, "kube-system").await;
        let lease = format!("applier-{}", LEASES.fetch_add(1, Ordering::SeqCst));
        let mut elector = Elector::new(
            client.clone(),
            "node-1".into(),
            LeaseConfig {
                namespace: "kube-system".into(),
                name: lease,
                duration: Duration::from_secs(3600),
                retry_interval: Duration::from_secs(1),
            },
        );
        if applier {
            assert!(elector.round().await, "a free lease is taken");
        }
        let state_dir = StateDir::new(dir).unwrap();
        let desired = state_dir.desired().unwrap();
        let (writer, write_task) = StateWriter::new(state_dir.clone());
        let (inputs, inputs_rx) = mpsc::channel(64);
        let (out_tx, out) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (role, role_rx) = watch::channel(None);
        let touched = Touched::default();
        let metrics = Metrics::new();
        let fence = elector.fence();
        // As if a session were open for the whole test: the grant decides
        // (without one, the lease alone would; see `lease::Fence`).
        fence.session_started();
        let reconciler = Reconciler::new(
            ClusterApi::new(client),
            fence.clone(),
            Stored {
                dir: state_dir,
                writer,
                desired,
            },
            ReconcilerConfig {
                // Never on its own during a test: a resync comes when asked
                // for (a re-listed watch), retries come back quickly.
                resync_interval: Duration::from_secs(3600),
                retry_interval: Duration::from_millis(100),
                drift_quiet: Duration::from_millis(50),
                concurrency: 4,
                prune_max_share: 0.5,
            },
            Channels {
                role: role_rx,
                out: out_tx,
                status: status_tx,
                touched: touched.clone(),
                metrics: metrics.clone(),
            },
        );
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(write_task);
        tasks.spawn(reconciler.run(inputs_rx, shutdown.clone()));
        role.send_replace(Some(applier));
        let mut agent = Agent {
            inputs,
            out,
            role,
            status,
            fence,
            touched,
            metrics,
            shutdown,
            tasks,
        };
        if applier {
            // Reported as the lease is taken: the candidacy.
            assert_eq!(agent.next().await, Report::Role { applier: true });
        }
        if let Some(cluster_id) = granted {
            agent.session(cluster_id).await;
            agent.grant(true, 1).await;
        }
        agent
    }

    /// A session of the control plane of `cluster_id` begins.
    async fn session(&self, cluster_id: &str) {
        self.send(Input::Session(SessionInfo {
            cluster_id: cluster_id.into(),
            cluster: "prod".into(),
            agent_id: "agent-1".into(),
        }))
        .await;
    }

    async fn grant(&self, granted: bool, epoch: i64) {
        self.send(Input::Grant(Grant { granted, epoch })).await;
    }

    async fn send(&self, input: Input) {
        self.inputs.send(input).await.unwrap();
    }

    /// The next report, skipping none.
    async fn next(&mut self) -> Report {
        match tokio::time::timeout(HANG, self.out.recv()).await {
            Ok(Some(Outbound::Report(r))) => r,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    /// Reports up to and including the first one `wanted` accepts.
    async fn until(&mut self, wanted: impl Fn(&Report) -> bool) -> Vec<Report> {
        let mut seen = Vec::new();
        loop {
            let r = self.next().await;
            let done = wanted(&r);
            seen.push(r);
            if done {
                return seen;
            }
        }
    }

    /// Reports up to the first acknowledgement of `revision`, and that ack.
    async fn ack_of(&mut self, revision: i64) -> (Vec<Report>, Ack) {
        let mut seen = self
            .until(|r| matches!(r, Report::Ack(a) if a.revision == revision))
            .await;
        let Some(Report::Ack(ack)) = seen.pop() else {
            unreachable!("until returns the matching report last")
        };
        (seen, ack)
    }

    /// Everything the reconciler handled before this has been reported by
    /// the time this returns: a new session's role report marks the point
    /// (an applier's status ack follows it and is left for later reads).
    async fn barrier(&mut self) -> Vec<Report> {
        self.send(Input::Connected).await;
        self.until(|r| matches!(r, Report::Role { .. })).await
    }

    /// A clean stop: the last desired state is on disk afterwards.
    async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default())
        .await
        .expect("kube-sim starts")
}

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating {name}: {e}"),
        }
    }
}

fn ns(name: &str, revision: i64) -> NamespaceConfig {
    NamespaceConfig {
        revision,
        ..support::config(name, "team-a")
    }
}

fn snapshot(revision: i64, namespaces: &[&str]) -> Input {
    Input::Snapshot(Snapshot {
        revision,
        namespaces: namespaces.iter().map(|n| ns(n, revision)).collect(),
    })
}

fn changes(from: i64, to: i64, upserts: &[&str], deletes: &[&str]) -> Input {
    Input::Changes(Changes {
        from_revision: from,
        revision: to,
        upserts: upserts.iter().map(|n| ns(n, to)).collect(),
        deletes: deletes.iter().map(|n| n.to_string()).collect(),
    })
}

fn exists(sim: &SimCluster, name: &str) -> bool {
    sim.object("namespaces", "", name).unwrap().is_some()
}

fn report_of<'a>(ack: &'a Ack, ns: &str) -> Option<&'a NamespaceReport> {
    ack.results.iter().find(|(n, _)| n == ns).map(|(_, r)| r)
}

fn acks(reports: &[Report]) -> Vec<&Ack> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Ack(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn tombstones(dir: &Path) -> Vec<String> {
    StateDir::new(dir)
        .unwrap()
        .tombstones()
        .unwrap()
        .into_keys()
        .collect()
}

#[tokio::test]
async fn an_applier_acknowledges_a_revision_once_it_is_in_the_cluster() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;

    agent.send(snapshot(3, &["team-a-dev", "team-a-qa"])).await;
    let (before, ack) = agent.ack_of(3).await;
    assert!(
        acks(&before).is_empty(),
        "nothing acknowledged before: {before:?}"
    );
    assert_eq!(
        ack.results,
        [
            ("team-a-dev".to_string(), NamespaceReport::Verified),
            ("team-a-qa".to_string(), NamespaceReport::Verified),
        ]
    );
    for name in ["team-a-dev", "team-a-qa"] {
        assert!(
            exists(&sim, name),
            "{name} applied before it was acknowledged"
        );
        assert!(
            sim.object("resourcequotas", name, bundle::QUOTA_NAME)
                .unwrap()
                .is_some()
        );
    }
    let status = agent.status.borrow().clone();
    assert_eq!(
        (status.desired_revision, status.acknowledged_revision),
        (3, 3)
    );
    assert_eq!(status.snapshots_received, 1);

    // A later change acknowledges the later revision, with what it touched.
    agent.send(changes(3, 4, &["team-a-stg"], &[])).await;
    let (_, ack) = agent.ack_of(4).await;
    assert_eq!(
        ack.results,
        [("team-a-stg".to_string(), NamespaceReport::Verified)]
    );
    assert!(exists(&sim, "team-a-stg"));

    let text = agent.metrics.render();
    assert!(text.contains("mtp_agent_applier 1"), "{text}");
    assert!(text.contains("mtp_agent_applied_revision 4"), "{text}");
    assert!(
        !text.contains("mtp_agent_reconcile_pass_duration_seconds_count{pass=\"delta\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("mtp_agent_reconcile_pass_duration_seconds_count{pass=\"delta\"}"),
        "{text}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_standby_applies_and_acknowledges_nothing_until_it_is_the_applier() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), false).await;
    agent.send(snapshot(2, &["team-a-dev"])).await;
    let seen = agent.barrier().await;
    assert!(acks(&seen).is_empty(), "{seen:?}");
    assert_eq!(seen, [Report::Role { applier: false }]);
    assert!(!exists(&sim, "team-a-dev"));
    assert_eq!(
        agent.status.borrow().desired_revision,
        2,
        "held, not applied"
    );
    agent.stop().await;

    // The same state directory, now holding the lease: the held state is
    // applied by the new applier's full pass and acknowledged.
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(2, &["team-a-dev"])).await;
    let (_, ack) = agent.ack_of(2).await;
    assert_eq!(
        report_of(&ack, "team-a-dev"),
        Some(&NamespaceReport::Verified)
    );
    assert!(exists(&sim, "team-a-dev"));
    agent.role.send_replace(Some(false));
    let seen = agent
        .until(|r| matches!(r, Report::Role { applier: false }))
        .await;
    assert!(acks(&seen).is_empty(), "{seen:?}");
    agent.stop().await;
}

/// The ledger's guard: with stored state the control plane has not
/// confirmed, a missing namespace is withheld and the revision is not
/// acknowledged — not on the pass, not on a new session — until the state
/// is confirmed; then the owed results go out with the acknowledgement.
#[tokio::test]
async fn acknowledgements_never_run_ahead_of_what_is_applied() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stored = DesiredNamespaces::default();
    stored.apply_snapshot(Snapshot {
        revision: 5,
        namespaces: vec![ns("team-a-dev", 5)],
    });
    StateDir::new(dir.path())
        .unwrap()
        .save_desired(&stored)
        .unwrap();

    let mut agent = Agent::start(&sim, dir.path(), true).await;
    let seen = agent.barrier().await;
    assert!(
        acks(&seen).is_empty(),
        "a revision with a withheld namespace is not acknowledged: {seen:?}"
    );
    assert!(!exists(&sim, "team-a-dev"), "stale state creates nothing");
    assert_eq!(
        agent.status.borrow().withheld,
        ["team-a-dev".to_string()].into()
    );
    assert_eq!(agent.status.borrow().acknowledged_revision, 0);

    // Confirmed by changes that continue it: created, and acknowledged
    // at the new revision with what the withheld pass owed.
    agent.send(changes(5, 6, &["team-a-qa"], &[])).await;
    let (before, ack) = agent.ack_of(6).await;
    assert!(acks(&before).is_empty(), "{before:?}");
    assert_eq!(
        report_of(&ack, "team-a-dev"),
        Some(&NamespaceReport::Verified)
    );
    assert_eq!(
        report_of(&ack, "team-a-qa"),
        Some(&NamespaceReport::Verified)
    );
    assert!(exists(&sim, "team-a-dev") && exists(&sim, "team-a-qa"));
    assert!(agent.status.borrow().withheld.is_empty());
    agent.stop().await;
}

/// A deletion is reported, reported again on every new session until the
/// control plane confirms the acknowledgement that carried it, and then
/// forgotten (also on disk).
#[tokio::test]
async fn deletions_are_reported_until_confirmed_then_forgotten() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(2, &["team-a-dev", "team-a-qa"])).await;
    agent.ack_of(2).await;

    agent.send(changes(2, 3, &[], &["team-a-qa"])).await;
    let deleted = agent
        .until(|r| {
            matches!(r, Report::Ack(a) if a.results.contains(&("team-a-qa".into(), NamespaceReport::Deleted)))
        })
        .await;
    let Some(Report::Ack(first)) = deleted.last() else {
        unreachable!()
    };
    assert_eq!(first.revision, 3);
    assert!(!exists(&sim, "team-a-qa"));
    assert_eq!(
        tombstones(dir.path()),
        ["team-a-qa"],
        "kept until confirmed"
    );

    // The ack may have been lost in a cut: a new session reports it again.
    agent.send(Input::Connected).await;
    let (_, again) = agent.ack_of(3).await;
    assert_eq!(
        report_of(&again, "team-a-qa"),
        Some(&NamespaceReport::Deleted)
    );
    assert_eq!(
        report_of(&again, "team-a-dev"),
        Some(&NamespaceReport::Verified)
    );

    // Confirming an ack that carried no deletion changes nothing; confirming
    // the one that did forgets the tombstone.
    agent.send(Input::AckRecorded(again.sequence + 100)).await;
    agent.send(Input::AckRecorded(again.sequence)).await;
    agent.barrier().await;
    assert!(tombstones(dir.path()).is_empty());
    agent.send(Input::Connected).await;
    let (_, after) = agent.ack_of(3).await;
    assert_eq!(
        report_of(&after, "team-a-qa"),
        None,
        "confirmed: not reported again"
    );
    agent.stop().await;
}

/// The tombstone survives a restart: a namespace deleted from the desired
/// state while this agent could not act on it is removed (and reported) by
/// the restarted agent, though no update mentions it again.
#[tokio::test]
async fn a_deletion_survives_a_restart_through_its_tombstone() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut applier = Agent::start(&sim, dir.path(), true).await;
    applier
        .send(snapshot(2, &["team-a-dev", "team-a-qa"]))
        .await;
    applier.ack_of(2).await;
    applier.stop().await;

    // As a standby it hears of the deletion but may not act.
    let mut standby = Agent::start(&sim, dir.path(), false).await;
    standby.send(changes(2, 3, &[], &["team-a-qa"])).await;
    standby.barrier().await;
    assert!(exists(&sim, "team-a-qa"));
    standby.stop().await;
    assert_eq!(tombstones(dir.path()), ["team-a-qa"]);

    // Restarted as applier with no word from the control plane.
    let mut restarted = Agent::start(&sim, dir.path(), true).await;
    let seen = restarted
        .until(|r| {
            matches!(r, Report::Ack(a) if a.results.contains(&("team-a-qa".into(), NamespaceReport::Deleted)))
        })
        .await;
    assert!(
        !exists(&sim, "team-a-qa"),
        "the stored tombstone was acted on"
    );
    assert!(exists(&sim, "team-a-dev"));
    for ack in acks(&seen) {
        assert!(
            ack.revision <= 3,
            "never ahead of the stored state: {ack:?}"
        );
    }
    restarted.stop().await;
}

/// Stale stored state (this agent was away while another applier deleted a
/// namespace) never brings the deleted namespace back, and once the newer
/// state arrives the deletion is reported.
#[tokio::test]
async fn stale_stored_state_never_recreates_a_deleted_namespace() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(2, &["team-a-dev", "team-a-qa"])).await;
    agent.ack_of(2).await;
    agent.stop().await;

    // Meanwhile another applier deleted team-a-qa at revision 3.
    Api::<Namespace>::all(sim.client())
        .delete("team-a-qa", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + HANG;
    while exists(&sim, "team-a-qa") {
        assert!(tokio::time::Instant::now() < deadline, "kube-sim finalizes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut agent = Agent::start(&sim, dir.path(), true).await;
    let seen = agent.barrier().await;
    assert!(
        !exists(&sim, "team-a-qa"),
        "stale state re-created a deleted namespace"
    );
    assert!(acks(&seen).is_empty(), "{seen:?}");

    agent.send(changes(2, 3, &[], &["team-a-qa"])).await;
    let (_, ack) = agent.ack_of(3).await;
    assert_eq!(
        report_of(&ack, "team-a-qa"),
        Some(&NamespaceReport::Deleted)
    );
    assert!(!exists(&sim, "team-a-qa"));
    agent.stop().await;
}

/// A drifted object of a verified namespace is put back, reported as drift
/// (repaired) and counted; the outcome does not change, so no new ack.
#[tokio::test]
async fn drift_is_repaired_reported_and_counted() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(2, &["team-a-dev"])).await;
    agent.ack_of(2).await;

    Api::<ResourceQuota>::namespaced(sim.client(), "team-a-dev")
        .delete(bundle::QUOTA_NAME, &DeleteParams::default())
        .await
        .unwrap();
    // As after a watch lost its place: one full check.
    agent.touched.mark_relisted();
    let seen = agent.until(|r| matches!(r, Report::Drift(_))).await;
    let Some(Report::Drift(drift)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(drift.namespace, "team-a-dev");
    assert!(drift.object.contains(bundle::QUOTA_NAME), "{drift:?}");
    assert!(drift.repaired);
    assert!(
        sim.object("resourcequotas", "team-a-dev", bundle::QUOTA_NAME)
            .unwrap()
            .is_some()
    );
    let text = agent.metrics.render();
    assert!(text.contains("mtp_agent_drift_repairs_total 1"), "{text}");
    assert!(
        text.contains("mtp_agent_reconcile_pass_duration_seconds_count{pass=\"resync\"}"),
        "{text}"
    );
    let seen = agent.barrier().await;
    assert!(
        acks(&seen).is_empty(),
        "an unchanged outcome is not acknowledged again: {seen:?}"
    );
    agent.stop().await;
}

fn annotation(sim: &SimCluster, name: &str, key: &str) -> Option<String> {
    let ns = sim.object("namespaces", "", name).unwrap()?;
    ns["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

fn held(reports: &[Report]) -> Vec<&PruneHeld> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::PruneHeld(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Applying takes both keys: the Lease (candidacy) and the control plane's
/// grant. Without the grant nothing is written or acknowledged; a grant
/// starts applying (with a full pass and status ack); a withdrawal stops it.
#[tokio::test]
async fn nothing_is_applied_without_the_control_planes_grant() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_as(&sim, dir.path(), true, None).await;
    agent.session(CLUSTER).await;
    agent.send(snapshot(2, &["team-a-dev"])).await;
    let seen = agent.barrier().await;
    assert!(acks(&seen).is_empty(), "{seen:?}");
    assert!(
        !exists(&sim, "team-a-dev"),
        "the lease alone writes nothing"
    );
    let status = agent.status.borrow().clone();
    assert!(status.lease_held && !status.applier, "{status:?}");

    agent.grant(true, 7).await;
    let (_, ack) = agent.ack_of(2).await;
    assert_eq!(
        report_of(&ack, "team-a-dev"),
        Some(&NamespaceReport::Verified)
    );
    assert!(exists(&sim, "team-a-dev"));
    // And the full status the control plane asked for with its grant.
    let (_, status) = agent.ack_of(2).await;
    assert_eq!(status.sequence, ack.sequence + 1);
    assert_eq!(
        report_of(&status, "team-a-dev"),
        Some(&NamespaceReport::Verified)
    );
    assert_eq!(agent.status.borrow().grant_epoch, Some(7));
    assert_eq!(
        annotation(&sim, "team-a-dev", bundle::CLUSTER_ID_ANNOTATION).as_deref(),
        Some(CLUSTER),
        "stamped with the cluster identity"
    );

    agent.grant(false, 0).await;
    agent
        .send(changes(2, 3, &["team-a-qa"], &["team-a-dev"]))
        .await;
    let seen = agent.barrier().await;
    assert!(acks(&seen).is_empty(), "withdrawn: {seen:?}");
    assert!(!exists(&sim, "team-a-qa") && exists(&sim, "team-a-dev"));
    assert!(!agent.status.borrow().applier);

    // Granted again: the held state is applied.
    agent.grant(true, 8).await;
    let (_, ack) = agent.ack_of(3).await;
    assert_eq!(
        report_of(&ack, "team-a-qa"),
        Some(&NamespaceReport::Verified)
    );
    assert!(exists(&sim, "team-a-qa"));

    // The session withdraws the grant on the fence itself (a withdrawal or
    // a session end must stop a pass under way): no write gets through,
    // though the reconciler has not heard of it yet.
    agent.fence.withdraw();
    agent.send(changes(3, 4, &["team-a-stg"], &[])).await;
    let seen = agent.barrier().await;
    assert!(acks(&seen).iter().all(|a| a.revision < 4), "{seen:?}");
    assert!(!exists(&sim, "team-a-stg"), "the fence stops writes");
    agent.grant(true, 9).await;
    agent.ack_of(4).await;
    assert!(exists(&sim, "team-a-stg"));
    agent.stop().await;
}

/// A snapshot that drops more than half of the managed namespaces holds its
/// prune pass: nothing of it is deleted, the hold is reported once, upserts
/// are still applied and acknowledged; an operator's confirmation carries
/// it out, and every pruned namespace is reported deleted — also one no
/// desired state ever listed.
#[tokio::test]
async fn a_prune_of_more_than_half_is_held_until_confirmed() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    let all = [
        "team-a-n0",
        "team-a-n1",
        "team-a-n2",
        "team-a-n3",
        "team-a-n4",
    ];
    agent.send(snapshot(2, &all)).await;
    agent.ack_of(2).await;

    // Three of five go: more than half.
    agent.send(snapshot(3, &["team-a-n0", "team-a-n1"])).await;
    let (before, ack) = agent.ack_of(3).await;
    let holds = held(&before);
    assert_eq!(holds.len(), 1, "{before:?}");
    assert_eq!(
        (holds[0].revision, holds[0].would_delete, holds[0].managed),
        (3, 3, 5)
    );
    assert_eq!(holds[0].sample, ["team-a-n2", "team-a-n3", "team-a-n4"]);
    assert!(ack.deletions().is_empty(), "{ack:?}");
    assert!(all.iter().all(|n| exists(&sim, n)), "nothing deleted");
    assert_eq!(agent.status.borrow().prune_held, Some(3));
    assert!(
        agent
            .metrics
            .render()
            .contains("mtp_agent_prune_held_revision 3")
    );
    assert!(
        tombstones(dir.path()).is_empty(),
        "held ones are no tombstones"
    );

    // Another full check of the same revision: still held, not reported again.
    agent.touched.mark_relisted();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = agent.barrier().await;
    assert!(held(&seen).is_empty(), "once per held revision: {seen:?}");
    assert!(all.iter().all(|n| exists(&sim, n)));

    agent.send(Input::PruneConfirmed(3)).await;
    let mut deleted = std::collections::BTreeSet::new();
    while deleted.len() < 3 {
        let (_, ack) = agent.ack_of(3).await;
        deleted.extend(ack.deletions());
    }
    assert_eq!(
        deleted.into_iter().collect::<Vec<_>>(),
        ["team-a-n2", "team-a-n3", "team-a-n4"]
    );
    for n in ["team-a-n2", "team-a-n3", "team-a-n4"] {
        assert!(!exists(&sim, n), "{n} pruned");
    }
    assert!(exists(&sim, "team-a-n0") && exists(&sim, "team-a-n1"));
    assert_eq!(agent.status.borrow().prune_held, None);

    // A managed namespace no desired state listed (1 of 3): pruned at once,
    // and reported deleted.
    let stray = mtp_agent::bundle::Bundle::render(&ns("team-a-stray", 3)).stamped(Some(CLUSTER));
    ClusterApi::new(sim.client()).apply(&stray).await.unwrap();
    agent.touched.mark_relisted();
    let seen = agent
        .until(
            |r| matches!(r, Report::Ack(a) if a.deletions().contains(&"team-a-stray".to_string())),
        )
        .await;
    assert!(held(&seen).is_empty(), "{seen:?}");
    assert!(!exists(&sim, "team-a-stray"));
    agent.stop().await;
}

/// An empty snapshot (a control plane with an empty database, say) would
/// delete every managed namespace: held whatever the share, and a newer
/// revision is evaluated (and reported) again.
#[tokio::test]
async fn a_prune_of_everything_is_held_and_a_newer_revision_re_evaluates() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(2, &["team-a-dev"])).await;
    agent.ack_of(2).await;
    agent.send(snapshot(3, &[])).await;
    let seen = agent.until(|r| matches!(r, Report::PruneHeld(_))).await;
    assert_eq!(held(&seen)[0].would_delete, 1);
    // The confirmation is for revision 3, but revision 4 came since.
    agent.send(snapshot(4, &[])).await;
    let seen = agent.until(|r| matches!(r, Report::PruneHeld(_))).await;
    assert_eq!(held(&seen)[0].revision, 4);
    agent.send(Input::PruneConfirmed(3)).await;
    let seen = agent.barrier().await;
    assert!(
        acks(&seen).iter().all(|a| a.deletions().is_empty()),
        "{seen:?}"
    );
    assert!(
        exists(&sim, "team-a-dev"),
        "a stale confirmation deletes nothing"
    );
    agent.send(Input::PruneConfirmed(4)).await;
    agent
        .until(|r| matches!(r, Report::Ack(a) if !a.deletions().is_empty()))
        .await;
    assert!(!exists(&sim, "team-a-dev"));
    agent.stop().await;
}

/// State applied for one cluster identity, then a control plane of another:
/// nothing is pruned (confirmed or not), and a namespace stamped for the
/// other identity is never deleted, not even when asked explicitly (that is
/// reported as failed). Adopting the new identity still prunes none of them.
#[tokio::test]
async fn a_different_cluster_identity_never_prunes() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_as(&sim, dir.path(), true, Some("cluster-old")).await;
    agent.send(snapshot(2, &["team-a-dev", "team-a-qa"])).await;
    agent.ack_of(2).await;
    assert_eq!(
        annotation(&sim, "team-a-dev", bundle::CLUSTER_ID_ANNOTATION).as_deref(),
        Some("cluster-old")
    );
    agent.stop().await;

    // Another database: everything it does not list would go.
    let mut agent = Agent::start_as(&sim, dir.path(), true, Some(CLUSTER)).await;
    assert_eq!(
        agent.status.borrow().cluster_id,
        "cluster-old",
        "what the hello says"
    );
    agent.send(snapshot(1, &["team-a-new"])).await;
    let (before, _) = agent.ack_of(1).await;
    let holds = held(&before);
    assert_eq!(holds.len(), 1, "held and reported: {before:?}");
    assert!(exists(&sim, "team-a-new"), "upserts are still applied");
    agent.send(Input::PruneConfirmed(1)).await;
    agent.send(changes(1, 2, &[], &["team-a-dev"])).await;
    let (_, ack) = agent.ack_of(2).await;
    assert!(
        matches!(report_of(&ack, "team-a-dev"), Some(NamespaceReport::Failed(r)) if r.contains("cluster-old")),
        "{ack:?}"
    );
    assert!(exists(&sim, "team-a-dev") && exists(&sim, "team-a-qa"));

    // The operator accepts the new identity: still, namespaces stamped for
    // the old one are never pruned.
    std::fs::remove_file(dir.path().join("cluster-id")).unwrap();
    agent.session(CLUSTER).await;
    agent.touched.mark_relisted();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = agent.barrier().await;
    assert!(
        acks(&seen).iter().all(|a| a.deletions().is_empty()),
        "{seen:?}"
    );
    assert!(
        held(&seen).is_empty(),
        "not even candidates, so nothing to hold: {seen:?}"
    );
    assert!(exists(&sim, "team-a-dev") && exists(&sim, "team-a-qa"));
    assert_eq!(agent.status.borrow().cluster_id, CLUSTER);
    agent.stop().await;
}

/// A namespace stamped with a newer revision than the desired state is left
/// alone and reported superseded with the live stamp, for an apply and for
/// a removal, so that the control plane re-issues above it.
#[tokio::test]
async fn a_newer_live_stamp_is_reported_superseded() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&sim, dir.path(), true).await;
    agent.send(snapshot(5, &["team-a-dev"])).await;
    agent.ack_of(5).await;
    // Another applier wrote it from revision 9.
    let patch =
        serde_json::json!({"metadata": {"annotations": {bundle::REVISION_ANNOTATION: "9"}}});
    Api::<Namespace>::all(sim.client())
        .patch(
            "team-a-dev",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();

    agent.send(changes(5, 6, &["team-a-dev"], &[])).await;
    let (_, ack) = agent.ack_of(6).await;
    assert_eq!(
        report_of(&ack, "team-a-dev"),
        Some(&NamespaceReport::Superseded { live_revision: 9 })
    );
    assert_eq!(
        annotation(&sim, "team-a-dev", bundle::REVISION_ANNOTATION).as_deref(),
        Some("9"),
        "left alone"
    );

    agent.send(changes(6, 7, &[], &["team-a-dev"])).await;
    let (_, ack) = agent.ack_of(7).await;
    assert_eq!(
        report_of(&ack, "team-a-dev"),
        Some(&NamespaceReport::Superseded { live_revision: 9 })
    );
    assert!(exists(&sim, "team-a-dev"), "not deleted");
    // Retried, but not reported on every retry.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = agent.barrier().await;
    assert!(acks(&seen).is_empty(), "{seen:?}");
    agent.stop().await;
}
