//! Test helpers and [`Cluster`], the kube-sim or real kube-apiserver a shared test runs on.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use kube_sim::{SimCluster, SimOptions};
use mtp_kube_harness::{KubeServer, Options};

/// Starts a plain-HTTP cluster with defaults.
pub async fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default())
        .await
        .expect("sim starts")
}

/// Awaits `f` with a generous timeout so a broken server fails the test instead of hanging.
/// Generous enough for the real namespace controller, which takes seconds to empty a
/// deleted namespace (kube-sim takes milliseconds).
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
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

/// The label key a test puts on the objects it wants to find again by selector.
/// Not `app.kubernetes.io/managed-by`: `deploy/k3s`'s admission policy refuses namespaces
/// carrying `managed-by=mtp` to everyone but the agent on the real server.
pub const RUN_LABEL: &str = "kube-sim.test/run";

/// The API server one test runs against.
///
/// kube-sim is fresh for every test; the real server is shared by all tests of the
/// process (started on first use), so on it every name a test creates carries a suffix
/// unique to the test ([`Cluster::name`]) and lists and watches skip what other tests
/// created ([`Cluster::is_ours`]).
pub struct Cluster {
    client: kube::Client,
    sim: Option<SimCluster>,
    /// A real server of this test alone ([`Cluster::dedicated`]), stopped when dropped.
    _dedicated: Option<KubeServer>,
    /// `-<8 hex>` on the real server, empty on kube-sim.
    suffix: String,
}

impl Cluster {
    /// A fresh kube-sim started with `options` (`SimOptions::default()` for most tests).
    /// Not `Cluster::sim()`: that name is the accessor below.
    pub async fn sim_with(options: SimOptions) -> Self {
        let sim = SimCluster::start(options).await.expect("sim starts");
        Cluster {
            client: sim.client(),
            sim: Some(sim),
            _dedicated: None,
            suffix: String::new(),
        }
    }

    /// The real kube-apiserver of this test process, as its cluster admin
    /// (`system:masters`: RBAC does not apply, admission does).
    pub async fn real() -> Self {
        let server = KubeServer::shared();
        Cluster {
            client: server.admin().await,
            sim: None,
            _dedicated: None,
            suffix: format!("-{:08x}", rand::random::<u32>()),
        }
    }

    /// A real kube-apiserver of this test alone, started with `options` (for server flags
    /// the shared one must not have, e.g. no watch cache); it stops when the test ends.
    pub async fn dedicated(options: Options) -> Self {
        let server = KubeServer::start(options)
            .unwrap_or_else(|e| panic!("a dedicated real Kubernetes API server: {e}"));
        Cluster {
            client: server.admin().await,
            sim: None,
            _dedicated: Some(server),
            suffix: format!("-{:08x}", rand::random::<u32>()),
        }
    }

    /// A client of this cluster.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `base` on kube-sim, `<base>-<8 hex>` (unique to this test) on the real server.
    pub fn name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// The kube-sim behind this cluster, for assertions only kube-sim can make
    /// (reading its store, injecting faults); `None` on the real server.
    pub fn sim(&self) -> Option<&SimCluster> {
        self.sim.as_ref()
    }

    /// Whether an object name is one this test made with [`Cluster::name`]: always on a
    /// fresh kube-sim (nothing else is in it), by the suffix on the shared real server.
    pub fn is_ours(&self, name: &str) -> bool {
        name.ends_with(&self.suffix)
    }

    /// The value of [`RUN_LABEL`] for this test's objects.
    pub fn run(&self) -> String {
        self.name("run")
    }

    /// `{RUN_LABEL: run}`, to merge into an object's labels.
    pub fn run_labels(&self) -> serde_json::Value {
        serde_json::json!({ RUN_LABEL: self.run() })
    }

    /// `RUN_LABEL=run`: selects exactly this test's labelled objects.
    pub fn run_selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run())
    }

    /// Waits until namespace `ns` can hold pods. On the real server the ServiceAccount
    /// admission plugin refuses pods until the serviceaccount controller has created the
    /// namespace's `default` ServiceAccount; kube-sim has neither (nothing to wait for).
    pub async fn ready_for_pods(&self, ns: &str) {
        if self.sim.is_some() {
            return;
        }
        let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client(), ns);
        while sas
            .get_opt("default")
            .await
            .expect("get ServiceAccount")
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `SimOptions` a shared test asks for (default when it names none).
#[allow(unused_macros)] // each test binary uses its own part of this module
macro_rules! sim_options {
    () => {
        kube_sim::SimOptions::default()
    };
    ($options:expr) => {
        $options
    };
}
#[allow(unused_imports)]
pub(crate) use sim_options;

/// The real server a shared test asks for: the process's shared one, or a dedicated one
/// started with the harness `Options` given after `real`.
#[allow(unused_macros)]
macro_rules! real_cluster {
    () => {
        $crate::common::Cluster::real().await
    };
    ($options:expr) => {
        $crate::common::Cluster::dedicated($options).await
    };
}
#[allow(unused_imports)]
pub(crate) use real_cluster;

/// Turns each listed `async fn NAME(c: Cluster)` into two tests, `on_kube_sim::NAME` (a
/// fresh kube-sim, with the `SimOptions` given after `with`, if any) and
/// `on_real_apiserver::NAME` (the shared real server, or a dedicated one started with the
/// harness `Options` given after `; real`), so both backends run the same assertions:
///
/// ```ignore
/// on_both!(plain, tuned with SimOptions { .. }, odd with SimOptions { .. }; real Options { .. });
/// ```
#[allow(unused_macros)]
macro_rules! on_both {
    ($($name:ident $(with $options:expr)? $(; real $real:expr)?),* $(,)?) => {
        mod on_kube_sim {
            // The `SimOptions` expressions are written against the test file's imports.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let options = $crate::common::sim_options!($($options)?);
                    super::$name($crate::common::Cluster::sim_with(options).await).await;
                }
            )*
        }
        mod on_real_apiserver {
            // The harness `Options` expressions too.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::real_cluster!($($real)?)).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both;
