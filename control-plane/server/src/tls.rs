//! TLS of the gRPC port: the crypto provider, the server identity, and
//! client-certificate verification against the agent CA. Client certificates
//! are optional at the TLS layer, so the public API (bearer API tokens) and
//! `Register` work without one; `AgentService.Session` then insists on one
//! (`api::agents`), and a certificate that is presented must verify.

use anyhow::Context;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::TlsMaterial;

/// Installs the process-wide rustls provider (ring). Idempotent: several
/// control planes in one test process all call it.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A gRPC server builder serving `tls`, with agent client certificates
/// verified against `agent_ca_pem`, or plaintext when `tls` is `None`
/// (`--dev` only; the configuration refuses it otherwise; agent sessions are
/// then refused, having no certificate to identify them).
pub fn server_builder(tls: Option<&TlsMaterial>, agent_ca_pem: &str) -> anyhow::Result<Server> {
    let builder = Server::builder();
    match tls {
        Some(tls) => builder
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                    .client_ca_root(Certificate::from_pem(agent_ca_pem))
                    .client_auth_optional(true),
            )
            .context("configuring TLS"),
        None => {
            tracing::warn!(
                "serving plaintext gRPC (--dev): do not use this in production; agent sessions need TLS and are refused"
            );
            Ok(builder)
        }
    }
}
