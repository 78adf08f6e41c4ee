//! Command-line and environment configuration of `mtp-agent`, validated once
//! into [`Config`]. Every flag `--some-flag` is also `MTP_AGENT_SOME_FLAG`;
//! durations are written `500ms`, `5s`, `2m` (the `mtp_proto::duration`
//! grammar shared by every binary).
//!
//! Deprecated spellings (integer seconds/milliseconds, from before the
//! duration grammar) still work for one release and log a warning:
//! `--lease-duration-secs`, `--lease-retry-ms`/`MTP_AGENT_LEASE_RETRY_MS`,
//! `--resync-secs`/`MTP_AGENT_RESYNC`, `--drift-quiet-ms`/`MTP_AGENT_DRIFT_QUIET_MS`,
//! `--keepalive-ms`/`MTP_AGENT_KEEPALIVE_MS`, `--backoff-max-secs`, and a bare
//! number of seconds in `MTP_AGENT_LEASE_DURATION` and `MTP_AGENT_BACKOFF_MAX`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Parser};

use crate::lease::LeaseConfig;
use crate::reconciler::ReconcilerConfig;
use crate::session::SessionConfig;
use crate::telemetry::LogFormat;
use crate::{AgentConfig, UsageConfig};

/// mtp-agent — runs on every K3s node (DaemonSet). Connects out to the
/// k8s-mtp control plane, receives its cluster's environments and, while it
/// holds the cluster's applier lease, applies them with server-side apply,
/// verifies them, repairs drift and prunes what was deleted.
#[derive(Debug, Parser)]
#[command(name = "mtp-agent", version)]
pub struct Args {
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub usage: UsageArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub deprecated: DeprecatedArgs,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Control plane")]
pub struct ControlPlaneArgs {
    /// Control plane gRPC URL: https:// (sessions use the agent's client
    /// certificate). http:// only reaches a --dev control plane, which
    /// refuses agent sessions; to a non-loopback host it is logged loudly.
    #[arg(long, env = "MTP_AGENT_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: String,
    /// PEM CA certificate that signed the control plane's TLS certificate
    /// (needed for https://).
    #[arg(long, env = "MTP_AGENT_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Join token from `mtp cluster create` / `mtp cluster join-token create`;
    /// needed to register (the agent's key and client certificate are then
    /// kept in --state-dir) and to register again after the control plane
    /// refused that certificate (revoked, expired). Prefer --join-token-file:
    /// a secret in argv is visible in `ps`.
    #[arg(
        long,
        env = "MTP_AGENT_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub join_token: Option<String>,
    /// File holding the join token (e.g. a mounted Secret). Read at start; a
    /// missing file only matters while the agent has no identity yet.
    #[arg(
        long,
        env = "MTP_AGENT_JOIN_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "join_token"
    )]
    pub join_token_file: Option<PathBuf>,
    /// Keepalive period on the control plane stream (100ms to 1m) [default: 5s].
    #[arg(long, env = "MTP_AGENT_KEEPALIVE_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub keepalive_interval: Option<Duration>,
    /// Silent keepalive periods after which the stream counts as half-open.
    #[arg(long, env = "MTP_AGENT_MISSED_KEEPALIVES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub missed_keepalives: u32,
    /// First wait before reconnecting; it doubles up to --backoff-max.
    #[arg(long, env = "MTP_AGENT_BACKOFF_INITIAL", value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Longest wait between reconnection attempts [default: 30s].
    #[arg(long, env = "MTP_AGENT_BACKOFF_MAX", value_name = "DURATION", value_parser = parse_duration_or_seconds)]
    pub backoff_max: Option<Duration>,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// This node's name (in a DaemonSet: from the downward API, spec.nodeName).
    #[arg(long, env = "MTP_AGENT_NODE_NAME", value_name = "NAME")]
    pub node_name: String,
    /// Kubeconfig to use; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "MTP_AGENT_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory for the agent's identity (key, client certificate; mode 0600)
    /// and the last desired state. Must outlive restarts (DaemonSet: a
    /// hostPath), or the agent registers again and snapshots from scratch.
    #[arg(
        long,
        env = "MTP_AGENT_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/mtp-agent"
    )]
    pub state_dir: PathBuf,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Applier lease")]
