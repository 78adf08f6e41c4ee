//! Wiring: connects the store, runs migrations, mints the bootstrap token if
//! asked, and serves the gRPC API and the admin port until cancelled, with the
//! background tasks (health, fleet metrics, expiry) beside them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mtp_proto::v1::{
    FILE_DESCRIPTOR_SET, agent_service_server::AgentServiceServer,
    audit_service_server::AuditServiceServer, cluster_service_server::ClusterServiceServer,
    cost_service_server::CostServiceServer, environment_service_server::EnvironmentServiceServer,
    profile_service_server::ProfileServiceServer, tenant_service_server::TenantServiceServer,
    token_service_server::TokenServiceServer,
};
use mtp_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tracing::Instrument;

use crate::api::Api;
use crate::api::agents::AgentChannel;
use crate::api::request::RequestLayer;
use crate::ca::{AgentCa, AgentCaSource};
use crate::config::Config;
use crate::metrics::Metrics;

/// Entry point for starting a control plane (binary and tests alike).
#[derive(Debug)]
pub struct ControlPlane;

/// A started control plane; dropping it does not stop it, call [`RunningControlPlane::shutdown`].
#[derive(Debug)]
pub struct RunningControlPlane {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Whether the gRPC port serves TLS (agent sessions need it).
    pub tls: bool,
    /// The agent CA's certificate (public).
    pub agent_ca_pem: String,
    pub store: Store,
    cancel: CancellationToken,
    /// Cancelled only by `kill`: every open connection fails at once.
    sever: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(config: Config) -> anyhow::Result<RunningControlPlane> {
        crate::tls::install_crypto_provider();
        let metrics = Metrics::new();
        let store = connect(&config, &metrics).await?;
        if let Some(path) = &config.bootstrap_token_file {
            bootstrap_token(&store, path).await?;
        }
        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("binding the gRPC port {}", config.grpc_listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding the admin port {}", config.admin_listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let cancel = CancellationToken::new();
        let sever = CancellationToken::new();

        let agent_ca = agent_ca(&config, &store).await?;
        let agents = AgentChannel::new(
            store.clone(),
            store.revision_notices().await,
            metrics.clone(),
            config.agent_keepalive,
            cancel.clone(),
        )
        .with_identity(agent_ca.clone(), config.tls.is_some())
        .with_usage_max_age(config.usage_max_age);
        let (health, health_service) = tonic_health::server::health_reporter();
        let routes = routes(&config, Api::new(store.clone()), agents)?;
        let router = with_limits(crate::tls::server_builder(
            config.tls.as_ref(),
            agent_ca.certificate_pem(),
        )?)
        .layer(RequestLayer::new(metrics.clone()))
        .add_routes(routes)
        .add_service(health_service);

        let tasks = vec![
            serve_grpc(router, grpc_listener, cancel.clone(), sever.clone()),
            serve_admin(
                admin_listener,
                crate::admin::router(store.clone(), metrics.clone()),
                cancel.clone(),
            ),
            spawn_health(
                health,
                store.clone(),
                config.health_interval,
                cancel.clone(),
            ),
            spawn_fleet_metrics(
                store.clone(),
                metrics.clone(),
                config.metrics_interval,
                cancel.clone(),
            ),
            tokio::spawn(
                maintain_usage(
                    store.clone(),
                    metrics.clone(),
                    UsageMaintenance {
                        interval: config.usage_rollup_interval,
                        raw_retention_days: config.usage_raw_retention_days,
                    },
                    cancel.clone(),
                )
                .instrument(tracing::info_span!("usage")),
            ),
            tokio::spawn(
                expire_environments(
                    store.clone(),
                    metrics,
                    config.expiry_interval,
                    cancel.clone(),
                )
                .instrument(tracing::info_span!("expiry")),
            ),
        ];
        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, tls = config.tls.is_some(), "control plane serving");
        Ok(RunningControlPlane {
            grpc_addr,
            admin_addr,
            tls: config.tls.is_some(),
            agent_ca_pem: agent_ca.certificate_pem().to_owned(),
            store,
            cancel,
            sever,
            tasks,
        })
    }
}

