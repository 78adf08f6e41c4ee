//! kube-sim: an in-memory Kubernetes API server that the real kube-rs client and kubectl
//! talk to over HTTP(S), for tests, the local demo and scale runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_sim::Error> {
//! let sim = kube_sim::SimCluster::start(kube_sim::SimOptions::default()).await?;
//! let client = sim.client();
//! sim.faults().deny("delete", "networkpolicies");
//! sim.set_pod_usage("team-a", "web-0", kube_sim::PodUsage { cpu_nano_cores: 250_000_000, memory_working_set_bytes: 64 << 20 });
//! // GET {kubelet_url}/stats/summary: the node's kubelet Summary (checked as `get nodes/stats`).
//! let kubelet = sim.kubelet_url("node-1");
//! # drop(kubelet);
//! # drop(client);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apply;
pub mod clock;
pub mod demo;
pub mod discovery;
pub mod faults;
pub mod kinds;
pub mod kubeconfig;
pub mod kubelet;
pub mod pod_life;
pub mod protobuf;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use clock::SimClock;
pub use faults::Faults;
pub use kubelet::{ContainerUsage, PodUsage, UsageCurve, UsageProfile, UsageTotals};
pub use status::StatusError;
pub use store::Store;

/// Errors starting or talking to a simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or writing files failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation or TLS setup failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Building the kube client failed.
    #[error("kube client: {0}")]
    Client(String),
    /// The resource is not one the simulator serves.
    #[error("unknown resource {0}")]
    UnknownResource(String),
}

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Serve HTTPS with a generated self-signed CA (written into the kubeconfig).
    pub tls: bool,
    /// Require `Authorization: Bearer <token>` on every request (401 otherwise).
    pub bearer_token: Option<String>,
    /// Cluster, user and context name in the kubeconfig.
    pub name: String,
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Committed changes kept for watch resumption; older versions answer 410 Expired.
    pub watch_history: usize,
    /// Period of BOOKMARK events on watches that ask for them.
    pub bookmark_interval: Duration,
    /// How long a deleted namespace stays `Terminating` before its contents are removed.
    pub namespace_finalize_delay: Duration,
    /// The clock of object timestamps, pod and container times and kubelet counters
    /// (default: the wall clock; [`SimClock::manual`] for exact usage tests).
    pub clock: SimClock,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            tls: false,
            bearer_token: None,
            name: "kube-sim".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            namespace_finalize_delay: Duration::from_millis(50),
            clock: SimClock::real(),
        }
    }
}

/// A running simulated cluster. Dropping it without [`SimCluster::shutdown`] also stops it.
pub struct SimCluster {
    shared: Arc<server::Shared>,
    url: String,
    kubeconfig: String,
    ca_pem: Option<String>,
    client: kube::Client,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SimCluster {
    /// Starts a cluster listening on `opts.bind` (default `127.0.0.1:0`).
    pub async fn start(opts: SimOptions) -> Result<Self, Error> {
        tls::install_provider();
        let listener = TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let material = if opts.tls {
            Some(tls::TlsMaterial::generate()?)
        } else {
            None
        };
        let acceptor = match &material {
            Some(m) => Some(tokio_rustls::TlsAcceptor::from(m.server_config()?)),
            None => None,
        };
        let scheme = if opts.tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let ca_pem = material.map(|m| m.ca_pem);
        let kubeconfig = kubeconfig::render(
            &opts.name,
            &url,
            ca_pem.as_deref(),
            opts.bearer_token.as_deref(),
        );
        let shared = Arc::new(server::Shared {
            store: Arc::new(Store::with_clock(opts.watch_history, opts.clock.clone())),
            faults: Arc::new(Faults::default()),
            kubelet: Arc::new(kubelet::Kubelet::new(opts.clock.clone())),
            bearer_token: opts.bearer_token.clone(),
            bookmark_interval: opts.bookmark_interval,
            namespace_finalize_delay: opts.namespace_finalize_delay,
            addr: addr.to_string(),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server::serve(
            listener,
            shared.clone(),
            acceptor,
            cancel.clone(),
        ));
        let client = client_from_kubeconfig(&kubeconfig).await?;
        Ok(Self {
            shared,
            url,
            kubeconfig,
            ca_pem,
            client,
            cancel,
            task: Some(task),
        })
    }

    /// Starts `n` clusters in this process (one port each), named `{name}-{i}`.
    pub async fn start_many(n: usize, opts: SimOptions) -> Result<Vec<Self>, Error> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut o = opts.clone();
            o.name = format!("{}-{i}", opts.name);
            out.push(Self::start(o).await?);
        }
        Ok(out)
    }

