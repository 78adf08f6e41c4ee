//! `mtp tenant …`: create, list, get (usage against quota), update, delete.

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest, Owners, Tenant,
    TenantQuota, TenantUsage, UpdateTenantRequest,
};
use serde::Serialize;

use super::Ctx;
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (platform admins only).
    Create(CreateArgs),
    /// List the tenants this token may see, with usage/quota per resource.
    #[command(visible_alias = "ls")]
    List,
    /// Show one tenant: owners, allowed profiles, usage against quota, and
    /// (in the table) the month's cost against its budget.
    Get {
        /// Tenant name.
        name: String,
    },
    /// Change a tenant (platform admins only). Only the given flags change.
    #[command(after_help = "\
Owner flags replace that owner list (e.g. --owner-user alice sets the users to
exactly [alice] and keeps groups and service accounts). Quota flags change only
that resource. --allowed-profile replaces the list; --all-profiles allows all.")]
    Update(UpdateArgs),
    /// Delete a tenant. Refused while it has environments unless --cascade.
    #[command(visible_alias = "rm")]
    Delete {
        /// Tenant name.
        name: String,
        /// Also delete all of the tenant's environments.
        #[arg(long)]
        cascade: bool,
    },
}

#[derive(Debug, Args)]
pub struct OwnerArgs {
    /// Owning user, as the cluster's authenticator names it (repeatable).
    #[arg(long = "owner-user", value_name = "USER")]
    pub users: Vec<String>,
    /// Owning group (repeatable).
    #[arg(long = "owner-group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Owning service account as NAMESPACE/NAME (repeatable).
    #[arg(long = "owner-sa", value_name = "NS/NAME", value_parser = parse_service_account)]
    pub service_accounts: Vec<String>,
}

impl OwnerArgs {
    fn any(&self) -> bool {
        !(self.users.is_empty() && self.groups.is_empty() && self.service_accounts.is_empty())
    }
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Total CPU of all environments (Kubernetes quantity, e.g. 8 or 1500m).
    #[arg(long, value_name = "QUANTITY")]
    pub cpu: Option<String>,
    /// Total memory (e.g. 16Gi).
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// Total persistent storage requested (e.g. 100Gi).
    #[arg(long, value_name = "QUANTITY")]
    pub storage: Option<String>,
    /// Total number of pods.
    #[arg(long, value_name = "N")]
    pub pods: Option<i64>,
    /// Maximum number of live environments.
    #[arg(long, value_name = "N")]
    pub max_environments: Option<i64>,
}

impl QuotaArgs {
    fn any(&self) -> bool {
        self.cpu.is_some()
            || self.memory.is_some()
            || self.storage.is_some()
            || self.pods.is_some()
            || self.max_environments.is_some()
    }

    /// Applies the given flags on top of `base`.
    fn apply(&self, mut base: TenantQuota) -> TenantQuota {
        if let Some(v) = &self.cpu {
            base.cpu = v.clone();
        }
        if let Some(v) = &self.memory {
            base.memory = v.clone();
        }
        if let Some(v) = &self.storage {
            base.storage = v.clone();
        }
        if let Some(v) = self.pods {
            base.pods = v;
        }
        if let Some(v) = self.max_environments {
            base.max_environments = v;
        }
        base
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Tenant name: DNS-1123 label, at most 30 characters.
    pub name: String,
    /// Human-readable name.
    #[arg(long)]
    pub display_name: Option<String>,
    #[command(flatten)]
    pub owners: OwnerArgs,
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Profile the tenant's environments may use (repeatable; none = all).
    #[arg(long = "allowed-profile", value_name = "PROFILE")]
    pub allowed_profiles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Tenant name.
    pub name: String,
    /// New human-readable name.
    #[arg(long)]
    pub display_name: Option<String>,
    #[command(flatten)]
    pub owners: OwnerArgs,
    /// Remove all owners (combine with --owner-* to set a fresh list).
    #[arg(long)]
    pub clear_owners: bool,
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Replace the allowed profiles with these (repeatable).
    #[arg(long = "allowed-profile", value_name = "PROFILE")]
    pub allowed_profiles: Vec<String>,
    /// Allow all profiles (clears the allowed list).
    #[arg(long, conflicts_with = "allowed_profiles")]
    pub all_profiles: bool,
}

fn parse_service_account(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "invalid service account {s:?}: expected NAMESPACE/NAME"
        )),
    }
}

