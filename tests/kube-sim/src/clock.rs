//! The simulated cluster's clock: real time (optionally shifted) or a manual clock that
//! only moves when a test advances it. Kubelet stats, pod/container times and object
//! timestamps all read it, so usage tests are exact and deterministic.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

#[derive(Debug)]
enum Inner {
    /// Wall clock plus an offset (moved by `advance`/`set`).
    Real(Mutex<chrono::Duration>),
    /// Stands still until advanced or set.
    Manual(Mutex<DateTime<Utc>>),
}

/// A shared clock handle (cheap to clone; clones see the same time).
#[derive(Debug, Clone)]
pub struct SimClock(Arc<Inner>);

impl Default for SimClock {
    fn default() -> Self {
        Self::real()
    }
}

impl SimClock {
    /// The wall clock.
    pub fn real() -> Self {
        Self(Arc::new(Inner::Real(Mutex::new(chrono::Duration::zero()))))
    }

    /// A clock standing at `start` until [`SimClock::advance`] or [`SimClock::set`].
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Inner::Manual(Mutex::new(start))))
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(*self.0, Inner::Manual(_))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Inner::Real(off) => Utc::now() + *off.lock().unwrap_or_else(|p| p.into_inner()),
            Inner::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves the clock forward by `d` (a real clock gets shifted by `d`).
    pub fn advance(&self, d: std::time::Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        match &*self.0 {
            Inner::Real(off) => {
                let mut o = off.lock().unwrap_or_else(|p| p.into_inner());
                *o += d;
            }
            Inner::Manual(t) => {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                *t += d;
            }
        }
    }

    /// Sets the clock to `at` (a real clock gets shifted so that it reads `at` now).
    pub fn set(&self, at: DateTime<Utc>) {
        match &*self.0 {
            Inner::Real(off) => *off.lock().unwrap_or_else(|p| p.into_inner()) = at - Utc::now(),
            Inner::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()) = at,
        }
    }

    /// The current time as RFC 3339 with whole seconds (how the apiserver writes
    /// `metav1.Time`, e.g. `creationTimestamp`).
    pub fn now_secs(&self) -> String {
        self.now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// RFC 3339, fraction only when non-zero (`2026-01-01T00:00:00Z`, `...00.5Z`): pod and
/// container times keep full precision so the kubelet counters integrate from exactly them.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
