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
use prost::Message;

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
        id: c.id.to_string(),
        applier_agent_id: c.applier_agent_id.clone().unwrap_or_default(),
        applier_epoch: c.applier_epoch,
        held_prune: c.held_prune.as_ref().map(|h| pb::HeldPrune {
            revision: h.revision,
            would_delete: h.would_delete,
            managed: h.managed,
            sample: h.sample.clone(),
            hold_time: h.hold_time.map(timestamp),
            confirmed_revision: h.confirmed_revision,
        }),
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
        certificate_expire_time: a.certificate_expire_time.map(timestamp),
        revoke_time: a.revoke_time.map(timestamp),
    }
}

/// Encoded bytes a page of desired state aims to stay under. A page holds at
/// least one namespace, and one namespace with its tenant's owners at their
/// maximum is about 70 KiB, so no page comes near the agent's decode limit.
pub const DESIRED_PAGE_BYTES: usize = 512 * 1024;

/// The desired state for an agent, as pages: a snapshot, or the changes
/// after the revision it holds (one empty page when it is current, which
/// tells it so). Every page but the last says `more`; each carries the
/// owners of the tenants of its namespaces once, and its namespaces none.
pub fn desired_pages(update: &DesiredUpdate, page_bytes: usize) -> Vec<pb::ControlMessage> {
    let mut pages = Vec::new();
    let mut page = Page::default();
    for spec in &update.upserts {
        let mut config = namespace_config(spec);
        config.owners = None;
        let tenant = (!page.tenants.contains_key(&spec.tenant)).then(|| pb::TenantConfig {
            tenant: spec.tenant.clone(),
            owners: Some(owners_to_pb(&spec.owners)),
        });
        let size = config.encoded_len() + tenant.as_ref().map_or(0, |t| t.encoded_len()) + 8;
        if !page.is_empty() && page.bytes + size > page_bytes {
            pages.push(std::mem::take(&mut page));
            // The tenant travels again in the next page, once.
            return_tenant(&mut page, spec);
        } else if let Some(t) = tenant {
            page.tenants.insert(spec.tenant.clone(), t);
        }
        page.bytes += size;
        page.upserts.push(config);
    }
    for namespace in &update.deletes {
        let size = namespace.len() + 4;
        if !page.is_empty() && page.bytes + size > page_bytes {
            pages.push(std::mem::take(&mut page));
        }
        page.bytes += size;
        page.deletes.push(namespace.clone());
    }
    pages.push(page);
    let last = pages.len() - 1;
    pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| page.into_message(update, i < last))
        .collect()
}

fn return_tenant(page: &mut Page, spec: &NamespaceSpec) {
    let tenant = pb::TenantConfig {
        tenant: spec.tenant.clone(),
        owners: Some(owners_to_pb(&spec.owners)),
    };
    page.bytes += tenant.encoded_len();
    page.tenants.insert(spec.tenant.clone(), tenant);
}

#[derive(Default)]
struct Page {
    upserts: Vec<pb::NamespaceConfig>,
    deletes: Vec<String>,
    tenants: std::collections::BTreeMap<String, pb::TenantConfig>,
    bytes: usize,
}

impl Page {
    fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }

    fn into_message(self, update: &DesiredUpdate, more: bool) -> pb::ControlMessage {
        use pb::control_message::Kind;
        let tenants = self.tenants.into_values().collect();
        let kind = match update.since {
            None => Kind::Snapshot(pb::DesiredSnapshot {
                revision: update.revision,
                namespaces: self.upserts,
                tenants,
                more,
            }),
            Some(from) => Kind::Changes(pb::DesiredChanges {
                from_revision: from,
                revision: update.revision,
                upserts: self.upserts,
                deletes: self.deletes,
                tenants,
                more,
            }),
        };
        pb::ControlMessage { kind: Some(kind) }
    }
}

