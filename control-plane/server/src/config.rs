//! Command-line and environment configuration, validated once into `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Parser, ValueEnum};

use mtp_core::agents::{MAX_CERTIFICATE_LIFETIME, MIN_CERTIFICATE_LIFETIME};

use crate::ca::{AgentCaFiles, AgentCaSource};
use crate::telemetry::LogFormat;

/// The k8s-mtp control plane: tenants, environments and clusters on PostgreSQL,
/// served over gRPC, with /healthz, /readyz and /metrics on the admin port.
#[derive(Debug, Parser)]
#[command(name = "mtp-control-plane", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub agent_ca: AgentCaArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// If no usable platform-admin token exists, mint one and write its secret
    /// to this file (mode 0600). The secret is never logged.
    #[arg(long, env = "MTP_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Largest accepted gRPC request, in bytes.
    #[arg(long, env = "MTP_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// How often the control plane and agents exchange keepalives on the agent
    /// channel; a session silent for three intervals is closed as half-open.
    #[arg(long, env = "MTP_AGENT_KEEPALIVE", value_parser = parse_duration, default_value = "5s")]
    pub agent_keepalive: Duration,
    /// How often expired environments are looked for and deleted.
    #[arg(long, env = "MTP_EXPIRY_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub expiry_interval: Duration,
    /// How often usage rollups are recomputed for the hours new usage arrived
    /// in (reports read rollups, so this is how fresh a report is), and raw
    /// usage partitions are created ahead and dropped past retention.
    #[arg(long, env = "MTP_USAGE_ROLLUP_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub usage_rollup_interval: Duration,
    /// How old a usage window may be and still be stored (older ones are
    /// answered and dropped). Must stay below the raw retention.
    #[arg(long, env = "MTP_USAGE_MAX_AGE", value_parser = parse_duration, default_value = "2d")]
    pub usage_max_age: Duration,
    /// Days raw usage windows are kept (hourly and daily rollups are kept
    /// longer); must exceed --usage-max-age.
    #[arg(long, env = "MTP_USAGE_RAW_RETENTION_DAYS", default_value_t = 3)]
    pub usage_raw_retention_days: u64,
    /// How often the fleet gauges of /metrics (environments by status, revision
    /// lag) are refreshed from PostgreSQL.
    #[arg(long, env = "MTP_METRICS_INTERVAL", value_parser = parse_duration, default_value = "15s")]
    pub metrics_interval: Duration,
    /// Development mode: allows plaintext gRPC without TLS. Never in production.
    #[arg(long, env = "MTP_DEV")]
    pub dev: bool,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (postgres://user:pass@host:port/db). Prefer
    /// --database-url-file or the environment so the password stays out of `ps`.
    #[arg(long, env = "MTP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the PostgreSQL connection URL (e.g. a mounted Secret).
    #[arg(long, env = "MTP_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Most connections this replica opens to PostgreSQL.
    #[arg(long, env = "MTP_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Listen")]
pub struct ListenArgs {
    /// Address of the gRPC API.
    #[arg(long, env = "MTP_GRPC_LISTEN", default_value = "0.0.0.0:7443")]
    pub grpc_listen: SocketAddr,
    /// Address of the admin HTTP port (/healthz, /readyz, /metrics).
    #[arg(long, env = "MTP_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM certificate chain served on the gRPC port.
    #[arg(long, env = "MTP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MTP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Default of --usage-max-age: an agent's spool holds 24 hours by default.
pub const DEFAULT_USAGE_MAX_AGE: Duration = Duration::from_secs(2 * 86_400);
/// Default of --usage-raw-retention-days.
pub const DEFAULT_USAGE_RAW_RETENTION_DAYS: u64 = 3;

/// Where the agent CA's files go with `--dev` when no path is given.
pub const DEV_AGENT_CA_DIR: &str = ".mtp-dev";

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Agent identity")]
pub struct AgentCaArgs {
    /// PEM certificate of the CA that signs agents' client certificates
    /// (public: agents receive it when they register). If neither this file
    /// nor --agent-ca-key exists, both are created at first start (parent
    /// directories too). Required unless --dev, where it defaults to
    /// .mtp-dev/agent-ca.crt in the working directory. Every replica must use
    /// the same CA: the first start records its certificate in PostgreSQL,
    /// and a replica with a different one refuses to start.
    #[arg(long, env = "MTP_AGENT_CA_CERT", value_name = "FILE")]
    pub agent_ca_cert: Option<PathBuf>,
    /// PKCS#8 PEM private key of --agent-ca-cert (created with mode 0600; in
    /// Kubernetes, mount both from a Secret). Never logged. Default with
    /// --dev: .mtp-dev/agent-ca.key.
    #[arg(long, env = "MTP_AGENT_CA_KEY", value_name = "FILE")]
    pub agent_ca_key: Option<PathBuf>,
    /// Lifetime of the certificates signed for agents (10s to 90d). Agents
    /// renew over their session once less than half of it is left; an agent
    /// offline for longer than the whole lifetime must register again with a
    /// join token.
    #[arg(long, env = "MTP_AGENT_CERTIFICATE_LIFETIME", value_parser = parse_duration, default_value = "7d", value_name = "DURATION")]
    pub agent_certificate_lifetime: Duration,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter in RUST_LOG syntax, e.g. "info" or "info,mtp_store=debug".
    #[arg(long, env = "MTP_LOG", default_value = "info")]
    pub log: String,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "MTP_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// TLS material loaded from disk.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// The validated configuration the runtime starts from.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub db_max_connections: u32,
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `None` only in dev mode.
    pub tls: Option<TlsMaterial>,
    pub bootstrap_token_file: Option<PathBuf>,
    pub max_request_bytes: usize,
    /// How often readiness re-checks PostgreSQL for the gRPC health service.
    pub health_interval: Duration,
    pub agent_keepalive: Duration,
    pub expiry_interval: Duration,
    pub usage_rollup_interval: Duration,
    /// Oldest usage window ingest stores.
    pub usage_max_age: Duration,
    /// Days raw usage windows are kept.
    pub usage_raw_retention_days: u64,
    /// How often the fleet gauges are refreshed from PostgreSQL.
    pub metrics_interval: Duration,
    /// The CA that signs agent certificates.
    pub agent_ca: AgentCaSource,
    pub agent_certificate_lifetime: Duration,
}

/// A duration in the grammar every mtp binary shares (`500ms`, `5s`, `2m`,
/// `1h30m`). A bare number is still read as seconds, as these flags always
/// did, so existing deployments keep starting; write `5s` in new settings.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => mtp_proto::duration::parse(text),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password: never print it.
        f.debug_struct("Config")
            .field("grpc_listen", &self.grpc_listen)
            .field("admin_listen", &self.admin_listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A plaintext configuration for tests and local development.
    pub fn for_dev(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            db_max_connections: 20,
            grpc_listen: "127.0.0.1:0".parse().expect("static address"),
            admin_listen: "127.0.0.1:0".parse().expect("static address"),
            tls: None,
            bootstrap_token_file: None,
            max_request_bytes: 1 << 20,
            health_interval: Duration::from_secs(5),
            agent_keepalive: Duration::from_secs(1),
            expiry_interval: Duration::from_millis(500),
            usage_rollup_interval: Duration::from_millis(200),
            usage_max_age: DEFAULT_USAGE_MAX_AGE,
            usage_raw_retention_days: DEFAULT_USAGE_RAW_RETENTION_DAYS,
            metrics_interval: Duration::from_secs(1),
            agent_ca: AgentCaSource::Ephemeral,
            agent_certificate_lifetime: Duration::from_secs(3600),
        }
    }
}

impl Args {
    /// Validates the arguments into a [`Config`].
    pub fn into_config(self) -> anyhow::Result<Config> {
        let database_url = match (self.database.database_url, self.database.database_url_file) {
            (Some(url), None) => url,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| format!("reading --database-url-file {}", path.display()))?
                .trim()
                .to_owned(),
            (Some(_), Some(_)) => {
                bail!("give either --database-url or --database-url-file, not both")
            }
            (None, None) => {
                bail!("--database-url (MTP_DATABASE_URL) or --database-url-file is required")
            }
        };
        let tls = match (self.tls.tls_cert, self.tls.tls_key) {
            (Some(cert), Some(key)) => Some(TlsMaterial {
                cert_pem: std::fs::read(&cert)
                    .with_context(|| format!("reading --tls-cert {}", cert.display()))?,
                key_pem: std::fs::read(&key)
                    .with_context(|| format!("reading --tls-key {}", key.display()))?,
            }),
            _ if self.dev => None,
            _ => bail!(
                "--tls-cert and --tls-key are required; pass --dev (MTP_DEV=1) to serve plaintext gRPC for local development"
            ),
        };
        let agent_ca = match (self.agent_ca.agent_ca_cert, self.agent_ca.agent_ca_key) {
            (Some(cert), Some(key)) => AgentCaFiles { cert, key },
            (None, None) if self.dev => AgentCaFiles {
                cert: PathBuf::from(DEV_AGENT_CA_DIR).join("agent-ca.crt"),
                key: PathBuf::from(DEV_AGENT_CA_DIR).join("agent-ca.key"),
            },
            (None, None) => bail!(
                "--agent-ca-cert and --agent-ca-key (MTP_AGENT_CA_CERT, MTP_AGENT_CA_KEY) are required: the CA that signs agent certificates (created there at first start if neither file exists)"
            ),
            _ => {
                bail!("give both --agent-ca-cert and --agent-ca-key, or neither (only with --dev)")
            }
        };
        let lifetime = self.agent_ca.agent_certificate_lifetime;
        if !(MIN_CERTIFICATE_LIFETIME..=MAX_CERTIFICATE_LIFETIME).contains(&lifetime) {
            bail!(
                "--agent-certificate-lifetime must be between {} and {}",
                mtp_proto::duration::format(MIN_CERTIFICATE_LIFETIME),
                mtp_proto::duration::format(MAX_CERTIFICATE_LIFETIME)
            );
        }
        let retention = Duration::from_secs(self.usage_raw_retention_days.saturating_mul(86_400));
        if self.usage_max_age >= retention {
            bail!(
                "--usage-max-age ({}) must be shorter than --usage-raw-retention-days ({} days): older windows would land in partitions already dropped",
                mtp_proto::duration::format(self.usage_max_age),
                self.usage_raw_retention_days
            );
        }
        if self.max_request_bytes < 4096 {
            bail!("--max-request-bytes must be at least 4096");
        }
        Ok(Config {
            database_url,
            db_max_connections: self.database.db_max_connections.max(2),
            grpc_listen: self.listen.grpc_listen,
            admin_listen: self.listen.admin_listen,
            tls,
            bootstrap_token_file: self.bootstrap_token_file,
            max_request_bytes: self.max_request_bytes,
            health_interval: Duration::from_secs(5),
            agent_keepalive: self.agent_keepalive,
            expiry_interval: self.expiry_interval,
            usage_rollup_interval: self.usage_rollup_interval,
            usage_max_age: self.usage_max_age,
            usage_raw_retention_days: self.usage_raw_retention_days,
            metrics_interval: self.metrics_interval,
            agent_ca: AgentCaSource::Files(agent_ca),
            agent_certificate_lifetime: lifetime,
        })
    }

    /// Entry point of the binary: logging, runtime, run until a signal.
    pub fn run(self) -> anyhow::Result<()> {
        let format = match self.log.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
        crate::telemetry::init(&self.log.log, format)?;
        let config = self.into_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(crate::runtime::run_until_signal(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> anyhow::Result<Config> {
        let base = ["mtp-control-plane", "--database-url", "postgres://db/mtp"];
        Args::try_parse_from(base.iter().chain(extra))?.into_config()
    }

    #[test]
    fn the_agent_ca_is_required_unless_dev_and_its_lifetime_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "cert").unwrap();
        std::fs::write(&key, "key").unwrap();
        let tls = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        let err = config(&tls).unwrap_err().to_string();
        assert!(err.contains("--agent-ca-cert and --agent-ca-key"), "{err}");
        let with_ca = [
            &tls[..],
            &["--agent-ca-cert", "ca.crt", "--agent-ca-key", "ca.key"],
        ]
        .concat();
        let c = config(&with_ca).unwrap();
        assert_eq!(
            c.agent_ca,
            AgentCaSource::Files(AgentCaFiles {
                cert: "ca.crt".into(),
                key: "ca.key".into()
            })
        );
        assert_eq!(
            c.agent_certificate_lifetime,
            Duration::from_secs(7 * 24 * 3600)
        );
        let err = config(&[&tls[..], &["--agent-ca-cert", "ca.crt"]].concat()).unwrap_err();
        assert!(err.to_string().contains("--agent-ca-key"), "{err}");

        // --dev: a default under .mtp-dev/.
        let dev = config(&["--dev"]).unwrap();
        assert_eq!(
            dev.agent_ca,
            AgentCaSource::Files(AgentCaFiles {
                cert: PathBuf::from(".mtp-dev/agent-ca.crt"),
                key: PathBuf::from(".mtp-dev/agent-ca.key"),
            })
        );
        for (lifetime, ok) in [("9s", false), ("10s", true), ("90d", true), ("91d", false)] {
            let r = config(&["--dev", "--agent-certificate-lifetime", lifetime]);
            assert_eq!(r.is_ok(), ok, "{lifetime}: {:?}", r.err());
        }
    }

    #[test]
    fn the_usage_horizon_stays_inside_raw_retention() {
        let c = config(&["--dev"]).unwrap();
        assert_eq!(c.usage_max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(c.usage_raw_retention_days, 3);
        let c = config(&[
            "--dev",
            "--usage-max-age",
            "45d",
            "--usage-raw-retention-days",
            "50",
        ])
        .unwrap();
        assert_eq!(c.usage_max_age, Duration::from_secs(45 * 86_400));
        let err = config(&["--dev", "--usage-max-age", "3d"]).unwrap_err();
        assert!(
            err.to_string().contains("--usage-raw-retention-days"),
            "{err}"
        );
    }

    #[test]
    fn durations_take_the_shared_grammar_and_old_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        // What MTP_AGENT_KEEPALIVE=5 always meant.
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
    }
}
