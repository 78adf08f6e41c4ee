//! Profiles: named environment shapes. The built-in `small`, `medium` and
//! `large` always exist; platform teams add their own.

use serde::{Deserialize, Serialize};

use crate::names::validate_object_name;
use crate::quota::EnvironmentQuota;
use crate::{Error, Result};

/// Defaults and ceilings for each container (the environment's LimitRange).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLimits {
    pub default_request_cpu_millis: u64,
    pub default_request_memory_bytes: u64,
    pub default_limit_cpu_millis: u64,
    pub default_limit_memory_bytes: u64,
    pub max_cpu_millis: u64,
    pub max_memory_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOptions {
    /// Allow traffic between environments of the same tenant.
    pub allow_same_tenant: bool,
    /// Allow ingress from the cluster's ingress controller namespace.
    pub allow_ingress_controller: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub quota: EnvironmentQuota,
    pub max_quota: EnvironmentQuota,
    pub container_limits: ContainerLimits,
    pub network: NetworkOptions,
}

pub const BUILTIN_NAMES: [&str; 3] = ["small", "medium", "large"];

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn builtin(
    name: &str,
    description: &str,
    quota: [u64; 6],
    max: [u64; 6],
    container: [u64; 6],
) -> Profile {
    let q = |v: [u64; 6]| EnvironmentQuota {
        cpu_millis: v[0],
        memory_bytes: v[1],
        storage_bytes: v[2],
        pods: v[3],
        services: v[4],
        persistent_volume_claims: v[5],
    };
    Profile {
        name: name.to_owned(),
        description: description.to_owned(),
        builtin: true,
        quota: q(quota),
        max_quota: q(max),
        container_limits: ContainerLimits {
            default_request_cpu_millis: container[0],
            default_request_memory_bytes: container[1],
            default_limit_cpu_millis: container[2],
            default_limit_memory_bytes: container[3],
            max_cpu_millis: container[4],
            max_memory_bytes: container[5],
        },
        network: NetworkOptions {
            allow_same_tenant: false,
            allow_ingress_controller: true,
        },
    }
}

/// The profiles every installation has.
pub fn builtin_profiles() -> Vec<Profile> {
    vec![
        builtin(
            "small",
            "A developer sandbox: 1 CPU, 2Gi memory, 10Gi storage",
            [1000, 2 * GI, 10 * GI, 20, 10, 5],
            [2000, 4 * GI, 20 * GI, 40, 20, 10],
            [100, 128 * MI, 500, 512 * MI, 1000, 2 * GI],
        ),
        builtin(
            "medium",
            "A team environment: 4 CPU, 8Gi memory, 50Gi storage",
            [4000, 8 * GI, 50 * GI, 50, 20, 10],
            [8000, 16 * GI, 100 * GI, 100, 40, 20],
            [250, 256 * MI, 1000, GI, 2000, 4 * GI],
        ),
        builtin(
            "large",
            "A staging environment: 8 CPU, 32Gi memory, 200Gi storage",
            [8000, 32 * GI, 200 * GI, 100, 50, 20],
            [16000, 64 * GI, 500 * GI, 200, 100, 40],
            [500, 512 * MI, 2000, 4 * GI, 4000, 16 * GI],
        ),
    ]
}

impl Profile {
    /// Checks a platform-defined profile for internal consistency.
    pub fn validate(&self) -> Result<()> {
        validate_object_name("profile.name", &self.name)?;
        if BUILTIN_NAMES.contains(&self.name.as_str()) {
            return Err(Error::invalid(
                "profile.name",
                format!(
                    "{:?} is a built-in profile and cannot be redefined",
                    self.name
                ),
            ));
        }
        if self.description.len() > 512 {
            return Err(Error::invalid(
                "profile.description",
                "must be at most 512 characters",
            ));
        }
        if !self.quota.fits_within(&self.max_quota) {
            return Err(Error::invalid(
                "profile.max_quota",
                "every maximum must be at least the profile's quota",
            ));
        }
        let c = &self.container_limits;
        if c.default_request_cpu_millis > c.default_limit_cpu_millis
            || c.default_request_memory_bytes > c.default_limit_memory_bytes
        {
            return Err(Error::invalid(
                "profile.container_limits",
                "default requests must not exceed default limits",
            ));
        }
        if c.default_limit_cpu_millis > c.max_cpu_millis
            || c.default_limit_memory_bytes > c.max_memory_bytes
        {
            return Err(Error::invalid(
                "profile.container_limits",
                "default limits must not exceed the per-container maximum",
            ));
        }
        if c.max_cpu_millis > self.quota.cpu_millis || c.max_memory_bytes > self.quota.memory_bytes
        {
            return Err(Error::invalid(
                "profile.container_limits",
                "the per-container maximum must fit in the environment's quota",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_consistent_and_named_as_documented() {
        let names: Vec<_> = builtin_profiles().into_iter().map(|p| p.name).collect();
        assert_eq!(names, BUILTIN_NAMES);
        for mut p in builtin_profiles() {
            // validate() refuses builtin names; check the rest of the rules.
            p.name = format!("custom-{}", p.name);
            p.validate().unwrap();
        }
        assert_eq!(
            builtin_profiles()[0]
                .container_limits
                .default_request_memory_bytes,
            128 * MI
        );
    }

    #[test]
    fn inconsistent_profiles_are_refused() {
        let mut p = builtin_profiles().remove(0);
        p.name = "tiny".into();
        p.max_quota.cpu_millis = 10;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .starts_with("profile.max_quota")
        );
        let mut p = builtin_profiles().remove(0);
        assert!(p.validate().unwrap_err().to_string().contains("built-in"));
        p.name = "x".into();
        p.container_limits.default_request_cpu_millis = 10_000;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .starts_with("profile.container_limits")
        );
    }
}