/// Connects to PostgreSQL with every operation measured, and migrates.
async fn connect(config: &Config, metrics: &Metrics) -> anyhow::Result<Store> {
    let observer = metrics.clone();
    let store = Store::connect(&StoreConfig {
        max_connections: config.db_max_connections,
        ..StoreConfig::new(&config.database_url)
    })
    .await
    .context("connecting to PostgreSQL")?
    .with_observer(Arc::new(move |op, elapsed, ok| {
        observer.observe_db(op, elapsed, ok)
    }));
    store
        .migrate()
        .await
        .context("running database migrations")?;
    tracing::info!("database schema is up to date");
    Ok(store)
}

/// Loads (or creates) the agent CA and checks it is the one every replica
/// uses: the first start records its certificate; a differing one is refused
/// rather than issuing certificates the other replicas would not accept.
async fn agent_ca(config: &Config, store: &Store) -> anyhow::Result<Arc<AgentCa>> {
    let ca = AgentCa::load(&config.agent_ca, config.agent_certificate_lifetime)?;
    let stored = store
        .record_agent_ca(ca.certificate_pem(), ca.fingerprint())
        .await
        .context("recording the agent CA")?;
    if stored != ca.fingerprint() && config.agent_ca != AgentCaSource::Ephemeral {
        anyhow::bail!(
            "the agent CA (--agent-ca-cert, SHA-256 {}) is not the one this database's control plane uses (SHA-256 {stored}): give every replica the same --agent-ca-cert and --agent-ca-key",
            ca.fingerprint()
        );
    }
    tracing::info!(fingerprint = %ca.fingerprint(), lifetime = %mtp_proto::duration::format(ca.lifetime()), "agent CA loaded");
    Ok(Arc::new(ca))
}

/// Mints the first platform-admin token into `path` unless one exists.
async fn bootstrap_token(store: &Store, path: &std::path::Path) -> anyhow::Result<()> {
    match store
        .bootstrap_admin_token()
        .await
        .context("minting the bootstrap admin token")?
    {
        Some((token, secret)) => {
            write_secret_file(path, &secret)
                .with_context(|| format!("writing the bootstrap token to {}", path.display()))?;
            tracing::info!(token = %token.id, path = %path.display(), "minted the bootstrap platform-admin token");
        }
        None => tracing::info!("a platform-admin token already exists; no bootstrap token minted"),
    }
    Ok(())
}

