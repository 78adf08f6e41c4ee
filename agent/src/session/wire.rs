//! The session's edge: domain reports into protobuf messages, protobuf
//! desired state into domain inputs. The only place the agent builds
//! `AgentMessage`s or converts a `Timestamp`, and where every text it sends
//! is cut to the bounds the proto documents (the control plane refuses
//! longer ones).

use std::time::{Duration, SystemTime};

use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;

use super::pages::{PageError, Pages};
use crate::reconciler::{Grant, Input, SessionInfo};
use crate::report::{Ack, Drift, NamespaceReport, PruneHeld, Report};

/// The largest message the agent accepts from (and sends to) the control
/// plane. The control plane sends pages of about 1 MiB at most; this leaves
/// room without letting one message take the agent's memory. The client in
/// `open()` sets it with `max_decoding_message_size` and
/// `max_encoding_message_size`.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 << 20;

/// Results per `RevisionAck` message: a long ack is sent as several of the
/// same revision (even 500 results with 1 KiB reasons stay far below 1 MiB).
pub const ACK_RESULTS_PER_MESSAGE: usize = 500;

/// Bounds of the texts in agent messages (agents.proto).
pub const MAX_NAMESPACE_BYTES: usize = 63;
pub const MAX_OBJECT_BYTES: usize = 253;
pub const MAX_TEXT_BYTES: usize = 1024;

/// The messages one report becomes: one, except for an ack with more than
/// [`ACK_RESULTS_PER_MESSAGE`] results, which is split into several acks of
/// the same revision. Only the last carries the sequence: the control plane
/// confirms it once it recorded it, which means it recorded all before it
/// (they arrive in order on the one stream).
pub fn messages(report: Report) -> Vec<pb::AgentMessage> {
    let kinds = match report {
        Report::Role { applier } => vec![AgentKind::Applier(pb::ApplierState { applier })],
        Report::Ack(ack) => revision_acks(ack).into_iter().map(AgentKind::Ack).collect(),
        Report::Drift(d) => vec![AgentKind::Drift(drift(d))],
        Report::PruneHeld(p) => vec![AgentKind::PruneHeld(prune_held(p))],
    };
    kinds
        .into_iter()
        .map(|kind| pb::AgentMessage { kind: Some(kind) })
        .collect()
}

fn revision_acks(ack: Ack) -> Vec<pb::RevisionAck> {
    let mut results: Vec<pb::NamespaceResult> = ack
        .results
        .into_iter()
        .map(|(namespace, report)| namespace_result(namespace, report))
        .collect();
    let mut out = Vec::with_capacity(results.len() / ACK_RESULTS_PER_MESSAGE + 1);
    while results.len() > ACK_RESULTS_PER_MESSAGE {
        let rest = results.split_off(ACK_RESULTS_PER_MESSAGE);
        out.push(pb::RevisionAck {
            revision: ack.revision,
            results: std::mem::replace(&mut results, rest),
            sequence: 0,
        });
    }
    out.push(pb::RevisionAck {
        revision: ack.revision,
        results,
        sequence: ack.sequence,
    });
    out
}

fn namespace_result(namespace: String, report: NamespaceReport) -> pb::NamespaceResult {
    let (outcome, reason, live_revision) = match report {
        NamespaceReport::Verified => (pb::NamespaceOutcome::Verified, String::new(), 0),
        NamespaceReport::Failed(reason) => (pb::NamespaceOutcome::Failed, reason, 0),
        NamespaceReport::Deleted => (pb::NamespaceOutcome::Deleted, String::new(), 0),
        NamespaceReport::Superseded { live_revision } => (
            pb::NamespaceOutcome::Superseded,
            String::new(),
            live_revision,
        ),
    };
    pb::NamespaceResult {
        namespace: bounded(namespace, MAX_NAMESPACE_BYTES),
        outcome: outcome as i32,
        reason: bounded(reason, MAX_TEXT_BYTES),
        live_revision,
    }
}

fn drift(d: Drift) -> pb::DriftReport {
    pb::DriftReport {
        namespace: bounded(d.namespace, MAX_NAMESPACE_BYTES),
        object: bounded(d.object, MAX_OBJECT_BYTES),
        description: bounded(d.description, MAX_TEXT_BYTES),
        repaired: d.repaired,
    }
}

fn prune_held(p: PruneHeld) -> pb::PruneHeld {
    pb::PruneHeld {
        revision: p.revision,
        would_delete: u32::try_from(p.would_delete).unwrap_or(u32::MAX),
        managed: u32::try_from(p.managed).unwrap_or(u32::MAX),
        sample: p
            .sample
            .into_iter()
            .take(crate::report::PRUNE_SAMPLE)
            .map(|n| bounded(n, MAX_NAMESPACE_BYTES))
            .collect(),
    }
}

