//! `mtp cluster …`: register, list and show the K3s clusters environments
//! run on, and mint the join tokens their agents register with.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    Agent, Cluster, ConfirmPruneRequest, CreateClusterRequest, CreateJoinTokenRequest,
    GetClusterRequest, HeldPrune, JoinToken, ListAgentsRequest, ListClustersRequest,
    ListJoinTokensRequest, RevokeJoinTokenRequest,
};
use serde::Serialize;

use super::{Ctx, parse_duration, parse_key_value};
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Register a cluster (platform admins only) and mint a join token for
    /// its agents; prints the `mtp-agent` command line to run on each node.
    Create(CreateArgs),
    /// List clusters, with their revision and agents (connected/registered).
    #[command(visible_alias = "ls")]
    List,
    /// Show one cluster.
    Get {
        /// Cluster name.
        name: String,
    },
    /// Join tokens (platform admins only): `create CLUSTER` mints one (the
    /// secret is shown once), `list [CLUSTER]` shows them without secrets,
    /// `revoke ID` stops one from registering anyone. `mtp cluster join-token
    /// CLUSTER` is short for `create CLUSTER`.
    #[command(args_conflicts_with_subcommands = true)]
    JoinToken(JoinTokenArgs),
    /// Let the applier carry out the prune pass it held (platform admins
    /// only). An agent holds a pass that would delete more than its
    /// --prune-max-share of the managed namespaces (default: more than half,
    /// or all of them) — what an empty, wrong or restored control-plane
    /// database looks like. `mtp cluster get` shows the held pass and a
    /// sample of what it would delete; check it, then confirm its revision.
    ConfirmPrune {
        /// Cluster name.
        name: String,
        /// The revision of the held pass (shown by `mtp cluster get`); a
        /// confirmation never covers a pass nobody looked at.
        #[arg(long)]
        revision: i64,
    },
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    #[command(subcommand)]
    pub cmd: Option<JoinTokenCmd>,
    /// Cluster name (short for `join-token create CLUSTER`).
    pub name: Option<String>,
    #[command(flatten)]
    pub create: MintArgs,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCmd {
    /// Mint a join token for an existing cluster, e.g. to add nodes after the
    /// first token expired, or to re-admit a revoked agent. The secret is shown once.
    Create {
        /// Cluster name.
        name: String,
        #[command(flatten)]
        create: MintArgs,
    },
    /// List join tokens (of one cluster, or all): id, uses, expiry,
    /// revocation. Secrets are never shown again.
    #[command(visible_alias = "ls")]
    List {
        /// Only the tokens of this cluster.
        cluster: Option<String>,
    },
    /// Revoke a join token by id (the first column of `list`): no agent can
    /// register with it any more; agents registered with it keep working
    /// (revoke those with `mtp agent revoke`).
    Revoke {
        /// Join token id.
        id: String,
    },
}

/// `--ttl` and `--max-uses` of a new join token.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub ttl: TtlArgs,
    /// How many agents may register with the token (a node pool of N: N);
    /// each registration counts, a re-registration of a node too
    /// [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u32>,
}

/// `--ttl` of `join-token` and `--join-token-ttl` of `create`.
const JOIN_TOKEN_TTL_HELP: &str = "How long the join token stays valid: a number with a unit s, m, h, d \
or w (e.g. 2h, 7d) [server default: 24h, at most 30d]";

/// How long a join token stays valid.
#[derive(Debug, Clone, Args)]
pub struct TtlArgs {
    #[arg(long = "ttl", value_name = "DURATION", value_parser = parse_duration, help = JOIN_TOKEN_TTL_HELP)]
    pub ttl: Option<chrono::Duration>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Cluster name: DNS-1123 label.
    pub name: String,
    /// Label as KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Namespace of the cluster's ingress controller [server default: kube-system].
    #[arg(long, value_name = "NS")]
    pub ingress_namespace: Option<String>,
    /// Do not mint a join token (mint one later with `mtp cluster join-token create`).
    #[arg(long, conflicts_with = "join_token_ttl")]
    pub no_join_token: bool,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help = JOIN_TOKEN_TTL_HELP)]
    pub join_token_ttl: Option<chrono::Duration>,
    /// How many agents may register with the join token [default: no limit].
    #[arg(long, value_name = "N", conflicts_with = "no_join_token")]
    pub join_token_max_uses: Option<u32>,
}

