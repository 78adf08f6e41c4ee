//! Domain values → wire messages, including the typed configuration an
//! agent renders mechanically into objects.

use mtp_core::access::Role;
use mtp_core::agents::{Agent, DesiredUpdate, NamespaceSpec};
use mtp_core::audit::AuditEvent;
use mtp_core::clusters::Cluster;
use mtp_core::environments::{Environment, EnvironmentStatus};
use mtp_core::profiles::{ObjectCounts, Profile};
use mtp_core::quantity::{format_bytes, format_cpu_millis};
use mtp_core::quota::EnvironmentQuota;
use mtp_core::tenants::Tenant;
use mtp_core::tokens::Token;
use mtp_proto::v1 as pb;

use super::timestamp;

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

fn role_to_pb(r: Role) -> pb::TokenRole {
    match r {
        Role::PlatformAdmin => pb::TokenRole::PlatformAdmin,
        Role::TenantOwner => pb::TokenRole::TenantOwner,
        Role::ReadOnly => pb::TokenRole::ReadOnly,
    }
}

/// Empty means "not given" for optional text filters.
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
        ..Default::default()
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

pub fn agent_to_pb(a: &Agent) -> pb::Agent {
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
        ..Default::default()
    }
}

/// The desired state for an agent: a snapshot, or the changes after the
/// revision it holds (empty when it is current, which tells it so).
pub fn desired_to_pb(update: &DesiredUpdate) -> pb::ControlMessage {
    use pb::control_message::Kind;
    let upserts = update.upserts.iter().map(namespace_config).collect();
    let kind = match update.since {
        None => Kind::Snapshot(pb::DesiredSnapshot {
            revision: update.revision,
            namespaces: upserts,
            ..Default::default()
        }),
        Some(from) => Kind::Changes(pb::DesiredChanges {
            from_revision: from,
            revision: update.revision,
            upserts,
            deletes: update.deletes.clone(),
            ..Default::default()
        }),
    };
    pb::ControlMessage { kind: Some(kind) }
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
