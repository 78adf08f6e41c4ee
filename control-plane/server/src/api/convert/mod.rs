//! Wire types ↔ domain types at the gRPC edge: `requests` validates each
//! request once as it becomes a domain value (every error names the request
//! field); `responses` renders domain values as wire messages.

mod requests;
mod responses;

use chrono::{DateTime, Utc};
use mtp_core::{Error, Result};

pub use requests::*;
pub use responses::*;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be within 0..1e9"));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| Error::invalid(field, "is out of range"))
}

/// Empty means "not given" for optional text filters.
pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}
