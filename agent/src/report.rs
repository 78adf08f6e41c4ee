//! What the agent tells the control plane, as plain Rust types: the
//! reconciler produces these, the outbox queues them, and the session turns
//! them into protobuf at the wire (`session::wire`).

/// What became of one namespace, as the applier reports it (the control
/// plane's store uses the same name; on the wire it is `NamespaceOutcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceReport {
    /// Applied and read back as specified.
    Verified,
    /// Not applied, or read back different; the reason is for people.
    Failed(String),
    /// Removed from the cluster (or found not managed by mtp): the control
    /// plane may forget it.
    Deleted,
}

/// Per-namespace reports, in the order they were made.
pub type Results = Vec<(String, NamespaceReport)>;

/// "Everything up to `revision` is applied", with the namespaces it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub revision: i64,
    /// Numbers the acknowledgements of this process; the control plane
    /// confirms each one it recorded (`AckRecorded`).
    pub sequence: u64,
    pub results: Results,
}

impl Ack {
    /// The namespaces this acknowledgement reports deleted.
    pub fn deletions(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|(_, r)| *r == NamespaceReport::Deleted)
            .map(|(ns, _)| ns.clone())
            .collect()
    }
}

/// A managed object found different from its desired state (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub namespace: String,
    pub object: String,
    pub description: String,
    /// Whether the re-apply put it right.
    pub repaired: bool,
}

/// One message for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// This agent became (or stopped being) its cluster's applier.
    Role {
        applier: bool,
    },
    Ack(Ack),
    Drift(Drift),
}
