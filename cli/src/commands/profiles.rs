//! `mtp profile …`: list, get and create environment profiles (quota, max
//! quota for overrides, per-container defaults and ceilings, network options).

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    ContainerLimits, CreateProfileRequest, GetProfileRequest, ListProfilesRequest, NetworkOptions,
    Profile, Resources,
};
use serde::Serialize;

use super::{Ctx, ResourcesView, resources_summary};
use crate::errors::CliError;
use crate::output::{Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// List profiles (built-in and platform-defined).
    #[command(visible_alias = "ls")]
    List,
    /// Show one profile in full.
    Get {
        /// Profile name.
        name: String,
    },
    /// Define a platform profile (platform admins only; built-ins can't be redefined).
    Create(Box<CreateArgs>),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Profile name.
    pub name: String,
    /// What the profile is for.
    #[arg(long, default_value = "")]
    pub description: String,

    // The quota an environment of this profile gets.
    /// Environment CPU quota (e.g. 2 or 500m).
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota")]
    pub cpu: Option<String>,
    /// Environment memory quota (e.g. 4Gi).
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota")]
    pub memory: Option<String>,
    /// Environment persistent storage quota (e.g. 20Gi).
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota")]
    pub storage: Option<String>,
    /// Maximum pods per environment.
    #[arg(long, value_name = "N", help_heading = "Quota")]
    pub pods: Option<i64>,
    /// Maximum Services per environment.
    #[arg(long, value_name = "N", help_heading = "Quota")]
    pub services: Option<i64>,
    /// Maximum PersistentVolumeClaims per environment.
    #[arg(long, value_name = "N", help_heading = "Quota")]
    pub pvcs: Option<i64>,

    /// Most CPU an environment may ask for via overrides.
    #[arg(long, value_name = "QUANTITY", help_heading = "Override ceilings")]
    pub max_cpu: Option<String>,
    /// Most memory an environment may ask for via overrides.
    #[arg(long, value_name = "QUANTITY", help_heading = "Override ceilings")]
    pub max_memory: Option<String>,
    /// Most storage an environment may ask for via overrides.
    #[arg(long, value_name = "QUANTITY", help_heading = "Override ceilings")]
    pub max_storage: Option<String>,
    /// Most pods an environment may ask for via overrides.
    #[arg(long, value_name = "N", help_heading = "Override ceilings")]
    pub max_pods: Option<i64>,
    /// Most Services an environment may ask for via overrides.
    #[arg(long, value_name = "N", help_heading = "Override ceilings")]
    pub max_services: Option<i64>,
    /// Most PVCs an environment may ask for via overrides.
    #[arg(long, value_name = "N", help_heading = "Override ceilings")]
    pub max_pvcs: Option<i64>,

    /// Default CPU request of a container that sets none.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_request_cpu: Option<String>,
    /// Default memory request of a container that sets none.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_request_memory: Option<String>,
    /// Default CPU limit of a container that sets none.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_limit_cpu: Option<String>,
    /// Default memory limit of a container that sets none.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_limit_memory: Option<String>,
    /// Largest CPU limit one container may have.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_max_cpu: Option<String>,
    /// Largest memory limit one container may have.
    #[arg(long, value_name = "QUANTITY", help_heading = "Container limits")]
    pub container_max_memory: Option<String>,

    /// Ephemeral storage (writable layers, logs, emptyDirs) the whole
    /// environment may request [default: the small profile's, 4Gi].
    #[arg(long, value_name = "QUANTITY", help_heading = "Cluster protection")]
    pub ephemeral_storage: Option<String>,
    /// Default ephemeral-storage request of a container that sets none
    /// [default: 64Mi].
    #[arg(long, value_name = "QUANTITY", help_heading = "Cluster protection")]
    pub container_request_ephemeral_storage: Option<String>,
    /// Default ephemeral-storage limit of a container that sets none
    /// [default: 1Gi].
    #[arg(long, value_name = "QUANTITY", help_heading = "Cluster protection")]
    pub container_limit_ephemeral_storage: Option<String>,
    /// Largest ephemeral-storage limit one container may have [default: 2Gi].
    #[arg(long, value_name = "QUANTITY", help_heading = "Cluster protection")]
    pub container_max_ephemeral_storage: Option<String>,

    /// Allow traffic between environments of the same tenant.
    #[arg(long, help_heading = "Network")]
    pub allow_same_tenant: bool,
    /// Allow ingress from the cluster's ingress controller namespace.
    #[arg(long, help_heading = "Network")]
    pub allow_ingress_controller: bool,
}

