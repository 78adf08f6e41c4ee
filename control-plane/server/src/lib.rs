//! The k8s-mtp control plane: wires the PostgreSQL store to the public gRPC API
//! and the admin HTTP port. Library entry points let tests run it in-process.

pub mod admin;
pub mod api;
pub mod ca;
pub mod config;
pub mod metrics;
pub mod runtime;
pub mod telemetry;
pub mod tls;

pub use runtime::{ControlPlane, RunningControlPlane};
