//! Self-signed CA and server certificate generation, and the rustls server config.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::Error;

/// A generated CA and a server certificate for `localhost`/`127.0.0.1` signed by it.
pub struct TlsMaterial {
    /// CA certificate (PEM), written into kubeconfigs.
    pub ca_pem: String,
    /// Server certificate (PEM).
    pub cert_pem: String,
    /// Server private key (PEM).
    pub key_pem: String,
}

/// Installs the ring crypto provider once (ignoring "already installed").
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsMaterial {
    /// Generates fresh material.
    pub fn generate() -> Result<Self, Error> {
        let tls = |e: rcgen::Error| Error::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "kube-sim-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(tls)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(tls)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-sim");
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server config serving the certificate (HTTP/2 and HTTP/1.1 via ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        install_provider();
        let certs = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| Error::Tls(e.to_string()))?
            .ok_or_else(|| Error::Tls("no private key".into()))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
