//! Fault injection: latency, error rates, RBAC-style denials, dropped watches and outages.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Default)]
struct State {
    latency: Duration,
    jitter: Duration,
    error_rates: HashMap<String, f64>,
    denied: HashSet<(String, String)>,
    unreachable_until: Option<Instant>,
}

/// Fault switches of one simulated cluster. Cheap to share; all methods take `&self`.
///
/// Verbs are the RBAC verbs: `get`, `list`, `watch`, `create`, `update`, `patch`
/// (merge patch and server-side apply), `delete`, `deletecollection`; `*` matches any.
pub struct Faults {
    state: Mutex<State>,
    drop_watches: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            drop_watches: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `fixed` plus a uniformly random `0..=jitter` delay before every request.
    pub fn set_latency(&self, fixed: Duration, jitter: Duration) {
        let mut s = self.lock();
        s.latency = fixed;
        s.jitter = jitter;
    }

    /// Fails the given fraction (0.0..=1.0) of requests with `verb` with a 500 InternalError.
    pub fn set_error_rate(&self, verb: &str, rate: f64) {
        self.lock()
            .error_rates
            .insert(verb.to_string(), rate.clamp(0.0, 1.0));
    }

    /// Answers `verb` on `resource` (plural, e.g. `networkpolicies`) with 403 Forbidden.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.lock()
            .denied
            .insert((verb.to_string(), resource.to_string()));
    }

    /// Lifts a [`Faults::deny`].
    pub fn allow(&self, verb: &str, resource: &str) {
        self.lock()
            .denied
            .remove(&(verb.to_string(), resource.to_string()));
    }

    /// Ends every open watch stream now (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// Makes the server unreachable for `d`: open watches end, new connections are closed
    /// on accept and requests on kept-alive connections fail at the transport level.
    pub fn unreachable_for(&self, d: Duration) {
        self.lock().unreachable_until = Some(Instant::now() + d);
        self.drop_watches();
    }

    /// Ends an outage started by [`Faults::unreachable_for`] early.
    pub fn reachable(&self) {
        self.lock().unreachable_until = None;
    }

    /// Clears every fault.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    /// Whether the server is currently unreachable.
    pub fn is_unreachable(&self) -> bool {
        self.lock()
            .unreachable_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// The delay to apply to the next request.
    pub(crate) fn delay(&self) -> Duration {
        let s = self.lock();
        if s.jitter.is_zero() {
            return s.latency;
        }
        let j = rand::random_range(0..=s.jitter.as_micros() as u64);
        s.latency + Duration::from_micros(j)
    }

    /// Whether `verb` on `resource` is denied.
    pub(crate) fn is_denied(&self, verb: &str, resource: &str) -> bool {
        let s = self.lock();
        [verb, "*"].iter().any(|v| {
            [resource, "*"]
                .iter()
                .any(|r| s.denied.contains(&(v.to_string(), r.to_string())))
        })
    }

    /// Whether this request of `verb` should fail with an injected error.
    pub(crate) fn should_fail(&self, verb: &str) -> bool {
        let s = self.lock();
        let rate = s
            .error_rates
            .get(verb)
            .or_else(|| s.error_rates.get("*"))
            .copied()
            .unwrap_or(0.0);
        rate > 0.0 && rand::random::<f64>() < rate
    }

    /// A receiver that changes whenever watches must be dropped.
    pub(crate) fn watch_dropper(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }
}
