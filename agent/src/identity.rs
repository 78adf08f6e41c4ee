//! The agent's identity, kept in its state directory: the private key (made
//! on this node with rcgen, ECDSA P-256, never sent anywhere), the client
//! certificate the control plane's agent CA signed for it, that CA's
//! certificate, and who the certificate names. One file, written atomically
//! (temporary file + rename, mode 0600), so a renewal replaces key and
//! certificate together and a crash leaves the old pair or the new one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tonic::transport::Identity;

use crate::desired::StateDir;

/// The identity file in the state directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// What agents before client certificates kept: a bearer secret that no
/// control plane accepts any more; removed so no secret lingers.
const OLD_CREDENTIAL_FILE: &str = "credential";

/// What `Register` (or a renewal) gave this agent, with its own key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub agent_id: String,
    pub cluster: String,
    /// The cluster's identity (UUID) the certificate names.
    pub cluster_id: String,
    /// PKCS#8 PEM private key of the certificate. Never logged.
    pub key_pem: String,
    pub certificate_pem: String,
    /// The CA that signs agent certificates (for operators inspecting the
    /// state directory; TLS to the control plane is checked with --ca-cert).
    pub ca_certificate_pem: String,
    /// When this agent received the certificate (seconds since the epoch):
    /// renewal is due at half of the time from here to `expire_time`.
    pub issue_time: u64,
    pub expire_time: u64,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("agent_id", &self.agent_id)
            .field("cluster", &self.cluster)
            .field("cluster_id", &self.cluster_id)
            .field("expire_time", &self.expire_time)
            .finish_non_exhaustive()
    }
}

impl Enrollment {
    /// The TLS client identity of `Session` calls.
    pub fn tls_identity(&self) -> Identity {
        Identity::from_pem(&self.certificate_pem, &self.key_pem)
    }

    /// Renewal is due once less than half of the certificate's lifetime is
    /// left: that leaves the other half for an agent that is disconnected
    /// at the time to come back before it expires (with the default 7 days,
    /// three and a half days), while a stolen certificate is useful for at
    /// most one lifetime.
    pub fn renewal_due(&self, now: SystemTime) -> bool {
        let now = seconds(now);
        let half = self.expire_time.saturating_sub(self.issue_time) / 2;
        now >= self.issue_time.saturating_add(half)
    }

    /// Whether the certificate expired: the control plane's TLS refuses it,
    /// so only a registration with a join token helps.
    pub fn expired(&self, now: SystemTime) -> bool {
        seconds(now) >= self.expire_time
    }

    /// A certificate for `key_pem` received now, valid until `expire_time`.
    pub fn renewed(&self, key_pem: String, certificate_pem: String, expire_time: u64) -> Self {
        Enrollment {
            key_pem,
            certificate_pem,
            issue_time: seconds(SystemTime::now()),
            expire_time,
            ..self.clone()
        }
    }
}

/// Seconds since the epoch (0 before it).
pub fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A new key (ECDSA P-256) and a PEM PKCS#10 CSR over it: (key PEM, CSR PEM).
/// The CSR's subject is left empty: the control plane decides what the
/// certificate names.
pub fn new_key_and_csr() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    Ok((key.serialize_pem(), csr))
}

impl StateDir {
    /// The stored identity, if this agent registered before.
    pub fn enrollment(&self) -> std::io::Result<Option<Enrollment>> {
        let old = self.path().join(OLD_CREDENTIAL_FILE);
        if old.exists() {
            tracing::info!(path = %old.display(), "removing the bearer credential of an older agent version (agents now use client certificates)");
            std::fs::remove_file(&old)?;
        }
        let text = match std::fs::read_to_string(self.path().join(IDENTITY_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is unreadable ({e}); restore it, or remove it and register again with a join token",
                    self.path().join(IDENTITY_FILE).display()
                ),
            )
        })
    }

    /// Replaces the stored identity, all of it at once.
    pub fn save_enrollment(&self, enrollment: &Enrollment) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(enrollment)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.write_atomically(IDENTITY_FILE, &text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment() -> Enrollment {
        Enrollment {
            agent_id: "mtpagent_0123456789abcdef".into(),
            cluster: "k3s-1".into(),
            cluster_id: "00000000-0000-0000-0000-000000000001".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n".into(),
            certificate_pem: "cert".into(),
            ca_certificate_pem: "ca".into(),
            issue_time: 1000,
            expire_time: 2000,
        }
    }

    #[test]
    fn the_identity_survives_a_restart_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OLD_CREDENTIAL_FILE), "secret=mtpagent_x").unwrap();
        let state = StateDir::new(dir.path()).unwrap();
        assert_eq!(state.enrollment().unwrap(), None);
        assert!(!dir.path().join(OLD_CREDENTIAL_FILE).exists());
        let e = enrollment();
        state.save_enrollment(&e).unwrap();
        let reopened = StateDir::new(dir.path()).unwrap();
        assert_eq!(reopened.enrollment().unwrap(), Some(e.clone()));
        assert!(!format!("{e:?}").contains("secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{ half").unwrap();
        let err = reopened.enrollment().unwrap_err();
        assert!(err.to_string().contains("register again"), "{err}");
    }

    #[test]
    fn renewal_is_due_at_half_the_lifetime() {
        let e = enrollment();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert!(!e.renewal_due(at(1499)));
        assert!(e.renewal_due(at(1500)));
        assert!(!e.expired(at(1999)));
        assert!(e.expired(at(2000)));
    }

    #[test]
    fn keys_and_csrs_are_pem() {
        let (key, csr) = new_key_and_csr().unwrap();
        assert!(key.contains("BEGIN PRIVATE KEY"));
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
    }
}
