//! Domain logic of the k8s-mtp control plane: what a valid tenant, environment,
//! profile, quota or token is, and the rules between them. Pure: no I/O, no
//! knowledge of gRPC, SQL or Kubernetes clients, so every rule is unit-testable.

pub mod access;
pub mod agents;
pub mod audit;
pub mod claims;
pub mod clusters;
pub mod cost;
pub mod environments;
pub mod error;
pub mod names;
pub mod profiles;
pub mod quantity;
pub mod quota;
pub mod tenants;
pub mod tokens;
pub mod usage;

pub use error::{Error, Result};
