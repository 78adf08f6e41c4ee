//! Clusters in PostgreSQL, with the revision counter agents follow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::names::{validate_k8s_label, validate_object_name};
use serde_json::json;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::{ChangeContext, Result, Store, audit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ingress_namespace: String,
}

impl NewCluster {
    pub fn validate(&self) -> mtp_core::Result<()> {
        validate_object_name("name", &self.name)?;
        validate_object_name("ingress_namespace", &self.ingress_namespace)?;
        if self.labels.len() > 64 {
            return Err(DomainError::invalid("labels", "at most 64 labels"));
        }
        for (k, v) in &self.labels {
            validate_k8s_label("labels", k, v)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    #[sqlx(json)]
    pub labels: BTreeMap<String, String>,
    pub ingress_namespace: String,
    pub revision: i64,
    pub create_time: DateTime<Utc>,
}

impl Store {
    pub async fn create_cluster(&self, ctx: &ChangeContext, new: &NewCluster) -> Result<Cluster> {
        self.timed("create_cluster", async {
            new.validate()?;
            let mut tx = self.begin().await?;
            let inserted: Result<Cluster, sqlx::Error> = sqlx::query_as(
                "INSERT INTO clusters (id, name, labels, ingress_namespace, revision, create_time)
                 VALUES ($1, $2, $3, $4, 0, $5) RETURNING *",
            )
            .bind(Uuid::new_v4())
            .bind(&new.name)
            .bind(Json(&new.labels))
            .bind(&new.ingress_namespace)
            .bind(Utc::now())
            .fetch_one(&mut *tx)
            .await;
            let cluster = match inserted {
                Err(e) if is_unique_violation(&e, "clusters_name_key") => {
                    return Err(DomainError::already_exists("cluster", &new.name).into());
                }
                other => other?,
            };
            audit::append(
                &mut tx,
                ctx,
                "cluster.create",
                format!("cluster/{}", new.name),
                None,
                json!({ "labels": new.labels, "ingress_namespace": new.ingress_namespace }),
            )
            .await?;
            tx.commit().await?;
            Ok(cluster)
        })
        .await
    }

    pub async fn get_cluster(&self, name: &str) -> Result<Cluster> {
        self.timed("get_cluster", async {
            let row: Option<Cluster> = sqlx::query_as("SELECT * FROM clusters WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            row.ok_or_else(|| DomainError::not_found("cluster", name).into())
        })
        .await
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        self.timed("list_clusters", async {
            Ok(sqlx::query_as("SELECT * FROM clusters ORDER BY name")
                .fetch_all(&self.pool)
                .await?)
        })
        .await
    }
}
