//! Errors of the CLI: the classes scripts can tell apart by exit code, and how
//! each is shown to a human (one `error:` line, the request id, a hint) or to a
//! script (`-o json`: one JSON object on stderr).

use std::fmt;

use serde::Serialize;
use tonic::Code;

/// Process exit codes. Kept in one place because they are a public interface:
/// scripts and the e2e tests branch on them, and `--help` documents them.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Anything not covered below (internal server error, local I/O, a
    /// `--wait` that timed out, ...).
    pub const OTHER: i32 = 1;
    /// Bad usage: unknown flag, bad value, or the server said INVALID_ARGUMENT.
    pub const USAGE: i32 = 2;
    /// The named object does not exist (NOT_FOUND).
    pub const NOT_FOUND: i32 = 3;
    /// Not allowed: UNAUTHENTICATED or PERMISSION_DENIED.
    pub const AUTH: i32 = 4;
    /// Refused by the state of things: quota (RESOURCE_EXHAUSTED),
    /// FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED; or `--wait` saw the
    /// environment fail on its cluster.
    pub const CONFLICT: i32 = 5;
    /// `mtp audit verify` found a broken hash chain.
    pub const AUDIT_BROKEN: i32 = 6;
    /// The control plane could not be reached or did not answer in time
    /// (UNAVAILABLE, DEADLINE_EXCEEDED): usually worth retrying.
    pub const UNAVAILABLE: i32 = 7;
}

/// The `--help` after-text that documents the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error (internal server error, local I/O, --wait timed out, ...)
  2  usage error or invalid argument (client-side or INVALID_ARGUMENT)
  3  not found
  4  not authenticated or permission denied
  5  refused: quota exceeded, failed precondition, already exists;
     or --wait saw the environment fail on its cluster
  6  audit log hash chain is broken (mtp audit verify)
  7  control plane unavailable or timed out (retryable)";

/// An error that ends the command.
#[derive(Debug)]
pub enum CliError {
    /// Bad input detected before anything was sent.
    Usage(String),
    /// The server (or the transport below it) answered with a non-OK status.
    Call(CallError),
    /// `audit verify` reported a broken chain. The report itself has already
    /// been printed; this only carries the exit code.
    AuditBroken,
    /// `--wait` saw the object reach a failed state (e.g. the agent could not
    /// apply an environment); the message carries the reason.
    Failed(String),
    /// `--wait` gave up before the object settled.
    Timeout(String),
    /// Anything else (config file unreadable, bad CA file, ...).
    Other(anyhow::Error),
}

/// A failed RPC, with what the CLI was trying to do and how to find it in the
/// server logs.
#[derive(Debug)]
pub struct CallError {
    /// What failed, e.g. `create tenant "team-a"`.
    pub action: String,
    pub code: Code,
    pub message: String,
    /// The request id the server echoed, or the one we sent.
    pub request_id: Option<String>,
    /// The control plane address, for the UNAVAILABLE hint.
    pub addr: String,
    /// A hint the command knows better than the generic one for the code
    /// (e.g. `--allow-high` when the server refused an implausible price).
    pub hint: Option<&'static str>,
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Call(e) => exit_code_for(e.code),
            CliError::AuditBroken => exit::AUDIT_BROKEN,
            CliError::Failed(_) => exit::CONFLICT,
            CliError::Timeout(_) | CliError::Other(_) => exit::OTHER,
        }
    }

    /// The human rendering: `error: ...` plus indented request id and hint lines.
    pub fn render_human(&self) -> String {
        match self {
            CliError::Usage(m) | CliError::Failed(m) | CliError::Timeout(m) => {
                format!("error: {m}")
            }
            CliError::Other(e) => format!("error: {e:#}"),
            CliError::AuditBroken => "error: the audit log hash chain is broken".to_string(),
            CliError::Call(e) => {
                let mut s = format!("error: {}: {}", e.action, e.display_message());
                if let Some(id) = &e.request_id {
                    s.push_str(&format!("\n  request id: {id}"));
                }
                if let Some(h) = e.hint() {
                    s.push_str(&format!("\n  hint: {h}"));
                }
                s
            }
        }
    }

    /// The machine rendering for `-o json` (written to stderr).
    pub fn render_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            /// gRPC code name for API errors; "USAGE" / "AUDIT_BROKEN" /
            /// "FAILED" / "TIMEOUT" / "OTHER" otherwise.
            code: &'a str,
            message: String,
            action: Option<&'a str>,
            request_id: Option<&'a str>,
            exit_code: i32,
        }
        #[derive(Serialize)]
        struct Wrapper<'a> {
            error: Body<'a>,
        }
        let body = match self {
            CliError::Usage(m) => Body {
                code: "USAGE",
                message: m.clone(),
                action: None,
                request_id: None,
                exit_code: self.exit_code(),
            },
            CliError::Failed(m) => Body {
                code: "FAILED",
                message: m.clone(),
                action: None,
                request_id: None,
                exit_code: self.exit_code(),
            },
            CliError::Timeout(m) => Body {
                code: "TIMEOUT",
                message: m.clone(),
                action: None,
                request_id: None,
                exit_code: self.exit_code(),
            },
            CliError::Other(e) => Body {
                code: "OTHER",
                message: format!("{e:#}"),
                action: None,
                request_id: None,
                exit_code: self.exit_code(),
            },
            CliError::AuditBroken => Body {
                code: "AUDIT_BROKEN",
                message: "the audit log hash chain is broken".into(),
                action: None,
                request_id: None,
                exit_code: self.exit_code(),
            },
            CliError::Call(e) => Body {
                code: code_name(e.code),
                message: e.message.clone(),
                action: Some(&e.action),
                request_id: e.request_id.as_deref(),
                exit_code: self.exit_code(),
            },
        };
        serde_json::to_string(&Wrapper { error: body }).unwrap_or_default()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_human())
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

