//! The throwaway cluster's key material: one CA, the apiserver's serving
//! certificate, client certificates (the identity is the subject: CN = user,
//! O = groups, as kube-apiserver's x509 authenticator reads it) and the
//! ServiceAccount token signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the three processes and the clients need.
pub struct Pki {
    pub ca_pem: String,
    pub serving: CertPair,
    /// `system:masters`: bypasses RBAC (but not admission policies).
    pub admin: CertPair,
    /// The controller-manager's own identity, with its bootstrap ClusterRole.
    pub controller_manager: CertPair,
    /// Signs ServiceAccount tokens (apiserver) and checks them; the
    /// controller-manager signs with the same key.
    pub service_account_key_pem: String,
    pub service_account_public_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn fail(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("generating {what}: {e}")
}

impl Pki {
    pub fn generate() -> Result<Pki, String> {
        let ca_key = KeyPair::generate().map_err(fail("the CA key"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail("the CA"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mtp-kube-harness-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(fail("the CA"))?;
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate().map_err(fail("the serving key"))?;
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(fail("the serving certificate"))?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .map_err(fail("the serving certificate"))?;

        let sa_key = KeyPair::generate().map_err(fail("the service account key"))?;
        let mut pki = Pki {
            ca_pem: ca_cert.pem(),
            serving: CertPair {
                cert_pem: serving_cert.pem(),
                key_pem: serving_key.serialize_pem(),
            },
            admin: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            controller_manager: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
            issuer,
        };
        pki.admin = pki.client("mtp-harness-admin", Some("system:masters"))?;
        pki.controller_manager = pki.client("system:kube-controller-manager", None)?;
        Ok(pki)
    }

    /// A client certificate for `user` (in `group`), signed by the cluster CA.
    /// One group at most: rcgen keeps one value per subject attribute type.
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<CertPair, String> {
        let key = KeyPair::generate().map_err(fail("a client key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(fail("a client certificate"))?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(fail("a client certificate"))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
