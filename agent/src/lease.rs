//! One applier per cluster: a `coordination.k8s.io/v1` Lease, taken and
//! renewed with optimistic concurrency (resourceVersion), and a fence that
//! stops this agent from writing once its hold may have lapsed.
//!
//! Like client-go's leader election, expiry is judged by the *local* time at
//! which a contender last saw the lease change, never by comparing clocks:
//! the holder's timestamps are only used to notice that it is alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::bundle::{MANAGED_BY, MANAGED_BY_VALUE};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
    /// How often the holder renews and contenders retry.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// The holder stops applying this long after its last successful renewal,
    /// well before a contender may take over (`duration` after it last saw a
    /// change): the gap absorbs a slow write and scheduling delays.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// Shared view of whether this agent may write, checked before every write.
///
/// The Lease (this agent is its cluster's candidate; `is_held`) is always
/// needed: it is what keeps two agents from writing at once. While a session
/// is open, the control plane's grant is needed too (it fenced this agent in
/// as the applier, with an epoch; `grant`): the session withdraws it the
/// moment the control plane does, so a pass under way stops at its next
/// write. Without a session (the control plane is away, or not reached yet
/// since start) the Lease alone lets the agent keep enforcing its stored
/// state: nothing it reports is heard until a grant anyway, and stopping
/// would leave drift unrepaired for the whole outage.
#[derive(Clone)]
pub struct Fence {
    held_until: Arc<Mutex<Option<Instant>>>,
    /// The epoch of the control plane's grant, while granted.
    granted: Arc<Mutex<Option<i64>>>,
    /// No session is open: the Lease alone decides.
    standalone: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            held_until: Arc::default(),
            granted: Arc::default(),
            standalone: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl Fence {
    /// Whether this agent holds the lease right now (its candidacy).
    pub fn is_held(&self) -> bool {
        self.held_until
            .lock()
            .map(|h| h.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// Whether this agent may write to the cluster right now: it holds the
    /// lease, and the control plane granted it the applier role or no
    /// session is open.
    pub fn may_apply(&self) -> bool {
        (self.granted().is_some() || self.is_standalone()) && self.is_held()
    }

    /// No session is open: the Lease alone decides.
    pub fn is_standalone(&self) -> bool {
        self.standalone.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A session opened: from now on the control plane's grant decides too
    /// (it answers every candidacy at the start of a session).
    pub fn session_started(&self) {
        self.standalone
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The session ended: the grant ends with it, and the Lease alone
    /// decides until the next session.
    pub fn session_ended(&self) {
        self.withdraw();
        self.standalone
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The epoch of the control plane's grant, if granted.
    pub fn granted(&self) -> Option<i64> {
        self.granted.lock().map(|g| *g).unwrap_or(None)
    }

    /// The control plane granted the applier role at `epoch`. A grant older
    /// than the one held is ignored (epochs of a cluster only grow); `false`
    /// then.
    pub fn grant(&self, epoch: i64) -> bool {
        let Ok(mut g) = self.granted.lock() else {
            return false;
        };
        if g.is_some_and(|held| held > epoch) {
            return false;
        }
        *g = Some(epoch);
        true
    }

    /// The grant is withdrawn (by the control plane, or the session ended,
    /// or the lease was lost): no more writes until a new one.
    pub fn withdraw(&self) {
        if let Ok(mut g) = self.granted.lock() {
            *g = None;
        }
    }

    fn set(&self, until: Option<Instant>) {
        if let Ok(mut h) = self.held_until.lock() {
            *h = until;
        }
    }
}

/// Takes part in the election for one lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    config: LeaseConfig,
    fence: Fence,
    /// (holder, renewTime, resourceVersion) last seen, and when it was first seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, identity: String, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            identity,
            config,
            fence: Fence::default(),
            observed: None,
        }
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: renew if held, take over if free or expired. Returns
    /// whether this agent holds the lease afterwards. Errors (API down,
    /// conflict with another contender) count as "not renewed"; the fence
    /// lapses by itself at the renew deadline.
    pub async fn round(&mut self) -> bool {
        let started = Instant::now();
        match self.try_round().await {
            Ok(true) => {
                self.fence.set(Some(started + self.config.renew_deadline()));
                true
            }
            Ok(false) => {
                self.fence.set(None);
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, lease = %self.config.name, "lease round failed");
                self.fence.is_held()
            }
        }
    }

    async fn try_round(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some([(MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %self.config.name, "took the applier lease (new)");
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            lease.spec = Some(self.spec(acquired, now, spec.lease_transitions.unwrap_or(0)));
            return self.replace(&lease).await;
        }

        // Someone else (or nobody) holds it: has it changed since we last looked?
        let seen = (holder.clone(), spec.renew_time.clone());
        let first_seen = match &self.observed {
            Some((h, r, at)) if (h, r) == (&seen.0, &seen.1) => *at,
            _ => {
                self.observed = Some((seen.0, seen.1, Instant::now()));
                Instant::now()
            }
        };
        let duration = spec
            .lease_duration_seconds
            .map_or(self.config.duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = holder.is_none() || first_seen.elapsed() >= duration;
        if !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + 1;
        lease.spec = Some(self.spec(now, now, transitions));
        let took = self.replace(&lease).await?;
        if took {
            tracing::info!(lease = %self.config.name, previous = ?holder, transitions, "took over the applier lease");
        }
        Ok(took)
    }

    /// Replace guarded by the resourceVersion we read: of two contenders only
    /// one write wins, the other gets 409.
    async fn replace(&self, lease: &Lease) -> Result<bool, kube::Error> {
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// On a clean shutdown, hands the lease back so a successor need not
    /// wait for it to expire.
    pub async fn release(&mut self) {
        self.fence.set(None);
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if self.replace(&lease).await.unwrap_or(false) {
            tracing::info!(lease = %self.config.name, "released the applier lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_session_writes_need_both_the_lease_and_the_grant() {
        let fence = Fence::default();
        assert!(!fence.may_apply());
        fence.set(Some(Instant::now() + Duration::from_secs(60)));
        // No session (the control plane away): the lease alone.
        assert!(fence.is_standalone() && fence.may_apply());
        fence.session_started();
        assert!(
            fence.is_held() && !fence.may_apply(),
            "in a session the lease alone is not enough"
        );
        assert!(fence.grant(3));
        assert!(fence.may_apply());
        assert!(!fence.grant(2), "an older epoch is ignored");
        assert_eq!(fence.granted(), Some(3));
        fence.withdraw();
        assert!(!fence.may_apply() && fence.is_held());
        assert!(fence.grant(4));
        fence.set(None);
        assert!(!fence.may_apply(), "nor the grant alone");
        // The session ends: the grant with it, the lease alone again.
        fence.set(Some(Instant::now() + Duration::from_secs(60)));
        fence.session_ended();
        assert_eq!(fence.granted(), None);
        assert!(fence.may_apply());
        fence.set(None);
        assert!(!fence.may_apply());
    }
}