impl CreateArgs {
    fn into_profile(self) -> Profile {
        let s = |v: Option<String>| v.unwrap_or_default();
        Profile {
            name: self.name,
            description: self.description,
            builtin: false,
            quota: Some(Resources {
                cpu: s(self.cpu),
                memory: s(self.memory),
                storage: s(self.storage),
                pods: self.pods,
                services: self.services,
                persistent_volume_claims: self.pvcs,
            }),
            max_quota: Some(Resources {
                cpu: s(self.max_cpu),
                memory: s(self.max_memory),
                storage: s(self.max_storage),
                pods: self.max_pods,
                services: self.max_services,
                persistent_volume_claims: self.max_pvcs,
            }),
            container_limits: Some(ContainerLimits {
                default_request_cpu: s(self.container_request_cpu),
                default_request_memory: s(self.container_request_memory),
                default_limit_cpu: s(self.container_limit_cpu),
                default_limit_memory: s(self.container_limit_memory),
                max_cpu: s(self.container_max_cpu),
                max_memory: s(self.container_max_memory),
                default_request_ephemeral_storage: s(self.container_request_ephemeral_storage),
                default_limit_ephemeral_storage: s(self.container_limit_ephemeral_storage),
                max_ephemeral_storage: s(self.container_max_ephemeral_storage),
            }),
            ephemeral_storage: s(self.ephemeral_storage),
            // The object counts of the small profile (not settable here yet).
            object_counts: None,
            network: Some(NetworkOptions {
                allow_same_tenant: self.allow_same_tenant,
                allow_ingress_controller: self.allow_ingress_controller,
            }),
        }
    }
}

pub async fn run(cmd: ProfileCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        ProfileCmd::List => {
            let resp = ctx
                .api
                .call(
                    "list profiles",
                    ctx.api.profiles().list_profiles(ListProfilesRequest {}),
                )
                .await?;
            if ctx.json() {
                #[derive(Serialize)]
                struct L {
                    profiles: Vec<ProfileView>,
                }
                emit_json(&L {
                    profiles: resp.profiles.iter().map(ProfileView::from).collect(),
                });
            } else {
                emit(&list_table(&resp.profiles).render());
            }
        }
        ProfileCmd::Get { name } => {
            let p = ctx
                .api
                .call(
                    format!("get profile {name:?}"),
                    ctx.api.profiles().get_profile(GetProfileRequest { name }),
                )
                .await?;
            show(ctx, &p);
        }
        ProfileCmd::Create(a) => {
            let name = a.name.clone();
            let p = ctx
                .api
                .call(
                    format!("create profile {name:?}"),
                    ctx.api.profiles().create_profile(CreateProfileRequest {
                        profile: Some(a.into_profile()),
                    }),
                )
                .await?;
            show(ctx, &p);
        }
    }
    Ok(())
}

fn show(ctx: &Ctx, p: &Profile) {
    if ctx.json() {
        emit_json(&ProfileView::from(p));
    } else {
        emit(&details(p));
    }
}

fn list_table(profiles: &[Profile]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "BUILTIN",
        "CPU",
        "MEMORY",
        "STORAGE",
        "PODS",
        "DESCRIPTION",
    ]);
    for p in profiles {
        let q = p.quota.clone().unwrap_or_default();
        t.row(vec![
            p.name.clone(),
            if p.builtin { "yes" } else { "no" }.into(),
            q.cpu,
            q.memory,
            q.storage,
            crate::output::opt_count(q.pods),
            p.description.clone(),
        ]);
    }
    t
}

