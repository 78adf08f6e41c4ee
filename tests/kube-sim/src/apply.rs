//! Field ownership (`managedFields`, FieldsV1): server-side apply, merge patch and
//! update bookkeeping.
//!
//! Ownership is tracked as sets of *leaf paths*: JSON objects are granular maps (every key
//! is its own field), JSON arrays and scalars are atomic leaves. That matches the
//! Kubernetes schema for every list in the kinds we serve that the project applies
//! (see the README for the exceptions a real apiserver has, e.g. keyed `containers`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field path: the chain of object keys from the root.
pub type Path = Vec<String>;

/// Metadata keys owned by the server, never by a field manager.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version the manager used.
    pub api_version: String,
    /// Last time this entry changed (RFC 3339).
    pub time: String,
    /// Owned leaf paths.
    pub fields: BTreeSet<Path>,
    /// The subresource written through (`status`), if not the main resource.
    pub subresource: Option<String>,
}

impl Entry {
    /// The manager as the apiserver names it in apply conflicts (`printManager`): `"m"`
    /// for an applier, `"m" using v1` for an updater, `"m" with subresource "status" ...`.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// The identifier the apiserver groups and sorts conflicts by
    /// (`BuildManagerIdentifier`: the entry as JSON without time and fields, and without
    /// the apiVersion of an applier).
    pub fn identifier(&self) -> String {
        // Go's encoding/json field order: manager, operation, apiVersion, subresource.
        let quoted = |v: &str| Value::String(v.to_string()).to_string();
        let mut out = format!(
            "{{\"manager\":{},\"operation\":{}",
            quoted(&self.manager),
            quoted(&self.operation)
        );
        if self.operation != "Apply" {
            out.push_str(&format!(",\"apiVersion\":{}", quoted(&self.api_version)));
        }
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(",\"subresource\":{}", quoted(sub)));
        }
        out.push('}');
        out
    }
}

/// The leaf paths an object sets, excluding server-owned metadata.
pub fn leaf_paths(obj: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if SYSTEM_METADATA.contains(&mk.as_str()) {
                            continue;
                        }
                        collect(mv, &mut vec![k.clone(), mk.clone()], &mut out);
                    }
                }
                continue;
            }
            collect(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

fn collect(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Renders a path the way apply conflict messages do (`.spec.hard.pods`).
pub fn display_path(p: &[String]) -> String {
    p.iter().map(|s| format!(".{s}")).collect()
}

/// Parses `metadata.managedFields` of a stored object.
pub fn parse_managed(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(items)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields_v1(f, &mut Vec::new(), &mut fields);
            }
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("Update")
                    .to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                fields,
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
            })
        })
        .collect()
}

fn parse_fields_v1(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Value::Object(m) = v else { return };
    let mut children = 0;
    for (k, child) in m {
        if k == "." {
            continue;
        }
        children += 1;
        let seg = k.strip_prefix("f:").unwrap_or(k);
        path.push(seg.to_string());
        parse_fields_v1(child, path, out);
        path.pop();
    }
    if (children == 0 || m.contains_key(".")) && !path.is_empty() {
        out.insert(path.clone());
    }
}

/// Renders owned leaf paths as a FieldsV1 document.
pub fn fields_v1(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            cur = entry.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Writes `entries` into `metadata.managedFields` (dropping entries that own nothing).
pub fn store_managed(obj: &mut Value, entries: &[Entry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(rendered));
        }
    }
}

/// One field a rejected apply would have taken from another manager.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The owner's [`Entry::identifier`].
    pub identifier: String,
    /// The owner as [`Entry::describe`] prints it.
    pub manager: String,
    /// The field (`.metadata.labels.tier`).
    pub field: String,
}

/// Result of a rejected apply.
pub type Conflicts = Vec<Conflict>;

