//! Agent identities in PostgreSQL: join tokens (minted, listed, revoked,
//! exchanged for a registration), the certificate serials each agent is
//! known by (current and previous), renewal, revocation, and the agent CA's
//! public certificate. The server signs; this module only records serials.

use chrono::{DateTime, Duration, Utc};
use mtp_core::Error as DomainError;
use mtp_core::agents::{
    AgentIdentity, AgentRegistration, IssuedCertificate, JoinToken, PresentedCertificate,
};
use mtp_core::tokens;
use serde_json::json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::revisions::{AgentNotice, notify_agent};
use crate::{ChangeContext, Error, Result, Store, audit};

const JOIN_PREFIX: &str = "mtpjoin";
/// Agent ids read `mtpagent_<16 hex>`: random (never derived from the node
/// name, which an operator may reuse), and recognisable in logs and audit.
const AGENT_PREFIX: &str = "mtpagent";

#[derive(FromRow)]
struct JoinTokenRow {
    id: String,
    cluster: String,
    create_time: DateTime<Utc>,
    expire_time: DateTime<Utc>,
    revoke_time: Option<DateTime<Utc>>,
    max_uses: i32,
    uses: i32,
    created_by: String,
}

impl From<JoinTokenRow> for JoinToken {
    fn from(r: JoinTokenRow) -> Self {
        JoinToken {
            id: r.id,
            cluster: r.cluster,
            create_time: r.create_time,
            expire_time: r.expire_time,
            revoke_time: r.revoke_time,
            max_uses: u32::try_from(r.max_uses).unwrap_or(0),
            uses: u32::try_from(r.uses).unwrap_or(0),
            created_by: r.created_by,
        }
    }
}

/// What decides whether a presented certificate is accepted.
#[derive(FromRow)]
struct Accepted {
    cluster: String,
    node_name: String,
    current: Option<String>,
    previous: Option<String>,
    revoked: bool,
}

const JOIN_TOKEN_COLUMNS: &str = "j.id, c.name AS cluster, j.create_time, j.expire_time, j.revoke_time, j.max_uses, j.uses, j.created_by";

fn unauthenticated(why: &str) -> Error {
    Error::Domain(DomainError::Unauthenticated(why.into()))
}

/// A join token as registration checks it: key hash, cluster id and name,
/// max uses, uses, revoked, expired, creation time.
type JoinTokenCheck = (String, Uuid, String, i32, i32, bool, bool, DateTime<Utc>);

