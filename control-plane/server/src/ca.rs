//! The agent CA: loads (or creates at first start) the key and certificate
//! that sign agent client certificates, signs CSRs into short-lived
//! certificates naming an agent and its cluster, and reads what a verified
//! peer certificate claims.
//!
//! Certificate layout (what `presented` reads back): subject CN = agent id,
//! O = cluster id (UUID), OU = cluster name; one SAN URI
//! `spiffe://mtp/cluster/<cluster id>/node/<node>/agent/<agent id>` for tools
//! that read SPIFFE ids; EKU clientAuth only (it can never serve TLS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::agents::{AgentIdentity, IssuedCertificate, PresentedCertificate};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Largest CSR accepted (a P-256 or Ed25519 CSR is well under 1 KiB).
const MAX_CSR_BYTES: usize = 16 * 1024;
/// How far back a certificate's validity starts, so a node whose clock is a
/// little behind the control plane's can use it at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The CA itself: long-lived, it is rotated by hand (see docs/architecture.md).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the agent CA's PEM certificate and PKCS#8 key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the agent CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCaSource {
    /// Loaded from files; created there if neither exists yet.
    Files(AgentCaFiles),
    /// A CA generated in memory for this process only (`Config::for_dev`, tests
    /// with one replica): certificates it signs die with it.
    Ephemeral,
}

/// The CA that signs agent certificates.
pub struct AgentCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    fingerprint: String,
    lifetime: Duration,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AgentCa")
            .field("fingerprint", &self.fingerprint)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl AgentCa {
    /// Loads the CA from `source`, creating its files at first start.
    pub fn load(source: &AgentCaSource, lifetime: Duration) -> anyhow::Result<Self> {
        match source {
            AgentCaSource::Ephemeral => {
                let (cert, key) = generate_ca("mtp agent CA (ephemeral)")?;
                Self::from_pem(&cert, &key, lifetime)
            }
            AgentCaSource::Files(files) => Self::load_files(files, lifetime),
        }
    }

    fn load_files(files: &AgentCaFiles, lifetime: Duration) -> anyhow::Result<Self> {
        match (files.cert.exists(), files.key.exists()) {
            (true, true) => {}
            (false, false) => {
                let (cert, key) = generate_ca("mtp agent CA")?;
                write_new(&files.key, key.as_bytes(), true).with_context(|| {
                    format!("writing the new agent CA key {}", files.key.display())
                })?;
                write_new(&files.cert, cert.as_bytes(), false).with_context(|| {
                    format!(
                        "writing the new agent CA certificate {}",
                        files.cert.display()
                    )
                })?;
                tracing::info!(cert = %files.cert.display(), key = %files.key.display(), "created the agent CA (first start)");
            }
            (cert, _) => bail!(
                "only one of --agent-ca-cert {} and --agent-ca-key {} exists ({} is missing): restore it, or remove both to create a new agent CA (every agent then registers again)",
                files.cert.display(),
                files.key.display(),
                if cert { "the key" } else { "the certificate" },
            ),
        }
        let cert = std::fs::read_to_string(&files.cert)
            .with_context(|| format!("reading --agent-ca-cert {}", files.cert.display()))?;
        let key = std::fs::read_to_string(&files.key)
            .with_context(|| format!("reading --agent-ca-key {}", files.key.display()))?;
        Self::from_pem(&cert, &key, lifetime)
            .with_context(|| format!("loading the agent CA from {}", files.cert.display()))
    }

    /// A CA from its PEM certificate and PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str, lifetime: Duration) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("the agent CA key is not a PKCS#8 PEM key")?;
        let der = pem_der(cert_pem).context("the agent CA certificate is not PEM")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("parsing the agent CA certificate: {e}"))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            bail!("the agent CA key does not belong to the agent CA certificate");
        }
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
            .context("reading the agent CA certificate")?;
        Ok(AgentCa {
            issuer,
            certificate_pem: cert_pem.to_owned(),
            fingerprint: hex::encode(Sha256::digest(&der)),
            lifetime,
        })
    }

    /// The CA certificate (public), as agents must trust it.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Hex SHA-256 of the CA certificate's DER.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs `csr` (already parsed by [`parse_csr`]) into a certificate for
    /// `identity`, valid for the configured lifetime. The CSR's subject and
    /// extensions are ignored: only its key is certified.
    pub fn sign(
        &self,
        mut csr: CertificateSigningRequestParams,
        identity: &AgentIdentity,
    ) -> Result<(IssuedCertificate, String), DomainError> {
        let now = time::OffsetDateTime::now_utc();
        let lifetime = time::Duration::try_from(self.lifetime)
            .map_err(|_| DomainError::FailedPrecondition("certificate lifetime too long".into()))?;
        let mut params = CertificateParams::default();
        params.not_before = now - time::Duration::try_from(BACKDATE).unwrap_or_default();
        params.not_after = now + lifetime;
        let mut serial = [0u8; 16];
        rand::rng().fill(&mut serial);
        // A positive DER integer of exactly 16 bytes: its hex is the same
        // whether read from the bytes signed or from the parsed certificate.
        serial[0] = (serial[0] & 0x7f).max(1);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.agent_id.as_str());
        dn.push(DnType::OrganizationName, identity.cluster_id.to_string());
        dn.push(DnType::OrganizationalUnitName, identity.cluster.as_str());
        params.distinguished_name = dn;
        let uri = format!(
            "spiffe://mtp/cluster/{}/node/{}/agent/{}",
            identity.cluster_id, identity.node_name, identity.agent_id
        );
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| {
                DomainError::invalid("node_name", "not usable in a certificate")
            })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(|e| {
            DomainError::invalid("csr_pem", format!("cannot certify this key: {e}"))
        })?;
        let expire_time = DateTime::<Utc>::from_timestamp((now + lifetime).unix_timestamp(), 0)
            .unwrap_or_else(Utc::now);
        Ok((
            IssuedCertificate {
                serial: hex::encode(serial),
                expire_time,
            },
            cert.pem(),
        ))
    }
}

