//! Tenants: who owns environments, and what they may use.

use crate::names::{validate_service_account, validate_subject, validate_tenant_name};
use crate::quota::TenantQuota;
use crate::{Error, Result};

/// The people and services bound to the built-in `admin` role in each of the
/// tenant's namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owners {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub service_accounts: Vec<String>,
}

/// Most owners per kind: enough for a team, small enough to bound RoleBindings.
pub const MAX_OWNERS: usize = 100;

impl Owners {
    pub fn validate(&self, field: &str) -> Result<()> {
        for (kind, values) in [
            ("users", &self.users),
            ("groups", &self.groups),
            ("service_accounts", &self.service_accounts),
        ] {
            if values.len() > MAX_OWNERS {
                return Err(Error::invalid(
                    format!("{field}.{kind}"),
                    format!("at most {MAX_OWNERS} entries"),
                ));
            }
            for (i, v) in values.iter().enumerate() {
                let f = format!("{field}.{kind}[{i}]");
                if kind == "service_accounts" {
                    validate_service_account(&f, v)?;
                } else {
                    validate_subject(&f, v)?;
                }
            }
        }
        Ok(())
    }
}

/// A tenant as the platform stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    pub display_name: String,
    pub owners: Owners,
    pub quota: TenantQuota,
    /// Empty means every profile is allowed.
    pub allowed_profiles: Vec<String>,
}

impl TenantSpec {
    /// Checks what the quantity parsers have not already: names, lengths, owners.
    pub fn validate(&self) -> Result<()> {
        validate_tenant_name("name", &self.name)?;
        validate_display_name("display_name", &self.display_name)?;
        self.owners.validate("owners")?;
        for (i, p) in self.allowed_profiles.iter().enumerate() {
            crate::names::validate_object_name(&format!("allowed_profiles[{i}]"), p)?;
        }
        Ok(())
    }

    pub fn allows_profile(&self, profile: &str) -> bool {
        self.allowed_profiles.is_empty() || self.allowed_profiles.iter().any(|p| p == profile)
    }
}

pub fn validate_display_name(field: &str, value: &str) -> Result<()> {
    if value.len() > 200 {
        return Err(Error::invalid(field, "must be at most 200 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}