pub struct LeaseArgs {
    /// Namespace of the applier Lease.
    #[arg(long, env = "MTP_AGENT_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the applier Lease.
    #[arg(
        long,
        env = "MTP_AGENT_LEASE_NAME",
        default_value = "mtp-agent-applier"
    )]
    pub lease_name: String,
    /// A dead applier is replaced after at most this long (1s to 1h) [default: 15s].
    #[arg(long, env = "MTP_AGENT_LEASE_DURATION", value_name = "DURATION", value_parser = parse_duration_or_seconds)]
    pub lease_duration: Option<Duration>,
    /// Lease renewal / contention period (at least 50ms) [default: 2s].
    #[arg(long, env = "MTP_AGENT_LEASE_RETRY_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub lease_retry_interval: Option<Duration>,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Reconcile")]
pub struct ReconcileArgs {
    /// Full read-back of every namespace, as a backstop to the watches
    /// (at least 1s) [default: 1m].
    #[arg(long, env = "MTP_AGENT_RESYNC_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub resync_interval: Option<Duration>,
    /// A changed managed object is checked once quiet this long [default: 500ms].
    #[arg(long, env = "MTP_AGENT_DRIFT_QUIET", value_name = "DURATION", value_parser = parse_duration)]
    pub drift_quiet: Option<Duration>,
    /// How often failed namespaces and unfinished deletions are retried.
    #[arg(long, env = "MTP_AGENT_RETRY_INTERVAL", value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub retry_interval: Duration,
    /// Namespaces applied in parallel.
    #[arg(long, env = "MTP_AGENT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Pruning")]
pub struct PruneArgs {
    /// Hold a prune pass (deleting managed namespaces the desired state does
    /// not list) that would delete more than this share of the managed
    /// namespaces, or all of them, until `mtp cluster confirm-prune`
    /// (more than 0, at most 1).
    #[arg(long, env = "MTP_AGENT_PRUNE_MAX_SHARE", value_name = "SHARE", default_value_t = crate::reconciler::DEFAULT_PRUNE_MAX_SHARE)]
    pub prune_max_share: f64,
}

impl PruneArgs {
    fn share(&self) -> anyhow::Result<f64> {
        let share = self.prune_max_share;
        if !(share > 0.0 && share <= 1.0) {
            bail!("--prune-max-share must be more than 0 and at most 1 (got {share})");
        }
        Ok(share)
    }
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Usage")]
pub struct UsageArgs {
    /// How often this node's kubelet Summary API is sampled for usage
    /// (1s to 10m; 0 turns usage off) [default: 10s].
    #[arg(long, env = "MTP_AGENT_USAGE_SAMPLE_INTERVAL", value_name = "DURATION", value_parser = parse_duration_or_zero)]
    pub usage_sample_interval: Option<Duration>,
    /// Turns usage sampling and reporting off (as --usage-sample-interval 0).
    #[arg(long, env = "MTP_AGENT_NO_USAGE")]
    pub no_usage: bool,
    /// Length of the usage windows reported (whole seconds, at least 10s,
    /// dividing 1h).
    #[arg(long, env = "MTP_AGENT_USAGE_WINDOW", value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub usage_window: Duration,
    /// Most usage windows kept on disk while the control plane is not
    /// reachable; past it the oldest are dropped and reported as a gap.
    #[arg(long, env = "MTP_AGENT_USAGE_SPOOL_WINDOWS", value_name = "WINDOWS", default_value_t = crate::usage::DEFAULT_SPOOL_WINDOWS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub usage_spool_windows: u64,
    /// Base URL of this node's kubelet (the Summary API is GET
    /// <URL>/stats/summary, with the agent's own credentials: `get
    /// nodes/stats`) [default: https://$MTP_AGENT_NODE_IP:10250].
    #[arg(long, env = "MTP_AGENT_KUBELET_URL", value_name = "URL")]
    pub kubelet_url: Option<String>,
    /// This node's IP (DaemonSet: from the downward API, status.hostIP),
    /// for the default --kubelet-url; `NODE_IP` is read too.
    #[arg(
        long,
        env = "MTP_AGENT_NODE_IP",
        value_name = "IP",
        overrides_with = "node_ip"
    )]
    pub node_ip: Option<std::net::IpAddr>,
}

