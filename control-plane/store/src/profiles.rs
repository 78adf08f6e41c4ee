//! Profiles in PostgreSQL: the built-ins are rewritten from code at start-up,
//! so the code is their source of truth; platform profiles come from the API.

use chrono::Utc;
use mtp_core::Error as DomainError;
use mtp_core::profiles::{Profile, builtin_profiles};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use crate::error::is_unique_violation;
use crate::{ChangeContext, Result, Store, audit};

impl Store {
    pub(crate) async fn upsert_builtin_profiles(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        for profile in builtin_profiles() {
            sqlx::query(
                "INSERT INTO profiles (name, builtin, spec, create_time) VALUES ($1, TRUE, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, builtin = TRUE",
            )
            .bind(&profile.name)
            .bind(Json(&profile))
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_profiles(&self) -> Result<Vec<Profile>> {
        self.timed("list_profiles", async {
            let rows: Vec<Json<Profile>> = sqlx::query_scalar(
                "SELECT spec FROM profiles ORDER BY builtin DESC, create_time, name",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|j| j.0).collect())
        })
        .await
    }

    pub async fn get_profile(&self, name: &str) -> Result<Profile> {
        self.timed("get_profile", async {
            let row: Option<Json<Profile>> =
                sqlx::query_scalar("SELECT spec FROM profiles WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|j| j.0)
                .ok_or_else(|| DomainError::not_found("profile", name).into())
        })
        .await
    }

    pub(crate) async fn profile_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        name: &str,
    ) -> Result<Option<Profile>> {
        let row: Option<Json<Profile>> =
            sqlx::query_scalar("SELECT spec FROM profiles WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
        Ok(row.map(|j| j.0))
    }

    /// Defines a platform profile (validated by the caller).
    pub async fn create_profile(&self, ctx: &ChangeContext, profile: &Profile) -> Result<Profile> {
        self.timed("create_profile", async {
            let mut stored = profile.clone();
            stored.builtin = false;
            let mut tx = self.begin().await?;
            let inserted = sqlx::query("INSERT INTO profiles (name, builtin, spec, create_time) VALUES ($1, FALSE, $2, $3)")
                .bind(&stored.name)
                .bind(Json(&stored))
                .bind(Utc::now())
                .execute(&mut *tx)
                .await;
            match inserted {
                Err(e) if is_unique_violation(&e, "profiles_pkey") => {
                    return Err(DomainError::already_exists("profile", &stored.name).into());
                }
                other => other?,
            };
            audit::append(
                &mut tx,
                ctx,
                "profile.create",
                format!("profile/{}", stored.name),
                None,
                json!({ "profile": stored }),
            )
            .await?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }
}
