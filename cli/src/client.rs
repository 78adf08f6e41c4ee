//! The connection to the control plane: the gRPC channel (plain or TLS), the
//! interceptor that adds the bearer token and a fresh `x-request-id` to every
//! call, and the mapping of a failed call to a `CliError`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mtp_proto::v1::{
    audit_service_client::AuditServiceClient, cluster_service_client::ClusterServiceClient,
    cost_service_client::CostServiceClient, environment_service_client::EnvironmentServiceClient,
    profile_service_client::ProfileServiceClient, tenant_service_client::TenantServiceClient,
    token_service_client::TokenServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::config::Settings;
use crate::errors::{CallError, CliError};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How long to wait for a TCP/TLS connection before reporting UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one call; all RPCs are short unary calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Adds `authorization` and `x-request-id` metadata, remembering the id so an
/// error can show it even when the server never answered.
#[derive(Clone)]
pub struct AuthInterceptor {
    token: Option<MetadataValue<Ascii>>,
    last_request_id: Arc<Mutex<Option<String>>>,
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(v) = MetadataValue::try_from(id.as_str()) {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Ok(mut last) = self.last_request_id.lock() {
            *last = Some(id);
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, AuthInterceptor>;

/// A handle on the control plane. Clients are cheap to create per command.
pub struct ControlPlane {
    channel: Channel,
    interceptor: AuthInterceptor,
    addr: String,
}

impl ControlPlane {
    /// Builds a lazily-connecting channel: nothing touches the network until
    /// the first call, so connection failures surface as UNAVAILABLE on that
    /// call and get the usual error rendering and exit code.
    pub fn new(settings: &Settings) -> Result<Self, CliError> {
        let addr = settings.addr.trim().to_string();
        let token = settings
            .token
            .load()?
            .map(|t| {
                // The secret must never be echoed, so the error does not include it.
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    CliError::usage("the token contains characters not allowed in an HTTP header")
                })
            })
            .transpose()?;

        let is_https = addr.starts_with("https://");
        if !is_https && !addr.starts_with("http://") {
            return Err(CliError::usage(format!(
                "--addr {addr:?}: expected an http:// or https:// URL, e.g. {}",
                crate::config::DEFAULT_ADDR
            )));
        }
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| CliError::usage(format!("--addr {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mtp-cli/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| CliError::Other(e.into()))?;
        if is_https {
            let tls = match &settings.ca_cert {
                // A private CA: trust only it, not the system roots.
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("reading CA certificate {}", path.display()))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| CliError::Other(anyhow::anyhow!("TLS setup for {addr}: {e}")))?;
        } else if settings.ca_cert.is_some() {
            eprintln!("warning: --ca-cert is ignored for the plain http:// address {addr}");
        }
        Ok(ControlPlane {
            channel: endpoint.connect_lazy(),
            interceptor: AuthInterceptor {
                token,
                last_request_id: Arc::new(Mutex::new(None)),
            },
            addr,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn svc(&self) -> (Channel, AuthInterceptor) {
        (self.channel.clone(), self.interceptor.clone())
    }

    pub fn tenants(&self) -> TenantServiceClient<Svc> {
        let (c, i) = self.svc();
        TenantServiceClient::with_interceptor(c, i)
    }

    pub fn profiles(&self) -> ProfileServiceClient<Svc> {
        let (c, i) = self.svc();
        ProfileServiceClient::with_interceptor(c, i)
    }

    pub fn clusters(&self) -> ClusterServiceClient<Svc> {
        let (c, i) = self.svc();
        ClusterServiceClient::with_interceptor(c, i)
    }

    pub fn environments(&self) -> EnvironmentServiceClient<Svc> {
        let (c, i) = self.svc();
        EnvironmentServiceClient::with_interceptor(c, i)
    }

    pub fn tokens(&self) -> TokenServiceClient<Svc> {
        let (c, i) = self.svc();
        TokenServiceClient::with_interceptor(c, i)
    }

    pub fn audit(&self) -> AuditServiceClient<Svc> {
        let (c, i) = self.svc();
        AuditServiceClient::with_interceptor(c, i)
    }

    pub fn cost(&self) -> CostServiceClient<Svc> {
        let (c, i) = self.svc();
        CostServiceClient::with_interceptor(c, i)
    }

    /// Awaits one RPC and turns a failure into a `CallError` naming `action`
    /// (e.g. `get tenant "team-a"`) and the request id.
    pub async fn call<T>(
        &self,
        action: impl Into<String>,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CliError> {
        match fut.await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(status) => Err(self.api_error(action.into(), &status)),
        }
    }

    fn api_error(&self, action: String, status: &Status) -> CliError {
        // Prefer the id the server echoed (it is what its logs and audit use).
        let echoed = status
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let sent = self
            .interceptor
            .last_request_id
            .lock()
            .ok()
            .and_then(|g| g.clone());
        CliError::Call(CallError {
            action,
            code: status.code(),
            message: status.message().to_string(),
            request_id: echoed.or(sent),
            addr: self.addr.clone(),
            hint: None,
        })
    }
}
