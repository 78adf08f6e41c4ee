//! Usage of this node: the kubelet Summary sampled every few seconds
//! (`source`), turned into per-namespace windows (`sampler`), kept in a
//! spool on disk until the control plane said it recorded them (`spool`),
//! and sent over the session when no desired-state report is waiting
//! ([`Outgoing`]).
//!
//! Every agent samples its own node, applier or not.

pub mod sample;
pub mod sampler;
pub mod source;
pub mod spool;

#[cfg(test)]
pub(crate) mod testing;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reconciler::AgentStatus;
use sample::{NANOS_PER_SECOND, Sample};
use sampler::{Sampler, SamplerConfig};
use source::NodeSource;
use spool::{BatchId, Spool};

/// Usage batches sent and not yet recorded, at most, per session.
pub const MAX_IN_FLIGHT: usize = 4;

/// Default sampling period.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Default window length (seconds).
pub const DEFAULT_WINDOW_SECONDS: u32 = 60;
/// Default spool bound: a day of one-minute windows.
pub const DEFAULT_SPOOL_WINDOWS: usize = 1440;
/// The spool's directory in the state directory.
pub const SPOOL_DIR: &str = "usage-spool";

/// How usage is sampled and kept.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Sampling period; zero: usage is off.
    pub sample_interval: Duration,
    /// Window length in seconds (divides 3600, at least 10).
    pub window_seconds: u32,
    /// Most windows kept in the spool (the oldest are dropped, as gaps).
    pub spool_windows: usize,
    /// Samples further apart than this (in the kubelet's time) leave the
    /// time between them uncovered. `None`: three sample intervals, at
    /// least 30 s. (Tests that drive a simulated clock in big steps set it.)
    pub max_sample_gap: Option<Duration>,
    /// Base URL of this node's kubelet (e.g. `https://10.0.0.5:10250`; a
    /// path prefix is kept). Needed when usage is on.
    pub kubelet_url: Option<String>,
    /// The Kubernetes client configuration whose credentials and CA are
    /// used for the kubelet (the binary fills it in from its own). Needed
    /// when usage is on.
    pub credentials: Option<kube::Config>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self::disabled()
    }
}

impl UsageConfig {
    /// Usage off (nothing sampled, nothing sent).
    pub fn disabled() -> Self {
        UsageConfig {
            sample_interval: Duration::ZERO,
            window_seconds: DEFAULT_WINDOW_SECONDS,
            spool_windows: DEFAULT_SPOOL_WINDOWS,
            max_sample_gap: None,
            kubelet_url: None,
            credentials: None,
        }
    }

