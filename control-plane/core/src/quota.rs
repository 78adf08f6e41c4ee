//! Quotas: what one environment may use, what a tenant may use in total, and
//! the admission rule between them (docs/architecture.md, invariant 1: the
//! sum of a tenant's environments never exceeds the tenant's quota).

use serde::{Deserialize, Serialize};

use crate::quantity::{format_bytes, format_cpu_millis};
use crate::{Error, Result};

/// The hard limits of one environment (its ResourceQuota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentQuota {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub pods: u64,
    pub services: u64,
    pub persistent_volume_claims: u64,
}

/// Per-field overrides of a profile's quota requested for one environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverride {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    pub pods: Option<u64>,
    pub services: Option<u64>,
    pub persistent_volume_claims: Option<u64>,
}

/// The ceiling on the sum of a tenant's live environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub pods: u64,
    pub max_environments: u64,
}

/// What a tenant's live environments take, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub pods: u64,
    pub environments: u64,
}

impl TenantUsage {
    pub fn add(&mut self, quota: &EnvironmentQuota) {
        self.cpu_millis += quota.cpu_millis;
        self.memory_bytes += quota.memory_bytes;
        self.storage_bytes += quota.storage_bytes;
        self.pods += quota.pods;
        self.environments += 1;
    }
}

impl EnvironmentQuota {
    /// Applies `overrides`, each bounded by `max` (the profile's ceiling).
    pub fn with_overrides(
        &self,
        overrides: &QuotaOverride,
        max: &EnvironmentQuota,
    ) -> Result<Self> {
        let pick =
            |field: &str, base: u64, over: Option<u64>, ceiling: u64, show: fn(u64) -> String| {
                match over {
                    None => Ok(base),
                    Some(v) if v > ceiling => Err(Error::invalid(
                        format!("quota_override.{field}"),
                        format!(
                            "{} is above the profile's maximum of {}",
                            show(v),
                            show(ceiling)
                        ),
                    )),
                    Some(v) => Ok(v),
                }
            };
        let count = |v: u64| v.to_string();
        Ok(EnvironmentQuota {
            cpu_millis: pick(
                "cpu",
                self.cpu_millis,
                overrides.cpu_millis,
                max.cpu_millis,
                format_cpu_millis,
            )?,
            memory_bytes: pick(
                "memory",
                self.memory_bytes,
                overrides.memory_bytes,
                max.memory_bytes,
                format_bytes,
            )?,
            storage_bytes: pick(
                "storage",
                self.storage_bytes,
                overrides.storage_bytes,
                max.storage_bytes,
                format_bytes,
            )?,
            pods: pick("pods", self.pods, overrides.pods, max.pods, count)?,
            services: pick(
                "services",
                self.services,
                overrides.services,
                max.services,
                count,
            )?,
            persistent_volume_claims: pick(
                "persistent_volume_claims",
                self.persistent_volume_claims,
                overrides.persistent_volume_claims,
                max.persistent_volume_claims,
                count,
            )?,
        })
    }

    /// True when every limit of `self` is at most the matching one of `other`.
    pub fn fits_within(&self, other: &EnvironmentQuota) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_bytes <= other.memory_bytes
            && self.storage_bytes <= other.storage_bytes
            && self.pods <= other.pods
            && self.services <= other.services
            && self.persistent_volume_claims <= other.persistent_volume_claims
    }
}

impl TenantQuota {
    /// Decides whether one more environment with `request` fits beside `usage`.
    /// On refusal, the message names every resource that ran out and by how much.
    pub fn admit(
        &self,
        tenant: &str,
        usage: &TenantUsage,
        request: &EnvironmentQuota,
    ) -> Result<()> {
        let mut short = Vec::new();
        let mut check = |name: &str, used: u64, want: u64, limit: u64, show: fn(u64) -> String| {
            let needed = used.saturating_add(want);
            if needed > limit {
                short.push(format!(
                    "{name}: needs {} but only {} of {} is left (short by {})",
                    show(want),
                    show(limit.saturating_sub(used)),
                    show(limit),
                    show(needed - limit)
                ));
            }
        };
        let count = |v: u64| v.to_string();
        check(
            "environments",
            usage.environments,
            1,
            self.max_environments,
            count,
        );
        check(
            "cpu",
            usage.cpu_millis,
            request.cpu_millis,
            self.cpu_millis,
            format_cpu_millis,
        );
        check(
            "memory",
            usage.memory_bytes,
            request.memory_bytes,
            self.memory_bytes,
            format_bytes,
        );
        check(
            "storage",
            usage.storage_bytes,
            request.storage_bytes,
            self.storage_bytes,
            format_bytes,
        );
        check("pods", usage.pods, request.pods, self.pods, count);
        if short.is_empty() {
            Ok(())
        } else {
            Err(Error::QuotaExceeded(format!(
                "tenant {tenant:?} quota exceeded: {}",
                short.join("; ")
            )))
        }
    }

