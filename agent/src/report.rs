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
    /// Left alone: the live namespace is stamped with a newer revision than
    /// the desired state this agent holds (for an apply or a removal). The
    /// control plane re-issues the namespace above `live_revision`.
    Superseded { live_revision: i64 },
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

/// A prune pass the applier did not carry out: it would have deleted more
/// than the configured share of the managed namespaces, or the control
/// plane's cluster identity is not the one the state was applied for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneHeld {
    pub revision: i64,
    pub would_delete: usize,
    pub managed: usize,
    /// Some of the namespaces it would delete (at most [`PRUNE_SAMPLE`]).
    pub sample: Vec<String>,
}

/// Namespaces named in a [`PruneHeld`], at most.
pub const PRUNE_SAMPLE: usize = 20;

/// One message for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// This agent's candidacy: it holds (or no longer holds) the Lease. The
    /// control plane decides who applies (an applier grant).
    Role {
        applier: bool,
    },
    Ack(Ack),
    Drift(Drift),
    PruneHeld(PruneHeld),
}
