//! Tenants: who owns environments, and what they may use.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::names::{
    validate_object_name, validate_service_account, validate_subject, validate_tenant_name,
};
use crate::quota::{TenantQuota, TenantUsage};
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
        validate_profile_names(&self.allowed_profiles)
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

fn validate_profile_names(profiles: &[String]) -> Result<()> {
    for (i, p) in profiles.iter().enumerate() {
        validate_object_name(&format!("allowed_profiles[{i}]"), p)?;
    }
    Ok(())
}

/// A stored tenant with the live usage of its environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub spec: TenantSpec,
    pub usage: TenantUsage,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// Changes to a tenant; `None` keeps the current value. Checked by
/// [`TenantUpdate::validate`]; the quota against usage only in the store,
/// under the tenant lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUpdate {
    pub display_name: Option<String>,
    pub owners: Option<Owners>,
    pub quota: Option<TenantQuota>,
    pub allowed_profiles: Option<Vec<String>>,
}

impl TenantUpdate {
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = &self.display_name {
            validate_display_name("display_name", d)?;
        }
        if let Some(o) = &self.owners {
            o.validate("owners")?;
        }
        if let Some(p) = &self.allowed_profiles {
            validate_profile_names(p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_check_only_what_they_change() {
        assert!(TenantUpdate::default().validate().is_ok());
        let bad_name = TenantUpdate {
            display_name: Some("a\u{7}b".into()),
            ..TenantUpdate::default()
        };
        let err = bad_name.validate().unwrap_err();
        assert!(err.to_string().starts_with("display_name: "), "{err}");
        let bad_profile = TenantUpdate {
            allowed_profiles: Some(vec!["small".into(), "Not Valid".into()]),
            ..TenantUpdate::default()
        };
        let err = bad_profile.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("allowed_profiles[1]: "),
            "{err}"
        );
    }
}
