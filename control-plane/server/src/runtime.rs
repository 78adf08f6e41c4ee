//! Wiring: connects the store, runs migrations, mints the bootstrap token if
//! asked, and serves the gRPC API and the admin port until cancelled.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mtp_proto::v1::{
    FILE_DESCRIPTOR_SET, agent_service_server::AgentServiceServer,
    audit_service_server::AuditServiceServer, cluster_service_server::ClusterServiceServer,
    environment_service_server::EnvironmentServiceServer,
    profile_service_server::ProfileServiceServer, tenant_service_server::TenantServiceServer,
    token_service_server::TokenServiceServer,
};
use mtp_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::Instrument;

use crate::api::Api;
use crate::api::agents::{AgentChannel, RevisionNotice};
use crate::api::request::RequestLayer;
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
    pub store: Store,
    cancel: CancellationToken,
    /// Cancelled only by `kill`: every open connection fails at once.
    sever: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(config: Config) -> anyhow::Result<RunningControlPlane> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Metrics::new();
        let observer_metrics = metrics.clone();
        let store = Store::connect(&StoreConfig {
            max_connections: config.db_max_connections,
            ..StoreConfig::new(&config.database_url)
        })
        .await
        .context("connecting to PostgreSQL")?
        .with_observer(Arc::new(move |op, elapsed, ok| {
            observer_metrics.observe_db(op, elapsed, ok)
        }));
        store
            .migrate()
            .await
            .context("running database migrations")?;
        tracing::info!("database schema is up to date");

        if let Some(path) = &config.bootstrap_token_file {
            match store
                .bootstrap_admin_token()
                .await
                .context("minting the bootstrap admin token")?
            {
                Some((token, secret)) => {
                    write_secret_file(path, &secret).with_context(|| {
                        format!("writing the bootstrap token to {}", path.display())
                    })?;
                    tracing::info!(token = %token.id, path = %path.display(), "minted the bootstrap platform-admin token");
                }
                None => tracing::info!(
                    "a platform-admin token already exists; no bootstrap token minted"
                ),
            }
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

        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let api = Api::new(store.clone());
        let (notices, _) = tokio::sync::broadcast::channel(1024);
        let agents = AgentChannel::new(
            store.clone(),
            notices.clone(),
            config.agent_keepalive,
            cancel.clone(),
        );
        let limit = config.max_request_bytes;
        let mut builder = Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
                )
                .context("configuring TLS")?;
        } else {
            tracing::warn!("serving plaintext gRPC (--dev): do not use this in production");
        }
        let router = builder
            .layer(RequestLayer::new(metrics.clone()))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(TenantServiceServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(ProfileServiceServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(ClusterServiceServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(
                EnvironmentServiceServer::new(api.clone()).max_decoding_message_size(limit),
            )
            .add_service(TokenServiceServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(AuditServiceServer::new(api).max_decoding_message_size(limit))
            .add_service(AgentServiceServer::new(agents).max_decoding_message_size(limit));

        let mut tasks = Vec::new();
        let shutdown = cancel.clone();
        let sever_connections = sever.clone();
        tasks.push(tokio::spawn(
            async move {
                // No Nagle: the agent channel sends small messages back to
                // back (an ack's confirmation, then the next change), and
                // Nagle holding the second behind the peer's delayed ACK
                // costs ~40 ms per environment.
                let incoming = TcpListenerStream::new(grpc_listener).map(move |accepted| {
                    accepted.map(|stream| {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "could not set TCP_NODELAY");
                        }
                        Severable::new(stream, &sever_connections)
                    })
                });
                if let Err(e) = router
                    .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }
            .instrument(tracing::info_span!("grpc", addr = %grpc_addr)),
        ));
        let shutdown = cancel.clone();
        let admin = crate::admin::router(store.clone(), metrics.clone());
        tasks.push(tokio::spawn(
            async move {
                let served = axum::serve(admin_listener, admin)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin server failed");
                }
            }
            .instrument(tracing::info_span!("admin", addr = %admin_addr)),
        ));
        // The standard health service follows PostgreSQL reachability, like /readyz.
        let (health_store, shutdown, interval) =
            (store.clone(), cancel.clone(), config.health_interval);
        tasks.push(tokio::spawn(
            async move {
                let mut last = None;
                loop {
                    let up = health_store.ping().await.is_ok();
                    if last != Some(up) {
                        let status = if up {
                            tonic_health::ServingStatus::Serving
                        } else {
                            tonic_health::ServingStatus::NotServing
                        };
                        for service in SERVICES {
                            health.set_service_status(*service, status).await;
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
        ));

        tasks.push(tokio::spawn(
            forward_notifications(store.clone(), notices, cancel.clone())
                .instrument(tracing::info_span!("notifications")),
        ));
        tasks.push(tokio::spawn(
            expire_environments(store.clone(), config.expiry_interval, cancel.clone())
                .instrument(tracing::info_span!("expiry")),
        ));

        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, tls = config.tls.is_some(), "control plane serving");
        Ok(RunningControlPlane {
            grpc_addr,
            admin_addr,
            store,
            cancel,
            sever,
            tasks,
        })
    }
}

/// Names reported by the health service ("" is the server as a whole).
const SERVICES: &[&str] = &[
    "",
    "mtp.v1.AgentService",
    "mtp.v1.TenantService",
    "mtp.v1.ProfileService",
    "mtp.v1.ClusterService",
    "mtp.v1.EnvironmentService",
    "mtp.v1.TokenService",
    "mtp.v1.AuditService",
];

impl RunningControlPlane {
    /// The gRPC endpoint as a URL (`http://` — tests and `--dev` run plaintext).
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Stops serving: open streams close, in-flight calls finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.pool().close().await;
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

/// Relays PostgreSQL notifications of revision changes to this replica's
/// agent sessions, whichever replica committed the change. Reconnects with
/// backoff; sessions also poll on every keepalive, so a gap only delays.
async fn forward_notifications(
    store: Store,
    notices: tokio::sync::broadcast::Sender<RevisionNotice>,
    cancel: CancellationToken,
) {
    let mut backoff = std::time::Duration::from_millis(200);
    while !cancel.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(store.pool()).await?;
            listener.listen(mtp_store::REVISION_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for revision notifications");
                tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(200);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        if let Some(notice) = RevisionNotice::parse(n.payload()) {
                            let _ = notices.send(notice);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("notification connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// Deletes expired environments (audited as `system:expiry`).
async fn expire_environments(
    store: Store,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(interval) => {} }
        if let Err(e) = store.expire_environments().await {
            tracing::warn!(error = %e, "expiry pass failed");
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
