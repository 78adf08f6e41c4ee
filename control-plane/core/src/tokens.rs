//! API tokens and bearer secrets: what a token is, what a request for one
//! must satisfy, and how secrets are minted, recognised and checked.
//!
//! A secret reads `mtp_<id>_<key>`. The id is public (it names the token in
//! lists and in the audit log); only SHA-256 of the key is stored. Lookup is by
//! id, then the stored hash is compared in constant time, so neither the index
//! nor the comparison leaks how much of a guess was right. The key carries 256
//! random bits, so a fast hash is enough (no password stretching needed).

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::Role;
use crate::{Error, Result};

/// Longest token description kept.
const MAX_DESCRIPTION: usize = 512;

/// An API token as listed (its secret is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub description: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub created_by: String,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub revoke_time: Option<DateTime<Utc>>,
}

/// A token to mint, checked by [`NewToken::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub role: Role,
    pub tenant: Option<String>,
    pub description: String,
    pub expire_time: Option<DateTime<Utc>>,
}

impl NewToken {
    /// The description's length, the role's binding to a tenant, and an
    /// expiry in the future (as of `now`).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<()> {
        if self.description.len() > MAX_DESCRIPTION {
            return Err(Error::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if self.role == Role::TenantOwner && self.tenant.is_none() {
            return Err(Error::invalid(
                "tenant",
                "a tenant-owner token must name its tenant",
            ));
        }
        if self.role == Role::PlatformAdmin && self.tenant.is_some() {
            return Err(Error::invalid(
                "tenant",
                "a platform-admin token cannot be bound to a tenant",
            ));
        }
        if self.expire_time.is_some_and(|t| t <= now) {
            return Err(Error::invalid("expire_time", "must be in the future"));
        }
        Ok(())
    }
}

/// What the caller sees once and what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedSecret {
    pub id: String,
    /// The full bearer secret. Never stored, never logged.
    pub secret: String,
    /// Hex SHA-256 of the key part; this is what is stored.
    pub key_hash: String,
}

/// A secret split into its id and the hash of its key.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedSecret {
    pub id: String,
    pub key_hash: String,
}

impl std::fmt::Debug for PresentedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Mints a new secret with the given prefix (`mtp` for API tokens, `mtpjoin`
/// for cluster join tokens), so a leaked secret says what it is.
pub fn mint(prefix: &str) -> MintedSecret {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut key);
    let id = hex::encode(id);
    let key = hex::encode(key);
    MintedSecret {
        secret: format!("{prefix}_{id}_{key}"),
        key_hash: hash_key(&key),
        id,
    }
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses a presented secret; any malformed secret is simply not a credential.
pub fn parse(prefix: &str, secret: &str) -> Result<PresentedSecret> {
    let unauthenticated = || Error::Unauthenticated("the token is malformed".into());
    let rest = secret
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or_else(unauthenticated)?;
    let (id, key) = rest.split_once('_').ok_or_else(unauthenticated)?;
    let is_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(id, 16) || !is_hex(key, 64) {
        return Err(unauthenticated());
    }
    Ok(PresentedSecret {
        id: id.to_owned(),
        key_hash: hash_key(key),
    })
}

/// Constant-time comparison of the presented key's hash with the stored one.
pub fn matches(presented: &PresentedSecret, stored_hash: &str) -> bool {
    presented
        .key_hash
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_verify_and_tampered_ones_do_not() {
        let minted = mint("mtp");
        let presented = parse("mtp", &minted.secret).unwrap();
        assert_eq!(presented.id, minted.id);
        assert!(matches(&presented, &minted.key_hash));
        assert!(!minted.secret.contains(&minted.key_hash));

        let mut tampered = minted.secret.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(!matches(
            &parse("mtp", &tampered).unwrap(),
            &minted.key_hash
        ));
    }

    #[test]
    fn malformed_secrets_are_unauthenticated() {
        for bad in [
            "",
            "mtp",
            "mtp_",
            "mtp_abc_def",
            "other_0123456789abcdef_00",
            "mtpjoin_x",
        ] {
            assert!(
                matches!(parse("mtp", bad), Err(Error::Unauthenticated(_))),
                "{bad}"
            );
        }
        let join = mint("mtpjoin");
        assert!(parse("mtp", &join.secret).is_err());
        assert!(parse("mtpjoin", &join.secret).is_ok());
    }

    #[test]
    fn token_requests_bind_roles_to_tenants_sensibly() {
        let now = Utc::now();
        let new = |role, tenant: Option<&str>| NewToken {
            role,
            tenant: tenant.map(Into::into),
            description: String::new(),
            expire_time: None,
        };
        assert!(new(Role::ReadOnly, None).validate(now).is_ok());
        assert!(new(Role::TenantOwner, Some("a")).validate(now).is_ok());
        let err = new(Role::TenantOwner, None).validate(now).unwrap_err();
        assert!(err.to_string().starts_with("tenant: "), "{err}");
        assert!(new(Role::PlatformAdmin, Some("a")).validate(now).is_err());
        let mut past = new(Role::ReadOnly, None);
        past.expire_time = Some(now);
        let err = past.validate(now).unwrap_err();
        assert_eq!(err.to_string(), "expire_time: must be in the future");
        let mut long = new(Role::ReadOnly, None);
        long.description = "x".repeat(513);
        assert!(long.validate(now).is_err());
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let p = parse("mtp", &mint("mtp").secret).unwrap();
        assert!(!format!("{p:?}").contains(&p.key_hash));
    }
}
