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

/// Node-local scratch space (`ephemeral-storage`: container writable
/// layers, logs, emptyDirs) and object counts. Neither is part of the
/// tenant's quota; both protect the cluster: without them one environment can
/// fill a node's disk or the cluster's datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterProtection {
    /// Requests of ephemeral storage, summed over the environment (what the
    /// scheduler reserves on nodes' disks). Limits are held per container by
    /// the LimitRange maximum, not summed: a sum of limits would cap an
    /// environment at a handful of default-sized containers.
    pub ephemeral_storage_bytes: u64,
    pub default_request_ephemeral_storage_bytes: u64,
    pub default_limit_ephemeral_storage_bytes: u64,
    /// Per container.
    pub max_ephemeral_storage_bytes: u64,
    pub objects: ObjectCounts,
}

/// The most objects of each kind an environment may hold (ResourceQuota
/// `count/…`). Zero means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounts {
    pub config_maps: u64,
    pub secrets: u64,
    pub service_accounts: u64,
    pub jobs: u64,
    pub cron_jobs: u64,
    pub deployments: u64,
    pub replica_sets: u64,
    pub stateful_sets: u64,
    pub ingresses: u64,
    pub roles: u64,
    pub role_bindings: u64,
}

impl ObjectCounts {
    /// Every count multiplied by `factor` (the larger built-in profiles).
    const fn times(self, factor: u64) -> ObjectCounts {
        ObjectCounts {
            config_maps: self.config_maps * factor,
            secrets: self.secrets * factor,
            service_accounts: self.service_accounts * factor,
            jobs: self.jobs * factor,
            cron_jobs: self.cron_jobs * factor,
            deployments: self.deployments * factor,
            replica_sets: self.replica_sets * factor,
            stateful_sets: self.stateful_sets * factor,
            ingresses: self.ingresses * factor,
            roles: self.roles * factor,
            role_bindings: self.role_bindings * factor,
        }
    }
}

/// The `small` profile's counts. A Deployment keeps up to 10 old
/// ReplicaSets; the bundle itself holds 2 ServiceAccounts (default, mtp-ci)
/// and 2 RoleBindings.
const SMALL_OBJECTS: ObjectCounts = ObjectCounts {
    config_maps: 50,
    secrets: 50,
    service_accounts: 20,
    jobs: 50,
    cron_jobs: 10,
    deployments: 20,
    replica_sets: 220,
    stateful_sets: 10,
    ingresses: 20,
    roles: 20,
    role_bindings: 20,
};

impl Default for ClusterProtection {
    /// What a profile stored before these limits existed gets: the `small`
    /// profile's.
    fn default() -> Self {
        ClusterProtection {
            ephemeral_storage_bytes: 4 * GI,
            default_request_ephemeral_storage_bytes: 64 * MI,
            default_limit_ephemeral_storage_bytes: GI,
            max_ephemeral_storage_bytes: 2 * GI,
            objects: SMALL_OBJECTS,
        }
    }
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
    /// Absent in profiles stored by earlier versions: those get the default.
    #[serde(default)]
    pub protection: ClusterProtection,
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
    protection: ClusterProtection,
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
        protection,
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
            ClusterProtection::default(),
        ),
        builtin(
            "medium",
            "A team environment: 4 CPU, 8Gi memory, 50Gi storage",
            [4000, 8 * GI, 50 * GI, 50, 20, 10],
            [8000, 16 * GI, 100 * GI, 100, 40, 20],
            [250, 256 * MI, 1000, GI, 2000, 4 * GI],
            ClusterProtection {
                ephemeral_storage_bytes: 10 * GI,
                default_request_ephemeral_storage_bytes: 128 * MI,
                default_limit_ephemeral_storage_bytes: 2 * GI,
                max_ephemeral_storage_bytes: 4 * GI,
                objects: SMALL_OBJECTS.times(2),
            },
        ),
        builtin(
            "large",
            "A staging environment: 8 CPU, 32Gi memory, 200Gi storage",
            [8000, 32 * GI, 200 * GI, 100, 50, 20],
            [16000, 64 * GI, 500 * GI, 200, 100, 40],
            [500, 512 * MI, 2000, 4 * GI, 4000, 16 * GI],
            ClusterProtection {
                ephemeral_storage_bytes: 20 * GI,
                default_request_ephemeral_storage_bytes: 256 * MI,
                default_limit_ephemeral_storage_bytes: 4 * GI,
                max_ephemeral_storage_bytes: 8 * GI,
                objects: SMALL_OBJECTS.times(4),
            },
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
        let e = &self.protection;
        if e.default_request_ephemeral_storage_bytes > e.default_limit_ephemeral_storage_bytes
            || e.default_limit_ephemeral_storage_bytes > e.max_ephemeral_storage_bytes
            || e.max_ephemeral_storage_bytes > e.ephemeral_storage_bytes
        {
            return Err(Error::invalid(
                "profile.protection.ephemeral_storage",
                "needs default request <= default limit <= per-container maximum <= environment total",
            ));
        }
        // The bundle itself needs some of these: the `default` and `mtp-ci`
        // ServiceAccounts, two RoleBindings, the `kube-root-ca.crt`
        // ConfigMap every pod's token volume reads; and a Deployment needs
        // a ReplicaSet to run anything.
        let o = &e.objects;
        for (field, value, least) in [
            ("service_accounts", o.service_accounts, 2),
            ("role_bindings", o.role_bindings, 2),
            ("config_maps", o.config_maps, 1),
            ("replica_sets", o.replica_sets, o.deployments),
        ] {
            if value < least {
                return Err(Error::invalid(
                    format!("profile.object_counts.{field}"),
                    format!(
                        "must be at least {least}: the environment's own objects (or its deployments) need that many"
                    ),
                ));
            }
        }
        if e.default_request_ephemeral_storage_bytes == 0 {
            return Err(Error::invalid(
                "profile.protection.default_request_ephemeral_storage",
                "must be positive: with a quota on ephemeral storage, a pod without a request would be refused",
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
    fn profiles_stored_before_cluster_protection_get_the_default() {
        let mut stored = serde_json::to_value(builtin_profiles().remove(1)).unwrap();
        stored.as_object_mut().unwrap().remove("protection");
        let read: Profile = serde_json::from_value(stored).unwrap();
        assert_eq!(read.protection, ClusterProtection::default());
        assert_eq!(builtin_profiles()[2].protection.objects.secrets, 200);
    }

    #[test]
    fn inconsistent_ephemeral_storage_is_refused() {
        let mut p = builtin_profiles().remove(0);
        p.name = "x".into();
        p.protection.max_ephemeral_storage_bytes = 100 * GI;
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("profile.protection.ephemeral_storage"),
            "{err}"
        );
        let mut p = builtin_profiles().remove(0);
        p.name = "x".into();
        p.protection.default_request_ephemeral_storage_bytes = 0;
        assert!(p.validate().is_err());
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
