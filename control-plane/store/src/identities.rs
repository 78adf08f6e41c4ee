//! Agent identities in PostgreSQL: join tokens (minted, exchanged for a
//! registration) and the agents registered with them.

use chrono::{DateTime, Duration, Utc};
use mtp_core::Error as DomainError;
use mtp_core::agents::{AgentIdentity, AgentRegistration};
use mtp_core::tokens;
use serde_json::json;
use uuid::Uuid;

use crate::{ChangeContext, Error, Result, Store, audit};

const JOIN_PREFIX: &str = "mtpjoin";
const AGENT_PREFIX: &str = "mtpagent";

impl Store {
    /// Mints a join token for `cluster`, living `ttl` (bounded by the caller,
    /// see `mtp_core::agents::join_token_ttl`); the secret is returned once.
    pub async fn create_join_token(
        &self,
        ctx: &ChangeContext,
        cluster: &str,
        ttl: Duration,
    ) -> Result<(String, DateTime<Utc>)> {
        self.timed("create_join_token", async {
            let mut tx = self.begin().await?;
            let cluster_id: Uuid = sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
                .bind(cluster)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| DomainError::not_found("cluster", cluster))?;
            let minted = tokens::mint(JOIN_PREFIX);
            let expire = Utc::now() + ttl;
            sqlx::query(
                "INSERT INTO join_tokens (id, key_hash, cluster_id, created_by, create_time, expire_time)
                 VALUES ($1, $2, $3, $4, now(), $5)",
            )
            .bind(&minted.id)
            .bind(&minted.key_hash)
            .bind(cluster_id)
            .bind(&ctx.actor)
            .bind(expire)
            .execute(&mut *tx)
            .await?;
            audit::append(
                &mut tx,
                ctx,
                "cluster.join_token.create",
                format!("cluster/{cluster}"),
                None,
                json!({ "join_token": minted.id, "expire_time": expire }),
            )
            .await?;
            tx.commit().await?;
            Ok((minted.secret, expire))
        })
        .await
    }

    /// Exchanges a join token for an agent credential bound to its cluster and node.
    pub async fn register_agent(
        &self,
        registration: &AgentRegistration,
        request_id: &str,
    ) -> Result<(AgentIdentity, String)> {
        let AgentRegistration {
            join_token,
            node_name,
            agent_version,
        } = registration;
        self.timed("register_agent", async {
            let denied = || Error::Domain(DomainError::Unauthenticated("invalid, expired or revoked join token".into()));
            let presented = tokens::parse(JOIN_PREFIX, join_token).map_err(|_| denied())?;
            let mut tx = self.begin().await?;
            let row: Option<(String, Uuid, String)> = sqlx::query_as(
                "SELECT j.key_hash, c.id, c.name FROM join_tokens j JOIN clusters c ON c.id = j.cluster_id
                 WHERE j.id = $1 AND j.revoke_time IS NULL AND j.expire_time > now()",
            )
            .bind(&presented.id)
            .fetch_optional(&mut *tx)
            .await?;
            let (hash, cluster_id, cluster) = row.ok_or_else(denied)?;
            if !tokens::matches(&presented, &hash) {
                return Err(denied());
            }
            let minted = tokens::mint(AGENT_PREFIX);
            // A node registering again (reinstall, lost state) replaces its
            // credential: the old one stops working at once.
            let agent_id: String = sqlx::query_scalar(
                "INSERT INTO agents (id, cluster_id, node_name, key_hash, agent_version, register_time)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (cluster_id, node_name) DO UPDATE
                   SET key_hash = EXCLUDED.key_hash, agent_version = EXCLUDED.agent_version, register_time = now()
                 RETURNING id",
            )
            .bind(&minted.id)
            .bind(cluster_id)
            .bind(node_name)
            .bind(&minted.key_hash)
            .bind(agent_version)
            .fetch_one(&mut *tx)
            .await?;
            // The credential's id must name the row it authenticates.
            sqlx::query("UPDATE agents SET id = $1 WHERE id = $2")
                .bind(&minted.id)
                .bind(&agent_id)
                .execute(&mut *tx)
                .await?;
            let ctx = ChangeContext {
                actor: format!("join-token:{}", presented.id),
                request_id: request_id.to_owned(),
            };
            audit::append(
                &mut tx,
                &ctx,
                "agent.register",
                format!("agent/{cluster}/{node_name}"),
                None,
                json!({ "agent_id": minted.id, "agent_version": agent_version }),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cluster = %cluster, node = %node_name, agent = %minted.id, "agent registered");
            Ok((
                AgentIdentity {
                    agent_id: minted.id,
                    cluster_id,
                    cluster,
                    node_name: node_name.clone(),
                },
                minted.secret,
            ))
        })
        .await
    }

    pub async fn authenticate_agent(&self, credential: &str) -> Result<AgentIdentity> {
        self.timed("authenticate_agent", async {
            let denied = || Error::Domain(DomainError::Unauthenticated("invalid or replaced agent credential".into()));
            let presented = tokens::parse(AGENT_PREFIX, credential).map_err(|_| denied())?;
            let row: Option<(String, Uuid, String, String)> = sqlx::query_as(
                "SELECT a.key_hash, c.id, c.name, a.node_name FROM agents a JOIN clusters c ON c.id = a.cluster_id
                 WHERE a.id = $1",
            )
            .bind(&presented.id)
            .fetch_optional(&self.pool)
            .await?;
            let (hash, cluster_id, cluster, node_name) = row.ok_or_else(denied)?;
            if !tokens::matches(&presented, &hash) {
                return Err(denied());
            }
            Ok(AgentIdentity {
                agent_id: presented.id,
                cluster_id,
                cluster,
                node_name,
            })
        })
        .await
    }
}