/// Parses and verifies (its self-signature) an agent's PEM PKCS#10 CSR.
pub fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, DomainError> {
    if csr_pem.trim().is_empty() {
        return Err(DomainError::invalid(
            "csr_pem",
            "required: a PEM certificate signing request over the agent's own key",
        ));
    }
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(DomainError::invalid(
            "csr_pem",
            format!("at most {MAX_CSR_BYTES} bytes"),
        ));
    }
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        DomainError::invalid(
            "csr_pem",
            format!("not a valid PEM PKCS#10 certificate signing request: {e}"),
        )
    })
}

/// What a peer certificate (already verified against the agent CA by TLS)
/// claims: CN = agent id, O = cluster id, and its serial. `None` if it does
/// not have that shape.
pub fn presented(der: &[u8]) -> Option<PresentedCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let agent_id = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let cluster = subject.iter_organization().next()?.as_str().ok()?;
    let cluster_id = Uuid::parse_str(cluster).ok()?;
    Some(PresentedCertificate {
        agent_id,
        cluster_id,
        serial: hex::encode(cert.raw_serial()),
    })
}

/// A new self-signed CA: (certificate PEM, PKCS#8 key PEM). ECDSA P-256.
pub fn generate_ca(common_name: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the agent CA key")?;
    let mut params = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::try_from(BACKDATE).unwrap_or_default();
    params.not_after = now + time::Duration::try_from(CA_LIFETIME).unwrap_or_default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "k8s-mtp");
    params.distinguished_name = dn;
    // Path length 0: it signs agent certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .context("signing the agent CA certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn pem_der(pem_text: &str) -> anyhow::Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if pem.label != "CERTIFICATE" {
        bail!("expected a CERTIFICATE, found {}", pem.label);
    }
    Ok(pem.contents)
}

/// Writes a file that must not exist yet (never clobbers a CA), creating
/// its parent directories; `secret` files get mode 0600.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgentIdentity {
        AgentIdentity {
            agent_id: "mtpagent_0123456789abcdef".into(),
            cluster_id: Uuid::new_v4(),
            cluster: "k3s-1".into(),
            node_name: "node-1".into(),
            certificate_serial: String::new(),
        }
    }

    #[test]
    fn a_signed_certificate_names_the_agent_and_its_cluster() {
        let (cert, key) = generate_ca("test").unwrap();
        let ca = AgentCa::from_pem(&cert, &key, Duration::from_secs(3600)).unwrap();
        let agent_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&agent_key)
            .unwrap()
            .pem()
            .unwrap();
        let who = identity();
        let (issued, pem) = ca.sign(parse_csr(&csr).unwrap(), &who).unwrap();
        let der = pem_der(&pem).unwrap();
        let claimed = presented(&der).unwrap();
        assert_eq!(claimed.agent_id, who.agent_id);
        assert_eq!(claimed.cluster_id, who.cluster_id);
        assert_eq!(claimed.serial, issued.serial);
        let left = issued.expire_time - Utc::now();
        assert!(left <= chrono::Duration::seconds(3600) && left > chrono::Duration::seconds(3500));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            parsed.public_key().raw,
            agent_key.subject_public_key_info().as_slice()
        );
    }

    #[test]
    fn garbage_csrs_are_invalid_arguments_naming_the_field() {
        for bad in ["", "hello", &"x".repeat(MAX_CSR_BYTES + 1)] {
            match parse_csr(bad) {
                Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "csr_pem"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let (cert, _) = generate_ca("a").unwrap();
        let (_, other_key) = generate_ca("b").unwrap();
        let err = AgentCa::from_pem(&cert, &other_key, Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn files_are_created_once_with_a_private_key_and_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let files = AgentCaFiles {
            cert: dir.path().join("ca/agent-ca.crt"),
            key: dir.path().join("ca/agent-ca.key"),
        };
        let source = AgentCaSource::Files(files.clone());
        let first = AgentCa::load(&source, Duration::from_secs(60)).unwrap();
        let again = AgentCa::load(&source, Duration::from_secs(60)).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(&files.key).unwrap();
        let err = AgentCa::load(&source, Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
    }
}