pub async fn run(cmd: ClusterCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Create(a) => create(ctx, a).await,
        ClusterCmd::List => list(ctx).await,
        ClusterCmd::Get { name } => get(ctx, name).await,
        ClusterCmd::ConfirmPrune { name, revision } => confirm_prune(ctx, name, revision).await,
        ClusterCmd::JoinToken(a) => match (a.cmd, a.name) {
            (Some(JoinTokenCmd::Create { name, create }), _) => {
                mint_join_token(ctx, &name, create).await
            }
            (None, Some(name)) => mint_join_token(ctx, &name, a.create).await,
            (Some(JoinTokenCmd::List { cluster }), _) => list_join_tokens(ctx, cluster).await,
            (Some(JoinTokenCmd::Revoke { id }), _) => revoke_join_token(ctx, &id).await,
            (None, None) => Err(CliError::Usage(
                "name the cluster: `mtp cluster join-token create CLUSTER` (or `list`, `revoke ID`)"
                    .into(),
            )),
        },
    }
}

/// `mtp cluster confirm-prune`: the held pass at `revision` may go ahead.
async fn confirm_prune(ctx: &Ctx, name: String, revision: i64) -> Result<(), CliError> {
    let req = ConfirmPruneRequest {
        cluster: name.clone(),
        revision,
    };
    let c = ctx
        .api
        .call(
            format!("confirm the held prune of cluster {name:?}"),
            ctx.api.clusters().confirm_prune(req),
        )
        .await?;
    if !ctx.json() {
        eprintln!(
            "confirmed: the applier of {name} prunes the pass it held at revision {revision} within a few seconds"
        );
    }
    show(ctx, &c, None);
    Ok(())
}

/// `mtp cluster create`: the cluster, then (unless told not to) its first join token.
async fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), CliError> {
    let req = CreateClusterRequest {
        name: a.name.clone(),
        labels: a.labels.into_iter().collect(),
        ingress_namespace: a.ingress_namespace.unwrap_or_default(),
    };
    let c = ctx
        .api
        .call(
            format!("create cluster {:?}", a.name),
            ctx.api.clusters().create_cluster(req),
        )
        .await?;
    if a.no_join_token {
        show(ctx, &c, None);
        return Ok(());
    }
    // The cluster exists now; if minting fails, say how to retry.
    let mint = MintArgs {
        ttl: TtlArgs {
            ttl: a.join_token_ttl,
        },
        max_uses: a.join_token_max_uses,
    };
    let token = join_token(ctx, &c.name, &mint)
        .await
        .map_err(|e| match e {
            CliError::Call(mut api) => {
                api.action = format!(
                    "cluster {:?} was created, but mint its join token (retry with `mtp cluster join-token create {}`)",
                    c.name, c.name
                );
                CliError::Call(api)
            }
            other => other,
        })?;
    if ctx.json() {
        #[derive(Serialize)]
        struct C<'a> {
            #[serde(flatten)]
            cluster: ClusterView,
            join_token: JoinTokenView,
            agent_command: &'a str,
        }
        let command = agent_command(ctx.api.addr());
        emit_json(&C {
            cluster: ClusterView::from(&c),
            join_token: JoinTokenView::from(&token),
            agent_command: &command,
        });
    } else {
        show(ctx, &c, None);
        emit("");
        show_join_token(ctx, &token);
    }
    Ok(())
}

async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let resp = ctx
        .api
        .call(
            "list clusters",
            ctx.api.clusters().list_clusters(ListClustersRequest {}),
        )
        .await?;
    let agents = agents_of(ctx, "").await;
    if ctx.json() {
        #[derive(Serialize)]
        struct L {
            clusters: Vec<ClusterView>,
        }
        emit_json(&L {
            clusters: resp
                .clusters
                .iter()
                .map(|c| ClusterView::from(c).with_agents(agents.as_deref()))
                .collect(),
        });
    } else {
        emit(&list_table(&resp.clusters, agents.as_deref(), chrono::Utc::now()).render());
    }
    Ok(())
}

async fn get(ctx: &Ctx, name: String) -> Result<(), CliError> {
    let c = ctx
        .api
        .call(
            format!("get cluster {name:?}"),
            ctx.api.clusters().get_cluster(GetClusterRequest { name }),
        )
        .await?;
    let agents = agents_of(ctx, &c.name).await;
    show(ctx, &c, agents.as_deref());
    Ok(())
}

