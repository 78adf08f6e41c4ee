//! `mtp`, the command-line client of the k8s-mtp control plane: argument
//! parsing, settings resolution and dispatch to one module per noun.

pub mod client;
pub mod commands;
pub mod config;
pub mod errors;
pub mod money;
pub mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    Ctx, agents::AgentCmd, audit::AuditCmd, budgets::BudgetCmd, clusters::ClusterCmd,
    cost::CostCmd, environments::EnvCmd, prices::PriceCmd, profiles::ProfileCmd,
    tenants::TenantCmd, tokens::TokenCmd,
};
use crate::errors::{CliError, EXIT_CODES_HELP};
use crate::output::Format;

/// mtp — ask the k8s-mtp control plane for tenants and isolated, limited,
/// audited Kubernetes namespaces ("environments").
///
/// Settings come from flags, then MTP_* environment variables, then the config
/// file ($HOME/.config/mtp/config, `key = value` lines: addr, token,
/// token_file, ca_cert, output).
#[derive(Debug, Parser)]
#[command(name = "mtp", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub struct Cli {
    /// Control plane gRPC address (http:// or https://) [default: http://127.0.0.1:7443].
    #[arg(long, global = true, env = "MTP_ADDR", value_name = "URL")]
    pub addr: Option<String>,
    /// API token (prefer --token-file or MTP_TOKEN: flags show up in `ps`).
    #[arg(
        long,
        global = true,
        env = "MTP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// File holding the API token.
    #[arg(long, global = true, env = "MTP_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for an https:// address (instead of the system roots).
    #[arg(long, global = true, env = "MTP_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Output format [default: table].
    #[arg(short = 'o', long, global = true, env = "MTP_OUTPUT", value_enum)]
    pub output: Option<Format>,
    /// Config file [default: $HOME/.config/mtp/config, optional].
    #[arg(long, global = true, env = "MTP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tenants: the teams that own environments, with their owners and quota.
    #[command(subcommand, visible_alias = "tenants")]
    Tenant(TenantCmd),
    /// Profiles: per-environment quota, defaults and network options.
    #[command(subcommand, visible_alias = "profiles")]
    Profile(ProfileCmd),
    /// Clusters: the K3s clusters environments run on, and their agents.
    #[command(subcommand, visible_alias = "clusters")]
    Cluster(ClusterCmd),
    /// Agents: one per cluster node, registered with a cluster's join token.
    #[command(subcommand, visible_alias = "agents")]
    Agent(AgentCmd),
    /// Environments: a tenant's isolated namespace on a cluster.
    #[command(subcommand, visible_alias = "envs")]
    Env(EnvCmd),
    /// API tokens: create, list and revoke.
    #[command(subcommand, visible_alias = "tokens")]
    Token(TokenCmd),
    /// The audit log: list events, verify the hash chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Usage and cost: reports and charts per tenant, environment or cluster.
    #[command(subcommand)]
    Cost(CostCmd),
    /// The price book: what a core-hour, GiB-hour and GiB-month cost.
    #[command(subcommand, visible_alias = "prices")]
    Price(PriceCmd),
    /// Tenant budgets: a monthly amount with alert thresholds.
    #[command(subcommand, visible_alias = "budgets")]
    Budget(BudgetCmd),
}

impl Command {
    /// Whether `-o csv` means something for this command.
    pub fn supports_csv(&self) -> bool {
        matches!(self, Command::Cost(CostCmd::Report(_)))
    }
}

impl Cli {
    fn overrides(&self) -> config::Overrides {
        config::Overrides {
            addr: self.addr.clone(),
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            ca_cert: self.ca_cert.clone(),
            output: self.output,
        }
    }
}