impl UsageArgs {
    fn into_usage(self) -> anyhow::Result<UsageConfig> {
        let interval = if self.no_usage {
            Duration::ZERO
        } else {
            self.usage_sample_interval
                .unwrap_or(crate::usage::DEFAULT_SAMPLE_INTERVAL)
        };
        if interval.is_zero() {
            return Ok(UsageConfig::disabled());
        }
        let interval = within(
            "--usage-sample-interval",
            interval,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        let window = self.usage_window;
        let window_seconds = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        if window.subsec_nanos() != 0 || !crate::usage::valid_window(window_seconds) {
            bail!(
                "--usage-window must be whole seconds, at least 10s, and divide 1h (got {})",
                mtp_proto::duration::format(window)
            );
        }
        let node_ip = self.node_ip.or_else(|| {
            std::env::var("NODE_IP")
                .ok()
                .and_then(|ip| ip.trim().parse().ok())
        });
        let kubelet_url = match (self.kubelet_url, node_ip) {
            (Some(url), _) => url,
            (None, Some(std::net::IpAddr::V6(ip))) => format!("https://[{ip}]:10250"),
            (None, Some(ip)) => format!("https://{ip}:10250"),
            (None, None) => bail!(
                "usage sampling needs this node's kubelet: set --kubelet-url or --node-ip / MTP_AGENT_NODE_IP (the DaemonSet sets it from status.hostIP), or turn usage off with --no-usage"
            ),
        };
        if !(kubelet_url.starts_with("https://") || kubelet_url.starts_with("http://")) {
            bail!("--kubelet-url must be an https:// URL (got {kubelet_url:?})");
        }
        Ok(UsageConfig {
            sample_interval: interval,
            window_seconds,
            spool_windows: usize::try_from(self.usage_spool_windows)
                .context("--usage-spool-windows")?,
            max_sample_gap: None,
            kubelet_url: Some(kubelet_url),
            // Filled in by the binary from its Kubernetes client config.
            credentials: None,
        })
    }
}

/// A duration, or `0` (off).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Admin")]
pub struct AdminArgs {
    /// Address of the admin HTTP port: /healthz (alive), /readyz (session up
    /// and role known), /metrics (Prometheus).
    #[arg(
        long,
        env = "MTP_AGENT_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:9464"
    )]
    pub admin_addr: SocketAddr,
}

#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter in RUST_LOG syntax, e.g. "info" or "info,mtp_agent=debug".
    #[arg(long, env = "MTP_AGENT_LOG", default_value = "info")]
    pub log: String,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "MTP_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Spellings from before the duration grammar (integer seconds or
/// milliseconds). Deprecated: hidden from --help, used only when the new
/// flag is not given, and warned about.
#[derive(Debug, ClapArgs)]
pub struct DeprecatedArgs {
    /// Deprecated: --lease-duration.
    #[arg(long, hide = true, value_name = "SECONDS")]
    pub lease_duration_secs: Option<u64>,
    /// Deprecated: --lease-retry-interval.
    #[arg(long, env = "MTP_AGENT_LEASE_RETRY_MS", hide = true, value_name = "MS")]
    pub lease_retry_ms: Option<u64>,
    /// Deprecated: --resync-interval.
    #[arg(long, env = "MTP_AGENT_RESYNC", hide = true, value_name = "SECONDS")]
    pub resync_secs: Option<u64>,
    /// Deprecated: --drift-quiet.
    #[arg(long, env = "MTP_AGENT_DRIFT_QUIET_MS", hide = true, value_name = "MS")]
    pub drift_quiet_ms: Option<u64>,
    /// Deprecated: --keepalive-interval.
    #[arg(long, env = "MTP_AGENT_KEEPALIVE_MS", hide = true, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
    /// Deprecated: --backoff-max.
    #[arg(long, hide = true, value_name = "SECONDS")]
    pub backoff_max_secs: Option<u64>,
}

/// The validated configuration the agent starts from.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentConfig,
    pub kubeconfig: Option<PathBuf>,
    pub admin_addr: SocketAddr,
    /// Deprecated spellings that were used, to warn about once logging is up.
    pub deprecated: Vec<String>,
}

/// A duration in the shared grammar (`500ms`, `5s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    mtp_proto::duration::parse(text)
}

/// A duration, or (deprecated) a bare number of seconds: what
/// `MTP_AGENT_LEASE_DURATION` and `MTP_AGENT_BACKOFF_MAX` held before.
pub fn parse_duration_or_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => parse_duration(text),
    }
}

/// One duration setting: its flag, its deprecated spelling, its default
/// and its bounds.
struct Setting {
    flag: &'static str,
    /// How the deprecated spelling is named in the warning.
    old: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
}