    /// Base URL (`http://127.0.0.1:PORT` or `https://...`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client configured from this cluster's kubeconfig (shares one connection pool).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A fresh kube client with its own connection pool.
    pub async fn new_client(&self) -> Result<kube::Client, Error> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The kubeconfig document (YAML) for this cluster.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig
    }

    /// The CA certificate (PEM) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        std::fs::write(path, &self.kubeconfig)?;
        Ok(())
    }

    /// Fault switches of this cluster.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Direct access to the object store (bypasses HTTP, auth and faults).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Reads a stored object, including `managedFields`, by plural resource name
    /// (`namespaces`, `networkpolicies`, ...); `namespace` is `""` for cluster-scoped kinds.
    pub fn object(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        let kind = kinds::KINDS
            .iter()
            .find(|k| k.resource == resource)
            .ok_or_else(|| Error::UnknownResource(resource.into()))?;
        Ok(self
            .shared
            .store
            .get(kind, namespace, name)
            .ok()
            .map(|v| (*v).clone()))
    }

    /// The cluster's clock (shared with every cluster started from the same options).
    pub fn clock(&self) -> SimClock {
        self.shared.store.clock().clone()
    }

    /// The base URL of `node`'s simulated kubelet, `{url}/kubelet/{node}`: what
    /// `https://<node>:10250` is on a real cluster (append `/stats/summary`). It answers
    /// with the same TLS and bearer token as the API, and authorizes like a kubelet:
    /// `get` on `nodes/stats`.
    pub fn kubelet_url(&self, node: &str) -> String {
        format!("{}/kubelet/{node}", self.url)
    }

    /// Sets the usage curve of one container: offsets count from the container's current
    /// start (`state.running.startedAt`), and again from zero after each restart.
    pub fn set_container_curve(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        curve: UsageCurve,
    ) {
        self.shared
            .kubelet
            .set_container_curve(namespace, pod, container, curve);
    }

    /// Sets the used and total bytes reported for a PVC in the stats of the pods that
    /// mount it (`volume[].pvcRef`).
    pub fn set_volume_usage(
        &self,
        namespace: &str,
        pvc: &str,
        used_bytes: u64,
        capacity_bytes: u64,
    ) {
        self.shared
            .kubelet
            .set_volume_usage(namespace, pvc, used_bytes, capacity_bytes);
    }

    /// Restarts a container of a running pod now (by the clock), as the kubelet does after
    /// a crash: the old run goes to `lastState.terminated`, `restartCount` grows, and the
    /// container's kubelet counters and `startTime` start over. Watches see MODIFIED.
    pub fn restart_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(), StatusError> {
        let at = clock::rfc3339(self.shared.store.clock().now());
        self.shared
            .store
            .modify_status(
                kinds::pods(),
                namespace,
                pod,
                pod_life::KUBELET_MANAGER,
                |p| pod_life::restart(p, container, &at),
            )
            .map(drop)
    }

    /// Ends a running pod now (by the clock): `Succeeded` (exit code 0) or `Failed` (1),
    /// every container `terminated`. The kubelet stops reporting it; the pod stays in the
    /// API until deleted.
    pub fn finish_pod(
        &self,
        namespace: &str,
        pod: &str,
        succeeded: bool,
    ) -> Result<(), StatusError> {
        let at = clock::rfc3339(self.shared.store.clock().now());
        self.shared
            .store
            .modify_status(
                kinds::pods(),
                namespace,
                pod,
                pod_life::KUBELET_MANAGER,
                |p| pod_life::finish(p, succeeded, &at),
            )
            .map(drop)
    }

    /// Sets the constant CPU/memory usage the kubelet stats report for a pod.
    pub fn set_pod_usage(&self, namespace: &str, pod: &str, usage: PodUsage) {
        self.shared.kubelet.set_usage(namespace, pod, usage);
    }

    /// Sets a usage profile: a function of the time elapsed since this call.
    pub fn set_pod_usage_profile(
        &self,
        namespace: &str,
        pod: &str,
        profile: impl Fn(Duration) -> PodUsage + Send + Sync + 'static,
    ) {
        self.shared
            .kubelet
            .set_profile(namespace, pod, Arc::new(profile));
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.shared.store.object_count()
    }

    /// Stops accepting connections and closes open ones (watches end).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Builds a kube client from a kubeconfig document.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, Error> {
    tls::install_provider();
    let kc = kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| Error::Client(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| Error::Client(e.to_string()))
}