pub async fn run(cmd: TenantCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        TenantCmd::Create(a) => create(a, ctx).await,
        TenantCmd::List => list(ctx).await,
        TenantCmd::Get { name } => {
            let t = get(ctx, &name).await?;
            if ctx.json() {
                emit_json(&TenantView::from(&t));
            } else {
                // The cost service is optional: its summary never fails the get.
                let budget = super::budgets::fetch_summary(ctx, &t.name).await;
                emit(&details(&t, Some(&budget)));
            }
            Ok(())
        }
        TenantCmd::Update(a) => update(a, ctx).await,
        TenantCmd::Delete { name, cascade } => delete(ctx, name, cascade).await,
    }
}

async fn create(a: CreateArgs, ctx: &Ctx) -> Result<(), CliError> {
    let req = CreateTenantRequest {
        name: a.name.clone(),
        display_name: a.display_name.unwrap_or_default(),
        owners: Some(Owners {
            users: a.owners.users,
            groups: a.owners.groups,
            service_accounts: a.owners.service_accounts,
        }),
        quota: Some(a.quota.apply(TenantQuota::default())),
        allowed_profiles: a.allowed_profiles,
    };
    let t = ctx
        .api
        .call(
            format!("create tenant {:?}", a.name),
            ctx.api.tenants().create_tenant(req),
        )
        .await?;
    show(ctx, &t);
    Ok(())
}

async fn get(ctx: &Ctx, name: &str) -> Result<Tenant, CliError> {
    ctx.api
        .call(
            format!("get tenant {name:?}"),
            ctx.api.tenants().get_tenant(GetTenantRequest {
                name: name.to_string(),
            }),
        )
        .await
}

async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let resp = ctx
        .api
        .call(
            "list tenants",
            ctx.api.tenants().list_tenants(ListTenantsRequest {}),
        )
        .await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct L {
            tenants: Vec<TenantView>,
        }
        emit_json(&L {
            tenants: resp.tenants.iter().map(TenantView::from).collect(),
        });
    } else {
        emit(&list_table(&resp.tenants, chrono::Utc::now()).render());
    }
    Ok(())
}

/// Read-modify-write: the contract replaces `owners` and `quota` as whole
/// messages, so to change one field we fetch the tenant and send it back with
/// only the given flags applied.
async fn update(a: UpdateArgs, ctx: &Ctx) -> Result<(), CliError> {
    let profiles_change = !a.allowed_profiles.is_empty() || a.all_profiles;
    if a.display_name.is_none()
        && !a.owners.any()
        && !a.clear_owners
        && !a.quota.any()
        && !profiles_change
    {
        return Err(CliError::usage(
            "tenant update: nothing to change; give at least one flag (see `mtp tenant update --help`)",
        ));
    }
    let need_current = (a.owners.any() && !a.clear_owners) || a.quota.any();
    let current = if need_current {
        Some(get(ctx, &a.name).await?)
    } else {
        None
    };
    let owners = if a.owners.any() || a.clear_owners {
        let mut o = if a.clear_owners {
            Owners::default()
        } else {
            current
                .as_ref()
                .and_then(|t| t.owners.clone())
                .unwrap_or_default()
        };
        if !a.owners.users.is_empty() {
            o.users = a.owners.users;
        }
        if !a.owners.groups.is_empty() {
            o.groups = a.owners.groups;
        }
        if !a.owners.service_accounts.is_empty() {
            o.service_accounts = a.owners.service_accounts;
        }
        Some(o)
    } else {
        None
    };
    let quota = if a.quota.any() {
        let base = current
            .as_ref()
            .and_then(|t| t.quota.clone())
            .unwrap_or_default();
        Some(a.quota.apply(base))
    } else {
        None
    };
    let req = UpdateTenantRequest {
        name: a.name.clone(),
        display_name: a.display_name,
        owners,
        quota,
        allowed_profiles: a.allowed_profiles,
        update_allowed_profiles: profiles_change,
    };
    let t = ctx
        .api
        .call(
            format!("update tenant {:?}", a.name),
            ctx.api.tenants().update_tenant(req),
        )
        .await?;
    show(ctx, &t);
    Ok(())
}

