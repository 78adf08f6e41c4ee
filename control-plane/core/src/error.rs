//! The domain error: what went wrong in terms a caller can act on.

/// Errors of the domain, each mapping to one gRPC status class at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of bounds. `field` is the path a user
    /// would recognise in the request (e.g. `quota.cpu`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The tenant's quota cannot hold the request; the message says which
    /// resource ran out and by how much.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn already_exists(kind: &'static str, name: impl Into<String>) -> Self {
        Error::AlreadyExists {
            kind,
            name: name.into(),
        }
    }

    /// Prefixes the field of an `Invalid` error, so nested validation reports the
    /// full path (`quota` + `cpu` → `quota.cpu`).
    pub fn within(self, parent: &str) -> Self {
        match self {
            Error::Invalid { field, reason } => Error::Invalid {
                field: format!("{parent}.{field}"),
                reason,
            },
            other => other,
        }
    }
}