/// `text` without NULs, cut on a character boundary to at most `max` bytes.
pub fn bounded(text: String, max: usize) -> String {
    let mut text = if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    };
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The first message of a session: the revision held, the candidacy, the
/// keepalive period, and the cluster identity the stored state was applied
/// for (empty: none yet).
pub fn hello(
    resume_revision: i64,
    applier: bool,
    keepalive: Duration,
    cluster_id: &str,
) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(AgentKind::Hello(pb::AgentHello {
            applied_revision: resume_revision,
            agent_version: super::AGENT_VERSION.into(),
            applier,
            keepalive_ms: u32::try_from(keepalive.as_millis()).unwrap_or(u32::MAX),
            cluster_id: cluster_id.to_string(),
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

/// What one control message means for the agent.
#[derive(Debug)]
pub enum Inbound {
    /// For the reconciler; `desired` if it completed an update (the
    /// session was productive).
    Input { input: Input, desired: bool },
    /// The decision on who applies: the session sets the fence at once (a
    /// withdrawal must stop writes mid-pass), then tells the reconciler.
    Grant(Grant),
    /// A renewed client certificate (the session's credential handling).
    Certificate(pb::CertificateIssued),
    /// The control plane recorded the usage batch (spool epoch, sequence).
    UsageRecorded((u64, u64)),
    /// Nothing to do: a keepalive, a page of an update not complete yet,
    /// or a kind this agent does not know.
    Nothing,
}

/// Reads one control message; pages of a snapshot or change set are
/// collected in `pages` until the last one. An error is a protocol
/// violation: the update is dropped and the session should ask for a
/// snapshot.
pub fn input(kind: ControlKind, pages: &mut Pages) -> Result<Inbound, PageError> {
    let input = match kind {
        ControlKind::Snapshot(s) => {
            return Ok(match pages.snapshot(s)? {
                Some(s) => Inbound::Input {
                    input: Input::Snapshot(s),
                    desired: true,
                },
                None => Inbound::Nothing,
            });
        }
        ControlKind::Changes(c) => {
            return Ok(match pages.changes(c)? {
                Some(c) => Inbound::Input {
                    input: Input::Changes(c),
                    desired: true,
                },
                None => Inbound::Nothing,
            });
        }
        ControlKind::AckRecorded(r) => Input::AckRecorded(r.sequence),
        ControlKind::Session(s) => Input::Session(SessionInfo {
            cluster_id: s.cluster_id,
            cluster: s.cluster,
            agent_id: s.agent_id,
        }),
        ControlKind::PruneConfirmed(p) => Input::PruneConfirmed(p.revision),
        ControlKind::Applier(g) => {
            return Ok(Inbound::Grant(Grant {
                granted: g.granted,
                epoch: g.epoch,
            }));
        }
        ControlKind::Certificate(c) => return Ok(Inbound::Certificate(c)),
        ControlKind::Keepalive(_) => return Ok(Inbound::Nothing),
        ControlKind::UsageRecorded(r) => {
            return Ok(Inbound::UsageRecorded((r.spool_epoch, r.sequence)));
        }
    };
    Ok(Inbound::Input {
        input,
        desired: false,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn only(report: Report) -> pb::AgentMessage {
        let mut m = messages(report);
        assert_eq!(m.len(), 1);
        m.pop().unwrap()
    }

    #[test]
    fn reports_become_the_wire_messages_the_control_plane_reads() {
        let ack = only(Report::Ack(Ack {
            revision: 7,
            sequence: 3,
            results: vec![
                ("a".into(), NamespaceReport::Verified),
                ("b".into(), NamespaceReport::Failed("quota refused".into())),
                ("c".into(), NamespaceReport::Deleted),
                (
                    "d".into(),
                    NamespaceReport::Superseded { live_revision: 12 },
                ),
            ],
        }));
        let Some(AgentKind::Ack(ack)) = ack.kind else {
            panic!("an ack: {ack:?}");
        };
        assert_eq!((ack.revision, ack.sequence), (7, 3));
        let outcomes: Vec<(&str, i32, &str, i64)> = ack
            .results
            .iter()
            .map(|r| {
                (
                    r.namespace.as_str(),
                    r.outcome,
                    r.reason.as_str(),
                    r.live_revision,
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", pb::NamespaceOutcome::Verified as i32, "", 0),
                ("b", pb::NamespaceOutcome::Failed as i32, "quota refused", 0),
                ("c", pb::NamespaceOutcome::Deleted as i32, "", 0),
                ("d", pb::NamespaceOutcome::Superseded as i32, "", 12),
            ]
        );
        assert_eq!(
            only(Report::Role { applier: true }).kind,
            Some(AgentKind::Applier(pb::ApplierState { applier: true }))
        );
        let held = only(Report::PruneHeld(PruneHeld {
            revision: 9,
            would_delete: 30,
            managed: 40,
            sample: (0..30).map(|i| format!("ns-{i}")).collect(),
        }));
        let Some(AgentKind::PruneHeld(held)) = held.kind else {
            panic!("a prune hold");
        };
        assert_eq!(
            (held.revision, held.would_delete, held.managed),
            (9, 30, 40)
        );
        assert_eq!(held.sample.len(), crate::report::PRUNE_SAMPLE);
        let Some(AgentKind::Keepalive(k)) = keepalive().kind else {
            panic!("a keepalive");
        };
        let sent = SystemTime::try_from(k.time.unwrap()).unwrap();
        assert!(sent <= SystemTime::now());
        let Some(AgentKind::Hello(h)) = hello(4, true, Duration::from_secs(5), "c-1").kind else {
            panic!("a hello");
        };
        assert_eq!(
            (
                h.applied_revision,
                h.applier,
                h.keepalive_ms,
                h.cluster_id.as_str()
            ),
            (4, true, 5000, "c-1")
        );
    }

    #[test]
    fn a_long_ack_is_split_with_the_sequence_on_the_last_and_every_message_small() {
        let reason = "é".repeat(600); // 1200 bytes: cut to 1024 on a boundary
        let results: Vec<_> = (0..2300)
            .map(|i| {
                (
                    format!("{:0>63}", i),
                    NamespaceReport::Failed(format!("{reason}\0")),
                )
            })
            .collect();
        let sent = messages(Report::Ack(Ack {
            revision: 11,
            sequence: 42,
            results: results.clone(),
        }));
        assert_eq!(sent.len(), 5);
        let mut names = Vec::new();
        for (i, m) in sent.iter().enumerate() {
            assert!(
                m.encoded_len() < 1 << 20,
                "message {i}: {} bytes",
                m.encoded_len()
            );
            let Some(AgentKind::Ack(a)) = &m.kind else {
                panic!("an ack");
            };
            assert_eq!(a.revision, 11);
            assert_eq!(a.sequence, if i == 4 { 42 } else { 0 }, "message {i}");
            assert!(a.results.len() <= ACK_RESULTS_PER_MESSAGE);
            for r in &a.results {
                assert!(r.reason.len() <= MAX_TEXT_BYTES && !r.reason.contains('\0'));
                assert_eq!(r.reason.len(), 1024);
                names.push(r.namespace.clone());
            }
        }
        let expected: Vec<String> = results.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected, "every result, once, in order");
        // An ack without results is still one message, with its sequence.
        let empty = messages(Report::Ack(Ack {
            revision: 2,
            sequence: 5,
            results: vec![],
        }));
        let [
            pb::AgentMessage {
                kind: Some(AgentKind::Ack(a)),
            },
        ] = empty.as_slice()
        else {
            panic!("{empty:?}");
        };
        assert_eq!((a.revision, a.sequence, a.results.len()), (2, 5, 0));
    }

    #[test]
    fn usage_recorded_names_the_batch() {
        let mut pages = Pages::default();
        let inbound = input(
            ControlKind::UsageRecorded(pb::UsageRecorded {
                spool_epoch: 7,
                sequence: 9,
            }),
            &mut pages,
        )
        .unwrap();
        assert!(
            matches!(inbound, Inbound::UsageRecorded((7, 9))),
            "{inbound:?}"
        );
    }

    #[test]
    fn texts_are_cut_on_a_char_boundary_and_lose_their_nuls() {
        assert_eq!(bounded("ab\0c".into(), 10), "abc");
        assert_eq!(bounded("aé".into(), 2), "a", "é is two bytes");
        assert_eq!(bounded("short".into(), 63), "short");
        let d = only(Report::Drift(Drift {
            namespace: "n".repeat(80),
            object: format!("NetworkPolicy/{}", "ü".repeat(200)),
            description: "x\0".repeat(2000),
            repaired: true,
        }));
        let Some(AgentKind::Drift(d)) = d.kind else {
            panic!("drift");
        };
        assert_eq!(d.namespace.len(), MAX_NAMESPACE_BYTES);
        assert!(d.object.len() <= MAX_OBJECT_BYTES && d.object.len() >= MAX_OBJECT_BYTES - 1);
        assert_eq!(d.description, "x".repeat(1024));
    }
}