/// `mtp cluster join-token create`: a new join token for an existing cluster.
async fn mint_join_token(ctx: &Ctx, name: &str, mint: MintArgs) -> Result<(), CliError> {
    let token = join_token(ctx, name, &mint).await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct J<'a> {
            cluster: &'a str,
            join_token: JoinTokenView,
            agent_command: &'a str,
        }
        let command = agent_command(ctx.api.addr());
        emit_json(&J {
            cluster: &token.cluster,
            join_token: JoinTokenView::from(&token),
            agent_command: &command,
        });
    } else {
        show_join_token(ctx, &token);
    }
    Ok(())
}

/// Mints a join token for `cluster`; unset flags mean the server defaults.
async fn join_token(ctx: &Ctx, cluster: &str, mint: &MintArgs) -> Result<JoinToken, CliError> {
    let req = CreateJoinTokenRequest {
        cluster: cluster.to_string(),
        ttl_seconds: mint.ttl.ttl.map(|d| d.num_seconds()).unwrap_or(0),
        max_uses: mint.max_uses.unwrap_or(0),
    };
    ctx.api
        .call(
            format!("create join token for cluster {cluster:?}"),
            ctx.api.clusters().create_join_token(req),
        )
        .await
}

/// `mtp cluster join-token list [CLUSTER]`.
async fn list_join_tokens(ctx: &Ctx, cluster: Option<String>) -> Result<(), CliError> {
    let cluster = cluster.unwrap_or_default();
    let action = if cluster.is_empty() {
        "list join tokens".to_string()
    } else {
        format!("list join tokens of cluster {cluster:?}")
    };
    let resp = ctx
        .api
        .call(
            action,
            ctx.api
                .clusters()
                .list_join_tokens(ListJoinTokensRequest { cluster }),
        )
        .await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct L {
            join_tokens: Vec<JoinTokenInfo>,
        }
        emit_json(&L {
            join_tokens: resp.join_tokens.iter().map(JoinTokenInfo::from).collect(),
        });
    } else {
        emit(&join_token_table(&resp.join_tokens, chrono::Utc::now()).render());
    }
    Ok(())
}

/// `mtp cluster join-token revoke ID`.
async fn revoke_join_token(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let t = ctx
        .api
        .call(
            format!("revoke join token {id:?}"),
            ctx.api
                .clusters()
                .revoke_join_token(RevokeJoinTokenRequest { id: id.to_string() }),
        )
        .await?;
    if ctx.json() {
        emit_json(&JoinTokenInfo::from(&t));
    } else {
        emit(&format!(
            "Join token {} of cluster {} revoked: no agent can register with it any more.",
            t.id, t.cluster
        ));
    }
    Ok(())
}

fn join_token_table(tokens: &[JoinToken], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "ID",
        "CLUSTER",
        "STATE",
        "USES",
        "EXPIRES",
        "AGE",
        "CREATED BY",
    ]);
    for j in tokens {
        let max = if j.max_uses == 0 {
            "∞".to_string()
        } else {
            j.max_uses.to_string()
        };
        t.row(vec![
            j.id.clone(),
            j.cluster.clone(),
            join_token_state(j, now).into(),
            format!("{}/{max}", j.uses),
            output::rfc3339_or_dash(j.expire_time.as_ref()),
            output::age(j.create_time.as_ref(), now),
            j.created_by.clone(),
        ]);
    }
    t
}

/// Whether a join token can still register an agent, and if not, why.
fn join_token_state(t: &JoinToken, now: chrono::DateTime<chrono::Utc>) -> &'static str {
    let expired = output::datetime(t.expire_time.as_ref()).is_some_and(|at| at <= now);
    if t.revoke_time.is_some() {
        "revoked"
    } else if expired {
        "expired"
    } else if t.max_uses > 0 && t.uses >= t.max_uses {
        "used up"
    } else {
        "valid"
    }
}

/// JSON shape of a listed join token (never its secret).
#[derive(Debug, Serialize)]
pub struct JoinTokenInfo {
    pub id: String,
    pub cluster: String,
    pub state: &'static str,
    pub uses: u32,
    /// 0: no limit.
    pub max_uses: u32,
    pub create_time: Option<String>,
    pub expire_time: Option<String>,
    pub revoke_time: Option<String>,
    pub created_by: String,
}