impl Store {
    /// Mints a join token for `cluster`, living `ttl` (bounded by the caller,
    /// see `mtp_core::agents::join_token_ttl`) and good for `max_uses`
    /// registrations (0: any number); the secret is returned once.
    pub async fn create_join_token(
        &self,
        ctx: &ChangeContext,
        cluster: &str,
        ttl: Duration,
        max_uses: u32,
    ) -> Result<(String, JoinToken)> {
        let max = i32::try_from(max_uses)
            .map_err(|_| DomainError::invalid("max_uses", "at most 2147483647"))?;
        self.timed("create_join_token", async {
            let mut tx = self.begin().await?;
            let cluster_id: Uuid = sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
                .bind(cluster)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| DomainError::not_found("cluster", cluster))?;
            let minted = tokens::mint(JOIN_PREFIX);
            let expire = Utc::now() + ttl;
            let row: JoinTokenRow = sqlx::query_as(
                "WITH j AS (
                   INSERT INTO join_tokens (id, key_hash, cluster_id, created_by, create_time, expire_time, max_uses)
                   VALUES ($1, $2, $3, $4, now(), $5, $6) RETURNING *)
                 SELECT j.id, c.name AS cluster, j.create_time, j.expire_time, j.revoke_time, j.max_uses, j.uses, j.created_by
                 FROM j JOIN clusters c ON c.id = j.cluster_id",
            )
            .bind(&minted.id)
            .bind(&minted.key_hash)
            .bind(cluster_id)
            .bind(&ctx.actor)
            .bind(expire)
            .bind(max)
            .fetch_one(&mut *tx)
            .await?;
            audit::append(
                &mut tx,
                ctx,
                "cluster.join_token.create",
                format!("cluster/{cluster}"),
                None,
                json!({ "join_token": minted.id, "expire_time": expire, "max_uses": max_uses }),
            )
            .await?;
            tx.commit().await?;
            Ok((minted.secret, row.into()))
        })
        .await
    }

    /// The join tokens of `cluster` (or of all clusters), newest first,
    /// revoked and expired ones included (they say why an agent was refused).
    pub async fn list_join_tokens(&self, cluster: Option<&str>) -> Result<Vec<JoinToken>> {
        self.timed("list_join_tokens", async {
            if let Some(name) = cluster {
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clusters WHERE name = $1)")
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await?;
                if !exists {
                    return Err(DomainError::not_found("cluster", name).into());
                }
            }
            let sql = format!(
                "SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens j JOIN clusters c ON c.id = j.cluster_id
                 WHERE ($1::text IS NULL OR c.name = $1)
                 ORDER BY j.create_time DESC, j.id"
            );
            let rows: Vec<JoinTokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(cluster)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(JoinToken::from).collect())
        })
        .await
    }

    /// Revokes a join token: no registration with it succeeds afterwards.
    /// Agents registered with it keep their certificates (revoke those one
    /// by one). Revoking a revoked token changes nothing and is not audited.
    pub async fn revoke_join_token(&self, ctx: &ChangeContext, id: &str) -> Result<JoinToken> {
        self.timed("revoke_join_token", async {
            let mut tx = self.begin().await?;
            let revoked: Option<String> = sqlx::query_scalar(
                "UPDATE join_tokens SET revoke_time = now() WHERE id = $1 AND revoke_time IS NULL RETURNING id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let sql = format!(
                "SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens j JOIN clusters c ON c.id = j.cluster_id WHERE j.id = $1"
            );
            let row: JoinTokenRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| DomainError::not_found("join token", id))?;
            if revoked.is_some() {
                audit::append(
                    &mut tx,
                    ctx,
                    "cluster.join_token.revoke",
                    format!("cluster/{}", row.cluster),
                    None,
                    json!({ "join_token": id }),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(row.into())
        })
        .await
    }

    /// Exchanges a join token for a registration bound to its cluster and
    /// the node: the token must be valid (not revoked, not expired, uses left;
    /// its row is locked so concurrent registrations cannot overrun
    /// `max_uses`), the agent row is upserted by (cluster, node) keeping a
    /// stable agent id, and `issue` — called inside the transaction with the
    /// identity, so the certificate can name it — signs the certificate whose
    /// serial becomes the only one accepted (a re-registration drops the
    /// previous serial and lifts a revocation: it is how an operator
    /// re-admits a node). Everything commits together, audited.
    pub async fn register_agent<T>(
        &self,
        registration: &AgentRegistration,
        request_id: &str,
        issue: impl FnOnce(&AgentIdentity) -> Result<(IssuedCertificate, T), DomainError> + Send,
    ) -> Result<(AgentIdentity, IssuedCertificate, T)>
    where
        T: Send,
    {
        let AgentRegistration {
            join_token,
            node_name,
            agent_version,
        } = registration;
        self.timed("register_agent", async {
            let denied = || unauthenticated("invalid, expired or revoked join token");
            let presented = tokens::parse(JOIN_PREFIX, join_token).map_err(|_| denied())?;
            let mut tx = self.begin().await?;
            // FOR UPDATE: registrations with one token run one at a time,
            // so `uses < max_uses` holds when the count is bumped.
            let row: Option<JoinTokenCheck> = sqlx::query_as(
                "SELECT j.key_hash, c.id, c.name, j.max_uses, j.uses,
                        j.revoke_time IS NOT NULL, j.expire_time <= now(), j.create_time
                 FROM join_tokens j JOIN clusters c ON c.id = j.cluster_id
                 WHERE j.id = $1 FOR UPDATE OF j",
            )
            .bind(&presented.id)
            .fetch_optional(&mut *tx)
            .await?;
            let (hash, cluster_id, cluster, max_uses, uses, revoked, expired, token_created) =
                row.ok_or_else(denied)?;
            if !tokens::matches(&presented, &hash) {
                return Err(denied());
            }
            // Past the secret check the caller holds the token, so saying
            // exactly why it no longer works tells an attacker nothing.
            if revoked {
                return Err(unauthenticated("the join token was revoked; mint another with `mtp cluster join-token create`"));
            }
            if expired {
                return Err(unauthenticated("the join token expired; mint another with `mtp cluster join-token create`"));
            }
            if max_uses > 0 && uses >= max_uses {
                return Err(unauthenticated(&format!(
                    "the join token was used up ({uses} of {max_uses} registrations); mint another with `mtp cluster join-token create`"
                )));
            }
            sqlx::query("UPDATE join_tokens SET uses = uses + 1 WHERE id = $1")
                .bind(&presented.id)
                .execute(&mut *tx)
                .await?;
            let existing: Option<(String, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
                "SELECT id, revoke_time,
                        revoke_time IS NULL AND connected AND last_seen_time > now() - interval '30 seconds'
                 FROM agents WHERE cluster_id = $1 AND node_name = $2 FOR UPDATE",
            )
            .bind(cluster_id)
            .bind(node_name)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((_, Some(revoked_at), _)) = &existing
                && token_created <= *revoked_at
            {
                // A revocation is not undone by the tokens that existed when
                // it was made (one sits in a Secret on every node): only a
                // token minted afterwards, by someone who meant it, re-admits.
                return Err(unauthenticated(
                    "this node's agent was revoked after this join token was minted; mint a new one with `mtp cluster join-token create` to re-admit it",
                ));
            }
            if let Some((_, None, true)) = &existing {
                // The node's agent is connected right now: registering again
                // under its name would take over its identity. A real
                // reinstall waits until the old session is gone.
                return Err(DomainError::FailedPrecondition(format!(
                    "node {node_name:?} of cluster {cluster:?} has an agent connected right now; register again once it is disconnected, or revoke it first (`mtp agent revoke`)"
                ))
                .into());
            }
            let agent_id = existing
                .map(|(id, _, _)| id)
                .unwrap_or_else(|| format!("{AGENT_PREFIX}_{}", tokens::mint(AGENT_PREFIX).id));
            let mut identity = AgentIdentity {
                agent_id: agent_id.clone(),
                cluster_id,
                cluster: cluster.clone(),
                node_name: node_name.clone(),
                certificate_serial: String::new(),
            };
            let (issued, extra) = issue(&identity)?;
            identity.certificate_serial = issued.serial.clone();
            let stored_id: String = sqlx::query_scalar(
                "INSERT INTO agents (id, cluster_id, node_name, agent_version, register_time,
                                     certificate_serial, previous_certificate_serial, certificate_expire_time,
                                     join_token_id, revoke_time)
                 VALUES ($1, $2, $3, $4, now(), $5, NULL, $6, $7, NULL)
                 ON CONFLICT (cluster_id, node_name) DO UPDATE
                   SET agent_version = EXCLUDED.agent_version, register_time = now(),
                       certificate_serial = EXCLUDED.certificate_serial,
                       previous_certificate_serial = NULL,
                       certificate_expire_time = EXCLUDED.certificate_expire_time,
                       join_token_id = EXCLUDED.join_token_id,
                       revoke_time = NULL, session_id = NULL
                 RETURNING id",
            )
            .bind(&agent_id)
            .bind(cluster_id)
            .bind(node_name)
            .bind(agent_version)
            .bind(&issued.serial)
            .bind(issued.expire_time)
            .bind(&presented.id)
            .fetch_one(&mut *tx)
            .await?;
            if stored_id != agent_id {
                // Another registration of this node (with another token)
                // committed in between: the certificate would name the wrong
                // row. Nothing is kept; the agent retries.
                return Err(DomainError::FailedPrecondition(
                    "this node registered concurrently; retry".into(),
                )
                .into());
            }
            // Sessions still open with the replaced certificate end (their
            // beat fails too: the row names no session now).
            let replaced = AgentNotice::Session {
                agent_id: agent_id.clone(),
                session: Uuid::nil(),
            };
            notify_agent(&mut tx, &replaced).await?;
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
                json!({
                    "agent_id": agent_id,
                    "agent_version": agent_version,
                    "certificate_serial": issued.serial,
                    "certificate_expire_time": issued.expire_time,
                }),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cluster = %cluster, node = %node_name, agent = %agent_id, "agent registered");
            Ok((identity, issued, extra))
        })
        .await
    }

    /// The identity a verified client certificate stands for, if its agent
    /// exists in the cluster the certificate names, is not revoked, and the
    /// serial is its current or previous one. The first session opened with
    /// the current serial retires the previous one: the agent has proven it
    /// stored the renewed certificate.
    pub async fn authenticate_agent(&self, cert: &PresentedCertificate) -> Result<AgentIdentity> {
        self.timed("authenticate_agent", async {
            let row: Option<Accepted> = sqlx::query_as(
                "SELECT c.name AS cluster, a.node_name, a.certificate_serial AS current,
                        a.previous_certificate_serial AS previous, a.revoke_time IS NOT NULL AS revoked
                 FROM agents a JOIN clusters c ON c.id = a.cluster_id
                 WHERE a.id = $1 AND a.cluster_id = $2",
            )
            .bind(&cert.agent_id)
            .bind(cert.cluster_id)
            .fetch_optional(&self.pool)
            .await?;
            let Accepted {
                cluster,
                node_name,
                current,
                previous,
                revoked,
            } = row.ok_or_else(|| {
                unauthenticated("the certificate names no agent of its cluster (deleted, or another control plane's)")
            })?;
            if revoked {
                return Err(unauthenticated(
                    "this agent was revoked; register it again with a new join token",
                ));
            }
            let serial = cert.serial.as_str();
            if current.as_deref() == Some(serial) {
                if previous.is_some() {
                    sqlx::query(
                        "UPDATE agents SET previous_certificate_serial = NULL
                         WHERE id = $1 AND certificate_serial = $2",
                    )
                    .bind(&cert.agent_id)
                    .bind(serial)
                    .execute(&self.pool)
                    .await?;
                }
            } else if previous.as_deref() != Some(serial) {
                return Err(unauthenticated(
                    "this certificate was replaced by a newer registration or renewal",
                ));
            }
            Ok(AgentIdentity {
                agent_id: cert.agent_id.clone(),
                cluster_id: cert.cluster_id,
                cluster,
                node_name,
                certificate_serial: cert.serial.clone(),
            })
        })
        .await
    }

    /// Records a renewed certificate for `identity`: its serial becomes the
    /// current one and the serial `identity` was established with the
    /// previous one (so the session that asked, and a reconnect if the answer
    /// is lost, still work), in one transaction with the audit event, so it
    /// survives a restart. Refused if the agent was revoked or the presented
    /// certificate is no longer accepted.
    pub async fn renew_agent_certificate<T>(
        &self,
        identity: &AgentIdentity,
        request_id: &str,
        issue: impl FnOnce(&AgentIdentity) -> Result<(IssuedCertificate, T), DomainError> + Send,
    ) -> Result<(IssuedCertificate, T)>
    where
        T: Send,
    {
        self.timed("renew_agent_certificate", async {
            let mut tx = self.begin().await?;
            let row: Option<(Option<String>, Option<String>, bool)> = sqlx::query_as(
                "SELECT certificate_serial, previous_certificate_serial, revoke_time IS NOT NULL
                 FROM agents WHERE id = $1 AND cluster_id = $2 FOR UPDATE",
            )
            .bind(&identity.agent_id)
            .bind(identity.cluster_id)
            .fetch_optional(&mut *tx)
            .await?;
            let (current, previous, revoked) =
                row.ok_or_else(|| unauthenticated("this agent no longer exists"))?;
            if revoked {
                return Err(unauthenticated("this agent was revoked"));
            }
            let held = identity.certificate_serial.as_str();
            if current.as_deref() != Some(held) && previous.as_deref() != Some(held) {
                return Err(unauthenticated(
                    "this session's certificate was replaced; reconnect with the newest one",
                ));
            }
            let (issued, extra) = issue(identity)?;
            sqlx::query(
                "UPDATE agents SET certificate_serial = $2, previous_certificate_serial = $3,
                                   certificate_expire_time = $4
                 WHERE id = $1",
            )
            .bind(&identity.agent_id)
            .bind(&issued.serial)
            .bind(held)
            .bind(issued.expire_time)
            .execute(&mut *tx)
            .await?;
            let ctx = ChangeContext {
                actor: format!("agent:{}", identity.agent_id),
                request_id: request_id.to_owned(),
            };
            audit::append(
                &mut tx,
                &ctx,
                "agent.certificate_renewed",
                format!("agent/{}/{}", identity.cluster, identity.node_name),
                None,
                json!({
                    "agent_id": identity.agent_id,
                    "certificate_serial": issued.serial,
                    "previous_certificate_serial": held,
                    "certificate_expire_time": issued.expire_time,
                }),
            )
            .await?;
            tx.commit().await?;
            Ok((issued, extra))
        })
        .await
    }

    /// Revokes an agent: its certificates stop working at once (every
    /// `Session` checks the row), it is no longer heard as the applier (the
    /// fence ignores revoked agents), and its open
    /// sessions on every replica hear `AgentNotice::Revoked` on commit.
    /// Returns the agent's cluster name and the revoke time; revoking a
    /// revoked agent changes nothing and is not audited.
    pub async fn revoke_agent(
        &self,
        ctx: &ChangeContext,
        agent_id: &str,
    ) -> Result<(String, DateTime<Utc>)> {
        self.timed("revoke_agent", async {
            let mut tx = self.begin().await?;
            let row: Option<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT c.name, a.node_name, a.revoke_time FROM agents a
                 JOIN clusters c ON c.id = a.cluster_id WHERE a.id = $1 FOR UPDATE OF a",
            )
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
            let (cluster, node, revoke_time) =
                row.ok_or_else(|| DomainError::not_found("agent", agent_id))?;
            if let Some(at) = revoke_time {
                tx.commit().await?;
                return Ok((cluster, at));
            }
            let at: DateTime<Utc> = sqlx::query_scalar(
                "UPDATE agents SET revoke_time = now(), applier = false WHERE id = $1 RETURNING revoke_time",
            )
            .bind(agent_id)
            .fetch_one(&mut *tx)
            .await?;
            // The applier fence (`cluster_appliers`) needs no change: its
            // check joins the agent row and ignores a revoked agent.
            notify_agent(
                &mut tx,
                &AgentNotice::Revoked {
                    agent_id: agent_id.to_owned(),
                },
            )
            .await?;
            audit::append(
                &mut tx,
                ctx,
                "agent.revoke",
                format!("agent/{cluster}/{node}"),
                None,
                json!({ "agent_id": agent_id }),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cluster = %cluster, node = %node, agent = %agent_id, "agent revoked");
            Ok((cluster, at))
        })
        .await
    }

    /// Records the agent CA's certificate at first start and returns the
    /// fingerprint stored (the first replica's): a caller whose CA differs
    /// must refuse to start, or it would issue certificates no other replica
    /// accepts.
    pub async fn record_agent_ca(
        &self,
        certificate_pem: &str,
        fingerprint: &str,
    ) -> Result<String> {
        self.timed("record_agent_ca", async {
            sqlx::query(
                "INSERT INTO agent_ca (id, certificate_pem, fingerprint, create_time)
                 VALUES (1, $1, $2, now()) ON CONFLICT (id) DO NOTHING",
            )
            .bind(certificate_pem)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT fingerprint FROM agent_ca WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
        .await
    }
}
