//! `mtp cluster …`: register, list and show the K3s clusters environments run on.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use mtp_proto::v1::{Cluster, CreateClusterRequest, GetClusterRequest, ListClustersRequest};
use serde::Serialize;

use super::{Ctx, parse_key_value};
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Register a cluster (platform admins only).
    Create(CreateArgs),
    /// List clusters.
    #[command(visible_alias = "ls")]
    List,
    /// Show one cluster.
    Get {
        /// Cluster name.
        name: String,
    },
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
}

pub async fn run(cmd: ClusterCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Create(a) => {
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
            show(ctx, &c);
        }
        ClusterCmd::List => {
            let resp = ctx
                .api
                .call(
                    "list clusters",
                    ctx.api.clusters().list_clusters(ListClustersRequest {}),
                )
                .await?;
            if ctx.json() {
                #[derive(Serialize)]
                struct L {
                    clusters: Vec<ClusterView>,
                }
                emit_json(&L {
                    clusters: resp.clusters.iter().map(ClusterView::from).collect(),
                });
            } else {
                emit(&list_table(&resp.clusters, chrono::Utc::now()).render());
            }
        }
        ClusterCmd::Get { name } => {
            let c = ctx
                .api
                .call(
                    format!("get cluster {name:?}"),
                    ctx.api.clusters().get_cluster(GetClusterRequest { name }),
                )
                .await?;
            show(ctx, &c);
        }
    }
    Ok(())
}

fn show(ctx: &Ctx, c: &Cluster) {
    if ctx.json() {
        emit_json(&ClusterView::from(c));
    } else {
        let mut d = Details::new();
        d.field("Name", &c.name)
            .field("Labels", labels_text(c))
            .field("Ingress namespace", &c.ingress_namespace)
            .field("Revision", c.revision.to_string())
            .field("Created", output::rfc3339_or_dash(c.create_time.as_ref()));
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

fn list_table(clusters: &[Cluster], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&["NAME", "INGRESS NAMESPACE", "REVISION", "AGE", "LABELS"]);
    for c in clusters {
        t.row(vec![
            c.name.clone(),
            c.ingress_namespace.clone(),
            c.revision.to_string(),
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
    pub create_time: Option<String>,
}

impl From<&Cluster> for ClusterView {
    fn from(c: &Cluster) -> Self {
        ClusterView {
            name: c.name.clone(),
            labels: c.labels.clone().into_iter().collect(),
            ingress_namespace: c.ingress_namespace.clone(),
            revision: c.revision,
            create_time: output::rfc3339(c.create_time.as_ref()),
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
    }
}
