//! Read-back verification: does a live object still say what its apply
//! configuration says? Under `metadata`, fields the API server or others add
//! (uid, other labels) are ignored; everything else (spec, subjects, roleRef)
//! must match exactly, so an added selector key or an extra peer is drift too.
//! Empty values count as absent (the server drops them); quantities compare
//! by value (`1000m` equals `1`).

use serde_json::Value;

/// The first difference between what was applied and what is live, as
/// `path: want X, found Y`; `None` when the live object contains the desired one.
pub fn first_difference(desired: &Value, live: &Value) -> Option<String> {
    let (Value::Object(want), Value::Object(have)) = (desired, live) else {
        return diff_at("", desired, live, true);
    };
    for (key, want_value) in want {
        // Metadata is shared with the API server and other tools: only what
        // mtp set must be there. The rest is mtp's alone and must match exactly.
        let strict = key != "metadata";
        let d = match have.get(key) {
            Some(have_value) => diff_at(key, want_value, have_value, strict),
            None if is_empty(want_value) => None,
            None => Some(format!("{key}: want {}, missing", show(want_value))),
        };
        if d.is_some() {
            return d;
        }
    }
    None
}

fn diff_at(path: &str, desired: &Value, live: &Value, strict: bool) -> Option<String> {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match have.get(key) {
                    Some(have_value) => {
                        if let Some(d) = diff_at(&sub, want_value, have_value, strict) {
                            return Some(d);
                        }
                    }
                    None if is_empty(want_value) => {}
                    None => return Some(format!("{sub}: want {}, missing", show(want_value))),
                }
            }
            if strict
                && let Some((key, extra)) = have
                    .iter()
                    .find(|(k, v)| !want.contains_key(*k) && !is_empty(v))
            {
                return Some(format!(
                    "{path}.{key}: not set by mtp, found {}",
                    show(extra)
                ));
            }
            None
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                return Some(format!(
                    "{path}: want {} entries, found {}",
                    want.len(),
                    have.len()
                ));
            }
            want.iter()
                .zip(have)
                .enumerate()
                .find_map(|(i, (w, h))| diff_at(&format!("{path}[{i}]"), w, h, strict))
        }
        (Value::String(w), Value::String(h)) if w == h => None,
        (Value::String(w), Value::String(h)) => match (quantity_millis(w), quantity_millis(h)) {
            (Some(a), Some(b)) if a == b => None,
            _ => Some(format!("{path}: want {w:?}, found {h:?}")),
        },
        (w, h) if w == h => None,
        // The API server drops empty objects, lists and strings it was sent.
        (w, h) if is_empty(w) && is_empty(h) => None,
        (w, h) => Some(format!("{path}: want {}, found {}", show(w), show(h))),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

/// A Kubernetes quantity in thousandths, exact, for comparison only; `None`
/// for strings that are not quantities (so they compare as plain text).
pub fn quantity_millis(s: &str) -> Option<i128> {
    let (num, den) = crate::quantity::exact(s)?;
    i128::try_from(num.checked_mul(1000)? / den).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn live_object_with_extra_fields_matches() {
        let want = json!({"metadata": {"name": "q", "labels": {"a": "1"}}, "spec": {"hard": {"pods": "10"}}});
        let have = json!({"metadata": {"name": "q", "uid": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"hard": {"pods": "10"}}, "status": {}});
        assert_eq!(first_difference(&want, &have), None);
    }

    #[test]
    fn changed_or_missing_fields_are_named() {
        let want = json!({"spec": {"hard": {"pods": "10", "services": "5"}}});
        let raised = json!({"spec": {"hard": {"pods": "100", "services": "5"}}});
        assert_eq!(
            first_difference(&want, &raised).unwrap(),
            "spec.hard.pods: want \"10\", found \"100\""
        );
        let removed = json!({"spec": {"hard": {"pods": "10"}}});
        assert_eq!(
            first_difference(&want, &removed).unwrap(),
            "spec.hard.services: want \"5\", missing"
        );
        let want = json!({"subjects": [{"name": "alice"}]});
        let have = json!({"subjects": [{"name": "alice"}, {"name": "mallory"}]});
        assert_eq!(
            first_difference(&want, &have).unwrap(),
            "subjects: want 1 entries, found 2"
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(quantity_millis("1"), Some(1000));
        assert_eq!(quantity_millis("1000m"), Some(1000));
        assert_eq!(quantity_millis("0.5"), Some(500));
        assert_eq!(quantity_millis("2Gi"), quantity_millis("2048Mi"));
        assert_eq!(quantity_millis("1k"), Some(1_000_000));
        assert_eq!(quantity_millis("abc"), None);
        assert_eq!(quantity_millis("Ingress"), None);
        assert_eq!(quantity_millis("1x"), None);
        let want = json!({"hard": {"cpu": "1"}});
        assert_eq!(
            first_difference(&want, &json!({"hard": {"cpu": "1000m"}})),
            None
        );
        assert!(first_difference(&want, &json!({"hard": {"cpu": "2"}})).is_some());
    }

    #[test]
    fn anything_added_outside_metadata_is_drift() {
        let want = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
        let narrowed = json!({"metadata": {"labels": {"a": "1", "x": "y"}}, "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]}});
        assert_eq!(
            first_difference(&want, &narrowed).unwrap(),
            "spec.podSelector.matchLabels: not set by mtp, found {\"app\":\"x\"}"
        );
        let want = json!({"subjects": [{"kind": "User", "name": "alice"}]});
        let widened =
            json!({"subjects": [{"kind": "User", "name": "alice", "namespace": "other"}]});
        assert!(first_difference(&want, &widened).is_some());
        // Extra labels and server fields in metadata are fine.
        let want = json!({"metadata": {"name": "n"}});
        let live = json!({"metadata": {"name": "n", "uid": "u", "managedFields": [{}]}});
        assert_eq!(first_difference(&want, &live), None);
    }

    #[test]
    fn empty_strings_may_be_dropped_by_the_server() {
        let want = json!({"subjects": [{"apiGroup": "", "kind": "ServiceAccount", "name": "ci"}]});
        let live = json!({"subjects": [{"kind": "ServiceAccount", "name": "ci"}]});
        assert_eq!(first_difference(&want, &live), None);
    }

    #[test]
    fn empty_desired_values_may_be_dropped_by_the_server() {
        let want = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
        let have = json!({"spec": {"policyTypes": ["Ingress"]}});
        assert_eq!(first_difference(&want, &have), None);
    }
}