/// Every service of the gRPC port but health (which `start` keeps a handle
/// on): the API, the agent channel and server reflection in both versions
/// (v1, and v1alpha for clients such as grpcurl 1.8 that speak only that).
pub fn routes(config: &Config, api: Api, agents: AgentChannel) -> anyhow::Result<Routes> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let limit = config.max_request_bytes;
    let mut routes = Routes::builder();
    routes
        .add_service(
            reflection()
                .build_v1()
                .context("building the reflection service (v1)")?,
        )
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building the reflection service (v1alpha)")?,
        )
        .add_service(TenantServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(ProfileServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(ClusterServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(EnvironmentServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(TokenServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(AuditServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(CostServiceServer::new(api).max_decoding_message_size(limit))
        .add_service(
            AgentServiceServer::new(agents)
                .max_decoding_message_size(limit.max(AGENT_MESSAGE_BYTES))
                .max_encoding_message_size(AGENT_MESSAGE_BYTES),
        );
    Ok(routes.routes())
}

/// Names reported by the health service: "" (the server as a whole) and each
/// service of ours, as the generated servers name themselves.
const HEALTH_NAMES: [&str; 9] = [
    "",
    <AgentServiceServer<AgentChannel> as NamedService>::NAME,
    <TenantServiceServer<Api> as NamedService>::NAME,
    <ProfileServiceServer<Api> as NamedService>::NAME,
    <ClusterServiceServer<Api> as NamedService>::NAME,
    <EnvironmentServiceServer<Api> as NamedService>::NAME,
    <TokenServiceServer<Api> as NamedService>::NAME,
    <AuditServiceServer<Api> as NamedService>::NAME,
    <CostServiceServer<Api> as NamedService>::NAME,
];

/// Limits every connection to the gRPC port lives by: TCP and HTTP/2
/// keepalives (a dead peer's connection and the sessions on it go within a
/// minute even if nothing is sent), a bound on concurrent streams and on
/// in-flight requests per connection (one client cannot hold every handler),
/// and a bound on streams reset before they are handled (HTTP/2 rapid
/// reset).
fn with_limits(server: tonic::transport::Server) -> tonic::transport::Server {
    server
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_max_pending_accept_reset_streams(Some(100))
}

/// The largest message either side of the agent channel sends: an ack of
/// at most 500 results with 1 KiB reasons is about 560 KiB, and a page of
/// desired state aims at 512 KiB (one namespace of a tenant with the most
/// owners is about 70 KiB), so 4 MiB leaves room and is far below what
/// would hurt.
const AGENT_MESSAGE_BYTES: usize = 4 << 20;

/// How long shutdown waits for open calls and sessions to finish before it
/// closes their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Streams one connection may have open (an agent needs one; a CLI a few;
/// a busy service client sharing a connection a few hundred).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

fn serve_grpc(
    router: Router<tower::layer::util::Stack<RequestLayer, tower::layer::util::Identity>>,
    listener: TcpListener,
    shutdown: CancellationToken,
    sever: CancellationToken,
) -> JoinHandle<()> {
    let addr = listener.local_addr().ok();
    tokio::spawn(
        async move {
            // No Nagle: the agent channel sends small messages back to
            // back (an ack's confirmation, then the next change), and
            // Nagle holding the second behind the peer's delayed ACK
            // costs ~40 ms per environment.
            let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                accepted.map(|stream| {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    Severable::new(stream, &sever)
                })
            });
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }
        .instrument(tracing::info_span!("grpc", addr = ?addr)),
    )
}

fn serve_admin(
    listener: TcpListener,
    admin: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let addr = listener.local_addr().ok();
    tokio::spawn(
        async move {
            let served = axum::serve(listener, admin)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin server failed");
            }
        }
        .instrument(tracing::info_span!("admin", addr = ?addr)),
    )
}

/// The standard health service follows PostgreSQL reachability, like /readyz.
pub fn spawn_health(
    health: tonic_health::server::HealthReporter,
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut last = None;
            loop {
                let up = store.ping().await.is_ok();
                if last != Some(up) {
                    let status = if up {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    for service in HEALTH_NAMES {
                        health.set_service_status(service, status).await;
                    }
                    tracing::info!(serving = up, "health status changed");
                    last = Some(up);
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
        .instrument(tracing::info_span!("health")),
    )
}

/// Refreshes the fleet gauges (environments by status, revision lag) from
/// PostgreSQL every `interval`; a failed refresh keeps the last values.
fn spawn_fleet_metrics(
    store: Store,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            loop {
                match store.cluster_summaries().await {
                    Ok(summaries) => metrics.set_fleet(&summaries),
                    Err(e) => tracing::debug!(error = %e, "fleet metrics refresh failed"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
        .instrument(tracing::info_span!("fleet_metrics")),
    )
}

impl RunningControlPlane {
    /// The gRPC endpoint as a URL: `https://` when serving TLS, `http://`
    /// in plaintext `--dev` mode.
    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc_addr)
    }

    /// Stops serving: open streams close, in-flight calls finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        // Graceful first; a connection still open after the grace period
        // (a peer that stopped reading keeps its stream from finishing) is
        // cut, so shutdown never hangs on someone else's socket.
        let mut tasks = std::pin::pin!(futures::future::join_all(self.tasks));
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut tasks)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
            self.sever.cancel();
            tasks.await;
        }
        self.store.close().await;
    }

    /// Aborts without a graceful drain, as a crash would (for fault tests):
    /// open connections fail at once, nothing more is served.
    pub fn kill(self) {
        self.sever.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An accepted connection that fails as soon as `kill` severs it. Tonic runs
/// each connection in a task of its own, so aborting the server task alone
/// would leave open streams served by a "dead" control plane.
struct Severable {
    inner: tokio::net::TcpStream,
    severed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Severable {
    fn new(inner: tokio::net::TcpStream, sever: &CancellationToken) -> Self {
        Severable {
            inner,
            severed: Box::pin(sever.clone().cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        match self.severed.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => Err(std::io::ErrorKind::ConnectionReset.into()),
            std::task::Poll::Pending => Ok(()),
        }
    }
}

impl tokio::io::AsyncRead for Severable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Severable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Severable {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Deletes expired environments (audited as `system:expiry`).
async fn expire_environments(
    store: Store,
    metrics: Metrics,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(interval) => {} }
        match store.expire_environments().await {
            Ok(expired) => metrics.expired(expired.len()),
            Err(e) => tracing::warn!(error = %e, "expiry pass failed"),
        }
    }
}

/// Longest time between two budget evaluations when no usage arrives.
const BUDGET_INTERVAL: Duration = Duration::from_secs(60);

/// How the usage loop runs.
#[derive(Debug, Clone, Copy)]
struct UsageMaintenance {
    interval: Duration,
    /// Raw usage windows are kept this many days (rollups are kept); must
    /// stay above the age of the oldest window ingest accepts.
    raw_retention_days: u64,
}

/// Recomputes the rollups of hours new usage arrived in, creates the raw
/// partitions of the next days, drops raw partitions past retention, then
/// evaluates budgets (month-to-date cost per tenant for `/metrics`, each
/// threshold crossed recorded and audited once per tenant and month).
/// Safe on every replica at once (rollups are recomputed whole; hours are
/// taken with SKIP LOCKED; partition changes hold an advisory lock; the
/// `budget_alerts` key lets one replica fire each alert).
async fn maintain_usage(
    store: Store,
    metrics: Metrics,
    settings: UsageMaintenance,
    cancel: CancellationToken,
) {
    let mut last_partitions: Option<chrono::NaiveDate> = None;
    let mut last_budgets: Option<std::time::Instant> = None;
    let mut last_environments: Option<std::time::Instant> = None;
    // The first pass fills the per-environment series.
    let mut env_pending = true;
    loop {
        tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(settings.interval) => {} }
        let today = chrono::Utc::now().date_naive();
        if last_partitions != Some(today) {
            let days = (0..3).map(|d| today + chrono::Days::new(d)).collect();
            let keep_from = today - chrono::Days::new(settings.raw_retention_days);
            let result = async {
                store.ensure_usage_partitions(&days).await?;
                store.drop_usage_partitions_before(keep_from).await
            }
            .await;
            match result {
                Ok(dropped) => {
                    last_partitions = Some(today);
                    if !dropped.is_empty() {
                        tracing::info!(?dropped, "raw usage partitions past retention dropped");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "usage partition maintenance failed"),
            }
        }
        let rolled = match store.roll_up_usage(48).await {
            Ok(hours) => {
                metrics.usage_rolled_up(hours);
                hours
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage rollup pass failed");
                0
            }
        };
        // Costs change when usage is rolled up (or a price or budget is
        // set): evaluate after a pass that rolled something up, else at
        // least every BUDGET_INTERVAL (which also turns the month). The
        // per-environment series reads every environment's rollups: at
        // most every ten intervals, but never left stale.
        env_pending |= rolled > 0;
        let env_due =
            env_pending && last_environments.is_none_or(|t| t.elapsed() >= settings.interval * 10);
        if rolled > 0 || env_due || last_budgets.is_none_or(|t| t.elapsed() >= BUDGET_INTERVAL) {
            let now = chrono::Utc::now();
            match crate::api::cost::evaluate_budgets(&store, &metrics, now, env_due).await {
                Ok(fired) => {
                    metrics.budget_alerts_fired(fired);
                    last_budgets = Some(std::time::Instant::now());
                    if env_due {
                        env_pending = false;
                        last_environments = last_budgets;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "budget evaluation failed"),
            }
        }
    }
}

fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let running = ControlPlane::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
