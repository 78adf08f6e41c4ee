//! `mtp env …`: create, list, show and delete environments (a tenant's
//! isolated, limited namespace on a cluster).
//!
//! Each mutating command is split into "send the RPC" and "render the result"
//! so a later `--wait` can poll `GetEnvironment` between the two, using
//! `is_settled` to know when to stop.

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    CreateEnvironmentRequest, DeleteEnvironmentRequest, Environment, EnvironmentStatus,
    GetEnvironmentRequest, ListEnvironmentsRequest, Resources,
};
use serde::Serialize;

use super::{Ctx, ExpiryArgs, ResourcesView, resources_summary};
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Create an environment of TENANT on a cluster, shaped by a profile.
    Create(Box<CreateArgs>),
    /// List environments (live ones unless --all).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one environment: status, namespace, effective quota, expiry.
    Get {
        /// Tenant name.
        tenant: String,
        /// Environment name.
        name: String,
    },
    /// Request deletion of an environment; it goes to `deleting`, then `deleted`.
    #[command(visible_alias = "rm")]
    Delete {
        /// Tenant name.
        tenant: String,
        /// Environment name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Tenant that owns the environment.
    pub tenant: String,
    /// Environment name: DNS-1123 label, at most 30 characters.
    pub name: String,
    /// Cluster to place it on.
    #[arg(long)]
    pub cluster: String,
    /// Profile giving its quota and limits (see `mtp profile list`).
    #[arg(long)]
    pub profile: String,
    /// Override the profile's CPU quota (within the profile's max).
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota overrides")]
    pub cpu: Option<String>,
    /// Override the profile's memory quota.
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota overrides")]
    pub memory: Option<String>,
    /// Override the profile's storage quota.
    #[arg(long, value_name = "QUANTITY", help_heading = "Quota overrides")]
    pub storage: Option<String>,
    /// Override the profile's pod count.
    #[arg(long, value_name = "N", help_heading = "Quota overrides")]
    pub pods: Option<i64>,
    /// Override the profile's Service count.
    #[arg(long, value_name = "N", help_heading = "Quota overrides")]
    pub services: Option<i64>,
    /// Override the profile's PVC count.
    #[arg(long, value_name = "N", help_heading = "Quota overrides")]
    pub pvcs: Option<i64>,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

impl CreateArgs {
    /// `None` when no override flag was given, so the server sees "no override".
    fn quota_override(&self) -> Option<Resources> {
        let r = Resources {
            cpu: self.cpu.clone().unwrap_or_default(),
            memory: self.memory.clone().unwrap_or_default(),
            storage: self.storage.clone().unwrap_or_default(),
            pods: self.pods,
            services: self.services,
            persistent_volume_claims: self.pvcs,
        };
        (r != Resources::default()).then_some(r)
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's environments.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only environments on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Include deleted environments.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(cmd: EnvCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        EnvCmd::Create(a) => {
            let env = create(ctx, *a).await?;
            show(ctx, &env);
        }
        EnvCmd::List(a) => list(ctx, a).await?,
        EnvCmd::Get { tenant, name } => {
            let env = get(ctx, &tenant, &name).await?;
            show(ctx, &env);
        }
        EnvCmd::Delete { tenant, name } => {
            let env = ctx
                .api
                .call(
                    format!("delete environment {tenant}/{name}"),
                    ctx.api
                        .environments()
                        .delete_environment(DeleteEnvironmentRequest { tenant, name }),
                )
                .await?;
            show(ctx, &env);
        }
    }
    Ok(())
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<Environment, CliError> {
    let req = CreateEnvironmentRequest {
        tenant: a.tenant.clone(),
        name: a.name.clone(),
        cluster: a.cluster.clone(),
        profile: a.profile.clone(),
        quota_override: a.quota_override(),
        expire_time: a.expiry.timestamp(chrono::Utc::now()),
    };
    ctx.api
        .call(
            format!("create environment {}/{}", a.tenant, a.name),
            ctx.api.environments().create_environment(req),
        )
        .await
}

pub async fn get(ctx: &Ctx, tenant: &str, name: &str) -> Result<Environment, CliError> {
    ctx.api
        .call(
            format!("get environment {tenant}/{name}"),
            ctx.api
                .environments()
                .get_environment(GetEnvironmentRequest {
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                }),
        )
        .await
}

async fn list(ctx: &Ctx, a: ListArgs) -> Result<(), CliError> {
    let resp = ctx
        .api
        .call(
            "list environments",
            ctx.api
                .environments()
                .list_environments(ListEnvironmentsRequest {
                    tenant: a.tenant.unwrap_or_default(),
                    cluster: a.cluster.unwrap_or_default(),
                    include_deleted: a.all,
                }),
        )
        .await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct L {
            environments: Vec<EnvironmentView>,
        }
        emit_json(&L {
            environments: resp
                .environments
                .iter()
                .map(EnvironmentView::from)
                .collect(),
        });
    } else {
        emit(&list_table(&resp.environments, chrono::Utc::now()).render());
    }
    Ok(())
}

/// Whether an environment has reached a state a `--wait` would stop at.
pub fn is_settled(status: EnvironmentStatus) -> bool {
    matches!(
        status,
        EnvironmentStatus::Ready | EnvironmentStatus::Failed | EnvironmentStatus::Deleted
    )
}

/// Stable lower-case status name used in tables and JSON.
pub fn status_name(raw: i32) -> &'static str {
    match EnvironmentStatus::try_from(raw) {
        Ok(EnvironmentStatus::Pending) => "pending",
        Ok(EnvironmentStatus::Applying) => "applying",
        Ok(EnvironmentStatus::Ready) => "ready",
        Ok(EnvironmentStatus::Failed) => "failed",
        Ok(EnvironmentStatus::Deleting) => "deleting",
        Ok(EnvironmentStatus::Deleted) => "deleted",
        // A newer server may add states; "unknown" beats failing the command.
        Ok(EnvironmentStatus::Unspecified) | Err(_) => "unknown",
    }
}

