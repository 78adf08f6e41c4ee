//! Kubernetes `Status` errors: the API error type handlers return and its wire form.

use serde_json::{Value, json};

/// An API-level failure, rendered as a `meta.k8s.io/v1` `Status` with the real code and reason.
#[derive(Debug, Clone)]
pub struct StatusError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes `StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human readable message, worded like the real apiserver.
    pub message: String,
    /// Optional `details` object.
    pub details: Option<Value>,
}

impl StatusError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, resource: &str, name: &str) -> Self {
        let (group, kind) = match resource.split_once('.') {
            Some((kind, group)) => (group, kind),
            None => ("", resource),
        };
        let mut d = json!({ "name": name, "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    /// 404 NotFound for `resource` (qualified) named `name`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(resource, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(resource, name)
    }

    /// 409 Conflict for a stale `resourceVersion`.
    pub fn stale(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(resource, name)
    }

    /// 409 Conflict for server-side apply field ownership conflicts, worded and detailed
    /// as the apiserver's field manager does (`NewConflictError`): one conflict on one
    /// line, several grouped by owner (sorted by manager identifier); the details carry
    /// only the causes, no name or kind.
    pub fn apply_conflicts(conflicts: &[crate::apply::Conflict]) -> Self {
        let n = conflicts.len();
        let message = match conflicts {
            [one] => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager, one.field
            ),
            _ => {
                let mut owners: Vec<&crate::apply::Conflict> = Vec::new();
                for c in conflicts {
                    if !owners.iter().any(|o| o.identifier == c.identifier) {
                        owners.push(c);
                    }
                }
                owners.sort_by(|a, b| a.identifier.cmp(&b.identifier));
                let mut lines = Vec::new();
                for owner in owners {
                    lines.push(format!("conflicts with {}:", owner.manager));
                    for c in conflicts
                        .iter()
                        .filter(|c| c.identifier == owner.identifier)
                    {
                        lines.push(format!("- {}", c.field));
                    }
                }
                format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
            }
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.manager),
                    "field": c.field,
                })
            })
            .collect();
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(json!({ "causes": causes }));
        e
    }

    /// 422 Invalid with one field cause. `kind` is qualified by its group for non-core kinds
    /// (`RoleBinding.rbac.authorization.k8s.io`), as the message prints it; the details
    /// carry kind and group apart.
    pub fn invalid(kind: &str, name: &str, field: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
        );
        let mut d = json!({
            "name": name,
            "kind": kind,
            "causes": [{ "reason": "FieldValueInvalid", "message": detail, "field": field }],
        });
        if let Some((k, group)) = kind.split_once('.') {
            d["kind"] = json!(k);
            d["group"] = json!(group);
        }
        e.details = Some(d);
        e
    }

    /// 403 Forbidden.
    pub fn forbidden(resource: &str, name: &str, why: &str) -> Self {
        let msg = if name.is_empty() {
            format!("{resource} is forbidden: {why}")
        } else {
            format!("{resource} \"{name}\" is forbidden: {why}")
        };
        Self::new(403, "Forbidden", msg).with_details(resource, name)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// 404 for a URL that names nothing the server serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 410 Expired, as the watch cache answers for a too old `resourceVersion`.
    pub fn expired(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml ({ct})"
            ),
        )
    }

    /// 415 UnsupportedMediaType with a reason of kube-sim's own (a protobuf
    /// body it cannot decode without losing something).
    pub fn unsupported_body(message: String) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500 InternalError (used by fault injection).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// The `Status` object sent on the wire.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// A `Status` with `status: Success`, returned by deletes of most kinds.
pub fn success(kind: &str, name: &str, group: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": kind, "uid": uid });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
