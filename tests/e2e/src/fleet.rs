//! Real agents on simulated clusters: kube-sim clusters, agents started from
//! the `mtp-agent` library with test-speed timings, and waiting helpers.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube_sim::{SimCluster, SimOptions};
use mtp_agent::lease::LeaseConfig;
use mtp_agent::reconciler::ReconcilerConfig;
use mtp_agent::session::SessionConfig;
use mtp_agent::{AgentConfig, RunningAgent};
use tokio_util::sync::CancellationToken;

/// Lease duration used by test agents: a dead applier is replaced within
/// about this long (plus one retry interval).
pub const LEASE: Duration = Duration::from_millis(1500);

/// A simulated K3s cluster with the namespaces a real one starts with.
pub async fn cluster() -> SimCluster {
    cluster_with(SimOptions::default()).await
}

/// As [`cluster`], started with `options` (e.g. a simulated clock).
pub async fn cluster_with(options: SimOptions) -> SimCluster {
    let sim = SimCluster::start(options).await.expect("kube-sim starts");
    let namespaces = Api::<Namespace>::all(sim.client());
    for name in ["default", "kube-system"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                    .expect("namespace"),
            )
            .await
            .expect("creates system namespace");
    }
    sim
}

/// An agent's configuration with timings fit for tests.
pub fn agent_config(
    control_plane: &str,
    join_token: &str,
    node: &str,
    state_dir: PathBuf,
) -> AgentConfig {
    AgentConfig {
        session: SessionConfig {
            control_plane: control_plane.to_string(),
            // The test server CA (ignored for a plaintext http:// plane).
            ca_cert: Some(crate::pki().ca_path()),
            join_token: Some(join_token.to_string()),
            node_name: node.to_string(),
            keepalive: Duration::from_millis(300),
            missed_keepalives: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
        lease: LeaseConfig {
            namespace: "kube-system".into(),
            name: "mtp-agent-applier".into(),
            duration: LEASE,
            retry_interval: Duration::from_millis(100),
        },
        reconciler: ReconcilerConfig {
            resync_interval: Duration::from_secs(2),
            retry_interval: Duration::from_millis(300),
            drift_quiet: Duration::from_millis(100),
            concurrency: 8,
            ..ReconcilerConfig::default()
        },
        state_dir,
        // Off unless a test points the agent at a kubelet (kube-sim's).
        usage: mtp_agent::usage::UsageConfig::disabled(),
    }
}

/// One agent process stand-in: its state directory outlives restarts.
pub struct TestAgent {
    pub config: AgentConfig,
    pub client: kube::Client,
    pub running: Option<RunningAgent>,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    pub async fn start(
        sim: &SimCluster,
        control_plane: &str,
        join_token: &str,
        node: &str,
    ) -> TestAgent {
        TestAgent::start_on(sim.client(), control_plane, join_token, node).await
    }

    /// An agent whose cluster is whatever `client` talks to, as whoever it
    /// authenticates (a real server: the agent's ServiceAccount).
    pub async fn start_on(
        client: kube::Client,
        control_plane: &str,
        join_token: &str,
        node: &str,
    ) -> TestAgent {
        TestAgent::start_configured(client, control_plane, join_token, node, |_| {}).await
    }

    /// As [`TestAgent::start_on`], with `edit` applied to the configuration
    /// first (e.g. usage sampling turned on).
    pub async fn start_configured(
        client: kube::Client,
        control_plane: &str,
        join_token: &str,
        node: &str,
        edit: impl FnOnce(&mut AgentConfig),
    ) -> TestAgent {
        let dir = tempfile::tempdir().expect("state dir");
        let mut config = agent_config(control_plane, join_token, node, dir.path().join("state"));
        edit(&mut config);
        let mut agent = TestAgent {
            config,
            client,
            running: None,
            _dir: dir,
        };
        agent.restart().await;
        agent
    }

    /// Starts (again) with the same state directory.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "agent already running");
        self.running = Some(
            mtp_agent::start(
                self.config.clone(),
                self.client.clone(),
                CancellationToken::new(),
            )
            .await
            .expect("agent starts"),
        );
    }

    /// Clean stop: the lease is handed back.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// Crash: nothing is released.
    pub async fn kill(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill().await;
        }
    }

    pub fn status(&self) -> mtp_agent::AgentStatus {
        self.running
            .as_ref()
            .map(|r| r.status().borrow().clone())
            .unwrap_or_default()
    }

    pub fn is_applier(&self) -> bool {
        self.status().applier
    }

    /// The value of an unlabelled metric of the running agent (`None`:
    /// not running, or not exported yet).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.running.as_ref()?.metrics().render();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of the control plane (or an API server) that can go
/// silent without closing anything — the half-open connection a dead NAT or
/// a pulled cable leaves behind — or cut every connection outright.
pub struct FreezableProxy {
    pub addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Only the client-to-upstream direction goes silent: what the agent
    /// sends is lost while what the control plane sends still arrives.
    upstream_frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped by `cut`: every connection opened before ends, closed.
    cuts: tokio::sync::watch::Sender<u64>,
    /// While set, new connections are closed at once (refused).
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> FreezableProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream_frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = frozen.clone();
        let up_flag = upstream_frozen.clone();
        let (cuts, cut_rx) = tokio::sync::watch::channel(0u64);
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = refusing.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let flag = flag.clone();
                let up_flag = up_flag.clone();
                let mut cut = cut_rx.clone();
                let opened_at = *cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    // Each direction copies while thawed; frozen, bytes are
                    // read and dropped, and nothing is ever closed.
                    type Flag = std::sync::Arc<std::sync::atomic::AtomicBool>;
                    let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                                mut w: tokio::net::tcp::OwnedWriteHalf,
                                flag: Flag,
                                direction_flag: Option<Flag>| async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut dead = false;
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst)
                                || direction_flag
                                    .as_ref()
                                    .is_some_and(|f| f.load(Ordering::SeqCst))
                            {
                                // Once frozen, this connection stays dead.
                                dead = true;
                            }
                            if !dead && w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        if !dead {
                            let _ = w.shutdown().await;
                        } else {
                            // Hold the socket open forever, as a black hole would.
                            std::future::pending::<()>().await;
                        }
                    };
                    // Dropping the pumps closes both sockets.
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                pump(ri, wo, flag.clone(), Some(up_flag)),
                                pump(ro, wi, flag, None)
                            )
                        } => {}
                        _ = cut.wait_for(|n| *n != opened_at) => {}
                    }
                });
            }
        });
        FreezableProxy {
            addr,
            frozen,
            upstream_frozen,
            cuts,
            refusing,
            task,
        }
    }

    /// Closes every open connection and refuses new ones until `mend`: a
    /// network cut both ends notice at once.
    pub fn cut(&self) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// New connections are accepted again.
    pub fn mend(&self) {
        self.refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The proxy for an https:// upstream (a TLS control plane): the
    /// proxy passes bytes, the TLS session is end to end.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Existing and new connections go silent.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What clients send is dropped from now on, on existing and new
    /// connections; replies still flow. An acknowledgement sent now is lost.
    pub fn freeze_upstream(&self) {
        self.upstream_frozen
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections work again (frozen ones stay dead).
    pub fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.upstream_frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
