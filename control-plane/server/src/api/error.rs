//! The one mapping from internal errors to gRPC statuses. Domain refusals keep
//! their message; anything internal is logged with the request id and the
//! client gets a short, redacted message.

use mtp_store::Error as StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] StoreError);

impl From<mtp_core::Error> for ApiError {
    fn from(e: mtp_core::Error) -> Self {
        ApiError(StoreError::Domain(e))
    }
}

impl ApiError {
    /// A peer held off after too many failed authentications
    /// (RESOURCE_EXHAUSTED, like any other exhausted allowance).
    pub fn held_off(wait: std::time::Duration) -> Self {
        ApiError(StoreError::Domain(mtp_core::Error::QuotaExceeded(format!(
            "too many failed authentications from this address; retry in {}s",
            wait.as_secs().max(1)
        ))))
    }
}

impl From<ApiError> for Status {
    fn from(ApiError(e): ApiError) -> Status {
        use mtp_core::Error as D;
        match e {
            StoreError::Domain(d) => {
                let code = match &d {
                    D::Invalid { .. } => Code::InvalidArgument,
                    D::NotFound { .. } => Code::NotFound,
                    D::AlreadyExists { .. } => Code::AlreadyExists,
                    D::QuotaExceeded(_) => Code::ResourceExhausted,
                    D::FailedPrecondition(_) => Code::FailedPrecondition,
                    D::PermissionDenied(_) => Code::PermissionDenied,
                    D::Unauthenticated(_) => Code::Unauthenticated,
                };
                Status::new(code, d.to_string())
            }
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Status::unavailable("the control plane cannot reach its database; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal(
                    "internal error; the control plane logged the details under this request id",
                )
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_their_message_and_get_their_code() {
        let s: Status = ApiError::from(mtp_core::Error::invalid(
            "quota.cpu",
            "must be greater than zero",
        ))
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "quota.cpu: must be greater than zero");
        let s: Status = ApiError::from(mtp_core::Error::QuotaExceeded("cpu short".into())).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }

    #[test]
    fn internal_details_are_not_sent_to_clients() {
        let s: Status = ApiError(StoreError::Corrupt("secret table detail".into())).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret table detail"));
    }
}
