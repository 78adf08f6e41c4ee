//! Who may do what: roles, the authenticated principal, and the checks the
//! API runs before touching state.
//!
//! A tenant-bound caller asking about another tenant gets `NotFound`, never
//! `PermissionDenied`, so it cannot learn which tenants exist.

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    PlatformAdmin,
    TenantOwner,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantOwner => "tenant-owner",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Role::PlatformAdmin, Role::TenantOwner, Role::ReadOnly]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// The caller of one request, as established from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    /// Set for tenant-bound tokens: the only tenant the caller can see.
    pub tenant: Option<String>,
}

impl Principal {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// The tenant the caller is confined to, if any.
    pub fn tenant_scope(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The tenant a list call is confined to: the one asked for (if the
    /// caller may see it), and always the caller's own for a tenant-bound
    /// token, so such a caller never lists another tenant's data.
    pub fn list_scope(&self, requested: Option<&str>) -> Result<Option<String>> {
        if let Some(t) = requested {
            self.check_read_tenant(t)?;
        }
        Ok(self.tenant_scope().or(requested).map(str::to_owned))
    }

    pub fn can_see_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    pub fn require_admin(&self, what: &str) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{what} needs a platform-admin token (this token is {})",
                self.role.as_str()
            )))
        }
    }

    /// Reading anything of `tenant`.
    pub fn check_read_tenant(&self, tenant: &str) -> Result<()> {
        if self.can_see_tenant(tenant) {
            Ok(())
        } else {
            Err(Error::not_found("tenant", tenant))
        }
    }

    /// Creating or deleting environments of `tenant`.
    pub fn check_write_environments(&self, tenant: &str) -> Result<()> {
        self.check_read_tenant(tenant)?;
        match self.role {
            Role::PlatformAdmin | Role::TenantOwner => Ok(()),
            Role::ReadOnly => Err(Error::PermissionDenied("this token is read-only".into())),
        }
    }

    /// Whether the caller may mint a token with `role` bound to `tenant`: admins
    /// any; tenant owners only tokens bound to their own tenant and no stronger
    /// than their own; read-only callers none.
    pub fn check_create_token(&self, role: Role, tenant: Option<&str>) -> Result<()> {
        match self.role {
            Role::PlatformAdmin => Ok(()),
            Role::ReadOnly => Err(Error::PermissionDenied("this token is read-only".into())),
            Role::TenantOwner => {
                let own = self.tenant.as_deref();
                if role == Role::PlatformAdmin || tenant.is_none() || tenant != own {
                    Err(Error::PermissionDenied(
                        "a tenant-owner token can only create tokens bound to its own tenant"
                            .into(),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, tenant: Option<&str>) -> Principal {
        Principal {
            token_id: "t1".into(),
            role,
            tenant: tenant.map(Into::into),
        }
    }

    #[test]
    fn other_tenants_are_invisible_not_forbidden() {
        let owner = principal(Role::TenantOwner, Some("team-a"));
        assert!(owner.check_read_tenant("team-a").is_ok());
        assert_eq!(
            owner.check_read_tenant("team-b"),
            Err(Error::not_found("tenant", "team-b"))
        );
        assert_eq!(
            owner.check_write_environments("team-b"),
            Err(Error::not_found("tenant", "team-b"))
        );
    }

    #[test]
    fn list_calls_are_narrowed_to_the_callers_tenant() {
        let owner = principal(Role::TenantOwner, Some("team-a"));
        assert_eq!(owner.list_scope(None), Ok(Some("team-a".into())));
        assert_eq!(owner.list_scope(Some("team-a")), Ok(Some("team-a".into())));
        assert_eq!(
            owner.list_scope(Some("team-b")),
            Err(Error::not_found("tenant", "team-b"))
        );
        let admin = principal(Role::PlatformAdmin, None);
        assert_eq!(admin.list_scope(None), Ok(None));
        assert_eq!(admin.list_scope(Some("team-b")), Ok(Some("team-b".into())));
    }

    #[test]
    fn read_only_cannot_write() {
        let ro = principal(Role::ReadOnly, None);
        assert!(ro.check_read_tenant("any").is_ok());
        assert!(matches!(
            ro.check_write_environments("any"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            ro.require_admin("creating tenants"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(ro.check_create_token(Role::ReadOnly, None).is_err());
    }

    #[test]
    fn tenant_owners_mint_only_their_own_tokens() {
        let owner = principal(Role::TenantOwner, Some("team-a"));
        assert!(
            owner
                .check_create_token(Role::ReadOnly, Some("team-a"))
                .is_ok()
        );
        assert!(
            owner
                .check_create_token(Role::TenantOwner, Some("team-b"))
                .is_err()
        );
        assert!(owner.check_create_token(Role::PlatformAdmin, None).is_err());
        assert!(owner.check_create_token(Role::ReadOnly, None).is_err());
    }
}
