//! Names: DNS-1123 labels, reserved names, and the namespace derived from a
//! tenant and an environment.

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest tenant name; with [`MAX_ENVIRONMENT_NAME`] and the joining `-` the
/// derived namespace always fits the 63-character label limit.
pub const MAX_TENANT_NAME: usize = 30;
pub const MAX_ENVIRONMENT_NAME: usize = 32;
pub const MAX_LABEL: usize = 63;

/// Tenant names that would produce namespaces colliding with system ones
/// (`kube-system`, `default`, …) or with the platform's own (`mtp-system`).
const RESERVED_EXACT: &[&str] = &["default", "kube", "mtp", "system", "openshift"];
const RESERVED_PREFIXES: &[&str] = &["kube-", "mtp-", "system-", "openshift-"];

/// Checks that `value` is a DNS-1123 label (lowercase alphanumerics and `-`,
/// starting and ending alphanumeric) of at most `max` characters.
pub fn validate_label(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters (got {})", value.len()),
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(bad) = value.chars().find(|c| !ok_char(*c)) {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?} is not a DNS-1123 label: character {bad:?} is not allowed \
                 (use lowercase letters, digits and '-')"
            ),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(Error::invalid(
            field,
            format!("{value:?} is not a DNS-1123 label: must start and end with a letter or digit"),
        ));
    }
    Ok(())
}

pub fn validate_tenant_name(field: &str, name: &str) -> Result<()> {
    validate_label(field, name, MAX_TENANT_NAME)?;
    if RESERVED_EXACT.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?} is reserved (names {} and prefixes {} belong to the system)",
                RESERVED_EXACT.join(", "),
                RESERVED_PREFIXES.join(", ")
            ),
        ));
    }
    Ok(())
}

pub fn validate_environment_name(field: &str, name: &str) -> Result<()> {
    validate_label(field, name, MAX_ENVIRONMENT_NAME)
}

/// Cluster and profile names are plain DNS-1123 labels.
pub fn validate_object_name(field: &str, name: &str) -> Result<()> {
    validate_label(field, name, MAX_LABEL)
}

/// The namespace names an environment may get, in order of preference.
///
/// The first is the readable `{tenant}-{environment}`. Two different pairs can
/// produce it (`a-b`/`c` and `a`/`b-c`), so the second appends a hash of the
/// pair and is used when the first is taken. Both are valid labels of at most
/// 63 characters for any valid tenant and environment name.
pub fn namespace_candidates(tenant: &str, environment: &str) -> [String; 2] {
    let readable = format!("{tenant}-{environment}");
    let digest = Sha256::digest(format!("{tenant}/{environment}").as_bytes());
    let suffix = &hex::encode(digest)[..8];
    // Keep room for "-" + 8 hex chars; the readable part never ends in '-'.
    let mut head = readable.clone();
    head.truncate(MAX_LABEL - 9);
    let head = head.trim_end_matches('-');
    [readable, format!("{head}-{suffix}")]
}