const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Setting {
    /// The new flag if given, else the deprecated one (noted), else the
    /// default; refused outside the bounds, naming the flag.
    fn resolve(
        &self,
        new: Option<Duration>,
        old: Option<Duration>,
        deprecated: &mut Vec<String>,
    ) -> anyhow::Result<Duration> {
        let d = match (new, old) {
            (Some(d), _) => d,
            (None, Some(d)) => {
                deprecated.push(format!("{}: use {}", self.old, self.flag));
                d
            }
            (None, None) => self.default,
        };
        within(self.flag, d, self.min, self.max)
    }
}

fn within(flag: &str, d: Duration, min: Duration, max: Duration) -> anyhow::Result<Duration> {
    if d < min || d > max {
        bail!(
            "{flag} must be between {} and {} (got {})",
            mtp_proto::duration::format(min),
            mtp_proto::duration::format(max),
            mtp_proto::duration::format(d)
        );
    }
    Ok(d)
}

const KEEPALIVE: Setting = Setting {
    flag: "--keepalive-interval",
    old: "--keepalive-ms / MTP_AGENT_KEEPALIVE_MS",
    default: Duration::from_secs(5),
    min: Duration::from_millis(100),
    max: Duration::from_secs(60),
};
const BACKOFF_MAX: Setting = Setting {
    flag: "--backoff-max",
    old: "--backoff-max-secs",
    default: Duration::from_secs(30),
    min: Duration::from_secs(1),
    max: FOREVER,
};
const LEASE_DURATION: Setting = Setting {
    flag: "--lease-duration",
    old: "--lease-duration-secs",
    default: Duration::from_secs(15),
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
};
const LEASE_RETRY: Setting = Setting {
    flag: "--lease-retry-interval",
    old: "--lease-retry-ms / MTP_AGENT_LEASE_RETRY_MS",
    default: Duration::from_secs(2),
    min: Duration::from_millis(50),
    max: FOREVER,
};
const RESYNC: Setting = Setting {
    flag: "--resync-interval",
    old: "--resync-secs / MTP_AGENT_RESYNC",
    default: Duration::from_secs(60),
    min: Duration::from_secs(1),
    max: FOREVER,
};
const DRIFT_QUIET: Setting = Setting {
    flag: "--drift-quiet",
    old: "--drift-quiet-ms / MTP_AGENT_DRIFT_QUIET_MS",
    default: Duration::from_millis(500),
    // Zero would make the reconciler's tick interval zero, which tokio refuses.
    min: Duration::from_millis(1),
    max: FOREVER,
};

impl Args {
    /// Validates the arguments into a [`Config`]; errors name the flag.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut deprecated = Vec::new();
        let old = &self.deprecated;
        let session =
            self.control_plane
                .into_session(self.cluster.node_name, old, &mut deprecated)?;
        let lease = self.lease.into_lease(old, &mut deprecated)?;
        let mut reconciler = self.reconcile.into_reconciler(old, &mut deprecated)?;
        reconciler.prune_max_share = self.prune.share()?;
        let usage = self.usage.into_usage()?;
        Ok(Config {
            agent: AgentConfig {
                session,
                lease,
                reconciler,
                state_dir: self.cluster.state_dir,
                usage,
            },
            kubeconfig: self.cluster.kubeconfig,
            admin_addr: self.admin.admin_addr,
            deprecated,
        })
    }

    /// Entry point of the binary: logging, runtime, run until a signal.
    pub fn run(self) -> anyhow::Result<()> {
        crate::telemetry::init(&self.log.log, self.log.log_format)?;
        let config = self.into_config()?;
        for hint in &config.deprecated {
            tracing::warn!("deprecated setting {hint}");
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(crate::runtime::run_until_signal(config))
    }
}

impl ControlPlaneArgs {
    fn into_session(
        self,
        node_name: String,
        old: &DeprecatedArgs,
        deprecated: &mut Vec<String>,
    ) -> anyhow::Result<SessionConfig> {
        let keepalive = KEEPALIVE.resolve(
            self.keepalive_interval,
            old.keepalive_ms.map(Duration::from_millis),
            deprecated,
        )?;
        let backoff_max = BACKOFF_MAX.resolve(
            self.backoff_max,
            old.backoff_max_secs.map(Duration::from_secs),
            deprecated,
        )?;
        let backoff_initial = within(
            "--backoff-initial",
            self.backoff_initial,
            Duration::from_millis(1),
            backoff_max,
        )
        .context("--backoff-initial may not exceed --backoff-max")?;
        let join_token = self.join_token_value()?;
        Ok(SessionConfig {
            control_plane: self.control_plane,
            ca_cert: self.ca_cert,
            join_token,
            node_name,
            keepalive,
            missed_keepalives: self.missed_keepalives,
            backoff_initial,
            backoff_max,
        })
    }