impl From<&JoinToken> for JoinTokenInfo {
    fn from(t: &JoinToken) -> Self {
        JoinTokenInfo {
            id: t.id.clone(),
            cluster: t.cluster.clone(),
            state: join_token_state(t, chrono::Utc::now()),
            uses: t.uses,
            max_uses: t.max_uses,
            create_time: output::rfc3339(t.create_time.as_ref()),
            expire_time: output::rfc3339(t.expire_time.as_ref()),
            revoke_time: output::rfc3339(t.revoke_time.as_ref()),
            created_by: t.created_by.clone(),
        }
    }
}

/// The agents of one cluster (or all with ""), or None when the server would
/// not list them: the counts are a convenience, not worth failing `get` over.
async fn agents_of(ctx: &Ctx, cluster: &str) -> Option<Vec<Agent>> {
    ctx.api
        .call(
            "list agents",
            ctx.api.clusters().list_agents(ListAgentsRequest {
                cluster: cluster.to_string(),
            }),
        )
        .await
        .ok()
        .map(|r| r.agents)
}

/// The command line that starts an agent on one node of the cluster. The
/// join token is read from a file: a secret in argv is visible in `ps`.
pub fn agent_command(addr: &str) -> String {
    let ca = if addr.starts_with("https://") {
        " --ca-cert /etc/mtp/ca.pem"
    } else {
        ""
    };
    format!(
        "mtp-agent --control-plane {addr}{ca} --join-token-file {JOIN_TOKEN_PATH} --node-name <node>"
    )
}

/// Where the printed instructions put the join token on a node.
const JOIN_TOKEN_PATH: &str = "/etc/mtp/join-token";

/// Human rendering of a fresh join token; the one-time warning goes to
/// stderr so `… > file` keeps only the details.
fn show_join_token(ctx: &Ctx, t: &JoinToken) {
    eprintln!(
        "warning: this is the only time the join token is shown; store it now (`mtp cluster join-token create {}` mints another)",
        t.cluster
    );
    let mut d = Details::new();
    d.field("Join token", &t.secret)
        .field("Id", &t.id)
        .field(
            "Uses",
            if t.max_uses == 0 {
                "no limit".to_string()
            } else {
                format!("at most {}", t.max_uses)
            },
        )
        .field(
            "Expires",
            match output::rfc3339(t.expire_time.as_ref()) {
                Some(at) => format!(
                    "{at} ({})",
                    output::until(t.expire_time.as_ref(), chrono::Utc::now())
                ),
                None => "-".into(),
            },
        );
    emit(&d.render());
    emit(&format!(
        concat!(
            "On every node of the cluster (<node>: the node's Kubernetes name), keep the token in a\n",
            "file only root can read, then start the agent (it keeps its key and certificate in --state-dir):\n",
            "  umask 077; mkdir -p /etc/mtp; cat > {path}    # paste the join token, then Ctrl-D\n",
            "  {command}\n",
            "With deploy/k3s, put it in the Secret the DaemonSet mounts instead:\n",
            "  kubectl -n mtp-system create secret generic mtp-agent-join-token --from-file=join-token={path}\n",
        ),
        path = JOIN_TOKEN_PATH,
        command = agent_command(ctx.api.addr()),
    ));
}

/// `connected/registered`, e.g. `2/3`.
fn agents_text(agents: Option<&[Agent]>, cluster: &str) -> String {
    match AgentCounts::of(agents, cluster) {
        Some(n) => format!("{}/{}", n.connected, n.registered),
        None => String::new(),
    }
}

fn show(ctx: &Ctx, c: &Cluster, agents: Option<&[Agent]>) {
    if ctx.json() {
        emit_json(&ClusterView::from(c).with_agents(agents));
    } else {
        let mut d = Details::new();
        d.field("Name", &c.name)
            .field("Labels", labels_text(c))
            .field("Ingress namespace", &c.ingress_namespace)
            .field("Revision", c.revision.to_string())
            .field("Applier", applier_text(c));
        if let Some(h) = &c.held_prune {
            d.field("Held prune", held_prune_text(&c.name, h));
        }
        if agents.is_some() {
            d.field(
                "Agents",
                format!("{} (connected/registered)", agents_text(agents, &c.name)),
            );
        }
        d.field("Created", output::rfc3339_or_dash(c.create_time.as_ref()));
        emit(&d.render());
    }
}

/// The fenced applier and its epoch, or a dash.
fn applier_text(c: &Cluster) -> String {
    if c.applier_agent_id.is_empty() {
        format!("- (epoch {})", c.applier_epoch)
    } else {
        format!("{} (epoch {})", c.applier_agent_id, c.applier_epoch)
    }
}