async fn delete(ctx: &Ctx, name: String, cascade: bool) -> Result<(), CliError> {
    let resp = ctx
        .api
        .call(
            format!("delete tenant {name:?}"),
            ctx.api.tenants().delete_tenant(DeleteTenantRequest {
                name: name.clone(),
                cascade,
            }),
        )
        .await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct D {
            name: String,
            deleted_environments: Vec<String>,
        }
        emit_json(&D {
            name,
            deleted_environments: resp.deleted_environments,
        });
    } else {
        let mut s = format!("tenant {name:?} deleted\n");
        if !resp.deleted_environments.is_empty() {
            s.push_str(&format!(
                "environments deleted with it: {}\n",
                resp.deleted_environments.join(", ")
            ));
        }
        emit(&s);
    }
    Ok(())
}

fn show(ctx: &Ctx, t: &Tenant) {
    if ctx.json() {
        emit_json(&TenantView::from(t));
    } else {
        emit(&details(t, None));
    }
}

/// `used/quota`, e.g. `2/8` or `4Gi/16Gi`; `-` parts when unknown.
fn ratio(used: &str, quota: &str) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    format!("{}/{}", dash(used), dash(quota))
}

fn list_table(tenants: &[Tenant], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "DISPLAY NAME",
        "ENVS",
        "CPU",
        "MEMORY",
        "STORAGE",
        "PODS",
        "AGE",
    ]);
    for x in tenants {
        let q = x.quota.clone().unwrap_or_default();
        let u = x.usage.clone().unwrap_or_default();
        t.row(vec![
            x.name.clone(),
            x.display_name.clone(),
            ratio(&u.environments.to_string(), &q.max_environments.to_string()),
            ratio(&u.cpu, &q.cpu),
            ratio(&u.memory, &q.memory),
            ratio(&u.storage, &q.storage),
            ratio(&u.pods.to_string(), &q.pods.to_string()),
            output::age(x.create_time.as_ref(), now),
        ]);
    }
    t
}

/// The `get` block; `budget` is the `Budget:` line's value when known.
fn details(t: &Tenant, budget: Option<&str>) -> String {
    let o = t.owners.clone().unwrap_or_default();
    let list = |v: &[String]| v.join(", ");
    let mut d = Details::new();
    d.field("Name", &t.name)
        .field("Display name", &t.display_name)
        .field("Owner users", list(&o.users))
        .field("Owner groups", list(&o.groups))
        .field("Owner SAs", list(&o.service_accounts))
        .field(
            "Allowed profiles",
            if t.allowed_profiles.is_empty() {
                "all".to_string()
            } else {
                list(&t.allowed_profiles)
            },
        )
        .field("Created", output::rfc3339_or_dash(t.create_time.as_ref()))
        .field("Updated", output::rfc3339_or_dash(t.update_time.as_ref()));
    if let Some(b) = budget {
        d.field("Budget", b);
    }
    let q = t.quota.clone().unwrap_or_default();
    let u = t.usage.clone().unwrap_or_default();
    let mut table = Table::new(&["RESOURCE", "USED", "QUOTA"]);
    table.row(vec!["cpu".into(), u.cpu, q.cpu]);
    table.row(vec!["memory".into(), u.memory, q.memory]);
    table.row(vec!["storage".into(), u.storage, q.storage]);
    table.row(vec!["pods".into(), u.pods.to_string(), q.pods.to_string()]);
    table.row(vec![
        "environments".into(),
        u.environments.to_string(),
        q.max_environments.to_string(),
    ]);
    format!("{}\n{}", d.render(), table.render())
}

