//! Test fixtures shared by the end-to-end tests and the benchmark: a control
//! plane running in-process on its own fresh PostgreSQL database, over TLS
//! unless a test is about plaintext, and gRPC clients that authenticate like
//! real callers.

use mtp_control_plane::ca::AgentCaSource;
use mtp_control_plane::config::Config;
use mtp_control_plane::{ControlPlane, RunningControlPlane};
use mtp_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub mod agent;
pub mod fleet;
pub mod pki;
pub mod process;

pub use pki::pki;

/// An endpoint for `url`, trusting the test server CA when it is `https://`.
pub fn endpoint(url: &str) -> Endpoint {
    let endpoint = Endpoint::from_shared(url.to_owned()).expect("valid url");
    if url.starts_with("https://") {
        endpoint
            .tls_config(server_trust())
            .expect("TLS configuration")
    } else {
        endpoint
    }
}

/// Client TLS trusting the test server CA (add an identity for agents).
pub fn server_trust() -> ClientTlsConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki().server_ca_pem))
}

/// `config` as the harness runs it by default: TLS with a certificate of
/// the test server CA, and the process's agent CA (shared by all planes, as
/// replicas of one database must share it). A configuration that already
/// has TLS or an agent CA keeps them.
pub fn with_tls(mut config: Config) -> Config {
    if config.tls.is_none() {
        config.tls = Some(pki().server_tls());
    }
    if config.agent_ca == AgentCaSource::Ephemeral {
        config.agent_ca = AgentCaSource::Files(pki().agent_ca_files());
    }
    config
}