/// A held prune pass, and what to do about it.
fn held_prune_text(cluster: &str, h: &HeldPrune) -> String {
    let sample = if h.sample.is_empty() {
        String::new()
    } else {
        format!("; e.g. {}", h.sample.join(", "))
    };
    if h.confirmed_revision >= h.revision {
        format!(
            "revision {}: would delete {} of {} managed namespaces{sample} — confirmed",
            h.revision, h.would_delete, h.managed
        )
    } else {
        format!(
            "revision {}: would delete {} of {} managed namespaces{sample} — held; if right, run `mtp cluster confirm-prune {cluster} --revision {}`",
            h.revision, h.would_delete, h.managed, h.revision
        )
    }
}

/// Labels sorted by key (the wire map has no order), `k=v,k=v`.
fn labels_text(c: &Cluster) -> String {
    let sorted: BTreeMap<_, _> = c.labels.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn list_table(
    clusters: &[Cluster],
    agents: Option<&[Agent]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "INGRESS NAMESPACE",
        "REVISION",
        "AGENTS",
        "AGE",
        "LABELS",
    ]);
    for c in clusters {
        t.row(vec![
            c.name.clone(),
            c.ingress_namespace.clone(),
            c.revision.to_string(),
            agents_text(agents, &c.name),
            output::age(c.create_time.as_ref(), now),
            labels_text(c),
        ]);
    }
    t
}

/// JSON shape of a cluster. Labels are an object with sorted keys.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ingress_namespace: String,
    pub revision: i64,
    /// The agent fenced in as applier (absent: none), and the latest epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applier_agent_id: Option<String>,
    pub applier_epoch: i64,
    /// A prune pass the applier holds for confirmation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_prune: Option<HeldPruneView>,
    /// Agent counts; left out when the agents could not be listed (and on create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentCounts>,
    pub create_time: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HeldPruneView {
    pub revision: i64,
    pub would_delete: u32,
    pub managed: u32,
    pub sample: Vec<String>,
    pub hold_time: Option<String>,
    pub confirmed: bool,
}

impl From<&Cluster> for ClusterView {
    fn from(c: &Cluster) -> Self {
        ClusterView {
            name: c.name.clone(),
            labels: c.labels.clone().into_iter().collect(),
            ingress_namespace: c.ingress_namespace.clone(),
            revision: c.revision,
            applier_agent_id: (!c.applier_agent_id.is_empty()).then(|| c.applier_agent_id.clone()),
            applier_epoch: c.applier_epoch,
            held_prune: c.held_prune.as_ref().map(|h| HeldPruneView {
                revision: h.revision,
                would_delete: h.would_delete,
                managed: h.managed,
                sample: h.sample.clone(),
                hold_time: output::rfc3339(h.hold_time.as_ref()),
                confirmed: h.confirmed_revision >= h.revision,
            }),
            agents: None,
            create_time: output::rfc3339(c.create_time.as_ref()),
        }
    }
}

impl ClusterView {
    fn with_agents(mut self, agents: Option<&[Agent]>) -> Self {
        self.agents = AgentCounts::of(agents, &self.name);
        self
    }
}

/// How many agents a cluster has, and how many hold a session right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AgentCounts {
    pub registered: usize,
    pub connected: usize,
}

impl AgentCounts {
    fn of(agents: Option<&[Agent]>, cluster: &str) -> Option<Self> {
        let mine = agents?.iter().filter(|a| a.cluster == cluster);
        let (mut registered, mut connected) = (0, 0);
        for a in mine {
            registered += 1;
            connected += usize::from(a.connected);
        }
        Some(AgentCounts {
            registered,
            connected,
        })
    }
}

/// JSON shape of a freshly minted join token (the secret is never shown again).
#[derive(Debug, Serialize)]
pub struct JoinTokenView {
    pub secret: String,
    pub id: String,
    /// 0: no limit.
    pub max_uses: u32,
    pub expire_time: Option<String>,
}

