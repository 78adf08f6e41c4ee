//! Test PKI: one server CA per test process signing each plane's TLS
//! certificate (for 127.0.0.1 and localhost), and one agent CA per process
//! shared by every plane (replicas of one database must share it), written
//! to files as an operator would; plus agent keys and CSRs made the way the
//! real agent makes them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mtp_control_plane::ca::AgentCaFiles;
use mtp_control_plane::config::TlsMaterial;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The process-wide test PKI (created on first use, removed never: the
/// directory lives in the system temp dir for the process's lifetime).
pub struct TestPki {
    dir: PathBuf,
    server_ca: Issuer<'static, KeyPair>,
    pub server_ca_pem: String,
}

static PKI: OnceLock<TestPki> = OnceLock::new();

/// The test PKI of this process.
pub fn pki() -> &'static TestPki {
    PKI.get_or_init(|| {
        // Kept until the process exits: planes read the agent CA files at
        // start, and the CLI and agents read the CA file at every call.
        let dir = tempfile::Builder::new()
            .prefix("mtp-test-pki-")
            .tempdir()
            .expect("pki dir")
            .keep();
        let (server_ca, server_ca_pem) = new_ca("mtp test server CA");
        std::fs::write(dir.join("server-ca.crt"), &server_ca_pem).expect("writes CA");
        // Created here, once, rather than by whichever plane starts first:
        // planes of parallel tests would race to create the files.
        let (agent_cert, agent_key) =
            mtp_control_plane::ca::generate_ca("mtp test agent CA").expect("agent CA");
        std::fs::create_dir_all(dir.join("agent-ca")).expect("agent CA dir");
        std::fs::write(dir.join("agent-ca/agent-ca.crt"), agent_cert).expect("writes agent CA");
        std::fs::write(dir.join("agent-ca/agent-ca.key"), agent_key).expect("writes agent CA key");
        TestPki {
            dir,
            server_ca,
            server_ca_pem,
        }
    })
}

/// A self-signed CA usable as an rcgen issuer, and its PEM certificate.
pub fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA signs itself");
    let pem = cert.pem();
    (Issuer::new(params, key), pem)
}

impl TestPki {
    /// A fresh server certificate for 127.0.0.1 and localhost.
    pub fn server_tls(&self) -> TlsMaterial {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server names");
        let cert = params.signed_by(&key, &self.server_ca).expect("signs");
        TlsMaterial {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// The file clients (CLI `--ca-cert`, agent `--ca-cert`) trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("server-ca.crt")
    }

    /// The agent CA every plane of this process uses (created by the first
    /// plane, as the control plane does at first start).
    pub fn agent_ca_files(&self) -> AgentCaFiles {
        AgentCaFiles {
            cert: self.dir.join("agent-ca/agent-ca.crt"),
            key: self.dir.join("agent-ca/agent-ca.key"),
        }
    }

    /// A directory of its own for files a test wants next to the PKI.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A new agent key (ECDSA P-256, as the agent makes) and a CSR over it:
/// (key PEM, CSR PEM).
pub fn agent_key_and_csr() -> (String, String) {
    let key = KeyPair::generate().expect("agent key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("csr pem");
    (key.serialize_pem(), csr)
}
