//! `mtp agent …`: the agents that registered with a cluster's join token, one
//! per K3s node, and the revision each last acknowledged; revoking one.

use clap::{Args, Subcommand};
use mtp_proto::v1::{Agent, ListAgentsRequest, RevokeAgentRequest};
use serde::Serialize;

use super::Ctx;
use crate::errors::CliError;
use crate::output::{self, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// List agents: which one applies for its cluster, whether it is
    /// connected, and the last revision it acknowledged (compare with the
    /// cluster's revision in `mtp cluster list`).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Revoke an agent (platform admins only): its certificate stops working
    /// at once, its open session ends and it no longer applies. To re-admit
    /// the node, give it a new join token (`mtp cluster join-token create`);
    /// to keep it out, revoke the cluster's join tokens as well.
    Revoke {
        /// Agent id (the ID column of `mtp agent list`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only the agents of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
}

pub async fn run(cmd: AgentCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        AgentCmd::Revoke { id } => {
            let a = ctx
                .api
                .call(
                    format!("revoke agent {id:?}"),
                    ctx.api
                        .clusters()
                        .revoke_agent(RevokeAgentRequest { id: id.clone() }),
                )
                .await?;
            if ctx.json() {
                emit_json(&AgentView::from(&a));
            } else {
                emit(&format!(
                    "Agent {} (cluster {}, node {}) revoked: its certificate no longer works.",
                    a.id, a.cluster, a.node_name
                ));
            }
        }
        AgentCmd::List(a) => {
            let cluster = a.cluster.unwrap_or_default();
            let action = if cluster.is_empty() {
                "list agents".to_string()
            } else {
                format!("list agents of cluster {cluster:?}")
            };
            let resp = ctx
                .api
                .call(
                    action,
                    ctx.api
                        .clusters()
                        .list_agents(ListAgentsRequest { cluster }),
                )
                .await?;
            if ctx.json() {
                #[derive(Serialize)]
                struct L {
                    agents: Vec<AgentView>,
                }
                emit_json(&L {
                    agents: resp.agents.iter().map(AgentView::from).collect(),
                });
            } else {
                emit(&list_table(&resp.agents, chrono::Utc::now()).render());
            }
        }
    }
    Ok(())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn list_table(agents: &[Agent], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "CLUSTER",
        "NODE",
        "APPLIER",
        "CONNECTED",
        "ACKED REVISION",
        "LAST SEEN",
        "VERSION",
        "ID",
    ]);
    for a in agents {
        t.row(vec![
            a.cluster.clone(),
            a.node_name.clone(),
            yes_no(a.applier),
            yes_no(a.connected),
            a.acknowledged_revision.to_string(),
            match output::datetime(a.last_seen_time.as_ref()) {
                Some(_) => format!("{} ago", output::age(a.last_seen_time.as_ref(), now)),
                None => "never".into(),
            },
            a.agent_version.clone(),
            a.id.clone(),
        ]);
    }
    t
}

/// JSON shape of an agent.
#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: String,
    pub cluster: String,
    pub node_name: String,
    /// Whether this agent currently applies for its cluster.
    pub applier: bool,
    pub connected: bool,
    /// The last revision this agent acknowledged (0: none yet).
    pub acknowledged_revision: i64,
    pub agent_version: String,
    pub last_seen_time: Option<String>,
    pub register_time: Option<String>,
    /// When its certificate expires (renewed by the agent over its session).
    pub certificate_expire_time: Option<String>,
    /// Set once revoked: the agent's certificate no longer works.
    pub revoke_time: Option<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            id: a.id.clone(),
            cluster: a.cluster.clone(),
            node_name: a.node_name.clone(),
            applier: a.applier,
            connected: a.connected,
            acknowledged_revision: a.acknowledged_revision,
            agent_version: a.agent_version.clone(),
            last_seen_time: output::rfc3339(a.last_seen_time.as_ref()),
            register_time: output::rfc3339(a.register_time.as_ref()),
            certificate_expire_time: output::rfc3339(a.certificate_expire_time.as_ref()),
            revoke_time: output::rfc3339(a.revoke_time.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            id: "a1".into(),
            cluster: "k3s-1".into(),
            node_name: "node-1".into(),
            applier: true,
            connected: false,
            last_seen_time: Some(prost_types::Timestamp {
                seconds: 1_000_000 - 90,
                nanos: 0,
            }),
            acknowledged_revision: 12,
            agent_version: "0.1.0".into(),
            register_time: None,
            ..Default::default()
        }
    }

    #[test]
    fn table_columns() {
        let now = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        let s = list_table(&[agent(), Agent::default()], now).render();
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("CLUSTER   NODE     APPLIER   CONNECTED   ACKED REVISION"),
            "{s}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "k3s-1", "node-1", "yes", "no", "12", "1m", "ago", "0.1.0", "a1"
            ]
        );
        assert!(lines[2].contains("never"), "{s}");
    }

    #[test]
    fn json_view() {
        let v = serde_json::to_value(AgentView::from(&agent())).unwrap();
        assert_eq!(v["node_name"], "node-1");
        assert_eq!(v["applier"], true);
        assert_eq!(v["acknowledged_revision"], 12);
        assert!(v["register_time"].is_null());
    }
}