fn show(ctx: &Ctx, e: &Environment) {
    if ctx.json() {
        emit_json(&EnvironmentView::from(e));
    } else {
        emit(&details(e, chrono::Utc::now()));
    }
}

fn details(e: &Environment, now: chrono::DateTime<chrono::Utc>) -> String {
    let expires = match output::rfc3339(e.expire_time.as_ref()) {
        Some(t) => format!("{t} ({})", output::until(e.expire_time.as_ref(), now)),
        None => "never".into(),
    };
    let mut d = Details::new();
    d.field("Tenant", &e.tenant)
        .field("Name", &e.name)
        .field("Cluster", &e.cluster)
        .field("Profile", &e.profile)
        .field("Namespace", &e.namespace)
        .field("Status", status_name(e.status))
        .field("Reason", &e.reason)
        .field("Quota", resources_summary(e.quota.as_ref()))
        .field("Created", output::rfc3339_or_dash(e.create_time.as_ref()))
        .field("Expires", expires);
    if e.delete_time.is_some() {
        d.field("Deleted", output::rfc3339_or_dash(e.delete_time.as_ref()));
    }
    d.render()
}

fn list_table(envs: &[Environment], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "TENANT",
        "NAME",
        "CLUSTER",
        "PROFILE",
        "NAMESPACE",
        "STATUS",
        "CPU",
        "MEMORY",
        "AGE",
        "EXPIRES",
    ]);
    for e in envs {
        let q = e.quota.clone().unwrap_or_default();
        t.row(vec![
            e.tenant.clone(),
            e.name.clone(),
            e.cluster.clone(),
            e.profile.clone(),
            e.namespace.clone(),
            status_name(e.status).into(),
            q.cpu,
            q.memory,
            output::age(e.create_time.as_ref(), now),
            output::until(e.expire_time.as_ref(), now),
        ]);
    }
    t
}

/// JSON shape of an environment.
#[derive(Debug, Serialize)]
pub struct EnvironmentView {
    pub tenant: String,
    pub name: String,
    pub cluster: String,
    pub profile: String,
    pub namespace: String,
    pub quota: ResourcesView,
    /// pending | applying | ready | failed | deleting | deleted | unknown
    pub status: &'static str,
    pub reason: String,
    pub create_time: Option<String>,
    pub expire_time: Option<String>,
    pub delete_time: Option<String>,
}

impl From<&Environment> for EnvironmentView {
    fn from(e: &Environment) -> Self {
        EnvironmentView {
            tenant: e.tenant.clone(),
            name: e.name.clone(),
            cluster: e.cluster.clone(),
            profile: e.profile.clone(),
            namespace: e.namespace.clone(),
            quota: e.quota.as_ref().into(),
            status: status_name(e.status),
            reason: e.reason.clone(),
            create_time: output::rfc3339(e.create_time.as_ref()),
            expire_time: output::rfc3339(e.expire_time.as_ref()),
            delete_time: output::rfc3339(e.delete_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment {
            tenant: "team-a".into(),
            name: "dev".into(),
            cluster: "k3s-1".into(),
            profile: "small".into(),
            namespace: "team-a-dev".into(),
            quota: Some(Resources {
                cpu: "2".into(),
                memory: "4Gi".into(),
                ..Default::default()
            }),
            status: EnvironmentStatus::Ready as i32,
            create_time: Some(prost_types::Timestamp {
                seconds: 1_000_000,
                nanos: 0,
            }),
            expire_time: Some(prost_types::Timestamp {
                seconds: 1_000_000 + 7200,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn status_names() {
        assert_eq!(status_name(EnvironmentStatus::Pending as i32), "pending");
        assert_eq!(status_name(EnvironmentStatus::Deleted as i32), "deleted");
        assert_eq!(status_name(0), "unknown");
        assert_eq!(status_name(99), "unknown");
        assert!(is_settled(EnvironmentStatus::Ready));
        assert!(!is_settled(EnvironmentStatus::Applying));
    }

    #[test]
    fn json_view() {
        let v = serde_json::to_value(EnvironmentView::from(&env())).unwrap();
        assert_eq!(v["status"], "ready");
        assert_eq!(v["namespace"], "team-a-dev");
        assert_eq!(v["quota"]["memory"], "4Gi");
        assert!(v["delete_time"].is_null());
        assert_eq!(v["expire_time"], "1970-01-12T15:46:40Z");
    }

    #[test]
    fn table_and_details() {
        let now = chrono::DateTime::from_timestamp(1_000_000 + 3600, 0).unwrap();
        let s = list_table(&[env()], now).render();
        let row = s.lines().nth(1).unwrap();
        assert!(row.starts_with("team-a   dev    k3s-1"), "{s}");
        assert!(row.ends_with("1h    in 1h"), "{s}");
        let d = details(&env(), now);
        assert!(d.contains("Status:     ready"), "{d}");
        assert!(d.contains("(in 1h)"), "{d}");
    }

    #[test]
    fn no_override_flags_means_no_override() {
        let a = CreateArgs {
            tenant: "t".into(),
            name: "n".into(),
            cluster: "c".into(),
            profile: "p".into(),
            cpu: None,
            memory: None,
            storage: None,
            pods: None,
            services: None,
            pvcs: None,
            expiry: ExpiryArgs {
                expire_in: None,
                expire_at: None,
            },
        };
        assert!(a.quota_override().is_none());
        let a = CreateArgs { pods: Some(5), ..a };
        assert_eq!(a.quota_override().unwrap().pods, Some(5));
    }
}
