//! The audit chain: each event carries the hash of the one before it, so any
//! edit, deletion or reordering of stored events is detected by recomputing.
//!
//! The hash covers a length-prefixed encoding of every field, so no two
//! different events can encode alike by shifting text between fields.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The `previous_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event as it is chained and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// 1, 2, 3 … without gaps.
    pub sequence: i64,
    /// Truncated to microseconds, the precision PostgreSQL keeps.
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant: Option<String>,
    pub request_id: String,
    /// JSON text, hashed exactly as stored.
    pub details: String,
    pub previous_hash: String,
    pub hash: String,
}

/// The fields of an event before it takes its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant: Option<String>,
    pub request_id: String,
    pub details: serde_json::Value,
}

impl PendingEvent {
    /// Places the event after `previous` (sequence and hash), at `time`.
    pub fn chain(
        self,
        previous_sequence: i64,
        previous_hash: &str,
        time: DateTime<Utc>,
    ) -> AuditEvent {
        let time = truncate_to_micros(time);
        let mut event = AuditEvent {
            sequence: previous_sequence + 1,
            time,
            actor: self.actor,
            action: self.action,
            target: self.target,
            tenant: self.tenant,
            request_id: self.request_id,
            details: self.details.to_string(),
            previous_hash: previous_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }
}

pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

impl AuditEvent {
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(&self.sequence.to_be_bytes());
        field(&self.time.timestamp_micros().to_be_bytes());
        field(self.actor.as_bytes());
        field(self.action.as_bytes());
        field(self.target.as_bytes());
        field(self.tenant.as_deref().unwrap_or("").as_bytes());
        field(&[u8::from(self.tenant.is_some())]);
        field(self.request_id.as_bytes());
        field(self.details.as_bytes());
        field(self.previous_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub sequence: i64,
    pub problem: String,
}

/// Walks events in sequence order and checks every link. Incremental, so a
/// long log can be verified page by page without holding it in memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_sequence: i64,
    previous_hash: String,
    checked: i64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_sequence: 1,
            previous_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn checked(&self) -> i64 {
        self.checked
    }

    pub fn push(&mut self, event: &AuditEvent) -> Result<(), Break> {
        let fail = |problem: String| Break {
            sequence: event.sequence,
            problem,
        };
        if event.sequence != self.expected_sequence {
            return Err(Break {
                sequence: self.expected_sequence,
                problem: format!(
                    "event {} is missing (next stored event is {})",
                    self.expected_sequence, event.sequence
                ),
            });
        }
        if event.previous_hash != self.previous_hash {
            return Err(fail(
                "previous_hash does not match the hash of the event before it".into(),
            ));
        }
        if event.compute_hash() != event.hash {
            return Err(fail(
                "the event's content does not match its hash (edited after it was written)".into(),
            ));
        }
        self.expected_sequence += 1;
        self.previous_hash = event.hash.clone();
        self.checked += 1;
        Ok(())
    }

    /// Checks the recorded head of the chain (last sequence and hash), which
    /// catches deletion of the newest events.
    pub fn finish(&self, head_sequence: i64, head_hash: &str) -> Result<(), Break> {
        let last = self.expected_sequence - 1;
        if head_sequence != last || (last > 0 && head_hash != self.previous_hash) {
            return Err(Break {
                sequence: last + 1,
                problem: format!(
                    "the chain head records event {head_sequence} but the log ends at event {last}"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, prev) = out.last().map_or((0, GENESIS_HASH.to_owned()), |e| {
                (e.sequence, e.hash.clone())
            });
            let e = PendingEvent {
                actor: "token:abc".into(),
                action: "tenant.create".into(),
                target: format!("tenant/t{i}"),
                tenant: Some(format!("t{i}")),
                request_id: format!("r{i}"),
                details: serde_json::json!({"i": i}),
            }
            .chain(seq, &prev, Utc::now());
            out.push(e);
        }
        out
    }

    fn verify(events: &[AuditEvent]) -> Result<i64, Break> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e)?;
        }
        let (seq, hash) = events.last().map_or((0, GENESIS_HASH.to_owned()), |e| {
            (e.sequence, e.hash.clone())
        });
        v.finish(seq, &hash)?;
        Ok(v.checked())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn an_edited_event_is_found() {
        let mut events = chain(5);
        events[2].target = "tenant/evil".into();
        assert_eq!(verify(&events).unwrap_err().sequence, 3);
    }

    #[test]
    fn a_deleted_event_is_found() {
        let mut events = chain(5);
        events.remove(1);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.sequence, 2);
        assert!(err.problem.contains("missing"));
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let mut events = chain(4);
        events[1].actor = "token:someone-else".into();
        events[1].hash = events[1].compute_hash();
        assert_eq!(verify(&events).unwrap_err().sequence, 3);
    }

    #[test]
    fn a_truncated_tail_is_found_through_the_head() {
        let events = chain(4);
        let mut v = ChainVerifier::default();
        for e in &events[..3] {
            v.push(e).unwrap();
        }
        assert_eq!(v.finish(4, &events[3].hash).unwrap_err().sequence, 4);
    }
}
