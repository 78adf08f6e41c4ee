//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use kube_sim::{SimCluster, SimOptions};

/// Starts a plain-HTTP cluster with defaults.
pub async fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default())
        .await
        .expect("sim starts")
}

/// Awaits `f` with a generous timeout so a broken server fails the test instead of hanging.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out")
}

/// The `Status` code and reason of a kube API error.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}