impl CallError {
    /// The server message, or a description of the code when the server sent none
    /// (e.g. transport-level failures).
    fn display_message(&self) -> String {
        if self.message.trim().is_empty() {
            code_description(self.code).to_string()
        } else {
            self.message.clone()
        }
    }

    fn hint(&self) -> Option<String> {
        if let Some(h) = self.hint {
            return Some(h.to_string());
        }
        match self.code {
            Code::Unauthenticated => Some(
                "set MTP_TOKEN or --token (or --token-file / token_file in the config file)"
                    .into(),
            ),
            Code::PermissionDenied => Some(
                "this token's role or tenant does not allow it; `mtp token list` with an admin token shows roles"
                    .into(),
            ),
            Code::Unavailable => Some(format!(
                "is the control plane running at {}? (set --addr or MTP_ADDR)",
                self.addr
            )),
            Code::DeadlineExceeded => Some(format!(
                "the control plane at {} did not answer in time; retry later",
                self.addr
            )),
            Code::ResourceExhausted => {
                Some("see `mtp tenant get TENANT` for usage against quota".into())
            }
            _ => None,
        }
    }
}

/// Maps a gRPC status code to the CLI's exit code classes.
pub fn exit_code_for(code: Code) -> i32 {
    match code {
        Code::Ok => exit::OK,
        Code::InvalidArgument | Code::OutOfRange => exit::USAGE,
        Code::NotFound => exit::NOT_FOUND,
        Code::Unauthenticated | Code::PermissionDenied => exit::AUTH,
        Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::Aborted => exit::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
        _ => exit::OTHER,
    }
}

/// The canonical upper-case gRPC code name (stable, for JSON errors).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn code_description(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "control plane unavailable",
        Code::DeadlineExceeded => "request timed out",
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::Unimplemented => "not implemented by this control plane",
        _ => "request failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: Code, msg: &str) -> CliError {
        CliError::Call(CallError {
            action: "create tenant \"team-a\"".into(),
            code,
            message: msg.into(),
            request_id: Some("rid-1".into()),
            addr: "http://127.0.0.1:7443".into(),
            hint: None,
        })
    }

    #[test]
    fn exit_codes_by_class() {
        assert_eq!(api(Code::InvalidArgument, "x").exit_code(), 2);
        assert_eq!(api(Code::NotFound, "x").exit_code(), 3);
        assert_eq!(api(Code::PermissionDenied, "x").exit_code(), 4);
        assert_eq!(api(Code::Unauthenticated, "x").exit_code(), 4);
        assert_eq!(api(Code::ResourceExhausted, "x").exit_code(), 5);
        assert_eq!(api(Code::FailedPrecondition, "x").exit_code(), 5);
        assert_eq!(api(Code::AlreadyExists, "x").exit_code(), 5);
        assert_eq!(api(Code::Unavailable, "x").exit_code(), 7);
        assert_eq!(api(Code::Internal, "x").exit_code(), 1);
        assert_eq!(CliError::usage("bad").exit_code(), 2);
        assert_eq!(CliError::AuditBroken.exit_code(), 6);
        assert_eq!(CliError::Failed("x".into()).exit_code(), 5);
        assert_eq!(CliError::Timeout("x".into()).exit_code(), 1);
        assert_eq!(CliError::Other(anyhow::anyhow!("io")).exit_code(), 1);
    }

    #[test]
    fn human_message_has_action_server_message_and_request_id() {
        let s = api(Code::InvalidArgument, "name: must be a DNS-1123 label").render_human();
        assert_eq!(
            s,
            "error: create tenant \"team-a\": name: must be a DNS-1123 label\n  request id: rid-1"
        );
        assert!(!s.contains("Status"), "never a Debug dump");
    }

    #[test]
    fn hints_for_auth_and_unavailable() {
        let s = api(Code::Unauthenticated, "missing token").render_human();
        assert!(s.contains("hint: set MTP_TOKEN or --token"), "{s}");
        let s = api(Code::Unavailable, "").render_human();
        assert!(s.starts_with("error: create tenant \"team-a\": control plane unavailable"));
        assert!(
            s.contains("is the control plane running at http://127.0.0.1:7443?"),
            "{s}"
        );
    }

    #[test]
    fn json_error_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&api(Code::NotFound, "tenant \"x\" not found").render_json())
                .unwrap();
        assert_eq!(v["error"]["code"], "NOT_FOUND");
        assert_eq!(v["error"]["message"], "tenant \"x\" not found");
        assert_eq!(v["error"]["request_id"], "rid-1");
        assert_eq!(v["error"]["exit_code"], 3);
    }
}
