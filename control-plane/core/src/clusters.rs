//! Clusters: where environments run, each with the revision counter its
//! agents follow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::claims::HeldPrune;
use crate::environments::EnvironmentStatus;
use crate::names::{validate_k8s_label, validate_object_name};
use crate::{Error, Result};

/// Where a cluster's ingress controller runs when the request does not say.
pub const DEFAULT_INGRESS_NAMESPACE: &str = "kube-system";

/// Most labels one cluster may carry.
const MAX_LABELS: usize = 64;

/// A cluster to register, validated by [`NewCluster::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ingress_namespace: String,
}

impl NewCluster {
    pub fn validate(&self) -> Result<()> {
        validate_object_name("name", &self.name)?;
        validate_object_name("ingress_namespace", &self.ingress_namespace)?;
        if self.labels.len() > MAX_LABELS {
            return Err(Error::invalid(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for (k, v) in &self.labels {
            validate_k8s_label("labels", k, v)?;
        }
        Ok(())
    }
}

/// A registered cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ingress_namespace: String,
    /// The latest revision of the cluster's desired state.
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    /// The agent the control plane fenced in as applier, if any.
    pub applier_agent_id: Option<String>,
    /// The epoch of the latest applier grant (only grows; 0: never granted).
    pub applier_epoch: i64,
    /// A prune pass the applier holds for an operator's confirmation.
    pub held_prune: Option<HeldPrune>,
}

/// What an operator watches per cluster (for the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSummary {
    pub cluster: String,
    /// The latest revision issued.
    pub revision: i64,
    /// The highest revision any of its agents acknowledged (0: none).
    pub acknowledged_revision: i64,
    /// Live (not yet deleted) environments by status; statuses with none are absent.
    pub environments: Vec<(EnvironmentStatus, u64)>,
}

impl ClusterSummary {
    /// How far the cluster's agents are behind what was issued.
    pub fn revision_lag(&self) -> i64 {
        (self.revision - self.acknowledged_revision).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str) -> NewCluster {
        NewCluster {
            name: name.into(),
            labels: BTreeMap::new(),
            ingress_namespace: DEFAULT_INGRESS_NAMESPACE.into(),
        }
    }

    #[test]
    fn cluster_requests_are_checked_field_by_field() {
        assert!(new("k3s-1").validate().is_ok());
        let err = new("Bad_Name").validate().unwrap_err();
        assert!(err.to_string().starts_with("name: "), "{err}");
        let mut many = new("k3s-1");
        many.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let err = many.validate().unwrap_err();
        assert_eq!(err.to_string(), "labels: at most 64 labels");
    }
}