/// Server-side apply of `config` by `manager` onto `live` (or onto nothing, for a create).
///
/// Returns the new object (system metadata copied from `live` is left to the caller)
/// with its `managedFields` updated, or the conflicts when `force` is false. `time` is
/// the entry's timestamp (the cluster clock's, RFC 3339 in whole seconds).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    time: &str,
) -> Result<Value, Conflicts> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let new_set = leaf_paths(config);
    let mut entries = parse_managed(live);

    // Conflicts: another manager owns a related path whose value this apply changes.
    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.manager == manager {
            continue;
        }
        for q in &e.fields {
            let hit = new_set.iter().find(|p| related(p, q));
            if let Some(p) = hit {
                let shorter = if p.len() <= q.len() { p } else { q };
                if value_at(live, shorter) != value_at(config, shorter) {
                    conflicts.push((i, q.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts
                .iter()
                .map(|(i, q)| Conflict {
                    identifier: entries[*i].identifier(),
                    manager: entries[*i].describe(),
                    field: display_path(q),
                })
                .collect());
        }
        for (i, q) in &conflicts {
            entries[*i].fields.remove(q);
        }
    }

    // Fields this manager applied before but no longer applies are removed, unless
    // someone else still owns them.
    let mine = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply");
    let old_set = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let mut obj = live.clone();
    for p in old_set.difference(&new_set) {
        let owned_elsewhere = entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply")
                && e.fields.iter().any(|q| related(p, q))
        });
        if !owned_elsewhere && !new_set.iter().any(|q| related(p, q)) {
            remove_path(&mut obj, p);
        }
    }
    merge_into(&mut obj, config, false);

    let entry = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time: time.to_string(),
        fields: new_set,
        subresource: None,
    };
    match mine {
        Some(i) => {
            if entries[i].fields != entry.fields {
                entries[i] = entry;
            }
        }
        None => entries.push(entry),
    }
    store_managed(&mut obj, &entries);
    Ok(obj)
}

/// Ownership bookkeeping for a non-apply write (create, PUT, merge patch) by `manager`:
/// it takes every field it changed; fields it changed or removed leave other managers.
/// `time` stamps the manager's entry when the write changed something.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    time: &str,
) {
    record_update_of(old, new, manager, api_version, None, time);
}

/// [`record_update`] for a write through `subresource` (`status`), which real managers
/// own as an entry of their own.
pub fn record_update_of(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    time: &str,
) {
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let old_leaves = leaf_paths(old_v);
    let new_leaves = leaf_paths(new);
    let changed: Vec<Path> = new_leaves
        .iter()
        .filter(|p| value_at(old_v, p) != value_at(new, p))
        .cloned()
        .collect();
    let removed: Vec<Path> = old_leaves.difference(&new_leaves).cloned().collect();
    let mut entries = parse_managed(old_v);
    if changed.is_empty() && removed.is_empty() {
        store_managed(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|q| !changed.iter().chain(removed.iter()).any(|c| related(c, q)));
    }
    let pos = entries.iter().position(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == subresource
    });
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: String::new(),
                fields: BTreeSet::new(),
                subresource: subresource.map(String::from),
            });
            entries.len() - 1
        }
    };
    entries[i].fields.extend(changed);
    entries[i].time = time.to_string();
    entries[i].api_version = api_version.to_string();
    store_managed(new, &entries);
}

/// Removes the value at `path`, pruning objects it leaves empty below the top level.
fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(m)) = value_at_mut(obj, parents) {
        m.remove(last);
        if m.is_empty() && parents.len() > 1 {
            remove_path(obj, parents);
        }
    }
}

fn value_at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = cur.get_mut(seg)?;
    }
    Some(cur)
}

/// Merges `patch` into `target`: objects recursively, everything else replaced.
/// With `nulls_delete` (JSON merge patch, RFC 7386) a `null` removes the key.
pub fn merge_into(target: &mut Value, patch: &Value, nulls_delete: bool) {
    match patch {
        Value::Object(pm) => {
            if !target.is_object() {
                *target = json!({});
            }
            let tm = target.as_object_mut().expect("just made an object");
            for (k, pv) in pm {
                if pv.is_null() {
                    if nulls_delete {
                        tm.remove(k);
                    }
                    continue;
                }
                let slot = tm.entry(k.clone()).or_insert(Value::Null);
                if pv.is_object() {
                    merge_into(slot, pv, nulls_delete);
                } else {
                    *slot = pv.clone();
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"hard": {"pods": "1"}, "l": [1]}});
        let set = leaf_paths(&obj);
        let mut with = obj.clone();
        store_managed(
            &mut with,
            &[Entry {
                manager: "m".into(),
                operation: "Apply".into(),
                api_version: "v1".into(),
                time: "t".into(),
                fields: set.clone(),
                subresource: None,
            }],
        );
        assert_eq!(parse_managed(&with)[0].fields, set);
    }

    #[test]
    fn reapply_without_a_field_removes_it() {
        let a = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}});
        let obj = apply(None, &a, "m", false, "v1", "2026-01-01T00:00:00Z").unwrap();
        let b = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
        let obj = apply(Some(&obj), &b, "m", false, "v1", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(obj["metadata"]["labels"], json!({"a": "1"}));
    }
}
