//! `mtp audit …`: read the hash-chained audit log and ask the server to verify
//! the chain.

use clap::{Args, Subcommand};
use mtp_proto::v1::{
    AuditEvent, ListAuditEventsRequest, VerifyAuditLogRequest, VerifyAuditLogResponse,
};
use serde::Serialize;

use super::Ctx;
use crate::errors::CliError;
use crate::output::{self, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Verify the hash chain; exits 6 if it is broken.
    Verify,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only events of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only events with a sequence greater than SEQ (for paging: pass the last one seen).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: i64,
    /// At most N events [server default: 100, max 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub limit: Option<i32>,
}

pub async fn run(cmd: AuditCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List(a) => {
            let resp = ctx
                .api
                .call(
                    "list audit events",
                    ctx.api.audit().list_audit_events(ListAuditEventsRequest {
                        tenant: a.tenant.unwrap_or_default(),
                        after_sequence: a.after,
                        limit: a.limit.unwrap_or(0),
                    }),
                )
                .await?;
            if ctx.json() {
                #[derive(Serialize)]
                struct L {
                    events: Vec<AuditEventView>,
                }
                emit_json(&L {
                    events: resp.events.iter().map(AuditEventView::from).collect(),
                });
            } else {
                emit(&list_table(&resp.events).render());
            }
            Ok(())
        }
        AuditCmd::Verify => {
            let resp = ctx
                .api
                .call(
                    "verify audit log",
                    ctx.api.audit().verify_audit_log(VerifyAuditLogRequest {}),
                )
                .await?;
            // The report goes to stdout either way; a broken chain then only
            // changes the exit code.
            if ctx.json() {
                emit_json(&VerifyView::from(&resp));
            } else {
                emit(&verify_text(&resp));
            }
            if resp.intact {
                Ok(())
            } else {
                Err(CliError::AuditBroken)
            }
        }
    }
}

fn verify_text(r: &VerifyAuditLogResponse) -> String {
    if r.intact {
        format!("audit log intact: {} events checked\n", r.events_checked)
    } else {
        format!(
            "audit log BROKEN at sequence {}: {} ({} events checked)\n",
            r.first_broken_sequence,
            if r.problem.is_empty() {
                "no detail given"
            } else {
                &r.problem
            },
            r.events_checked
        )
    }
}

fn list_table(events: &[AuditEvent]) -> Table {
    let mut t = Table::new(&[
        "SEQ",
        "TIME",
        "ACTOR",
        "ACTION",
        "TARGET",
        "TENANT",
        "REQUEST ID",
    ]);
    for e in events {
        t.row(vec![
            e.sequence.to_string(),
            output::rfc3339_or_dash(e.time.as_ref()),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.tenant.clone(),
            e.request_id.clone(),
        ]);
    }
    t
}

/// JSON shape of an audit event. `details` is the parsed `details_json`
/// (or the raw string if the server sent something that is not JSON).
#[derive(Debug, Serialize)]
pub struct AuditEventView {
    pub sequence: i64,
    pub time: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant: String,
    pub request_id: String,
    pub details: serde_json::Value,
    pub previous_hash: String,
    pub hash: String,
}

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> Self {
        let details = if e.details_json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&e.details_json)
                .unwrap_or_else(|_| serde_json::Value::String(e.details_json.clone()))
        };
        AuditEventView {
            sequence: e.sequence,
            time: output::rfc3339(e.time.as_ref()),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            tenant: e.tenant.clone(),
            request_id: e.request_id.clone(),
            details,
            previous_hash: e.previous_hash.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// JSON shape of `audit verify`; the broken-link fields are null when intact.
#[derive(Debug, Serialize)]
pub struct VerifyView {
    pub intact: bool,
    pub events_checked: i64,
    pub first_broken_sequence: Option<i64>,
    pub problem: Option<String>,
}

impl From<&VerifyAuditLogResponse> for VerifyView {
    fn from(r: &VerifyAuditLogResponse) -> Self {
        VerifyView {
            intact: r.intact,
            events_checked: r.events_checked,
            first_broken_sequence: (!r.intact).then_some(r.first_broken_sequence),
            problem: (!r.intact).then(|| r.problem.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_json_is_embedded() {
        let e = AuditEvent {
            sequence: 3,
            details_json: r#"{"cascade":true}"#.into(),
            ..Default::default()
        };
        let v = serde_json::to_value(AuditEventView::from(&e)).unwrap();
        assert_eq!(v["details"]["cascade"], true);
        let e = AuditEvent {
            details_json: "not json".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(AuditEventView::from(&e)).unwrap();
        assert_eq!(v["details"], "not json");
    }

    #[test]
    fn verify_report() {
        let ok = VerifyAuditLogResponse {
            intact: true,
            events_checked: 12,
            ..Default::default()
        };
        assert_eq!(verify_text(&ok), "audit log intact: 12 events checked\n");
        let v = serde_json::to_value(VerifyView::from(&ok)).unwrap();
        assert!(v["first_broken_sequence"].is_null());
        let bad = VerifyAuditLogResponse {
            intact: false,
            events_checked: 7,
            first_broken_sequence: 5,
            problem: "hash mismatch".into(),
        };
        assert_eq!(
            verify_text(&bad),
            "audit log BROKEN at sequence 5: hash mismatch (7 events checked)\n"
        );
        let v = serde_json::to_value(VerifyView::from(&bad)).unwrap();
        assert_eq!(v["first_broken_sequence"], 5);
        assert_eq!(v["problem"], "hash mismatch");
    }
}
