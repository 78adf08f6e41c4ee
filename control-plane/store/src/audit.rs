//! The audit log in PostgreSQL: appended inside the caller's transaction,
//! listed with filters, and verified link by link.

use chrono::{DateTime, Utc};
use mtp_core::audit::{AuditEvent, ChainVerifier, PendingEvent};
use sqlx::{Postgres, Transaction};

use crate::{ChangeContext, Result, Store};

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub after_sequence: i64,
    pub limit: i64,
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub events_checked: i64,
    /// `None` when intact; else the first broken sequence and what is wrong.
    pub broken: Option<(i64, String)>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    sequence: i64,
    time: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    tenant: Option<String>,
    request_id: String,
    details: String,
    previous_hash: String,
    hash: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        AuditEvent {
            sequence: r.sequence,
            time: r.time,
            actor: r.actor,
            action: r.action,
            target: r.target,
            tenant: r.tenant,
            request_id: r.request_id,
            details: r.details,
            previous_hash: r.previous_hash,
            hash: r.hash,
        }
    }
}

/// Appends one event in `tx`. Locks the chain head, so concurrent transactions
/// append one after another in commit order; callers take it last, right
/// before committing, to keep the lock short.
pub(crate) async fn append(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &ChangeContext,
    action: &str,
    target: String,
    tenant: Option<&str>,
    details: serde_json::Value,
) -> Result<AuditEvent> {
    let (sequence, hash): (i64, String) =
        sqlx::query_as("SELECT sequence, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut **tx)
            .await?;
    let event = PendingEvent {
        actor: ctx.actor.clone(),
        action: action.to_owned(),
        target,
        tenant: tenant.map(str::to_owned),
        request_id: ctx.request_id.clone(),
        details,
    }
    .chain(sequence, &hash, Utc::now());
    sqlx::query(
        "INSERT INTO audit_events (sequence, time, actor, action, target, tenant, request_id, details, previous_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.sequence)
    .bind(event.time)
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.tenant)
    .bind(&event.request_id)
    .bind(&event.details)
    .bind(&event.previous_hash)
    .bind(&event.hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_chain_head SET sequence = $1, hash = $2 WHERE id = 1")
        .bind(event.sequence)
        .bind(&event.hash)
        .execute(&mut **tx)
        .await?;
    Ok(event)
}

const VERIFY_PAGE: i64 = 5_000;

impl Store {
    pub async fn list_audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        self.timed("list_audit_events", async {
            let limit = if filter.limit <= 0 {
                100
            } else {
                filter.limit.min(1000)
            };
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT * FROM audit_events
                 WHERE sequence > $1 AND ($2::text IS NULL OR tenant = $2)
                 ORDER BY sequence LIMIT $3",
            )
            .bind(filter.after_sequence)
            .bind(&filter.tenant)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(AuditEvent::from).collect())
        })
        .await
    }

    /// Recomputes the chain from the first event, page by page, in one
    /// repeatable-read snapshot so concurrent appends don't look like breaks.
    pub async fn verify_audit_log(&self) -> Result<AuditReport> {
        self.timed("verify_audit_log", async {
            let mut tx = self.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            let mut verifier = ChainVerifier::default();
            let mut after = 0i64;
            loop {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT * FROM audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                )
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = rows.last() else { break };
                after = last.sequence;
                for row in rows {
                    if let Err(b) = verifier.push(&row.into()) {
                        return Ok(AuditReport {
                            events_checked: verifier.checked(),
                            broken: Some((b.sequence, b.problem)),
                        });
                    }
                }
            }
            let (head_seq, head_hash): (i64, String) =
                sqlx::query_as("SELECT sequence, hash FROM audit_chain_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            let broken = verifier
                .finish(head_seq, &head_hash)
                .err()
                .map(|b| (b.sequence, b.problem));
            tx.commit().await?;
            Ok(AuditReport {
                events_checked: verifier.checked(),
                broken,
            })
        })
        .await
    }
}