/// Runs one parsed command line. Returns the output format too, so the caller
/// can render an error the way the user asked for.
pub async fn run(cli: Cli) -> (Format, Result<(), CliError>) {
    let file = match config::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return (cli.output.unwrap_or(Format::Table), Err(CliError::Other(e))),
    };
    let settings = config::resolve(&cli.overrides(), &file);
    let format = settings.output;
    if format == Format::Csv && !cli.command.supports_csv() {
        return (
            format,
            Err(CliError::usage(
                "-o csv is only supported by `mtp cost report`; use -o table or -o json",
            )),
        );
    }
    let api = match client::ControlPlane::new(&settings) {
        Ok(api) => api,
        Err(e) => return (format, Err(e)),
    };
    let ctx = Ctx { api, format };
    let result = match cli.command {
        Command::Tenant(c) => commands::tenants::run(c, &ctx).await,
        Command::Profile(c) => commands::profiles::run(c, &ctx).await,
        Command::Cluster(c) => commands::clusters::run(c, &ctx).await,
        Command::Agent(c) => commands::agents::run(c, &ctx).await,
        Command::Env(c) => commands::environments::run(c, &ctx).await,
        Command::Token(c) => commands::tokens::run(c, &ctx).await,
        Command::Audit(c) => commands::audit::run(c, &ctx).await,
        Command::Cost(c) => commands::cost::run(c, &ctx).await,
        Command::Price(c) => commands::prices::run(c, &ctx).await,
        Command::Budget(c) => commands::budgets::run(c, &ctx).await,
    };
    (format, result)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "mtp",
            "tenant",
            "list",
            "-o",
            "json",
            "--addr",
            "http://x:1",
        ])
        .unwrap();
        assert_eq!(cli.output, Some(Format::Json));
        assert_eq!(cli.addr.as_deref(), Some("http://x:1"));
    }

    #[test]
    fn wait_timeout_defaults_to_5m_and_needs_wait() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["mtp", "env"], args].concat());
        let Command::Env(commands::environments::EnvCmd::Delete { wait, .. }) =
            parse(&["delete", "t", "n", "--wait"]).unwrap().command
        else {
            panic!("not env delete");
        };
        assert!(wait.wait);
        assert_eq!(wait.timeout.num_seconds(), 300);
        assert!(parse(&["delete", "t", "n", "--timeout", "1s"]).is_err());
        let Command::Env(commands::environments::EnvCmd::Create(a)) = parse(&[
            "create",
            "t",
            "n",
            "--cluster",
            "c",
            "--profile",
            "p",
            "--wait",
            "--timeout",
            "90s",
        ])
        .unwrap()
        .command
        else {
            panic!("not env create");
        };
        assert_eq!(a.wait.timeout.num_seconds(), 90);
    }

    #[test]
    fn cost_price_and_budget_commands_parse_and_only_cost_report_takes_csv() {
        let p = |args: &[&str]| Cli::try_parse_from([&["mtp"], args].concat());
        let c = p(&["cost", "report", "-o", "csv", "--window", "7d"]).unwrap();
        assert_eq!(c.output, Some(Format::Csv));
        assert!(c.command.supports_csv());
        assert!(!p(&["cost", "chart"]).unwrap().command.supports_csv());
        assert!(
            !p(&["tenant", "list", "-o", "csv"])
                .unwrap()
                .command
                .supports_csv()
        );
        assert!(p(&["cost", "chart", "--out", "x.svg", "--by", "cluster"]).is_ok());
        assert!(p(&["price", "list", "--cluster", "eu-1"]).is_ok());
        assert!(p(&["budget", "get", "team-a"]).is_ok());
        assert!(p(&["budget", "set", "team-a", "--monthly", "500"]).is_ok());
        assert!(p(&["cost", "report", "-o", "yaml"]).is_err());
    }

    #[test]
    fn csv_is_refused_for_other_commands_before_any_call() {
        let config = tempfile::NamedTempFile::new().unwrap();
        let cli = Cli::try_parse_from([
            "mtp",
            "tenant",
            "list",
            "-o",
            "csv",
            "--addr",
            "http://127.0.0.1:1",
            "--config",
            config.path().to_str().unwrap(),
        ])
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (format, res) = rt.block_on(run(cli));
        assert_eq!(format, Format::Csv);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), errors::exit::USAGE);
        assert!(e.render_human().contains("-o csv is only supported"), "{e}");
    }

    #[test]
    fn cluster_create_join_token_flags() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["mtp", "cluster"], args].concat());
        assert!(parse(&["create", "c", "--no-join-token"]).is_ok());
        assert!(parse(&["create", "c", "--join-token-ttl", "2h"]).is_ok());
        assert!(parse(&["create", "c", "--join-token-ttl", "2"]).is_err());
        assert!(parse(&["create", "c", "--no-join-token", "--join-token-ttl", "2h"]).is_err());
        assert!(parse(&["join-token", "c", "--ttl", "7d"]).is_ok());
        assert!(
            parse(&[
                "join-token",
                "create",
                "c",
                "--ttl",
                "7d",
                "--max-uses",
                "3"
            ])
            .is_ok()
        );
        assert!(parse(&["join-token", "c", "--max-uses", "3"]).is_ok());
        assert!(parse(&["join-token", "list"]).is_ok());
        assert!(parse(&["join-token", "list", "c"]).is_ok());
        assert!(parse(&["join-token", "revoke", "0123456789abcdef"]).is_ok());
        assert!(parse(&["join-token", "revoke"]).is_err());
        assert!(parse(&["create", "c", "--join-token-max-uses", "2"]).is_ok());
        assert!(Cli::try_parse_from(["mtp", "agent", "revoke", "mtpagent_1"]).is_ok());
        assert!(Cli::try_parse_from(["mtp", "agent", "list", "--cluster", "c"]).is_ok());
    }
}
