//! Wire types ↔ domain types. Validation happens here, once, as requests
//! become domain values; every error names the request field.

use chrono::{DateTime, Utc};
use mtp_core::access::Role;
use mtp_core::audit::AuditEvent;
use mtp_core::environments::{Environment, EnvironmentStatus};
use mtp_core::profiles::{
    ClusterProtection, ContainerLimits, NetworkOptions, ObjectCounts, Profile,
};
use mtp_core::quantity::{
    MAX_COUNT, format_bytes, format_cpu_millis, parse_bytes, parse_cpu_millis, validate_count,
};
use mtp_core::quota::{EnvironmentQuota, QuotaOverride, TenantQuota};
use mtp_core::tenants::Owners;
use mtp_core::{Error, Result};
use mtp_proto::v1 as pb;
use mtp_store::{AgentRecord, Cluster, NamespaceSpec, Tenant, Token};

/// Most environments one tenant may be allowed; beyond this is a typo.
const MAX_ENVIRONMENTS: u64 = 10_000;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be within 0..1e9"));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| Error::invalid(field, "is out of range"))
}

fn required<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| Error::invalid(field, "is required"))
}

pub fn tenant_quota(field: &str, q: &Option<pb::TenantQuota>) -> Result<TenantQuota> {
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

pub fn owners(o: Option<pb::Owners>) -> Owners {
    let o = o.unwrap_or_default();
    Owners {
        users: o.users,
        groups: o.groups,
        service_accounts: o.service_accounts,
    }
}

/// An environment's quota override: empty strings and unset counts keep the profile's value.
pub fn quota_override(field: &str, r: &Option<pb::Resources>) -> Result<QuotaOverride> {
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
pub fn environment_quota(field: &str, r: &Option<pb::Resources>) -> Result<EnvironmentQuota> {
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

pub fn profile(p: &Option<pb::Profile>) -> Result<Profile> {
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

fn object_counts_to_pb(o: &ObjectCounts) -> pb::ObjectCounts {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::ObjectCounts {
        config_maps: i(o.config_maps),
        secrets: i(o.secrets),
        service_accounts: i(o.service_accounts),
        jobs: i(o.jobs),
        cron_jobs: i(o.cron_jobs),
        deployments: i(o.deployments),
        replica_sets: i(o.replica_sets),
        stateful_sets: i(o.stateful_sets),
        ingresses: i(o.ingresses),
        roles: i(o.roles),
        role_bindings: i(o.role_bindings),
    }
}

pub fn role(field: &str, r: i32) -> Result<Role> {
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

fn role_to_pb(r: Role) -> pb::TokenRole {
    match r {
        Role::PlatformAdmin => pb::TokenRole::PlatformAdmin,
        Role::TenantOwner => pb::TokenRole::TenantOwner,
        Role::ReadOnly => pb::TokenRole::ReadOnly,
    }
}

/// Empty means "not given" for optional text filters.
pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

pub fn resources_to_pb(q: &EnvironmentQuota) -> pb::Resources {
    pb::Resources {
        cpu: format_cpu_millis(q.cpu_millis),
        memory: format_bytes(q.memory_bytes),
        storage: format_bytes(q.storage_bytes),
        pods: Some(q.pods as i64),
        services: Some(q.services as i64),
        persistent_volume_claims: Some(q.persistent_volume_claims as i64),
    }
}

pub fn tenant_to_pb(t: &Tenant) -> pb::Tenant {
    let q = &t.spec.quota;
    let u = &t.usage;
    pb::Tenant {
        name: t.spec.name.clone(),
        display_name: t.spec.display_name.clone(),
        owners: Some(pb::Owners {
            users: t.spec.owners.users.clone(),
            groups: t.spec.owners.groups.clone(),
            service_accounts: t.spec.owners.service_accounts.clone(),
        }),
        quota: Some(pb::TenantQuota {
            cpu: format_cpu_millis(q.cpu_millis),
            memory: format_bytes(q.memory_bytes),
            storage: format_bytes(q.storage_bytes),
            pods: q.pods as i64,
            max_environments: q.max_environments as i64,
        }),
        allowed_profiles: t.spec.allowed_profiles.clone(),
        usage: Some(pb::TenantUsage {
            cpu: format_cpu_millis(u.cpu_millis),
            memory: format_bytes(u.memory_bytes),
            storage: format_bytes(u.storage_bytes),
            pods: u.pods as i64,
            environments: u.environments as i64,
        }),
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
    }
}

pub fn profile_to_pb(p: &Profile) -> pb::Profile {
    let c = &p.container_limits;
    pb::Profile {
        name: p.name.clone(),
        description: p.description.clone(),
        builtin: p.builtin,
        quota: Some(resources_to_pb(&p.quota)),
        max_quota: Some(resources_to_pb(&p.max_quota)),
        container_limits: Some(pb::ContainerLimits {
            default_request_cpu: format_cpu_millis(c.default_request_cpu_millis),
            default_request_memory: format_bytes(c.default_request_memory_bytes),
            default_limit_cpu: format_cpu_millis(c.default_limit_cpu_millis),
            default_limit_memory: format_bytes(c.default_limit_memory_bytes),
            max_cpu: format_cpu_millis(c.max_cpu_millis),
            max_memory: format_bytes(c.max_memory_bytes),
            default_request_ephemeral_storage: format_bytes(
                p.protection.default_request_ephemeral_storage_bytes,
            ),
            default_limit_ephemeral_storage: format_bytes(
                p.protection.default_limit_ephemeral_storage_bytes,
            ),
            max_ephemeral_storage: format_bytes(p.protection.max_ephemeral_storage_bytes),
        }),
        network: Some(pb::NetworkOptions {
            allow_same_tenant: p.network.allow_same_tenant,
            allow_ingress_controller: p.network.allow_ingress_controller,
        }),
        ephemeral_storage: format_bytes(p.protection.ephemeral_storage_bytes),
        object_counts: Some(object_counts_to_pb(&p.protection.objects)),
    }
}

pub fn cluster_to_pb(c: &Cluster) -> pb::Cluster {
    pb::Cluster {
        name: c.name.clone(),
        labels: c.labels.clone().into_iter().collect(),
        ingress_namespace: c.ingress_namespace.clone(),
        revision: c.revision,
        create_time: Some(timestamp(c.create_time)),
    }
}

fn status_to_pb(s: EnvironmentStatus) -> pb::EnvironmentStatus {
    match s {
        EnvironmentStatus::Pending => pb::EnvironmentStatus::Pending,
        EnvironmentStatus::Applying => pb::EnvironmentStatus::Applying,
        EnvironmentStatus::Ready => pb::EnvironmentStatus::Ready,
        EnvironmentStatus::Failed => pb::EnvironmentStatus::Failed,
        EnvironmentStatus::Deleting => pb::EnvironmentStatus::Deleting,
        EnvironmentStatus::Deleted => pb::EnvironmentStatus::Deleted,
    }
}

pub fn environment_to_pb(e: &Environment) -> pb::Environment {
    pb::Environment {
        tenant: e.tenant.clone(),
        name: e.name.clone(),
        cluster: e.cluster.clone(),
        profile: e.profile.clone(),
        namespace: e.namespace.clone(),
        quota: Some(resources_to_pb(&e.quota)),
        status: status_to_pb(e.status) as i32,
        reason: e.reason.clone(),
        create_time: Some(timestamp(e.create_time)),
        expire_time: e.expire_time.map(timestamp),
        delete_time: e.delete_time.map(timestamp),
        revision: e.revision,
        applied_revision: e.applied_revision,
        ready_time: e.ready_time.map(timestamp),
    }
}

pub fn token_to_pb(t: &Token) -> pb::Token {
    pb::Token {
        id: t.id.clone(),
        description: t.description.clone(),
        role: role_to_pb(t.role) as i32,
        tenant: t.tenant.clone().unwrap_or_default(),
        create_time: Some(timestamp(t.create_time)),
        expire_time: t.expire_time.map(timestamp),
        revoke_time: t.revoke_time.map(timestamp),
        created_by: t.created_by.clone(),
    }
}

pub fn audit_event_to_pb(e: &AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: e.sequence,
        time: Some(timestamp(e.time)),
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        tenant: e.tenant.clone().unwrap_or_default(),
        request_id: e.request_id.clone(),
        details_json: e.details.clone(),
        previous_hash: e.previous_hash.clone(),
        hash: e.hash.clone(),
    }
}

pub fn agent_to_pb(a: &AgentRecord) -> pb::Agent {
    pb::Agent {
        id: a.id.clone(),
        cluster: a.cluster.clone(),
        node_name: a.node_name.clone(),
        applier: a.applier,
        connected: a.connected,
        last_seen_time: a.last_seen_time.map(timestamp),
        acknowledged_revision: a.acknowledged_revision,
        agent_version: a.agent_version.clone(),
        register_time: Some(timestamp(a.register_time)),
    }
}

/// The typed configuration an agent renders mechanically into objects.
pub fn namespace_config(n: &NamespaceSpec) -> pb::NamespaceConfig {
    let q = &n.quota;
    let c = &n.profile.container_limits;
    let e = &n.profile.protection;
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::NamespaceConfig {
        namespace: n.namespace.clone(),
        tenant: n.tenant.clone(),
        environment: n.environment.clone(),
        revision: n.revision,
        quota: Some(pb::NamespaceQuota {
            cpu_millis: i(q.cpu_millis),
            memory_bytes: i(q.memory_bytes),
            storage_bytes: i(q.storage_bytes),
            pods: i(q.pods),
            services: i(q.services),
            persistent_volume_claims: i(q.persistent_volume_claims),
            ephemeral_storage_bytes: i(e.ephemeral_storage_bytes),
            objects: Some(object_counts_to_pb(&e.objects)),
        }),
        container_defaults: Some(pb::ContainerDefaults {
            default_request_cpu_millis: i(c.default_request_cpu_millis),
            default_request_memory_bytes: i(c.default_request_memory_bytes),
            default_limit_cpu_millis: i(c.default_limit_cpu_millis),
            default_limit_memory_bytes: i(c.default_limit_memory_bytes),
            max_cpu_millis: i(c.max_cpu_millis),
            max_memory_bytes: i(c.max_memory_bytes),
            default_request_ephemeral_storage_bytes: i(e.default_request_ephemeral_storage_bytes),
            default_limit_ephemeral_storage_bytes: i(e.default_limit_ephemeral_storage_bytes),
            max_ephemeral_storage_bytes: i(e.max_ephemeral_storage_bytes),
        }),
        owners: Some(pb::TenantOwners {
            users: n.owners.users.clone(),
            groups: n.owners.groups.clone(),
            service_accounts: n.owners.service_accounts.clone(),
        }),
        network: Some(pb::NetworkConfig {
            allow_same_tenant: n.profile.network.allow_same_tenant,
            allow_ingress_controller: n.profile.network.allow_ingress_controller,
            ingress_namespace: n.ingress_namespace.clone(),
        }),
    }
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