/// Label keys and values as Kubernetes accepts them (used for cluster labels).
pub fn validate_k8s_label(field: &str, key: &str, value: &str) -> Result<()> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(Error::invalid(
                field,
                format!("label key {key:?} has an invalid prefix"),
            ));
        }
        for part in prefix.split('.') {
            validate_label(field, part, MAX_LABEL).map_err(|_| {
                Error::invalid(
                    field,
                    format!("label key {key:?}: prefix must be a DNS subdomain"),
                )
            })?;
        }
    }
    if !is_label_value(name) || name.is_empty() {
        return Err(Error::invalid(
            field,
            format!(
                "label key {key:?} must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
            ),
        ));
    }
    if !is_label_value(value) {
        return Err(Error::invalid(
            field,
            format!(
                "label value {value:?} of {key:?} must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
            ),
        ));
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    v.len() <= MAX_LABEL
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Free-text identities (user and group names from the cluster's authenticator).
pub fn validate_subject(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > 256 {
        return Err(Error::invalid(field, "must be at most 256 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    // Kubernetes' own identities (system:masters, system:authenticated, …):
    // binding `admin` to one would hand an environment to every node, every
    // authenticated user or the cluster's own components. The agent's
    // admission policy refuses such bindings too.
    if value.starts_with("system:") {
        return Err(Error::invalid(
            field,
            format!("{value:?}: names starting with \"system:\" are Kubernetes' own identities"),
        ));
    }
    Ok(())
}

/// A service account as `namespace/name`.
pub fn validate_service_account(field: &str, value: &str) -> Result<()> {
    let Some((ns, name)) = value.split_once('/') else {
        return Err(Error::invalid(
            field,
            format!("{value:?} must be written namespace/name"),
        ));
    };
    validate_label(field, ns, MAX_LABEL)?;
    validate_label(field, name, MAX_LABEL)?;
    // The cluster's own namespaces: their ServiceAccounts are its components.
    if ns.starts_with("kube-") || ns == "mtp-system" {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?}: ServiceAccounts of the system namespace {ns:?} cannot own environments"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn reserved_and_malformed_names_are_refused_naming_the_field() {
        for bad in [
            "default",
            "kube-system",
            "kube-anything",
            "mtp-system",
            "mtp",
            "Team",
            "a_b",
            "-a",
            "a-",
            "",
        ] {
            let err = validate_tenant_name("name", bad).unwrap_err();
            assert!(
                matches!(&err, Error::Invalid { field, .. } if field == "name"),
                "{bad}: {err}"
            );
        }
        validate_tenant_name("name", "team-a").unwrap();
        assert!(validate_tenant_name("name", &"a".repeat(31)).is_err());
        validate_tenant_name("name", &"a".repeat(30)).unwrap();
    }

    #[test]
    fn ambiguous_pairs_get_distinct_fallback_namespaces() {
        let [a1, a2] = namespace_candidates("a-b", "c");
        let [b1, b2] = namespace_candidates("a", "b-c");
        assert_eq!(a1, b1);
        assert_ne!(a2, b2);
    }

    #[test]
    fn kubernetes_own_identities_are_refused() {
        for name in [
            "system:masters",
            "system:authenticated",
            "system:serviceaccounts",
        ] {
            let err = validate_subject("owners.groups[0]", name).unwrap_err();
            assert!(err.to_string().contains("owners.groups[0]"), "{err}");
        }
        validate_subject("owners.users[0]", "alice@example.com").unwrap();
        validate_subject("owners.users[0]", "systems:team").unwrap();
        for sa in [
            "kube-system/default",
            "kube-public/x",
            "mtp-system/mtp-agent",
        ] {
            assert!(validate_service_account("sa", sa).is_err(), "{sa}");
        }
    }

    #[test]
    fn service_accounts_need_namespace_and_name() {
        validate_service_account("sa", "ci/deployer").unwrap();
        assert!(validate_service_account("sa", "deployer").is_err());
        assert!(validate_service_account("sa", "ci/Deployer").is_err());
    }

    #[test]
    fn cluster_labels_follow_kubernetes_syntax() {
        validate_k8s_label("labels", "topology.kubernetes.io/region", "eu-west-1").unwrap();
        validate_k8s_label("labels", "tier", "").unwrap();
        assert!(validate_k8s_label("labels", "bad key", "x").is_err());
        assert!(validate_k8s_label("labels", "k", "-x").is_err());
    }

    proptest! {
        #[test]
        fn label_validation_agrees_with_the_definition(s in "[a-z0-9A-Z_.-]{0,70}") {
            prop_assert_eq!(validate_label("f", &s, 63).is_ok(), is_dns_label(&s));
        }

        #[test]
        fn derived_namespaces_are_always_valid_labels(
            tenant in "[a-z]([a-z0-9-]{0,28}[a-z0-9])?",
            env in "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?",
        ) {
            for ns in namespace_candidates(&tenant, &env) {
                prop_assert!(is_dns_label(&ns), "{} is not a label", ns);
            }
        }
    }
}
