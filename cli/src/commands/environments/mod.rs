//! `mtp env …`: create, list, show and delete environments (a tenant's
//! isolated, limited namespace on a cluster).
//!
//! Each mutating command is split into "send the RPC" and "render the result"
//! so `--wait` can poll `GetEnvironment` between the two (`wait::wait_until`,
//! with the stop/continue decision in the pure function `wait::decide`).

use std::time::Duration;

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    CreateEnvironmentRequest, DeleteEnvironmentRequest, Environment, EnvironmentStatus,
    GetEnvironmentRequest, ListEnvironmentsRequest, Resources,
};
use serde::Serialize;

use super::{Ctx, ExpiryArgs, ResourcesView, parse_duration, resources_summary};
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

mod wait;

use wait::elapsed_text;
pub use wait::{Clock, Decision, Goal, Poll, TokioClock, decide, progress_line, wait_until};

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Create an environment of TENANT on a cluster, shaped by a profile.
    /// With --wait, return only once the cluster's agent applied and verified it.
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
    /// Request deletion of an environment; it goes to `deleting`, then
    /// `deleted` once the agent removed the namespace (--wait waits for that).
    #[command(visible_alias = "rm")]
    Delete {
        /// Tenant name.
        tenant: String,
        /// Environment name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `--wait` and `--timeout`, shared by `create` and `delete`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the cluster's agent reports the environment ready (create)
    /// or removed (delete), printing status changes on stderr. Exits 5 if the
    /// agent reports a failure, 1 on timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: a number with a unit s, m, h, d or w (e.g. 90s, 10m).
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        default_value = "5m",
        requires = "wait"
    )]
    pub timeout: chrono::Duration,
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
    #[command(flatten)]
    pub wait: WaitArgs,
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
            let (tenant, name, wait) = (a.tenant.clone(), a.name.clone(), a.wait.clone());
            let mut env = create(ctx, *a).await?;
            if wait.wait
                && let Some(done) = wait_for(ctx, Goal::Ready, &tenant, &name, &wait).await?
            {
                env = done;
            }
            show(ctx, &env);
        }
        EnvCmd::List(a) => list(ctx, a).await?,
        EnvCmd::Get { tenant, name } => {
            let env = get(ctx, &tenant, &name).await?;
            show(ctx, &env);
        }
        EnvCmd::Delete { tenant, name, wait } => {
            let mut env = ctx
                .api
                .call(
                    format!("delete environment {tenant}/{name}"),
                    ctx.api
                        .environments()
                        .delete_environment(DeleteEnvironmentRequest {
                            tenant: tenant.clone(),
                            name: name.clone(),
                        }),
                )
                .await?;
            if wait.wait {
                match wait_for(ctx, Goal::Deleted, &tenant, &name, &wait).await? {
                    Some(done) => env = done,
                    // The server no longer knows it: as deleted as it gets.
                    None => env.status = EnvironmentStatus::Deleted as i32,
                }
            }
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

/// `--wait` against the server, progress on stderr.
async fn wait_for(
    ctx: &Ctx,
    goal: Goal,
    tenant: &str,
    name: &str,
    wait: &WaitArgs,
) -> Result<Option<Environment>, CliError> {
    let timeout = wait.timeout.to_std().unwrap_or(Duration::from_secs(300));
    let who = format!("{tenant}/{name}");
    wait_until(
        goal,
        &who,
        Poll::with_timeout(timeout),
        &mut TokioClock::start(),
        || get(ctx, tenant, name),
        |line| eprintln!("{line}"),
    )
    .await
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
        .field("Revision", revision_text(e.revision))
        .field("Applied revision", revision_text(e.applied_revision))
        .field("Quota", resources_summary(e.quota.as_ref()))
        .field("Created", output::rfc3339_or_dash(e.create_time.as_ref()))
        .field("Ready", output::rfc3339_or_dash(e.ready_time.as_ref()))
        .field(
            "Time to ready",
            time_to_ready(e).map(elapsed_text).unwrap_or_default(),
        )
        .field("Expires", expires);
    if e.delete_time.is_some() {
        d.field("Deleted", output::rfc3339_or_dash(e.delete_time.as_ref()));
    }
    d.render()
}

/// A revision, or empty (`-`) for 0: "none yet".
fn revision_text(r: i64) -> String {
    if r > 0 { r.to_string() } else { String::new() }
}

/// `ready_time - create_time`, when it became ready.
pub fn time_to_ready(e: &Environment) -> Option<Duration> {
    let created = output::datetime(e.create_time.as_ref())?;
    let ready = output::datetime(e.ready_time.as_ref())?;
    (ready - created).to_std().ok()
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
    /// The cluster revision at which it last changed.
    pub revision: i64,
    /// The revision the applier agent acknowledged for it (0: not yet).
    pub applied_revision: i64,
    pub create_time: Option<String>,
    /// When it first became ready.
    pub ready_time: Option<String>,
    /// `ready_time - create_time` in seconds.
    pub time_to_ready_seconds: Option<f64>,
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
            revision: e.revision,
            applied_revision: e.applied_revision,
            create_time: output::rfc3339(e.create_time.as_ref()),
            ready_time: output::rfc3339(e.ready_time.as_ref()),
            time_to_ready_seconds: time_to_ready(e).map(|d| d.as_secs_f64()),
            expire_time: output::rfc3339(e.expire_time.as_ref()),
            delete_time: output::rfc3339(e.delete_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn env() -> Environment {
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
            revision: 7,
            applied_revision: 7,
            ready_time: Some(prost_types::Timestamp {
                seconds: 1_000_002,
                nanos: 500_000_000,
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
        let field = |label: &str| {
            d.lines()
                .find_map(|l| l.strip_prefix(&format!("{label}:")))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {label}: {d}"))
                .to_string()
        };
        assert_eq!(field("Status"), "ready");
        assert!(field("Expires").ends_with("(in 1h)"), "{d}");
        assert_eq!(field("Revision"), "7");
        assert_eq!(field("Applied revision"), "7");
        assert_eq!(field("Ready"), "1970-01-12T13:46:42.500Z");
        assert_eq!(field("Time to ready"), "2.5s");
        let pending = Environment {
            status: EnvironmentStatus::Pending as i32,
            applied_revision: 0,
            ready_time: None,
            ..env()
        };
        let d = details(&pending, now);
        assert!(d.contains("Time to ready:     -"), "{d}");
        assert!(d.contains("Applied revision:  -"), "{d}");
    }

    #[test]
    fn json_view_has_revisions_and_time_to_ready() {
        let v = serde_json::to_value(EnvironmentView::from(&env())).unwrap();
        assert_eq!(v["revision"], 7);
        assert_eq!(v["applied_revision"], 7);
        assert_eq!(v["ready_time"], "1970-01-12T13:46:42.500Z");
        assert_eq!(v["time_to_ready_seconds"], 2.5);
        let v = serde_json::to_value(EnvironmentView::from(&Environment::default())).unwrap();
        assert!(v["ready_time"].is_null());
        assert!(v["time_to_ready_seconds"].is_null());
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
            wait: WaitArgs {
                wait: false,
                timeout: chrono::Duration::minutes(5),
            },
        };
        assert!(a.quota_override().is_none());
        let a = CreateArgs { pods: Some(5), ..a };
        assert_eq!(a.quota_override().unwrap().pods, Some(5));
    }
}