/// With `MTP_TEST_LOG` set (an `EnvFilter`, e.g. `info` or
/// `mtp_agent=debug`), the control plane's and agents' logs go to the test
/// output: the first thing to turn on when an end-to-end test fails.
pub fn show_logs_if_asked() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("MTP_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

pub use mtp_pg_harness;

/// A control plane on a database of its own, with a platform-admin secret.
pub struct TestPlane {
    pub running: RunningControlPlane,
    pub database_url: String,
    pub admin_secret: String,
}

impl TestPlane {
    /// Starts a control plane on a fresh database and mints its first admin token.
    pub async fn start() -> TestPlane {
        let db = mtp_pg_harness::fresh_database().await;
        Self::start_on(db.url().to_owned()).await
    }

    /// Starts a control plane on an existing database (e.g. a second replica).
    pub async fn start_on(database_url: String) -> TestPlane {
        Self::start_with(Config::for_dev(database_url)).await
    }

    /// Starts a control plane with a given configuration, over TLS (see
    /// [`with_tls`]); [`TestPlane::start_plaintext_with`] keeps plaintext.
    pub async fn start_with(config: Config) -> TestPlane {
        Self::start_exactly(with_tls(config)).await
    }

    /// A plaintext (`--dev`) control plane, for tests about plaintext: agent
    /// sessions are refused there.
    pub async fn start_plaintext_with(config: Config) -> TestPlane {
        Self::start_exactly(config).await
    }

    async fn start_exactly(config: Config) -> TestPlane {
        show_logs_if_asked();
        let database_url = config.database_url.clone();
        let running = ControlPlane::start(config)
            .await
            .expect("control plane starts");
        let admin_secret = match running
            .store
            .bootstrap_admin_token()
            .await
            .expect("bootstrap token")
        {
            Some((_, secret)) => secret,
            None => {
                let ctx = mtp_store::ChangeContext::system("tests");
                let new = mtp_core::tokens::NewToken {
                    role: mtp_core::access::Role::PlatformAdmin,
                    tenant: None,
                    description: "test admin".into(),
                    expire_time: None,
                };
                running
                    .store
                    .create_token(&ctx, &new)
                    .await
                    .expect("admin token")
                    .1
            }
        };
        TestPlane {
            running,
            database_url,
            admin_secret,
        }
    }

    pub fn url(&self) -> String {
        self.running.grpc_url()
    }

    pub async fn channel(&self) -> Channel {
        endpoint(&self.url())
            .connect()
            .await
            .expect("connects to the control plane")
    }

    /// Clients authenticated as the platform admin.
    pub async fn admin(&self) -> Clients {
        Clients::new(self.channel().await, Some(self.admin_secret.clone()))
    }

    /// Clients with the given secret (or none).
    pub async fn clients(&self, secret: Option<&str>) -> Clients {
        Clients::new(self.channel().await, secret.map(str::to_owned))
    }

    /// Admin clients on a control plane that already has `clusters` and one
    /// tenant per `(name, quota)`, which is how most tests begin.
    pub async fn admin_with(
        &self,
        tenants: &[(&str, pb::TenantQuota)],
        clusters: &[&str],
    ) -> Clients {
        let mut admin = self.admin().await;
        for c in clusters {
            admin.create_cluster(c).await.expect("cluster created");
        }
        for (name, quota) in tenants {
            admin
                .create_tenant(name, quota.clone())
                .await
                .expect("tenant created");
        }
        admin
    }

    /// A direct SQL connection pool, for checking what was (not) written.
    pub async fn sql(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.database_url)
            .await
            .expect("sql connects")
    }
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// One client per service, sharing a channel and a credential.
#[derive(Clone)]
pub struct Clients {
    pub tenants: pb::tenant_service_client::TenantServiceClient<Authed>,
    pub environments: pb::environment_service_client::EnvironmentServiceClient<Authed>,
    pub profiles: pb::profile_service_client::ProfileServiceClient<Authed>,
    pub clusters: pb::cluster_service_client::ClusterServiceClient<Authed>,
    pub tokens: pb::token_service_client::TokenServiceClient<Authed>,
    pub audit: pb::audit_service_client::AuditServiceClient<Authed>,
    pub cost: pb::cost_service_client::CostServiceClient<Authed>,
}

impl Clients {
    pub fn new(channel: Channel, secret: Option<String>) -> Self {
        let bearer = Bearer(secret.map(|s| format!("Bearer {s}").parse().expect("ascii secret")));
        let i = || InterceptedService::new(channel.clone(), bearer.clone());
        Clients {
            tenants: pb::tenant_service_client::TenantServiceClient::new(i()),
            environments: pb::environment_service_client::EnvironmentServiceClient::new(i()),
            profiles: pb::profile_service_client::ProfileServiceClient::new(i()),
            clusters: pb::cluster_service_client::ClusterServiceClient::new(i()),
            tokens: pb::token_service_client::TokenServiceClient::new(i()),
            audit: pb::audit_service_client::AuditServiceClient::new(i()),
            cost: pb::cost_service_client::CostServiceClient::new(i()),
        }
    }

    /// A tenant with the given quota and everything else defaulted.
    pub async fn create_tenant(
        &mut self,
        name: &str,
        quota: pb::TenantQuota,
    ) -> Result<pb::Tenant, Status> {
        self.tenants
            .create_tenant(pb::CreateTenantRequest {
                name: name.into(),
                display_name: format!("Team {name}"),
                owners: Some(pb::Owners {
                    users: vec![format!("{name}-lead@example.com")],
                    groups: vec![],
                    service_accounts: vec![],
                }),
                quota: Some(quota),
                allowed_profiles: vec![],
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_cluster(&mut self, name: &str) -> Result<pb::Cluster, Status> {
        self.clusters
            .create_cluster(pb::CreateClusterRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_env(
        &mut self,
        tenant: &str,
        name: &str,
        cluster: &str,
        profile: &str,
    ) -> Result<pb::Environment, Status> {
        self.environments
            .create_environment(pb::CreateEnvironmentRequest {
                tenant: tenant.into(),
                name: name.into(),
                cluster: cluster.into(),
                profile: profile.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a small environment that expires at `at`.
    pub async fn create_expiring_env(
        &mut self,
        tenant: &str,
        name: &str,
        cluster: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<pb::Environment, Status> {
        self.environments
            .create_environment(pb::CreateEnvironmentRequest {
                tenant: tenant.into(),
                name: name.into(),
                cluster: cluster.into(),
                profile: "small".into(),
                quota_override: None,
                expire_time: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    // Keep the sub-second part: truncating it could put a
                    // near expiry in the past.
                    nanos: i32::try_from(at.timestamp_subsec_nanos()).expect("nanos fit"),
                }),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Mints a join token for a cluster and returns its secret.
    pub async fn join_token(&mut self, cluster: &str) -> String {
        self.clusters
            .create_join_token(pb::CreateJoinTokenRequest {
                max_uses: 0,
                cluster: cluster.into(),
                ttl_seconds: 0,
            })
            .await
            .expect("join token minted")
            .into_inner()
            .secret
    }

    /// Every registered agent, of every cluster.
    pub async fn agents(&mut self) -> Vec<pb::Agent> {
        self.clusters
            .list_agents(pb::ListAgentsRequest::default())
            .await
            .expect("agents listable")
            .into_inner()
            .agents
    }

    pub async fn env(&mut self, tenant: &str, name: &str) -> pb::Environment {
        self.environments
            .get_environment(pb::GetEnvironmentRequest {
                tenant: tenant.into(),
                name: name.into(),
            })
            .await
            .expect("environment readable")
            .into_inner()
    }

    /// Deletes an environment; the caller decides what the answer must be.
    pub async fn delete_env(
        &mut self,
        tenant: &str,
        name: &str,
    ) -> Result<pb::Environment, Status> {
        self.environments
            .delete_environment(pb::DeleteEnvironmentRequest {
                tenant: tenant.into(),
                name: name.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The audit log as this caller may see it, oldest first (up to 1,000
    /// events, more than any test writes).
    pub async fn audit_events(&mut self) -> Vec<pb::AuditEvent> {
        self.audit
            .list_audit_events(pb::ListAuditEventsRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("audit log listable")
            .into_inner()
            .events
    }

    /// Polls an environment until it has `status`; panics after `limit` with
    /// the last state seen, which is what a failing test needs to show.
    pub async fn wait_status(
        &mut self,
        tenant: &str,
        name: &str,
        status: pb::EnvironmentStatus,
        limit: std::time::Duration,
    ) -> pb::Environment {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let env = self.env(tenant, name).await;
            if env.status == status as i32 {
                return env;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{tenant}/{name} never reached {status:?} within {limit:?}: {env:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The "50 changes while an agent is away" workload of the catch-up
    /// tests: 45 new small environments `{created}-0..45` and the deletion
    /// of `{deleted}-0..5`, all in `tenant` on `cluster`.
    pub async fn fifty_changes(
        &mut self,
        tenant: &str,
        cluster: &str,
        created: &str,
        deleted: &str,
    ) {
        for i in 0..45 {
            self.create_env(tenant, &format!("{created}-{i}"), cluster, "small")
                .await
                .expect("environment created");
        }
        for i in 0..5 {
            self.delete_env(tenant, &format!("{deleted}-{i}"))
                .await
                .expect("environment deleted");
        }
    }

    /// Mints a token and returns its secret.
    pub async fn mint(&mut self, role: pb::TokenRole, tenant: &str) -> String {
        self.tokens
            .create_token(pb::CreateTokenRequest {
                role: role as i32,
                tenant: tenant.into(),
                ..Default::default()
            })
            .await
            .expect("token minted")
            .into_inner()
            .secret
    }
}

/// A tenant quota written the way a user would.
pub fn quota(
    cpu: &str,
    memory: &str,
    storage: &str,
    pods: i64,
    max_environments: i64,
) -> pb::TenantQuota {
    pb::TenantQuota {
        cpu: cpu.into(),
        memory: memory.into(),
        storage: storage.into(),
        pods,
        max_environments,
    }
}

/// Counts rows of a table (for "nothing was written" checks).
pub async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("count query")
}
