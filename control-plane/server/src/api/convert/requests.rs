//! Requests → validated domain values. Each request is checked here, once,
//! as it becomes the value the store is given; the store trusts it.

use mtp_core::access::Role;
use mtp_core::agents::{AgentRegistration, NamespaceReport};
use mtp_core::claims::{AckClaim, DriftClaim, HeldPrune};
use mtp_core::clusters::{DEFAULT_INGRESS_NAMESPACE, NewCluster};
use mtp_core::environments::NewEnvironment;
use mtp_core::names::{validate_environment_name, validate_object_name, validate_tenant_name};
use mtp_core::profiles::{
    ClusterProtection, ContainerLimits, NetworkOptions, ObjectCounts, Profile,
};
use mtp_core::quantity::{MAX_COUNT, parse_bytes, parse_cpu_millis, validate_count};
use mtp_core::quota::{EnvironmentQuota, QuotaOverride, TenantQuota};
use mtp_core::tenants::{Owners, TenantSpec, TenantUpdate};
use mtp_core::tokens::NewToken;
use mtp_core::usage::{GapClaim, NamespaceWindow, UsageAmounts, UsageBatchClaim, WindowClaim};
use mtp_core::{Error, Result};
use mtp_proto::v1 as pb;

use super::{from_timestamp, non_empty};

/// Most environments one tenant may be allowed; beyond this is a typo.
const MAX_ENVIRONMENTS: u64 = 10_000;

fn required<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| Error::invalid(field, "is required"))
}

fn tenant_quota(field: &str, q: &Option<pb::TenantQuota>) -> Result<TenantQuota> {
    let q = required(field, q)?;
    let f = |name: &str| format!("{field}.{name}");
    Ok(TenantQuota {
        cpu_millis: parse_cpu_millis(&f("cpu"), &q.cpu)?,
        memory_bytes: parse_bytes(&f("memory"), &q.memory)?,
        storage_bytes: parse_bytes(&f("storage"), &q.storage)?,
        pods: validate_count(&f("pods"), q.pods, MAX_COUNT)?,
        max_environments: validate_count(
            &f("max_environments"),
            q.max_environments,
            MAX_ENVIRONMENTS,
        )?,
    })
}

fn owners(o: Option<pb::Owners>) -> Owners {
    let o = o.unwrap_or_default();
    Owners {
        users: o.users,
        groups: o.groups,
        service_accounts: o.service_accounts,
    }
}

/// An environment's quota override: empty strings and unset counts keep the profile's value.
fn quota_override(field: &str, r: &Option<pb::Resources>) -> Result<QuotaOverride> {
    let Some(r) = r else {
        return Ok(QuotaOverride::default());
    };
    let f = |name: &str| format!("{field}.{name}");
    let opt_q = |name: &str, v: &str, parse: fn(&str, &str) -> Result<u64>| {
        if v.is_empty() {
            Ok(None)
        } else {
            parse(&f(name), v).map(Some)
        }
    };
    let opt_n = |name: &str, v: Option<i64>| {
        v.map(|n| validate_count(&f(name), n, MAX_COUNT))
            .transpose()
    };
    Ok(QuotaOverride {
        cpu_millis: opt_q("cpu", &r.cpu, parse_cpu_millis)?,
        memory_bytes: opt_q("memory", &r.memory, parse_bytes)?,
        storage_bytes: opt_q("storage", &r.storage, parse_bytes)?,
        pods: opt_n("pods", r.pods)?,
        services: opt_n("services", r.services)?,
        persistent_volume_claims: opt_n("persistent_volume_claims", r.persistent_volume_claims)?,
    })
}