    /// A quota may shrink below current usage only if the caller accepts that no
    /// new environment fits; we refuse it so a tenant is never silently over quota.
    pub fn covers(&self, usage: &TenantUsage) -> Result<()> {
        let mut over = Vec::new();
        if usage.environments > self.max_environments {
            over.push(format!(
                "max_environments {} < {} live environments",
                self.max_environments, usage.environments
            ));
        }
        if usage.cpu_millis > self.cpu_millis {
            over.push(format!(
                "cpu {} < {} in use",
                format_cpu_millis(self.cpu_millis),
                format_cpu_millis(usage.cpu_millis)
            ));
        }
        if usage.memory_bytes > self.memory_bytes {
            over.push(format!(
                "memory {} < {} in use",
                format_bytes(self.memory_bytes),
                format_bytes(usage.memory_bytes)
            ));
        }
        if usage.storage_bytes > self.storage_bytes {
            over.push(format!(
                "storage {} < {} in use",
                format_bytes(self.storage_bytes),
                format_bytes(usage.storage_bytes)
            ));
        }
        if usage.pods > self.pods {
            over.push(format!("pods {} < {} in use", self.pods, usage.pods));
        }
        if over.is_empty() {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "new quota is below what the tenant's environments already hold: {}",
                over.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(cpu: u64, mem: u64) -> EnvironmentQuota {
        EnvironmentQuota {
            cpu_millis: cpu,
            memory_bytes: mem,
            storage_bytes: 1,
            pods: 1,
            services: 1,
            persistent_volume_claims: 1,
        }
    }

    fn tenant(cpu: u64, mem: u64, envs: u64) -> TenantQuota {
        TenantQuota {
            cpu_millis: cpu,
            memory_bytes: mem,
            storage_bytes: 1 << 40,
            pods: 1000,
            max_environments: envs,
        }
    }

    #[test]
    fn refusal_names_the_resource_and_the_shortfall() {
        let mut usage = TenantUsage::default();
        usage.add(&env(1500, 1 << 30));
        let err = tenant(2000, 4 << 30, 10)
            .admit("team-a", &usage, &env(1000, 1 << 30))
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::QuotaExceeded(_)));
        assert!(
            msg.contains("cpu: needs 1 but only 500m of 2 is left (short by 500m)"),
            "{msg}"
        );
        assert!(!msg.contains("memory"), "{msg}");
    }

    #[test]
    fn max_environments_is_a_quota_too() {
        let mut usage = TenantUsage::default();
        usage.add(&env(1, 1));
        let err = tenant(10_000, 1 << 40, 1)
            .admit("t", &usage, &env(1, 1))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("environments: needs 1 but only 0 of 1 is left"),
            "{err}"
        );
    }

    #[test]
    fn overrides_are_bounded_by_the_profile() {
        let base = env(1000, 1 << 30);
        let max = env(2000, 2 << 30);
        let ok = base
            .with_overrides(
                &QuotaOverride {
                    cpu_millis: Some(2000),
                    ..Default::default()
                },
                &max,
            )
            .unwrap();
        assert_eq!(ok.cpu_millis, 2000);
        assert_eq!(ok.memory_bytes, 1 << 30);
        let err = base
            .with_overrides(
                &QuotaOverride {
                    memory_bytes: Some(3 << 30),
                    ..Default::default()
                },
                &max,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota_override.memory: 3Gi is above the profile's maximum of 2Gi"
        );
    }

    proptest! {
        /// Admitting greedily never lets the sum pass the tenant's quota.
        #[test]
        fn admitted_sum_never_exceeds_quota(requests in prop::collection::vec((1u64..5000, 1u64..(8u64 << 30)), 0..60)) {
            let quota = tenant(20_000, 64 << 30, 25);
            let mut usage = TenantUsage::default();
            for (cpu, mem) in requests {
                let request = env(cpu, mem);
                if quota.admit("t", &usage, &request).is_ok() {
                    usage.add(&request);
                }
                prop_assert!(usage.cpu_millis <= quota.cpu_millis);
                prop_assert!(usage.memory_bytes <= quota.memory_bytes);
                prop_assert!(usage.environments <= quota.max_environments);
            }
        }
    }
}
