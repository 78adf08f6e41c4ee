//! Failed authentications counted per peer address: past a limit within a
//! window, that peer's calls are refused before they reach PostgreSQL, so a
//! flood of made-up tokens cannot starve the connection pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed authentications a peer may have per window before it is held off.
pub const MAX_FAILURES: u32 = 20;
/// The window the failures are counted in (and the longest hold).
pub const WINDOW: Duration = Duration::from_secs(10);
/// Peers tracked at once; past this, expired entries are dropped, and if
/// that is not enough the oldest window is.
const MAX_PEERS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Shared by every request handler of one replica. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuthThrottle {
    peers: Arc<Mutex<HashMap<Option<IpAddr>, Failures>>>,
}

impl AuthThrottle {
    /// `Err(wait)` while `peer` is held off.
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&peer) {
            Some(f) if f.count >= MAX_FAILURES && now.duration_since(f.since) < WINDOW => {
                Err(WINDOW - now.duration_since(f.since))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication of `peer`.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if peers.len() >= MAX_PEERS
                && let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k)
            {
                peers.remove(&oldest);
            }
        }
        let entry = peers.entry(peer).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(entry.since) >= WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count == MAX_FAILURES {
            tracing::warn!(peer = ?peer, window = ?WINDOW, "too many failed authentications from this address; holding it off");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_held_off_after_its_failures_and_released_after_the_window() {
        let throttle = AuthThrottle::default();
        let bad: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        let good: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(bad, start);
        }
        assert_eq!(throttle.check(bad, start), Ok(()));
        throttle.failed(bad, start);
        let wait = throttle
            .check(bad, start + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(1));
        // Other peers are not affected.
        assert_eq!(throttle.check(good, start), Ok(()));
        // After the window the peer starts over.
        assert_eq!(throttle.check(bad, start + WINDOW), Ok(()));
        throttle.failed(bad, start + WINDOW);
        assert_eq!(throttle.check(bad, start + WINDOW), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = AuthThrottle::default();
        let start = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            throttle.failed(Some(IpAddr::from(i.to_be_bytes())), start);
        }
        assert!(throttle.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