    fn join_token_value(&self) -> anyhow::Result<Option<String>> {
        Ok(match (&self.join_token, &self.join_token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            // An optional Secret deleted after the agent registered: fine
            // until the agent needs to register again (it then says so).
            (None, Some(p)) if !p.exists() => None,
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--join-token-file {}", p.display()))?
                    .trim()
                    .to_string(),
            )
            .filter(|t| !t.is_empty()),
            (None, None) => None,
        })
    }
}

impl LeaseArgs {
    fn into_lease(
        self,
        old: &DeprecatedArgs,
        deprecated: &mut Vec<String>,
    ) -> anyhow::Result<LeaseConfig> {
        Ok(LeaseConfig {
            duration: LEASE_DURATION.resolve(
                self.lease_duration,
                old.lease_duration_secs.map(Duration::from_secs),
                deprecated,
            )?,
            retry_interval: LEASE_RETRY.resolve(
                self.lease_retry_interval,
                old.lease_retry_ms.map(Duration::from_millis),
                deprecated,
            )?,
            namespace: self.lease_namespace,
            name: self.lease_name,
        })
    }
}

impl ReconcileArgs {
    fn into_reconciler(
        self,
        old: &DeprecatedArgs,
        deprecated: &mut Vec<String>,
    ) -> anyhow::Result<ReconcilerConfig> {
        Ok(ReconcilerConfig {
            resync_interval: RESYNC.resolve(
                self.resync_interval,
                old.resync_secs.map(Duration::from_secs),
                deprecated,
            )?,
            retry_interval: within(
                "--retry-interval",
                self.retry_interval,
                Duration::from_millis(1),
                FOREVER,
            )?,
            drift_quiet: DRIFT_QUIET.resolve(
                self.drift_quiet,
                old.drift_quiet_ms.map(Duration::from_millis),
                deprecated,
            )?,
            concurrency: usize::try_from(self.concurrency).context("--concurrency")?,
            ..ReconcilerConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec![
            "mtp-agent",
            "--control-plane",
            "http://cp:7443",
            "--node-name",
            "n1",
            "--node-ip",
            "10.0.0.5",
        ];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn defaults_are_todays() {
        let c = parse(&[]).unwrap();
        let s = &c.agent.session;
        assert_eq!(
            (
                s.keepalive,
                s.missed_keepalives,
                s.backoff_initial,
                s.backoff_max
            ),
            (
                Duration::from_secs(5),
                3,
                Duration::from_millis(200),
                Duration::from_secs(30)
            )
        );
        assert_eq!(c.agent.lease.duration, Duration::from_secs(15));
        assert_eq!(c.agent.lease.retry_interval, Duration::from_secs(2));
        let r = &c.agent.reconciler;
        let d = ReconcilerConfig::default();
        assert_eq!(
            (
                r.resync_interval,
                r.retry_interval,
                r.drift_quiet,
                r.concurrency
            ),
            (
                d.resync_interval,
                d.retry_interval,
                d.drift_quiet,
                d.concurrency
            )
        );
        assert_eq!(c.admin_addr, "0.0.0.0:9464".parse().unwrap());
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/mtp-agent"));
        assert!(c.deprecated.is_empty());
    }

    #[test]
    fn durations_use_the_shared_grammar_and_old_spellings_still_work() {
        let c = parse(&[
            "--resync-interval",
            "2m",
            "--drift-quiet",
            "250ms",
            "--lease-duration",
            "20s",
        ])
        .unwrap();
        assert_eq!(c.agent.reconciler.resync_interval, Duration::from_secs(120));
        assert_eq!(c.agent.reconciler.drift_quiet, Duration::from_millis(250));
        assert_eq!(c.agent.lease.duration, Duration::from_secs(20));
        let old = parse(&[
            "--resync-secs",
            "90",
            "--keepalive-ms",
            "700",
            "--lease-duration-secs",
            "9",
            "--backoff-max-secs",
            "4",
        ])
        .unwrap();
        assert_eq!(
            old.agent.reconciler.resync_interval,
            Duration::from_secs(90)
        );
        assert_eq!(old.agent.session.keepalive, Duration::from_millis(700));
        assert_eq!(old.agent.lease.duration, Duration::from_secs(9));
        assert_eq!(old.agent.session.backoff_max, Duration::from_secs(4));
        assert_eq!(old.deprecated.len(), 4);
        let both = parse(&["--resync-secs", "90", "--resync-interval", "5s"]).unwrap();
        assert_eq!(
            both.agent.reconciler.resync_interval,
            Duration::from_secs(5),
            "the new flag wins"
        );
        assert_eq!(parse_duration_or_seconds("15"), Ok(Duration::from_secs(15)));
        assert!(
            parse(&["--resync-interval", "60"]).is_err(),
            "a bare number is ambiguous"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let e = parse(&["--keepalive-interval", "10ms"]).unwrap_err();
        assert!(e.contains("--keepalive-interval"), "{e}");
        let e = parse(&["--lease-duration", "2h"]).unwrap_err();
        assert!(e.contains("--lease-duration"), "{e}");
        let e = parse(&["--backoff-initial", "1m", "--backoff-max", "10s"]).unwrap_err();
        assert!(e.contains("--backoff-initial"), "{e}");
        let e = parse(&["--lease-retry-interval", "1ms"]).unwrap_err();
        assert!(e.contains("--lease-retry-interval"), "{e}");
    }

    #[test]
    fn usage_is_on_by_default_against_the_node_ip_and_can_be_turned_off() {
        let u = parse(&[]).unwrap().agent.usage;
        assert_eq!(u.sample_interval, Duration::from_secs(10));
        assert_eq!(u.window_seconds, 60);
        assert_eq!(u.spool_windows, 1440);
        assert_eq!(u.kubelet_url.as_deref(), Some("https://10.0.0.5:10250"));
        let u = parse(&["--node-ip", "fd00::5"]).unwrap().agent.usage;
        assert_eq!(u.kubelet_url.as_deref(), Some("https://[fd00::5]:10250"));
        let u = parse(&[
            "--kubelet-url",
            "https://127.0.0.1:9/kubelet/n1",
            "--usage-sample-interval",
            "2s",
            "--usage-window",
            "5m",
            "--usage-spool-windows",
            "12",
        ])
        .unwrap()
        .agent
        .usage;
        assert_eq!(
            (
                u.kubelet_url.as_deref(),
                u.sample_interval,
                u.window_seconds,
                u.spool_windows
            ),
            (
                Some("https://127.0.0.1:9/kubelet/n1"),
                Duration::from_secs(2),
                300,
                12
            )
        );
        assert!(!parse(&["--no-usage"]).unwrap().agent.usage.is_enabled());
        assert!(
            !parse(&["--usage-sample-interval", "0"])
                .unwrap()
                .agent
                .usage
                .is_enabled()
        );
        for bad in ["7s", "70s", "2h", "1500ms"] {
            let e = parse(&["--usage-window", bad]).unwrap_err();
            assert!(e.contains("--usage-window"), "{bad}: {e}");
        }
        let e = parse(&["--usage-sample-interval", "20m"]).unwrap_err();
        assert!(e.contains("--usage-sample-interval"), "{e}");
    }

    #[test]
    fn usage_without_a_kubelet_is_a_clear_error() {
        // The fallback variable would make it valid.
        if std::env::var_os("NODE_IP").is_some() {
            return;
        }
        let argv = [
            "mtp-agent",
            "--control-plane",
            "http://cp:7443",
            "--node-name",
            "n1",
        ];
        let e = Args::try_parse_from(argv)
            .unwrap()
            .into_config()
            .map(|_| ())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("--kubelet-url") && e.contains("--no-usage"),
            "{e}"
        );
        let off = Args::try_parse_from(argv.iter().copied().chain(["--no-usage"]))
            .unwrap()
            .into_config()
            .unwrap();
        assert!(!off.agent.usage.is_enabled());
    }

    #[test]
    fn the_prune_share_defaults_to_half_and_is_bounded() {
        assert_eq!(parse(&[]).unwrap().agent.reconciler.prune_max_share, 0.5);
        let c = parse(&["--prune-max-share", "0.2"]).unwrap();
        assert_eq!(c.agent.reconciler.prune_max_share, 0.2);
        for bad in ["0", "1.5", "-1", "NaN"] {
            let e = parse(&[&format!("--prune-max-share={bad}")]).unwrap_err();
            assert!(e.contains("--prune-max-share"), "{bad}: {e}");
        }
    }
}
