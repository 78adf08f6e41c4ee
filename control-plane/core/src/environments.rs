//! Environments: one namespace of a tenant on a cluster, and its life cycle.

use chrono::{DateTime, Utc};

use crate::quota::EnvironmentQuota;

/// Where an environment is in its life. Desired state (the row) and observed
/// state (agent reports) meet here: `Pending`/`Deleting` are set by the API,
/// the others by what agents acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvironmentStatus {
    Pending,
    Applying,
    Ready,
    Failed,
    Deleting,
    Deleted,
}

impl EnvironmentStatus {
    pub const ALL: [EnvironmentStatus; 6] = [
        EnvironmentStatus::Pending,
        EnvironmentStatus::Applying,
        EnvironmentStatus::Ready,
        EnvironmentStatus::Failed,
        EnvironmentStatus::Deleting,
        EnvironmentStatus::Deleted,
    ];

    /// The stable text form used in storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentStatus::Pending => "pending",
            EnvironmentStatus::Applying => "applying",
            EnvironmentStatus::Ready => "ready",
            EnvironmentStatus::Failed => "failed",
            EnvironmentStatus::Deleting => "deleting",
            EnvironmentStatus::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the environment still counts against its tenant's quota.
    /// A deleting environment still holds its namespace until the agent confirms.
    pub fn holds_quota(self) -> bool {
        self != EnvironmentStatus::Deleted
    }
}

/// What a caller asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnvironment {
    pub tenant: String,
    pub name: String,
    pub cluster: String,
    pub profile: String,
    pub quota_override: crate::quota::QuotaOverride,
    pub expire_time: Option<DateTime<Utc>>,
}

/// An environment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub tenant: String,
    pub name: String,
    pub cluster: String,
    pub profile: String,
    pub namespace: String,
    pub quota: EnvironmentQuota,
    pub status: EnvironmentStatus,
    pub reason: String,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub delete_time: Option<DateTime<Utc>>,
    /// The cluster revision at which this environment last changed.
    pub revision: i64,
    /// The revision an applier agent acknowledged for it (0: none yet).
    pub applied_revision: i64,
    pub ready_time: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_round_trips() {
        for s in EnvironmentStatus::ALL {
            assert_eq!(EnvironmentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(EnvironmentStatus::parse("READY"), None);
        assert!(!EnvironmentStatus::Deleted.holds_quota());
        assert!(EnvironmentStatus::Deleting.holds_quota());
    }
}
