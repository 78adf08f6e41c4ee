//! Discovery documents (`/version`, `/api`, `/apis`, resource lists) and the `Table`
//! rendering kubectl asks for.

use serde_json::{Value, json};

use crate::kinds::{self, KINDS, ResourceKind};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0+kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr }],
    })
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = kinds::groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({ "groupVersion": format!("{g}/{v}"), "version": v });
            json!({ "name": g, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}` (single group document).
pub fn group(name: &str) -> Option<Value> {
    let (g, v) = kinds::groups().into_iter().find(|(g, _)| *g == name)?;
    let gv = json!({ "groupVersion": format!("{g}/{v}"), "version": v });
    Some(
        json!({ "kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv }),
    )
}

/// `/api/v1` or `/apis/{group}/{version}`; `None` when nothing is served there.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    let list: Vec<&ResourceKind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if list.is_empty() {
        return None;
    }
    let mut resources: Vec<Value> = Vec::new();
    for k in list {
        resources.push(json!({
            "name": k.resource,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
            "shortNames": k.short_names,
        }));
        if k.resource == "nodes" {
            resources.push(json!({
                "name": "nodes/proxy", "singularName": "", "namespaced": false, "kind": "NodeProxyOptions",
                "verbs": ["create", "delete", "get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}

fn age(obj: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (now - ts.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn column(name: &str, format: &str) -> Value {
    json!({ "name": name, "type": "string", "format": format, "description": "", "priority": 0 })
}

/// Renders objects as a `meta.k8s.io/v1` `Table` (Name, kind-specific columns, Age);
/// ages count to `now`, the cluster clock's time.
pub fn table(
    kind: &ResourceKind,
    objects: &[&Value],
    rv: &str,
    continue_token: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut columns = vec![column("Name", "name")];
    match kind.resource {
        "namespaces" => columns.push(column("Status", "")),
        "pods" => {
            columns.push(column("Status", ""));
            columns.push(column("Node", ""));
        }
        _ => {}
    }
    columns.push(column("Age", ""));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            match kind.resource {
                "namespaces" => cells.push(
                    o.pointer("/status/phase")
                        .cloned()
                        .unwrap_or(json!("Active")),
                ),
                "pods" => {
                    cells.push(
                        o.pointer("/status/phase")
                            .cloned()
                            .unwrap_or(json!("Pending")),
                    );
                    cells.push(
                        o.pointer("/spec/nodeName")
                            .cloned()
                            .unwrap_or(json!("<none>")),
                    );
                }
                _ => {}
            }
            cells.push(json!(age(o, now)));
            json!({ "cells": cells, "object": o })
        })
        .collect();
    let mut meta = json!({ "resourceVersion": rv });
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group-version.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(kinds::groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim") }),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/{gv}`: a skeleton document with no schemas; it declares PATCH with the
/// `fieldValidation` parameter so kubectl validates server side (which kube-sim accepts
/// and ignores) instead of needing full schemas.
pub fn openapi_v3_gv(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for k in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if k.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.resource)
        } else {
            format!("{base}/{}/{{name}}", k.resource)
        };
        paths.insert(
            item,
            json!({ "patch": {
                "x-kubernetes-group-version-kind": { "group": k.group, "version": k.version, "kind": k.kind },
                "parameters": [
                    { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
                    { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
                ],
                "responses": {},
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (kube-sim)", "version": "v1.33.0" },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}
