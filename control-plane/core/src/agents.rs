//! Agents: who an agent is, how it joins a cluster, and what flows over its
//! channel — the desired state of its cluster by revision, and what it
//! reports back per namespace.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::names::validate_object_name;
use crate::profiles::Profile;
use crate::quota::EnvironmentQuota;
use crate::tenants::Owners;
use crate::{Error, Result};

/// Longest a join token may live: a leaked one must not stay useful for long.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::days(30);
/// Lifetime of a join token when the request does not say: long enough to
/// roll out a node pool.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::hours(24);
/// Longest agent version string kept (it is shown in lists and the audit log).
const MAX_AGENT_VERSION: usize = 64;
/// Longest DNS-1123 subdomain, the form of a Kubernetes node name.
const MAX_NODE_NAME: usize = 253;

/// The lifetime of a join token from the requested seconds (0: the default).
pub fn join_token_ttl(ttl_seconds: i64) -> Result<Duration> {
    if ttl_seconds == 0 {
        return Ok(DEFAULT_JOIN_TOKEN_TTL);
    }
    let ttl = Duration::try_seconds(ttl_seconds).unwrap_or(Duration::MAX);
    if ttl <= Duration::zero() || ttl > MAX_JOIN_TOKEN_TTL {
        return Err(Error::invalid(
            "ttl_seconds",
            "must be between 1 second and 30 days",
        ));
    }
    Ok(ttl)
}

/// An agent asking to join a cluster, validated by [`AgentRegistration::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct AgentRegistration {
    /// The join token's secret (never logged).
    pub join_token: String,
    pub node_name: String,
    pub agent_version: String,
}

impl std::fmt::Debug for AgentRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistration")
            .field("node_name", &self.node_name)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

impl AgentRegistration {
    /// Checks the node name (a DNS-1123 subdomain, surrounding blanks ignored)
    /// and the version string.
    pub fn new(join_token: String, node_name: &str, agent_version: String) -> Result<Self> {
        let node = node_name.trim();
        if node.is_empty()
            || node.len() > MAX_NODE_NAME
            || node
                .split('.')
                .any(|p| validate_object_name("node_name", p).is_err())
        {
            return Err(Error::invalid("node_name", "must be a DNS-1123 subdomain"));
        }
        if agent_version.len() > MAX_AGENT_VERSION {
            return Err(Error::invalid(
                "agent_version",
                format!("at most {MAX_AGENT_VERSION} characters"),
            ));
        }
        Ok(AgentRegistration {
            join_token,
            node_name: node.to_owned(),
            agent_version,
        })
    }
}

/// Who an agent is, established from its client certificate and its row
/// (never from its messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub cluster_id: Uuid,
    pub cluster: String,
    pub node_name: String,
    /// Serial (lower-case hex) of the certificate this identity was
    /// established with; a renewal must come from a certificate still
    /// accepted, and the renewed one replaces exactly this one.
    pub certificate_serial: String,
}

/// Shortest agent certificate lifetime accepted: short enough for tests of
/// expiry, long enough that renewing at half of it still leaves a margin
/// above a few keepalive periods.
pub const MIN_CERTIFICATE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest agent certificate lifetime accepted: a stolen key stays useful
/// until its certificate expires unless the agent is revoked.
pub const MAX_CERTIFICATE_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// A certificate the control plane signed for an agent: what the store keeps
/// of it (the store knows no cryptography).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Lower-case hex of the certificate's serial number.
    pub serial: String,
    pub expire_time: DateTime<Utc>,
}

/// What a client certificate, verified by TLS against the agent CA, claims:
/// CN = agent id, O = cluster id, and its serial. Only the store can say
/// whether it still names a live agent ([`AgentIdentity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub agent_id: String,
    pub cluster_id: Uuid,
    pub serial: String,
}

/// A join token as listed to operators (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub cluster: String,
    pub create_time: DateTime<Utc>,
    pub expire_time: DateTime<Utc>,
    pub revoke_time: Option<DateTime<Utc>>,
    /// 0: no limit.
    pub max_uses: u32,
    pub uses: u32,
    pub created_by: String,
}

/// A registered agent as listed to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub cluster: String,
    pub node_name: String,
    pub agent_version: String,
    pub register_time: DateTime<Utc>,
    pub last_seen_time: Option<DateTime<Utc>>,
    pub acknowledged_revision: i64,
    pub applier: bool,
    pub connected: bool,
    pub certificate_expire_time: Option<DateTime<Utc>>,
    pub revoke_time: Option<DateTime<Utc>>,
}

/// Everything an agent needs to render one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub namespace: String,
    pub tenant: String,
    pub environment: String,
    pub revision: i64,
    pub quota: EnvironmentQuota,
    pub profile: Profile,
    pub owners: Owners,
    pub ingress_namespace: String,
}

/// What a cluster should run, sent to its agents: as a whole or as the
/// changes after a revision the agent holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUpdate {
    /// `None`: a full snapshot. `Some(r)`: only what changed after `r`.
    pub since: Option<i64>,
    pub revision: i64,
    pub upserts: Vec<NamespaceSpec>,
    /// Namespaces to remove (in a snapshot: none, absence says it).
    pub deletes: Vec<String>,
}

/// What an applier agent reported for one namespace of an acknowledged revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceReport {
    Verified,
    Failed(String),
    Deleted,
    /// The live namespace carries a newer revision stamp than the desired
    /// state; the agent left it alone.
    Superseded {
        live_revision: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_subdomains_and_trimmed() {
        let r = AgentRegistration::new("s".into(), " node-1.zone ", "v1".into()).unwrap();
        assert_eq!(r.node_name, "node-1.zone");
        for bad in ["", "   ", "Node_1", "a..b", &"a".repeat(254)] {
            let err = AgentRegistration::new("s".into(), bad, "v1".into()).unwrap_err();
            assert_eq!(err.to_string(), "node_name: must be a DNS-1123 subdomain");
        }
        let err = AgentRegistration::new("s".into(), "n", "v".repeat(65)).unwrap_err();
        assert_eq!(err.to_string(), "agent_version: at most 64 characters");
    }

    #[test]
    fn join_token_lifetimes_are_bounded() {
        assert_eq!(join_token_ttl(0), Ok(DEFAULT_JOIN_TOKEN_TTL));
        assert_eq!(join_token_ttl(60), Ok(Duration::seconds(60)));
        for bad in [-1, 30 * 24 * 3600 + 1, i64::MAX] {
            assert!(join_token_ttl(bad).is_err(), "{bad}");
        }
    }
}