/// A complete environment quota (for profile definitions): every field required.
fn environment_quota(field: &str, r: &Option<pb::Resources>) -> Result<EnvironmentQuota> {
    let r = required(field, r)?;
    let f = |name: &str| format!("{field}.{name}");
    let n = |name: &str, v: Option<i64>| {
        v.ok_or_else(|| Error::invalid(f(name), "is required"))
            .and_then(|n| validate_count(&f(name), n, MAX_COUNT))
    };
    Ok(EnvironmentQuota {
        cpu_millis: parse_cpu_millis(&f("cpu"), &r.cpu)?,
        memory_bytes: parse_bytes(&f("memory"), &r.memory)?,
        storage_bytes: parse_bytes(&f("storage"), &r.storage)?,
        pods: n("pods", r.pods)?,
        services: n("services", r.services)?,
        persistent_volume_claims: n("persistent_volume_claims", r.persistent_volume_claims)?,
    })
}

fn profile(p: &Option<pb::Profile>) -> Result<Profile> {
    let p = required("profile", p)?;
    let c = required("profile.container_limits", &p.container_limits)?;
    let f = |name: &str| format!("profile.container_limits.{name}");
    let network = p.network.unwrap_or(pb::NetworkOptions {
        allow_same_tenant: false,
        allow_ingress_controller: true,
    });
    Ok(Profile {
        name: p.name.clone(),
        description: p.description.clone(),
        builtin: false,
        quota: environment_quota("profile.quota", &p.quota)?,
        max_quota: environment_quota("profile.max_quota", &p.max_quota)?,
        container_limits: ContainerLimits {
            default_request_cpu_millis: parse_cpu_millis(
                &f("default_request_cpu"),
                &c.default_request_cpu,
            )?,
            default_request_memory_bytes: parse_bytes(
                &f("default_request_memory"),
                &c.default_request_memory,
            )?,
            default_limit_cpu_millis: parse_cpu_millis(
                &f("default_limit_cpu"),
                &c.default_limit_cpu,
            )?,
            default_limit_memory_bytes: parse_bytes(
                &f("default_limit_memory"),
                &c.default_limit_memory,
            )?,
            max_cpu_millis: parse_cpu_millis(&f("max_cpu"), &c.max_cpu)?,
            max_memory_bytes: parse_bytes(&f("max_memory"), &c.max_memory)?,
        },
        network: NetworkOptions {
            allow_same_tenant: network.allow_same_tenant,
            allow_ingress_controller: network.allow_ingress_controller,
        },
        protection: protection(p, c)?,
    })
}

/// Ephemeral storage and object counts of a profile being created; what is
/// left empty comes from the default (the `small` profile's).
fn protection(p: &pb::Profile, c: &pb::ContainerLimits) -> Result<ClusterProtection> {
    let d = ClusterProtection::default();
    let bytes = |field: &str, value: &str, default: u64| {
        if value.is_empty() {
            Ok(default)
        } else {
            parse_bytes(field, value)
        }
    };
    let objects = match &p.object_counts {
        None => d.objects,
        Some(o) => {
            let n = |name: &str, v: i64| {
                validate_count(&format!("profile.object_counts.{name}"), v, MAX_COUNT)
            };
            ObjectCounts {
                config_maps: n("config_maps", o.config_maps)?,
                secrets: n("secrets", o.secrets)?,
                service_accounts: n("service_accounts", o.service_accounts)?,
                jobs: n("jobs", o.jobs)?,
                cron_jobs: n("cron_jobs", o.cron_jobs)?,
                deployments: n("deployments", o.deployments)?,
                replica_sets: n("replica_sets", o.replica_sets)?,
                stateful_sets: n("stateful_sets", o.stateful_sets)?,
                ingresses: n("ingresses", o.ingresses)?,
                roles: n("roles", o.roles)?,
                role_bindings: n("role_bindings", o.role_bindings)?,
            }
        }
    };
    let f = |name: &str| format!("profile.container_limits.{name}");
    Ok(ClusterProtection {
        ephemeral_storage_bytes: bytes(
            "profile.ephemeral_storage",
            &p.ephemeral_storage,
            d.ephemeral_storage_bytes,
        )?,
        default_request_ephemeral_storage_bytes: bytes(
            &f("default_request_ephemeral_storage"),
            &c.default_request_ephemeral_storage,
            d.default_request_ephemeral_storage_bytes,
        )?,
        default_limit_ephemeral_storage_bytes: bytes(
            &f("default_limit_ephemeral_storage"),
            &c.default_limit_ephemeral_storage,
            d.default_limit_ephemeral_storage_bytes,
        )?,
        max_ephemeral_storage_bytes: bytes(
            &f("max_ephemeral_storage"),
            &c.max_ephemeral_storage,
            d.max_ephemeral_storage_bytes,
        )?,
        objects,
    })
}