impl From<&JoinToken> for JoinTokenView {
    fn from(t: &JoinToken) -> Self {
        JoinTokenView {
            secret: t.secret.clone(),
            id: t.id.clone(),
            max_uses: t.max_uses,
            expire_time: output::rfc3339(t.expire_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_prune_says_what_it_would_delete_and_how_to_confirm() {
        let mut h = HeldPrune {
            revision: 12,
            would_delete: 40,
            managed: 41,
            sample: vec!["team-a-dev".into(), "team-b-qa".into()],
            hold_time: None,
            confirmed_revision: 0,
        };
        assert_eq!(
            held_prune_text("k3s-1", &h),
            "revision 12: would delete 40 of 41 managed namespaces; e.g. team-a-dev, team-b-qa — held; if right, run `mtp cluster confirm-prune k3s-1 --revision 12`"
        );
        h.confirmed_revision = 12;
        assert!(held_prune_text("k3s-1", &h).ends_with("— confirmed"));
        let c = Cluster {
            applier_agent_id: "mtpagent_01".into(),
            applier_epoch: 4,
            ..Default::default()
        };
        assert_eq!(applier_text(&c), "mtpagent_01 (epoch 4)");
        assert_eq!(applier_text(&Cluster::default()), "- (epoch 0)");
    }

    #[test]
    fn labels_are_sorted() {
        let c = Cluster {
            name: "k3s-1".into(),
            labels: [
                ("zone".to_string(), "b".to_string()),
                ("env".to_string(), "prod".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        assert_eq!(labels_text(&c), "env=prod,zone=b");
        let v = serde_json::to_string(&ClusterView::from(&c)).unwrap();
        assert!(v.contains(r#""labels":{"env":"prod","zone":"b"}"#), "{v}");
        assert!(!v.contains("agents"), "{v}");
    }

    #[test]
    fn agent_counts_per_cluster() {
        let agent = |cluster: &str, connected| Agent {
            cluster: cluster.into(),
            connected,
            ..Default::default()
        };
        let agents = vec![agent("a", true), agent("a", false), agent("b", true)];
        let c = Cluster {
            name: "a".into(),
            revision: 7,
            ..Default::default()
        };
        let v = serde_json::to_value(ClusterView::from(&c).with_agents(Some(&agents))).unwrap();
        assert_eq!(v["agents"]["registered"], 2);
        assert_eq!(v["agents"]["connected"], 1);
        assert_eq!(v["revision"], 7);
        let now = chrono::Utc::now();
        let row = list_table(&[c], Some(&agents), now).render();
        let cells: Vec<&str> = row.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells[..4], ["a", "-", "7", "1/2"], "{row}");
        assert_eq!(agents_text(None, "a"), "");
        assert_eq!(agents_text(Some(&agents), "none"), "0/0");
    }

    #[test]
    fn agent_command_line_reads_the_token_from_a_file() {
        assert_eq!(
            agent_command("https://cp:7443"),
            "mtp-agent --control-plane https://cp:7443 --ca-cert /etc/mtp/ca.pem --join-token-file /etc/mtp/join-token --node-name <node>"
        );
        assert_eq!(
            agent_command("http://127.0.0.1:7443"),
            "mtp-agent --control-plane http://127.0.0.1:7443 --join-token-file /etc/mtp/join-token --node-name <node>"
        );
    }

    #[test]
    fn join_token_states_and_table() {
        let now = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        let ts = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let t = JoinToken {
            id: "0123456789abcdef".into(),
            cluster: "k3s-1".into(),
            create_time: ts(1_000_000 - 3600),
            expire_time: ts(1_000_000 + 3600),
            max_uses: 3,
            uses: 1,
            created_by: "token:admin".into(),
            ..Default::default()
        };
        assert_eq!(join_token_state(&t, now), "valid");
        let used = JoinToken {
            uses: 3,
            ..t.clone()
        };
        assert_eq!(join_token_state(&used, now), "used up");
        let expired = JoinToken {
            expire_time: ts(1_000_000),
            ..t.clone()
        };
        assert_eq!(join_token_state(&expired, now), "expired");
        let revoked = JoinToken {
            revoke_time: ts(1_000_000 - 1),
            ..t.clone()
        };
        assert_eq!(join_token_state(&revoked, now), "revoked");
        let unlimited = JoinToken {
            max_uses: 0,
            uses: 9,
            ..t.clone()
        };
        assert_eq!(join_token_state(&unlimited, now), "valid");
        let table = join_token_table(&[t, unlimited], now).render();
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..5], ["ID", "CLUSTER", "STATE", "USES", "EXPIRES"]);
        assert_eq!(rows[1][..4], ["0123456789abcdef", "k3s-1", "valid", "1/3"]);
        assert_eq!(rows[2][3], "9/∞");
        assert!(!table.contains("mtpjoin_"), "no secret in a list");
    }
}