fn owners_to_pb(o: &mtp_core::tenants::Owners) -> pb::TenantOwners {
    pb::TenantOwners {
        users: o.users.clone(),
        groups: o.groups.clone(),
        service_accounts: o.service_accounts.clone(),
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
        owners: Some(owners_to_pb(&n.owners)),
        network: Some(pb::NetworkConfig {
            allow_same_tenant: n.profile.network.allow_same_tenant,
            allow_ingress_controller: n.profile.network.allow_ingress_controller,
            ingress_namespace: n.ingress_namespace.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use mtp_core::profiles::builtin_profiles;
    use mtp_core::quota::EnvironmentQuota;
    use mtp_core::tenants::{MAX_OWNERS, Owners};
    use pb::control_message::Kind;

    use super::*;

    fn spec(tenant: &str, i: usize, owners: &Owners) -> NamespaceSpec {
        NamespaceSpec {
            namespace: format!("{tenant}-env-{i}"),
            tenant: tenant.into(),
            environment: format!("env-{i}"),
            revision: i as i64 + 1,
            quota: EnvironmentQuota {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                storage_bytes: 1 << 30,
                pods: 10,
                services: 5,
                persistent_volume_claims: 5,
            },
            profile: builtin_profiles().remove(0),
            owners: owners.clone(),
            ingress_namespace: "kube-system".into(),
        }
    }

    /// The biggest owners a tenant may have: 100 of each, names at 256 bytes.
    fn most_owners() -> Owners {
        let long = |c: char, i: usize| format!("{i:03}{}", c.to_string().repeat(253));
        Owners {
            users: (0..MAX_OWNERS).map(|i| long('u', i)).collect(),
            groups: (0..MAX_OWNERS).map(|i| long('g', i)).collect(),
            service_accounts: (0..MAX_OWNERS)
                .map(|i| format!("ns-{i}/{}", "s".repeat(240)))
                .collect(),
        }
    }

    /// Checks every page is bounded, `more` is set on all but the last, each
    /// tenant's owners travel once per page and never on a namespace, and
    /// returns the namespaces in the order sent.
    fn check_pages(update: &DesiredUpdate) -> (Vec<String>, usize) {
        let pages = desired_pages(update, DESIRED_PAGE_BYTES);
        let last = pages.len() - 1;
        let mut namespaces = Vec::new();
        for (i, page) in pages.iter().enumerate() {
            assert!(
                page.encoded_len() <= DESIRED_PAGE_BYTES + 80 * 1024,
                "page {i}: {} bytes",
                page.encoded_len()
            );
            let Some(Kind::Snapshot(s)) = &page.kind else {
                panic!("a snapshot page")
            };
            assert_eq!(s.more, i < last, "page {i} of {last}");
            assert_eq!(s.revision, update.revision);
            let mut tenants: Vec<&str> = s.tenants.iter().map(|t| t.tenant.as_str()).collect();
            let all = tenants.len();
            tenants.dedup();
            assert_eq!(tenants.len(), all, "a tenant once per page");
            for n in &s.namespaces {
                assert!(n.owners.is_none(), "owners travel with the tenant");
                assert!(
                    tenants.contains(&n.tenant.as_str()),
                    "the page names {}'s owners",
                    n.tenant
                );
                namespaces.push(n.namespace.clone());
            }
        }
        (namespaces, pages.len())
    }

    #[test]
    fn fifty_thousand_environments_go_in_bounded_pages() {
        let owners = Owners {
            users: vec!["alice@example.com".into()],
            ..Owners::default()
        };
        let upserts: Vec<NamespaceSpec> = (0..50_000)
            .map(|i| spec(&format!("team-{}", i % 40), i, &owners))
            .collect();
        let update = DesiredUpdate {
            since: None,
            revision: 50_000,
            upserts: upserts.clone(),
            deletes: vec![],
        };
        let (sent, pages) = check_pages(&update);
        let expected: Vec<String> = upserts.iter().map(|u| u.namespace.clone()).collect();
        assert_eq!(sent, expected);
        assert!(pages > 10, "{pages} pages");
    }

    #[test]
    fn a_tenant_with_the_most_owners_sends_them_once_per_page() {
        let owners = most_owners();
        let upserts: Vec<NamespaceSpec> = (0..300).map(|i| spec("big", i, &owners)).collect();
        let update = DesiredUpdate {
            since: None,
            revision: 300,
            upserts,
            deletes: vec![],
        };
        let (sent, pages) = check_pages(&update);
        assert_eq!(sent.len(), 300);
        // Owners once per page, not once per namespace: a few pages at most.
        assert!(pages <= 3, "{pages} pages");
    }

    #[test]
    fn changes_page_their_deletions_and_an_empty_update_is_one_page() {
        let update = DesiredUpdate {
            since: Some(3),
            revision: 9,
            upserts: vec![],
            deletes: (0..40_000).map(|i| format!("team-a-env-{i}")).collect(),
        };
        let pages = desired_pages(&update, DESIRED_PAGE_BYTES);
        assert!(pages.len() > 1);
        let mut deletes = 0;
        for (i, page) in pages.iter().enumerate() {
            let Some(Kind::Changes(c)) = &page.kind else {
                panic!("changes")
            };
            assert_eq!(
                (c.from_revision, c.revision, c.more),
                (3, 9, i + 1 < pages.len())
            );
            assert!(page.encoded_len() <= DESIRED_PAGE_BYTES + 1024);
            deletes += c.deletes.len();
        }
        assert_eq!(deletes, 40_000);
        let current = DesiredUpdate {
            since: Some(9),
            revision: 9,
            upserts: vec![],
            deletes: vec![],
        };
        let pages = desired_pages(&current, DESIRED_PAGE_BYTES);
        assert_eq!(pages.len(), 1);
        let Some(Kind::Changes(c)) = &pages[0].kind else {
            panic!("changes")
        };
        assert!(!c.more && c.upserts.is_empty() && c.deletes.is_empty());
    }
}