/// JSON shape of a tenant.
#[derive(Debug, Serialize)]
pub struct TenantView {
    pub name: String,
    pub display_name: String,
    pub owners: OwnersView,
    pub quota: QuotaView,
    /// Empty means all profiles are allowed.
    pub allowed_profiles: Vec<String>,
    pub usage: UsageView,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OwnersView {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub service_accounts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct QuotaView {
    pub cpu: String,
    pub memory: String,
    pub storage: String,
    pub pods: i64,
    pub max_environments: i64,
}

#[derive(Debug, Serialize)]
pub struct UsageView {
    pub cpu: String,
    pub memory: String,
    pub storage: String,
    pub pods: i64,
    pub environments: i64,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        let o = t.owners.clone().unwrap_or_default();
        let q: TenantQuota = t.quota.clone().unwrap_or_default();
        let u: TenantUsage = t.usage.clone().unwrap_or_default();
        TenantView {
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            owners: OwnersView {
                users: o.users,
                groups: o.groups,
                service_accounts: o.service_accounts,
            },
            quota: QuotaView {
                cpu: q.cpu,
                memory: q.memory,
                storage: q.storage,
                pods: q.pods,
                max_environments: q.max_environments,
            },
            allowed_profiles: t.allowed_profiles.clone(),
            usage: UsageView {
                cpu: u.cpu,
                memory: u.memory,
                storage: u.storage,
                pods: u.pods,
                environments: u.environments,
            },
            create_time: output::rfc3339(t.create_time.as_ref()),
            update_time: output::rfc3339(t.update_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            name: "team-a".into(),
            display_name: "Team A".into(),
            owners: Some(Owners {
                users: vec!["alice".into()],
                groups: vec![],
                service_accounts: vec!["ci/deployer".into()],
            }),
            quota: Some(TenantQuota {
                cpu: "8".into(),
                memory: "16Gi".into(),
                storage: "100Gi".into(),
                pods: 100,
                max_environments: 10,
            }),
            allowed_profiles: vec![],
            usage: Some(TenantUsage {
                cpu: "2".into(),
                memory: "4Gi".into(),
                storage: "0".into(),
                pods: 12,
                environments: 2,
            }),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            update_time: None,
        }
    }

    #[test]
    fn json_view_is_stable() {
        let v = serde_json::to_value(TenantView::from(&tenant())).unwrap();
        assert_eq!(v["name"], "team-a");
        assert_eq!(v["owners"]["service_accounts"][0], "ci/deployer");
        assert_eq!(v["quota"]["max_environments"], 10);
        assert_eq!(v["usage"]["environments"], 2);
        assert_eq!(v["create_time"], "2023-11-14T22:13:20Z");
        assert!(v["update_time"].is_null());
    }

    #[test]
    fn details_show_usage_against_quota() {
        let s = details(&tenant(), None);
        assert!(s.contains("Allowed profiles:  all"), "{s}");
        assert!(!s.contains("Budget"), "{s}");
        assert!(s.contains("cpu            2      8\n"), "{s}");
        assert!(s.contains("environments   2      10\n"), "{s}");
    }

    #[test]
    fn get_shows_the_budget_line() {
        let s = details(
            &tenant(),
            Some("EUR 123.45 of EUR 500.00 this month (24.7 %), thresholds 50/80/100"),
        );
        assert!(
            s.contains(
                "\nBudget:            EUR 123.45 of EUR 500.00 this month (24.7 %), thresholds 50/80/100\n"
            ),
            "{s}"
        );
        let s = details(
            &tenant(),
            Some("unavailable (this control plane has no cost service)"),
        );
        assert!(s.contains("Budget:            unavailable ("), "{s}");
        assert!(s.contains("environments   2      10\n"), "{s}");
    }

    #[test]
    fn list_shows_ratios() {
        let now = chrono::DateTime::from_timestamp(1_700_003_600, 0).unwrap();
        let s = list_table(&[tenant()], now).render();
        let row = s.lines().nth(1).unwrap();
        let cols: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cols,
            [
                "team-a", "Team A", "2/10", "2/8", "4Gi/16Gi", "0/100Gi", "12/100", "1h"
            ]
        );
    }

    #[test]
    fn service_account_syntax() {
        assert!(parse_service_account("ci/deployer").is_ok());
        assert!(parse_service_account("deployer").is_err());
        assert!(parse_service_account("/x").is_err());
        assert!(parse_service_account("a/b/c").is_err());
    }
}