fn details(p: &Profile) -> String {
    let c = p.container_limits.clone().unwrap_or_default();
    let n = p.network.unwrap_or_default();
    let yn = |b: bool| if b { "yes" } else { "no" };
    let pair = |a: &str, b: &str| {
        if a.is_empty() && b.is_empty() {
            String::new()
        } else {
            format!("cpu={} memory={}", dash(a), dash(b))
        }
    };
    let mut d = Details::new();
    d.field("Name", &p.name)
        .field("Description", &p.description)
        .field("Builtin", yn(p.builtin))
        .field("Quota", resources_summary(p.quota.as_ref()))
        .field("Max quota", resources_summary(p.max_quota.as_ref()))
        .field(
            "Container requests",
            pair(&c.default_request_cpu, &c.default_request_memory),
        )
        .field(
            "Container limits",
            pair(&c.default_limit_cpu, &c.default_limit_memory),
        )
        .field("Container max", pair(&c.max_cpu, &c.max_memory))
        .field(
            "Ephemeral storage",
            format!(
                "{} (container request={} limit={} max={})",
                dash(&p.ephemeral_storage),
                dash(&c.default_request_ephemeral_storage),
                dash(&c.default_limit_ephemeral_storage),
                dash(&c.max_ephemeral_storage)
            ),
        )
        .field(
            "Object counts",
            p.object_counts
                .as_ref()
                .map(|o| {
                    object_counts(o)
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        )
        .field("Same-tenant traffic", yn(n.allow_same_tenant))
        .field("Ingress controller", yn(n.allow_ingress_controller));
    d.render()
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// JSON shape of a profile.
#[derive(Debug, Serialize)]
pub struct ProfileView {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub quota: ResourcesView,
    pub max_quota: ResourcesView,
    pub container_limits: ContainerLimitsView,
    pub network: NetworkView,
    pub ephemeral_storage: String,
    pub object_counts: Option<std::collections::BTreeMap<&'static str, i64>>,
}

/// Object counts by Kubernetes resource name, as the quota lists them.
fn object_counts(o: &mtp_proto::v1::ObjectCounts) -> std::collections::BTreeMap<&'static str, i64> {
    [
        ("configmaps", o.config_maps),
        ("secrets", o.secrets),
        ("serviceaccounts", o.service_accounts),
        ("jobs", o.jobs),
        ("cronjobs", o.cron_jobs),
        ("deployments", o.deployments),
        ("replicasets", o.replica_sets),
        ("statefulsets", o.stateful_sets),
        ("ingresses", o.ingresses),
        ("roles", o.roles),
        ("rolebindings", o.role_bindings),
    ]
    .into_iter()
    .collect()
}

#[derive(Debug, Serialize)]
pub struct ContainerLimitsView {
    pub default_request_cpu: String,
    pub default_request_memory: String,
    pub default_limit_cpu: String,
    pub default_limit_memory: String,
    pub max_cpu: String,
    pub max_memory: String,
    pub default_request_ephemeral_storage: String,
    pub default_limit_ephemeral_storage: String,
    pub max_ephemeral_storage: String,
}

#[derive(Debug, Serialize)]
pub struct NetworkView {
    pub allow_same_tenant: bool,
    pub allow_ingress_controller: bool,
}

impl From<&Profile> for ProfileView {
    fn from(p: &Profile) -> Self {
        let c = p.container_limits.clone().unwrap_or_default();
        let n = p.network.unwrap_or_default();
        ProfileView {
            name: p.name.clone(),
            description: p.description.clone(),
            builtin: p.builtin,
            quota: p.quota.as_ref().into(),
            max_quota: p.max_quota.as_ref().into(),
            container_limits: ContainerLimitsView {
                default_request_cpu: c.default_request_cpu,
                default_request_memory: c.default_request_memory,
                default_limit_cpu: c.default_limit_cpu,
                default_limit_memory: c.default_limit_memory,
                max_cpu: c.max_cpu,
                max_memory: c.max_memory,
                default_request_ephemeral_storage: c.default_request_ephemeral_storage,
                default_limit_ephemeral_storage: c.default_limit_ephemeral_storage,
                max_ephemeral_storage: c.max_ephemeral_storage,
            },
            network: NetworkView {
                allow_same_tenant: n.allow_same_tenant,
                allow_ingress_controller: n.allow_ingress_controller,
            },
            ephemeral_storage: p.ephemeral_storage.clone(),
            object_counts: p.object_counts.as_ref().map(object_counts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_view_has_all_sections() {
        let p = Profile {
            name: "small".into(),
            builtin: true,
            quota: Some(Resources {
                cpu: "1".into(),
                pods: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(ProfileView::from(&p)).unwrap();
        assert_eq!(v["quota"]["cpu"], "1");
        assert_eq!(v["quota"]["pods"], 10);
        assert!(v["quota"]["services"].is_null());
        assert_eq!(v["max_quota"]["cpu"], "");
        assert_eq!(v["container_limits"]["max_cpu"], "");
        assert_eq!(v["network"]["allow_same_tenant"], false);
        assert!(details(&p).contains("Builtin:"));
    }
}
