//! API tokens in PostgreSQL: minting (secret returned once), authentication
//! (lookup by public id, constant-time hash comparison), listing, revocation.

use chrono::{DateTime, Utc};
use mtp_core::Error as DomainError;
use mtp_core::access::{Principal, Role};
use mtp_core::tokens::{self, NewToken, Token};
use serde_json::json;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::{ChangeContext, Error, Result, Store, audit};

const PREFIX: &str = "mtp";

/// An `api_tokens` row joined with its tenant's name.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    description: String,
    role: String,
    tenant: Option<String>,
    created_by: String,
    create_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
    revoke_time: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for Token {
    type Error = Error;
    fn try_from(r: TokenRow) -> Result<Self> {
        Ok(Token {
            role: Role::parse(&r.role)
                .ok_or_else(|| Error::Corrupt(format!("unknown token role {:?}", r.role)))?,
            id: r.id,
            description: r.description,
            tenant: r.tenant,
            created_by: r.created_by,
            create_time: r.create_time,
            expire_time: r.expire_time,
            revoke_time: r.revoke_time,
        })
    }
}

const SELECT_TOKEN: &str =
    "SELECT k.id, k.description, k.role, t.name AS tenant, k.created_by, k.create_time,
                                   k.expire_time, k.revoke_time
                            FROM api_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id";

impl Store {
    /// Mints a token (validated by the caller); the returned secret exists
    /// nowhere else afterwards.
    pub async fn create_token(
        &self,
        ctx: &ChangeContext,
        new: &NewToken,
    ) -> Result<(Token, String)> {
        self.timed("create_token", async {
            let mut tx = self.begin().await?;
            let tenant_id: Option<Uuid> = match &new.tenant {
                None => None,
                Some(name) => Some(
                    sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1 AND delete_time IS NULL")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| DomainError::not_found("tenant", name))?,
                ),
            };
            let minted = tokens::mint(PREFIX);
            sqlx::query(
                "INSERT INTO api_tokens (id, key_hash, role, tenant_id, description, created_by, create_time, expire_time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&minted.id)
            .bind(&minted.key_hash)
            .bind(new.role.as_str())
            .bind(tenant_id)
            .bind(&new.description)
            .bind(&ctx.actor)
            .bind(Utc::now())
            .bind(new.expire_time)
            .execute(&mut *tx)
            .await?;
            audit::append(
                &mut tx,
                ctx,
                "token.create",
                format!("token/{}", minted.id),
                new.tenant.as_deref(),
                json!({ "role": new.role.as_str(), "description": new.description, "expire_time": new.expire_time }),
            )
            .await?;
            let row: TokenRow = sqlx::query_as(AssertSqlSafe(format!("{SELECT_TOKEN} WHERE k.id = $1")))
                .bind(&minted.id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((row.try_into()?, minted.secret))
        })
        .await
    }

    /// Resolves a bearer secret to the caller. Every failure is the same
    /// `Unauthenticated` so a caller learns nothing about which part was wrong.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal> {
        self.timed("authenticate", async {
            let denied = || Error::Domain(DomainError::Unauthenticated("invalid, expired or revoked token".into()));
            let presented = tokens::parse(PREFIX, secret).map_err(|_| denied())?;
            let row: Option<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT k.key_hash, k.role, t.name FROM api_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.id = $1 AND k.revoke_time IS NULL AND (k.expire_time IS NULL OR k.expire_time > now())",
            )
            .bind(&presented.id)
            .fetch_optional(&self.pool)
            .await?;
            let (key_hash, role, tenant) = row.ok_or_else(denied)?;
            if !tokens::matches(&presented, &key_hash) {
                return Err(denied());
            }
            Ok(Principal {
                token_id: presented.id,
                role: Role::parse(&role).ok_or_else(|| Error::Corrupt(format!("unknown token role {role:?}")))?,
                tenant,
            })
        })
        .await
    }

    /// Tokens visible in `scope` (all when `None`), newest first.
    pub async fn list_tokens(&self, scope: Option<&str>) -> Result<Vec<Token>> {
        self.timed("list_tokens", async {
            let rows: Vec<TokenRow> = sqlx::query_as(AssertSqlSafe(format!(
                "{SELECT_TOKEN} WHERE ($1::text IS NULL OR t.name = $1) ORDER BY k.create_time DESC"
            )))
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(Token::try_from).collect()
        })
        .await
    }

    /// Revokes a token visible in `scope`. Revoking twice is a no-op.
    pub async fn revoke_token(
        &self,
        ctx: &ChangeContext,
        id: &str,
        scope: Option<&str>,
    ) -> Result<Token> {
        self.timed("revoke_token", async {
            let mut tx = self.begin().await?;
            let row: Option<TokenRow> = sqlx::query_as(AssertSqlSafe(format!(
                "{SELECT_TOKEN} WHERE k.id = $1 AND ($2::text IS NULL OR t.name = $2) FOR UPDATE OF k"
            )))
            .bind(id)
            .bind(scope)
            .fetch_optional(&mut *tx)
            .await?;
            let row = row.ok_or_else(|| DomainError::not_found("token", id))?;
            if row.revoke_time.is_none() {
                sqlx::query("UPDATE api_tokens SET revoke_time = $2 WHERE id = $1")
                    .bind(id)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                audit::append(&mut tx, ctx, "token.revoke", format!("token/{id}"), row.tenant.as_deref(), json!({}))
                    .await?;
            }
            let row: TokenRow = sqlx::query_as(AssertSqlSafe(format!("{SELECT_TOKEN} WHERE k.id = $1")))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            row.try_into()
        })
        .await
    }

    /// Mints the first platform-admin token if no usable admin token exists,
    /// so a fresh installation can be operated. Returns `None` otherwise.
    /// Serialised by an advisory lock so two replicas starting together mint one.
    pub async fn bootstrap_admin_token(&self) -> Result<Option<(Token, String)>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(7312001)")
            .execute(&mut *conn)
            .await?;
        let result = async {
            let existing: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_tokens WHERE role = 'platform-admin' AND revoke_time IS NULL
                 AND (expire_time IS NULL OR expire_time > now())",
            )
            .fetch_one(&self.pool)
            .await?;
            if existing > 0 {
                return Ok(None);
            }
            let new = NewToken {
                role: Role::PlatformAdmin,
                tenant: None,
                description: "bootstrap admin token".into(),
                expire_time: None,
            };
            self.create_token(&ChangeContext::system("bootstrap"), &new).await.map(Some)
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock(7312001)")
            .execute(&mut *conn)
            .await?;
        result
    }
}
