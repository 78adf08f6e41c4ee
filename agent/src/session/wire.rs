//! The session's edge: domain reports into protobuf messages, protobuf
//! desired state into domain inputs. The only place the agent builds
//! `AgentMessage`s or converts a `Timestamp`.

use std::time::{Duration, SystemTime};

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;

use crate::reconciler::Input;
use crate::report::{Ack, Drift, NamespaceReport, Report};

pub fn message(report: Report) -> pb::AgentMessage {
    let kind = match report {
        Report::Role { applier } => AgentKind::Applier(pb::ApplierState { applier }),
        Report::Ack(ack) => AgentKind::Ack(revision_ack(ack)),
        Report::Drift(d) => AgentKind::Drift(drift(d)),
    };
    pb::AgentMessage { kind: Some(kind) }
}

fn revision_ack(ack: Ack) -> pb::RevisionAck {
    pb::RevisionAck {
        revision: ack.revision,
        sequence: ack.sequence,
        results: ack
            .results
            .into_iter()
            .map(|(namespace, report)| namespace_result(namespace, report))
            .collect(),
    }
}

fn namespace_result(namespace: String, report: NamespaceReport) -> pb::NamespaceResult {
    let (outcome, reason) = match report {
        NamespaceReport::Verified => (pb::NamespaceOutcome::Verified, String::new()),
        NamespaceReport::Failed(reason) => (pb::NamespaceOutcome::Failed, reason),
        NamespaceReport::Deleted => (pb::NamespaceOutcome::Deleted, String::new()),
    };
    pb::NamespaceResult {
        namespace,
        outcome: outcome as i32,
        reason,
        ..Default::default()
    }
}

fn drift(d: Drift) -> pb::DriftReport {
    pb::DriftReport {
        namespace: d.namespace,
        object: d.object,
        description: d.description,
        repaired: d.repaired,
    }
}

/// The first message of a session.
pub fn hello(resume_revision: i64, applier: bool, keepalive: Duration) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(AgentKind::Hello(pb::AgentHello {
            applied_revision: resume_revision,
            agent_version: super::AGENT_VERSION.into(),
            applier,
            keepalive_ms: u32::try_from(keepalive.as_millis()).unwrap_or(u32::MAX),
            ..Default::default()
        })),
    }
}

pub fn keepalive() -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(AgentKind::Keepalive(pb::Keepalive {
            time: Some(SystemTime::now().into()),
        })),
    }
}

/// What a control message asks of the reconciler (`None`: nothing, a
/// keepalive), and whether it carried desired state.
pub fn input(kind: ControlKind) -> (Option<Input>, bool) {
    match kind {
        ControlKind::Snapshot(s) => (Some(Input::Snapshot(s.into())), true),
        ControlKind::Changes(c) => (Some(Input::Changes(c.into())), true),
        ControlKind::AckRecorded(r) => (Some(Input::AckRecorded(r.sequence)), false),
        ControlKind::Keepalive(_) => (None, false),
        _ => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_the_wire_messages_the_control_plane_reads() {
        let ack = message(Report::Ack(Ack {
            revision: 7,
            sequence: 3,
            results: vec![
                ("a".into(), NamespaceReport::Verified),
                ("b".into(), NamespaceReport::Failed("quota refused".into())),
                ("c".into(), NamespaceReport::Deleted),
            ],
        }));
        let Some(AgentKind::Ack(ack)) = ack.kind else {
            panic!("an ack: {ack:?}");
        };
        assert_eq!((ack.revision, ack.sequence), (7, 3));
        let outcomes: Vec<(&str, i32, &str)> = ack
            .results
            .iter()
            .map(|r| (r.namespace.as_str(), r.outcome, r.reason.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", pb::NamespaceOutcome::Verified as i32, ""),
                ("b", pb::NamespaceOutcome::Failed as i32, "quota refused"),
                ("c", pb::NamespaceOutcome::Deleted as i32, ""),
            ]
        );
        assert_eq!(
            message(Report::Role { applier: true }).kind,
            Some(AgentKind::Applier(pb::ApplierState { applier: true }))
        );
        let Some(AgentKind::Keepalive(k)) = keepalive().kind else {
            panic!("a keepalive");
        };
        let sent = SystemTime::try_from(k.time.unwrap()).unwrap();
        assert!(sent <= SystemTime::now());
    }
}