    /// Usage on with the defaults, sampling the kubelet at `kubelet_url`
    /// with `credentials`.
    pub fn enabled(kubelet_url: impl Into<String>, credentials: kube::Config) -> Self {
        UsageConfig {
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            kubelet_url: Some(kubelet_url.into()),
            credentials: Some(credentials),
            ..Self::disabled()
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.sample_interval.is_zero()
    }

    fn sampler(&self) -> SamplerConfig {
        SamplerConfig {
            window_seconds: self.window_seconds,
            // A missed sample or two is bridged (the counters are
            // cumulative); a longer silence is not covered.
            max_interval: match self.max_sample_gap {
                Some(gap) => i64::try_from(gap.as_nanos()).unwrap_or(i64::MAX),
                None => i64::try_from(self.sample_interval.as_nanos() * 3)
                    .unwrap_or(i64::MAX)
                    .max(30 * NANOS_PER_SECOND),
            },
        }
    }
}

/// Checks a window length: divides 3600, at least 10.
pub fn valid_window(seconds: u32) -> bool {
    (10..=3600).contains(&seconds) && 3600 % seconds == 0
}

/// The spool shared by the sampling task (which fills it) and the session
/// (which sends from it and deletes what was recorded).
#[derive(Debug, Clone)]
pub struct UsageLink {
    spool: Arc<Mutex<Spool>>,
    changed: Arc<Notify>,
    metrics: Metrics,
}

impl UsageLink {
    pub fn new(spool: Spool, metrics: Metrics) -> Self {
        UsageLink {
            spool: Arc::new(Mutex::new(spool)),
            changed: Arc::new(Notify::new()),
            metrics,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spools closed windows and wakes the session.
    pub fn push(&self, windows: Vec<pb::UsageWindow>) -> std::io::Result<Vec<BatchId>> {
        let ids = self.lock().push(windows)?;
        if !ids.is_empty() {
            self.changed.notify_one();
        }
        Ok(ids)
    }

    /// Resolves when batches were spooled since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// One session's view of the spool: what it sent and what it may send
/// next. Batches leave in spool order, at most [`MAX_IN_FLIGHT`] without
/// an answer; a new session starts over from the oldest.
#[derive(Debug)]
pub struct Outgoing {
    link: UsageLink,
    in_flight: VecDeque<BatchId>,
    last_sent: Option<BatchId>,
}

impl Outgoing {
    pub fn new(link: UsageLink) -> Self {
        Outgoing {
            link,
            in_flight: VecDeque::new(),
            last_sent: None,
        }
    }

    pub fn link(&self) -> &UsageLink {
        &self.link
    }

    /// A new session: everything not recorded is sent again.
    pub fn session_started(&mut self) {
        self.in_flight.clear();
        self.last_sent = None;
    }

    /// Batches sent in this session and not recorded (nor dropped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a batch may go now.
    pub fn ready(&mut self) -> bool {
        let spool = self.link.lock();
        self.in_flight.retain(|id| spool.contains(*id));
        self.in_flight.len() < MAX_IN_FLIGHT && spool.next_after(self.last_sent).is_some()
    }

    /// The next batch to send, if one may go.
    pub fn next_batch(&mut self) -> Option<pb::AgentMessage> {
        if !self.ready() {
            return None;
        }
        let mut spool = self.link.lock();
        loop {
            let id = spool.next_after(self.last_sent)?;
            self.last_sent = Some(id);
            // Unreadable: moved aside (a gap), so the next one.
            if let Some(batch) = spool.read(id) {
                self.in_flight.push_back(id);
                self.link.metrics.usage_batch_sent();
                return Some(pb::AgentMessage {
                    kind: Some(AgentKind::Usage(batch)),
                });
            }
        }
    }

    /// The control plane recorded a batch: deleted from the spool. An
    /// unknown one is ignored.
    pub fn recorded(&mut self, id: BatchId) {
        self.in_flight.retain(|x| *x != id);
        if self.link.lock().recorded(id) {
            self.link.metrics.usage_batch_acknowledged();
        } else {
            tracing::debug!(
                epoch = id.0,
                sequence = id.1,
                "UsageRecorded for a batch this agent does not hold; ignored"
            );
        }
    }
}

/// Opens the spool in the state directory.
pub fn open_spool(
    state_dir: &std::path::Path,
    config: &UsageConfig,
    metrics: &Metrics,
) -> std::io::Result<Spool> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Spool::open(
        state_dir.join(SPOOL_DIR),
        config.spool_windows,
        now_ms,
        metrics.clone(),
    )
}

/// The sampling task: every `sample_interval`, the Summary, the pods and
/// (now and then) the node; closed windows into the spool.
pub struct Sampling {
    pub source: NodeSource,
    pub link: UsageLink,
    pub config: UsageConfig,
    pub status: watch::Receiver<AgentStatus>,
    pub metrics: Metrics,
}

/// How far the kubelet's clock may be ahead of the agent's.
const MAX_KUBELET_AHEAD: Duration = Duration::from_secs(300);

/// The control plane refuses windows from its future (beyond a few minutes
/// of skew), and a refused batch would end every session: a kubelet whose
/// clock is ahead of the agent's is not sampled.
fn check_clock(kubelet: sample::Nanos, agent: sample::Nanos) -> Result<(), String> {
    let ahead = kubelet.saturating_sub(agent);
    if ahead > i64::try_from(MAX_KUBELET_AHEAD.as_nanos()).unwrap_or(i64::MAX) {
        return Err(format!(
            "the kubelet's clock is {} s ahead of this agent's; not sampled",
            ahead / NANOS_PER_SECOND
        ));
    }
    Ok(())
}

/// Node allocatable is read again after this many samples.
const NODE_EVERY: u64 = 30;

impl Sampling {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut sampler = Sampler::new(self.config.sampler());
        if let Some(end) = self.link.lock().closed_until() {
            sampler.set_floor(end);
        }
        let mut ticker = tokio::time::interval(self.config.sample_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut allocatable: Option<(i64, i64)> = None;
        let mut count: u64 = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if allocatable.is_none() || count.is_multiple_of(NODE_EVERY) {
                match self.source.allocatable().await {
                    Ok(a) => allocatable = Some(a),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read this node's allocatable (kept the last one)")
                    }
                }
            }
            count += 1;
            let managed = self.status.borrow().managed_namespaces.clone();
            match self.sample(&managed, allocatable.unwrap_or_default()).await {
                Ok(sample) => {
                    if failing {
                        tracing::info!("usage sampling works again");
                        failing = false;
                    }
                    self.metrics
                        .usage_sample(Some(sample.time.div_euclid(NANOS_PER_SECOND)));
                    let windows = sampler.observe(&sample);
                    if windows.is_empty() {
                        continue;
                    }
                    let link = self.link.clone();
                    let stored = tokio::task::spawn_blocking(move || link.push(windows)).await;
                    match stored {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "could not write usage windows to the spool; they are lost (missing coverage)")
                        }
                        Err(_) => return,
                    }
                }
                Err(e) => {
                    self.metrics.usage_sample(None);
                    if failing {
                        tracing::debug!(error = %e, "usage sample failed");
                    } else {
                        tracing::warn!(error = %e, "usage sample failed; the time until the next good one is not covered");
                        failing = true;
                    }
                }
            }
        }
    }

    async fn sample(
        &self,
        managed: &BTreeSet<String>,
        (node_cpu_millis, node_memory_bytes): (i64, i64),
    ) -> Result<Sample, String> {
        // The Summary first: pod statuses read after it know at least as
        // much about runs that ended before its time.
        let (time, stats) = self.source.summary().await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        check_clock(time, now)?;
        let pods = self.source.pods(managed).await?;
        Ok(Sample {
            time,
            node_cpu_millis,
            node_memory_bytes,
            pods,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubelet_clock_far_ahead_is_not_sampled() {
        let s = NANOS_PER_SECOND;
        assert!(check_clock(1000 * s, 1000 * s).is_ok());
        assert!(check_clock(1299 * s, 1000 * s).is_ok());
        assert!(check_clock(10 * s, 1000 * s).is_ok(), "behind is fine");
        let e = check_clock(1301 * s, 1000 * s).unwrap_err();
        assert!(e.contains("301 s ahead"), "{e}");
    }

    #[test]
    fn windows_divide_an_hour_and_are_at_least_10_seconds() {
        for ok in [10, 15, 60, 300, 3600] {
            assert!(valid_window(ok), "{ok}");
        }
        for bad in [0, 5, 7, 70, 7200] {
            assert!(!valid_window(bad), "{bad}");
        }
    }
}
