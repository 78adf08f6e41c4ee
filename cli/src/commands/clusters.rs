//! `mtp cluster …`: register, list and show the K3s clusters environments
//! run on, and mint the join tokens their agents register with.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    Agent, Cluster, CreateClusterRequest, CreateJoinTokenRequest, GetClusterRequest, JoinToken,
    ListAgentsRequest, ListClustersRequest,
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
    /// Mint a new join token for an existing cluster (platform admins only),
    /// e.g. to add nodes after the first token expired. The secret is shown once.
    JoinToken {
        /// Cluster name.
        name: String,
        #[command(flatten)]
        ttl: TtlArgs,
    },
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
    /// Do not mint a join token (mint one later with `mtp cluster join-token`).
    #[arg(long, conflicts_with = "join_token_ttl")]
    pub no_join_token: bool,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help = JOIN_TOKEN_TTL_HELP)]
    pub join_token_ttl: Option<chrono::Duration>,
}

pub async fn run(cmd: ClusterCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Create(a) => create(ctx, a).await,
        ClusterCmd::List => list(ctx).await,
        ClusterCmd::Get { name } => get(ctx, name).await,
        ClusterCmd::JoinToken { name, ttl } => mint_join_token(ctx, &name, ttl.ttl).await,
    }
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
    let token = join_token(ctx, &c.name, a.join_token_ttl)
        .await
        .map_err(|e| match e {
            CliError::Call(mut api) => {
                api.action = format!(
                    "cluster {:?} was created, but mint its join token (retry with `mtp cluster join-token {}`)",
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
        let command = agent_command(ctx.api.addr(), &token.secret);
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

/// `mtp cluster join-token`: a new join token for an existing cluster.
async fn mint_join_token(
    ctx: &Ctx,
    name: &str,
    ttl: Option<chrono::Duration>,
) -> Result<(), CliError> {
    let token = join_token(ctx, name, ttl).await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct J<'a> {
            cluster: &'a str,
            join_token: JoinTokenView,
            agent_command: &'a str,
        }
        let command = agent_command(ctx.api.addr(), &token.secret);
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

/// Mints a join token for `cluster`; `ttl` None means the server default.
async fn join_token(
    ctx: &Ctx,
    cluster: &str,
    ttl: Option<chrono::Duration>,
) -> Result<JoinToken, CliError> {
    let req = CreateJoinTokenRequest {
        cluster: cluster.to_string(),
        ttl_seconds: ttl.map(|d| d.num_seconds()).unwrap_or(0),
        ..Default::default()
    };
    ctx.api
        .call(
            format!("create join token for cluster {cluster:?}"),
            ctx.api.clusters().create_join_token(req),
        )
        .await
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

/// The command line that starts an agent on one node of the cluster.
pub fn agent_command(addr: &str, secret: &str) -> String {
    format!("mtp-agent --control-plane {addr} --join-token {secret} --node-name <node>")
}

/// Human rendering of a fresh join token; the one-time warning goes to
/// stderr so `… > file` keeps only the details.
fn show_join_token(ctx: &Ctx, t: &JoinToken) {
    eprintln!(
        "warning: this is the only time the join token is shown; store it now (`mtp cluster join-token {}` mints another)",
        t.cluster
    );
    let mut d = Details::new();
    d.field("Join token", &t.secret).field(
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
        "Start an agent on every node of the cluster (<node>: the node's Kubernetes name):\n  {}\n",
        agent_command(ctx.api.addr(), &t.secret)
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
            .field("Revision", c.revision.to_string());
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
    /// Agent counts; left out when the agents could not be listed (and on create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentCounts>,
    pub create_time: Option<String>,
}

impl From<&Cluster> for ClusterView {
    fn from(c: &Cluster) -> Self {
        ClusterView {
            name: c.name.clone(),
            labels: c.labels.clone().into_iter().collect(),
            ingress_namespace: c.ingress_namespace.clone(),
            revision: c.revision,
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
    pub expire_time: Option<String>,
}

impl From<&JoinToken> for JoinTokenView {
    fn from(t: &JoinToken) -> Self {
        JoinTokenView {
            secret: t.secret.clone(),
            expire_time: output::rfc3339(t.expire_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn agent_command_line() {
        assert_eq!(
            agent_command("https://cp:7443", "mtp_join_x"),
            "mtp-agent --control-plane https://cp:7443 --join-token mtp_join_x --node-name <node>"
        );
    }
}
