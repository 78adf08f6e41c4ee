//! TLS of the gRPC port: the crypto provider and the server identity. Kept
//! out of the wiring so that client-certificate verification (mTLS with the
//! platform CA, for agent identities) is added here alone.

use anyhow::Context;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::TlsMaterial;

/// Installs the process-wide rustls provider (ring). Idempotent: several
/// control planes in one test process all call it.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A gRPC server builder serving `tls`, or plaintext when it is `None`
/// (`--dev` only; the configuration refuses it otherwise).
pub fn server_builder(tls: Option<&TlsMaterial>) -> anyhow::Result<Server> {
    let builder = Server::builder();
    match tls {
        Some(tls) => builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
            )
            .context("configuring TLS"),
        None => {
            tracing::warn!("serving plaintext gRPC (--dev): do not use this in production");
            Ok(builder)
        }
    }
}
