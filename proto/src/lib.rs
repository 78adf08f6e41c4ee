//! The k8s-mtp API contract, `mtp.v1`, as generated Rust types, clients and servers.
//!
//! The `.proto` files under `proto/mtp/v1` are the source of truth; other services
//! generate their own clients from them. This crate is shared by the control plane,
//! the agent and the CLI so all three speak exactly the same contract.

pub mod duration;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("mtp.v1");

    /// The encoded `FileDescriptorSet` of `mtp.v1` and its imports, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mtp_v1_descriptor.bin"));
}