fn role(field: &str, r: i32) -> Result<Role> {
    match pb::TokenRole::try_from(r) {
        Ok(pb::TokenRole::PlatformAdmin) => Ok(Role::PlatformAdmin),
        Ok(pb::TokenRole::TenantOwner) => Ok(Role::TenantOwner),
        Ok(pb::TokenRole::ReadOnly) => Ok(Role::ReadOnly),
        _ => Err(Error::invalid(
            field,
            "must be platform-admin, tenant-owner or read-only",
        )),
    }
}

/// A domain value built from the request asking for it, validated on the
/// way. (A trait of our own: `TryFrom` between the proto and the core crate's
/// types could be implemented by neither of those crates nor by this one.)
pub trait FromRequest<R>: Sized {
    fn from_request(request: R) -> Result<Self>;
}

impl FromRequest<pb::CreateTenantRequest> for TenantSpec {
    fn from_request(r: pb::CreateTenantRequest) -> Result<Self> {
        let spec = TenantSpec {
            name: r.name,
            display_name: r.display_name,
            owners: owners(r.owners),
            quota: tenant_quota("quota", &r.quota)?,
            allowed_profiles: r.allowed_profiles,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl FromRequest<pb::UpdateTenantRequest> for TenantUpdate {
    fn from_request(r: pb::UpdateTenantRequest) -> Result<Self> {
        let update = TenantUpdate {
            display_name: r.display_name,
            owners: r.owners.map(|o| owners(Some(o))),
            quota: if r.quota.is_some() {
                Some(tenant_quota("quota", &r.quota)?)
            } else {
                None
            },
            allowed_profiles: r.update_allowed_profiles.then_some(r.allowed_profiles),
        };
        update.validate()?;
        Ok(update)
    }
}

impl FromRequest<pb::CreateProfileRequest> for Profile {
    fn from_request(r: pb::CreateProfileRequest) -> Result<Self> {
        let p = profile(&r.profile)?;
        p.validate()?;
        Ok(p)
    }
}

impl FromRequest<pb::CreateClusterRequest> for NewCluster {
    fn from_request(r: pb::CreateClusterRequest) -> Result<Self> {
        let new = NewCluster {
            name: r.name,
            labels: r.labels.into_iter().collect(),
            ingress_namespace: non_empty(r.ingress_namespace)
                .unwrap_or_else(|| DEFAULT_INGRESS_NAMESPACE.to_owned()),
        };
        new.validate()?;
        Ok(new)
    }
}

impl FromRequest<pb::CreateEnvironmentRequest> for NewEnvironment {
    fn from_request(r: pb::CreateEnvironmentRequest) -> Result<Self> {
        validate_tenant_name("tenant", &r.tenant)?;
        validate_environment_name("name", &r.name)?;
        validate_object_name("cluster", &r.cluster)?;
        validate_object_name("profile", &r.profile)?;
        let expire_time = r
            .expire_time
            .as_ref()
            .map(|t| from_timestamp("expire_time", t))
            .transpose()?;
        if expire_time.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(Error::invalid("expire_time", "must be in the future"));
        }
        Ok(NewEnvironment {
            quota_override: quota_override("quota_override", &r.quota_override)?,
            tenant: r.tenant,
            name: r.name,
            cluster: r.cluster,
            profile: r.profile,
            expire_time,
        })
    }
}

/// Decodes the fields; the handler calls `NewToken::validate` once the caller
/// is known to be allowed to mint this token.
impl FromRequest<pb::CreateTokenRequest> for NewToken {
    fn from_request(r: pb::CreateTokenRequest) -> Result<Self> {
        let new = NewToken {
            role: role("role", r.role)?,
            tenant: non_empty(r.tenant),
            description: r.description,
            expire_time: r
                .expire_time
                .as_ref()
                .map(|t| from_timestamp("expire_time", t))
                .transpose()?,
        };
        Ok(new)
    }
}

impl FromRequest<pb::RegisterAgentRequest> for AgentRegistration {
    fn from_request(r: pb::RegisterAgentRequest) -> Result<Self> {
        AgentRegistration::new(r.join_token, &r.node_name, r.agent_version)
    }
}

/// Most audit events one list call returns.
const MAX_AUDIT_PAGE: i32 = 1000;

/// The page size of an audit list call.
pub fn audit_limit(limit: i32) -> Result<i64> {
    if !(0..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 0 and 1000"));
    }
    Ok(i64::from(limit))
}

/// An acknowledgement, checked whole (revision, size, every text). Outcomes
/// this control plane does not know (a newer agent) are skipped, not
/// refused: the ack itself still counts.
impl FromRequest<pb::RevisionAck> for AckClaim {
    fn from_request(ack: pb::RevisionAck) -> Result<Self> {
        let results = ack
            .results
            .into_iter()
            .filter_map(|r| {
                let report = match pb::NamespaceOutcome::try_from(r.outcome) {
                    Ok(pb::NamespaceOutcome::Verified) => NamespaceReport::Verified,
                    Ok(pb::NamespaceOutcome::Failed) => NamespaceReport::Failed(r.reason),
                    Ok(pb::NamespaceOutcome::Deleted) => NamespaceReport::Deleted,
                    Ok(pb::NamespaceOutcome::Superseded) => NamespaceReport::Superseded {
                        live_revision: r.live_revision,
                    },
                    _ => return None,
                };
                Some((r.namespace, report))
            })
            .collect();
        AckClaim::new(ack.revision, results, ack.sequence)
    }
}

impl FromRequest<pb::DriftReport> for DriftClaim {
    fn from_request(d: pb::DriftReport) -> Result<Self> {
        DriftClaim::new(d.namespace, d.object, d.description, d.repaired)
    }
}

impl FromRequest<pb::PruneHeld> for HeldPrune {
    fn from_request(p: pb::PruneHeld) -> Result<Self> {
        HeldPrune::new(p.revision, p.would_delete, p.managed, p.sample)
    }
}

/// An agent's usage batch, validated against the control plane's clock:
/// windows before `oldest` are past the raw retention.
pub fn usage_batch(
    b: pb::UsageBatch,
    now: chrono::DateTime<chrono::Utc>,
    oldest: chrono::DateTime<chrono::Utc>,
) -> Result<UsageBatchClaim> {
    let missing = |field: String| Error::invalid(field, "is required");
    let windows = b
        .windows
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let field = format!("windows[{i}].start");
            let start = from_timestamp(
                &field,
                w.start.as_ref().ok_or_else(|| missing(field.clone()))?,
            )?;
            Ok(WindowClaim {
                start,
                duration_seconds: w.duration_seconds,
                covered_seconds: w.covered_seconds,
                node_cpu_millis: w.node_cpu_millis,
                node_memory_bytes: w.node_memory_bytes,
                namespaces: w
                    .namespaces
                    .into_iter()
                    .map(|n| NamespaceWindow {
                        namespace: n.namespace,
                        amounts: UsageAmounts {
                            cpu_requested_core_nanos: n.cpu_requested_core_nanos,
                            cpu_used_core_nanos: n.cpu_used_core_nanos,
                            cpu_billed_core_nanos: n.cpu_billed_core_nanos,
                            memory_requested_byte_seconds: n.memory_requested_byte_seconds,
                            memory_used_byte_seconds: n.memory_used_byte_seconds,
                            memory_billed_byte_seconds: n.memory_billed_byte_seconds,
                            storage_requested_byte_seconds: n.storage_requested_byte_seconds,
                            storage_used_byte_seconds: n.storage_used_byte_seconds,
                            storage_billed_byte_seconds: n.storage_billed_byte_seconds,
                            network_receive_bytes: n.network_receive_bytes,
                            network_transmit_bytes: n.network_transmit_bytes,
                            container_seconds: n.container_seconds,
                        },
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let gaps = b
        .gaps
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let start = format!("gaps[{i}].start");
            let end = format!("gaps[{i}].end");
            Ok(GapClaim {
                start: from_timestamp(
                    &start,
                    g.start.as_ref().ok_or_else(|| missing(start.clone()))?,
                )?,
                end: from_timestamp(&end, g.end.as_ref().ok_or_else(|| missing(end.clone()))?)?,
                reason: g.reason,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    UsageBatchClaim::new(b.spool_epoch, b.sequence, windows, gaps, now, oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_errors_name_the_nested_field() {
        let q = Some(pb::TenantQuota {
            cpu: "4".into(),
            memory: "-1Gi".into(),
            storage: "1Gi".into(),
            pods: 1,
            max_environments: 1,
        });
        let err = tenant_quota("quota", &q).unwrap_err();
        assert!(err.to_string().starts_with("quota.memory: "), "{err}");
        assert!(
            tenant_quota("quota", &None)
                .unwrap_err()
                .to_string()
                .starts_with("quota: is required")
        );
        let q = Some(pb::TenantQuota {
            cpu: "4".into(),
            memory: "1Gi".into(),
            storage: "1Gi".into(),
            pods: 1,
            max_environments: 0,
        });
        assert!(
            tenant_quota("quota", &q)
                .unwrap_err()
                .to_string()
                .starts_with("quota.max_environments")
        );
    }

    #[test]
    fn acknowledged_outcomes_decode_and_unknown_ones_are_skipped() {
        let result = |namespace: &str, outcome: i32| pb::NamespaceResult {
            live_revision: 7,
            namespace: namespace.into(),
            outcome,
            reason: "quota rejected".into(),
        };
        let ack = pb::RevisionAck {
            revision: 5,
            sequence: 2,
            results: vec![
                result("a", pb::NamespaceOutcome::Verified as i32),
                result("b", pb::NamespaceOutcome::Failed as i32),
                result("c", pb::NamespaceOutcome::Deleted as i32),
                result("d", pb::NamespaceOutcome::Superseded as i32),
                result("e", 999),
            ],
        };
        let decoded = AckClaim::from_request(ack.clone()).unwrap();
        assert_eq!((decoded.revision, decoded.sequence), (5, 2));
        assert_eq!(
            decoded.results,
            [
                ("a".to_owned(), NamespaceReport::Verified),
                (
                    "b".to_owned(),
                    NamespaceReport::Failed("quota rejected".into())
                ),
                ("c".to_owned(), NamespaceReport::Deleted),
                (
                    "d".to_owned(),
                    NamespaceReport::Superseded { live_revision: 7 }
                ),
            ]
        );
        let mut hostile = ack;
        hostile.results[1].reason = "x\0y".into();
        let err = AckClaim::from_request(hostile).unwrap_err();
        assert_eq!(err.to_string(), "ack.results.reason: must not contain NUL");
    }

    #[test]
    fn empty_override_fields_keep_the_profile_value() {
        let r = Some(pb::Resources {
            cpu: "2".into(),
            ..Default::default()
        });
        let o = quota_override("quota_override", &r).unwrap();
        assert_eq!(o.cpu_millis, Some(2000));
        assert_eq!(o.memory_bytes, None);
        let r = Some(pb::Resources {
            pods: Some(-3),
            ..Default::default()
        });
        assert!(
            quota_override("quota_override", &r)
                .unwrap_err()
                .to_string()
                .starts_with("quota_override.pods")
        );
    }
}
