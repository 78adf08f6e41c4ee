//! The in-memory object store: objects per kind, resource versions, the watch event log
//! and the write verbs (create, update, merge patch, apply, delete) with their checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::apply;
use crate::clock::{self, SimClock};
use crate::kinds::{self, KINDS, ResourceKind};
use crate::pod_life;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{self, StatusError};

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the event log for watches.
#[derive(Debug)]
pub struct Event {
    /// Resource version the change produced.
    pub rv: u64,
    /// Index of the kind in [`KINDS`].
    pub kind: usize,
    /// What happened.
    pub etype: EventType,
    /// The object after the change (the last state for deletions).
    pub object: Arc<Value>,
    /// The object before the change, so selector watches can emit enter/leave transitions.
    pub old: Option<Arc<Value>>,
}

type Key = (String, String);

/// A watch's backlog, the version it is current at, and its live receiver.
pub type WatchStart = (Vec<Arc<Event>>, u64, broadcast::Receiver<Arc<Event>>);

struct Inner {
    rv: u64,
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    log: VecDeque<Arc<Event>>,
}

/// All objects of one simulated cluster.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    history: usize,
    clock: SimClock,
}

/// What a delete did.
pub enum Deleted {
    /// The object is gone; the response is the given body.
    Gone(Value),
    /// A namespace entered `Terminating`; the caller starts its finalization.
    NamespaceTerminating(Value),
}

/// A page of a list.
pub struct ListPage {
    /// Matching objects.
    pub items: Vec<Arc<Value>>,
    /// Store resource version at list time.
    pub rv: u64,
    /// Continue token when `limit` cut the list.
    pub continue_token: Option<String>,
    /// Items left after this page.
    pub remaining: usize,
}

/// Index of a kind in [`KINDS`].
pub fn kind_index(kind: &ResourceKind) -> usize {
    KINDS
        .iter()
        .position(|k| k == kind)
        .expect("kinds come from the table")
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn validate_name(kind: &ResourceKind, name: &str) -> Result<(), StatusError> {
    if kind.resource == "namespaces" {
        if !is_dns1123_label(name) {
            return Err(StatusError::invalid(
                kind.kind,
                name,
                "metadata.name",
                &format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                ),
            ));
        }
    } else if !is_dns1123_subdomain(name) {
        return Err(StatusError::invalid(
            kind.kind,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        ));
    }
    Ok(())
}

/// Checks `apiVersion`/`kind` in a request body against the URL's kind (when present).
fn check_type(kind: &ResourceKind, body: &Value, required: bool) -> Result<(), StatusError> {
    let av = body.get("apiVersion").and_then(Value::as_str);
    let k = body.get("kind").and_then(Value::as_str);
    if required && (av.is_none() || k.is_none()) {
        return Err(StatusError::bad_request(
            "Object 'Kind' is missing in request body",
        ));
    }
    if av.is_some_and(|a| a != kind.api_version()) || k.is_some_and(|x| x != kind.kind) {
        return Err(StatusError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            av.unwrap_or(""),
            kind.api_version()
        )));
    }
    Ok(())
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// Renders a `roleRef` the way the apiserver's validation prints it: the internal
/// `rbac.RoleRef` as JSON, whose Go fields carry no json tags (`{"APIGroup":..}`).
fn go_role_ref(v: Option<&Value>) -> String {
    let field = |f: &str| {
        Value::String(
            v.and_then(|r| r.get(f))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    format!(
        "{{\"APIGroup\":{},\"Kind\":{},\"Name\":{}}}",
        field("apiGroup"),
        field("kind"),
        field("name")
    )
}

/// Update validation of a real apiserver that kube-sim mirrors: immutable fields.
/// Runs for every update-like verb (PUT, merge patch, server-side apply).
fn validate_update(
    kind: &ResourceKind,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), StatusError> {
    if kind.group == "rbac.authorization.k8s.io"
        && kind.resource == "rolebindings"
        && old.get("roleRef") != new.get("roleRef")
    {
        return Err(StatusError::invalid(
            &format!("{}.{}", kind.kind, kind.group),
            name,
            "roleRef",
            &format!(
                "Invalid value: {}: field is immutable",
                go_role_ref(new.get("roleRef"))
            ),
        ));
    }
    Ok(())
}

/// The label the apiserver's defaulting puts on every namespace, on every write.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Defaulting a real apiserver applies to every decoded object, before field ownership is
/// computed: a namespace always carries `kubernetes.io/metadata.name: <name>` (since 1.21;
/// removing it is undone, and the writer keeps owning it).
fn default_fields(kind: &ResourceKind, name: &str, obj: &mut Value) {
    if kind.resource != "namespaces" {
        return;
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    meta["labels"][NAMESPACE_NAME_LABEL] = json!(name);
}

/// The conditions the namespace controller reports once it has emptied a namespace
/// (all `False`: nothing failed, nothing remains), just before it finalizes it.
fn namespace_emptied_conditions(at: String) -> Value {
    let c = |kind: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": "False",
            "lastTransitionTime": at,
            "reason": reason,
            "message": message,
        })
    };
    json!([
        c(
            "NamespaceDeletionDiscoveryFailure",
            "ResourcesDiscovered",
            "All resources successfully discovered"
        ),
        c(
            "NamespaceDeletionGroupVersionParsingFailure",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed"
        ),
        c(
            "NamespaceDeletionContentFailure",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization"
        ),
        c(
            "NamespaceContentRemaining",
            "ContentRemoved",
            "All content successfully removed"
        ),
        c(
            "NamespaceFinalizersRemaining",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished"
        ),
    ])
}

/// Whether anything outside `metadata` and `status` differs (drives `metadata.generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(old) != strip(new)
}

impl Store {
    /// An empty store keeping `history` events for watch resumption.
    pub fn new(history: usize) -> Self {
        Self::with_clock(history, SimClock::real())
    }

    /// An empty store whose timestamps come from `clock`.
    pub fn with_clock(history: usize, clock: SimClock) -> Self {
        let (events, _) = broadcast::channel(history.clamp(64, 16_384));
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: vec![BTreeMap::new(); KINDS.len()],
                log: VecDeque::new(),
            }),
            events,
            history: history.max(1),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (writes are single inserts).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The clock timestamps come from.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Number of stored objects across all kinds.
    pub fn object_count(&self) -> usize {
        self.lock().objects.iter().map(BTreeMap::len).sum()
    }

    /// Records a change: bumps the resource version, stamps it, stores and broadcasts.
    fn commit(
        &self,
        inner: &mut Inner,
        kind: usize,
        key: Key,
        etype: EventType,
        mut obj: Value,
    ) -> Arc<Value> {
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let obj = Arc::new(obj);
        let old = if etype == EventType::Deleted {
            inner.objects[kind].remove(&key)
        } else {
            inner.objects[kind].insert(key, obj.clone())
        };
        let ev = Arc::new(Event {
            rv,
            kind,
            etype,
            object: obj.clone(),
            old,
        });
        if inner.log.len() >= self.history {
            inner.log.pop_front();
        }
        inner.log.push_back(ev.clone());
        // No receivers is fine: nobody watches.
        let _ = self.events.send(ev);
        obj
    }

    /// Reads one object.
    pub fn get(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Value>, StatusError> {
        let inner = self.lock();
        inner.objects[kind_index(kind)]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| StatusError::not_found(&kind.qualified_resource(), name))
    }

    /// Lists objects of a kind, optionally in one namespace, filtered and paginated.
    pub fn list(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, StatusError> {
        let inner = self.lock();
        let map = &inner.objects[kind_index(kind)];
        let start: Key = match continue_token {
            Some(t) => decode_continue(t)?,
            None => (ns.unwrap_or("").to_string(), String::new()),
        };
        let after = continue_token.is_some();
        let mut items = Vec::new();
        let mut remaining = 0;
        let mut next = None;
        for (key, obj) in map.range(start.clone()..) {
            if after && *key == start {
                continue;
            }
            if let Some(ns) = ns
                && key.0 != ns
            {
                break;
            }
            if !labels.matches(obj.get("metadata").and_then(|m| m.get("labels")))
                || !fields.matches(obj)
            {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            next = Some(key.clone());
            items.push(obj.clone());
        }
        let continue_token =
            (remaining > 0).then(|| encode_continue(next.as_ref().expect("a page has items")));
        Ok(ListPage {
            items,
            rv: inner.rv,
            continue_token,
            remaining,
        })
    }

    /// Every object of a kind (used by the kubelet stats and the namespace controller).
    pub fn all(&self, kind: &ResourceKind) -> Vec<Arc<Value>> {
        self.lock().objects[kind_index(kind)]
            .values()
            .cloned()
            .collect()
    }

    fn check_namespace(
        inner: &Inner,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Result<(), StatusError> {
        if !kind.namespaced {
            return Ok(());
        }
        let nsi = kind_index(kinds::namespaces());
        match inner.objects[nsi].get(&(String::new(), ns.to_string())) {
            None => Err(StatusError::not_found("namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                let mut e = StatusError::forbidden(
                    &kind.qualified_resource(),
                    name,
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                );
                if let Some(d) = e.details.as_mut() {
                    d["causes"] = json!([{
                        "reason": "NamespaceTerminating",
                        "message": format!("namespace {ns} is being terminated"),
                        "field": "metadata.namespace",
                    }]);
                }
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// Fills server-owned metadata of a new object and applies defaulting. What a client
    /// could have sent (defaulted fields) is set here, before ownership is recorded;
    /// what only the server sets comes after, in [`Store::prepare_for_create`].
    fn initialize(&self, kind: &ResourceKind, ns: &str, name: &str, obj: &mut Value) {
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("name".into(), json!(name));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(self.clock.now_secs()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("resourceVersion");
        default_fields(kind, name, obj);
    }

    /// Fields a real apiserver's create strategy sets (`PrepareForCreate`), after field
    /// ownership is recorded: no manager owns them.
    /// A pod created already bound to a node (`spec.nodeName`) is started at once, as
    /// the kubelet would: `Running`, `startTime` and a running status per container.
    fn prepare_for_create(&self, kind: &ResourceKind, obj: &mut Value) {
        if kind.resource == "namespaces" {
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
            obj["status"] = json!({ "phase": "Active" });
        }
        if kind.resource == "pods"
            && kind.group.is_empty()
            && obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && obj.pointer("/status/phase").is_none()
        {
            obj["status"] = pod_life::running_status(obj, &clock::rfc3339(self.clock.now()));
        }
    }

    /// Resolves the name of a create body (honouring `generateName`) and checks the namespace.
    fn body_name(kind: &ResourceKind, ns: &str, body: &Value) -> Result<String, StatusError> {
        if let Some(bns) = meta_str(body, "namespace")
            && kind.namespaced
            && bns != ns
        {
            return Err(StatusError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(n) = meta_str(body, "name").filter(|n| !n.is_empty()) {
            return Ok(n.to_string());
        }
        if let Some(g) = meta_str(body, "generateName") {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
            return Ok(format!("{g}{suffix}"));
        }
        Err(StatusError::invalid(
            kind.kind,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ))
    }

    /// POST: creates an object.
    pub fn create(
        &self,
        kind: &ResourceKind,
        ns: &str,
        mut body: Value,
        manager: &str,
    ) -> Result<Arc<Value>, StatusError> {
        check_type(kind, &body, false)?;
        let name = Self::body_name(kind, ns, &body)?;
        validate_name(kind, &name)?;
        let mut inner = self.lock();
        Self::check_namespace(&inner, kind, ns, &name)?;
        let key = (ns.to_string(), name.clone());
        let ki = kind_index(kind);
        if inner.objects[ki].contains_key(&key) {
            return Err(StatusError::already_exists(
                &kind.qualified_resource(),
                &name,
            ));
        }
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        self.initialize(kind, ns, &name, &mut body);
        apply::record_update(
            None,
            &mut body,
            manager,
            &kind.api_version(),
            &self.clock.now_secs(),
        );
        self.prepare_for_create(kind, &mut body);
        Ok(self.commit(&mut inner, ki, key, EventType::Added, body))
    }

    /// Shared tail of update-like verbs: keeps system metadata, bumps generation, commits.
    fn replace(
        &self,
        inner: &mut Inner,
        kind: &ResourceKind,
        key: Key,
        old: &Value,
        mut new: Value,
    ) -> Result<Arc<Value>, StatusError> {
        validate_update(kind, &key.1, old, &new)?;
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "name",
            "namespace",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["generation"] = json!(if spec_changed(old, &new) {
            generation + 1
        } else {
            generation
        });
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == *old {
            // A no-op write does not bump the resource version, as on a real apiserver.
            return Ok(Arc::new(new));
        }
        Ok(self.commit(inner, kind_index(kind), key, EventType::Modified, new))
    }

    /// PUT: replaces an object; a stale `resourceVersion` is a 409 Conflict.
    pub fn update(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        mut body: Value,
        manager: &str,
    ) -> Result<Arc<Value>, StatusError> {
        check_type(kind, &body, false)?;
        if let Some(bn) = meta_str(&body, "name")
            && bn != name
        {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({bn}) does not match the name on the URL ({name})"
            )));
        }
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let old = inner.objects[kind_index(kind)]
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(&kind.qualified_resource(), name))?;
        if let Some(rv) = meta_str(&body, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(StatusError::stale(&kind.qualified_resource(), name));
        }
        if !body.get("metadata").is_some_and(Value::is_object) {
            body["metadata"] = json!({});
        }
        body["metadata"]["managedFields"] = old
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        default_fields(kind, name, &mut body);
        apply::record_update(
            Some(&old),
            &mut body,
            manager,
            &kind.api_version(),
            &self.clock.now_secs(),
        );
        self.replace(&mut inner, kind, key, &old, body)
    }

    /// PATCH with a JSON merge patch (also used for strategic merge patches).
    pub fn merge_patch(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        patch: &Value,
        manager: &str,
    ) -> Result<Arc<Value>, StatusError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let old = inner.objects[kind_index(kind)]
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(&kind.qualified_resource(), name))?;
        if let Some(rv) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(StatusError::stale(&kind.qualified_resource(), name));
        }
        let mut new = (*old).clone();
        apply::merge_into(&mut new, patch, true);
        check_type(kind, &new, false)?;
        default_fields(kind, name, &mut new);
        apply::record_update(
            Some(&old),
            &mut new,
            manager,
            &kind.api_version(),
            &self.clock.now_secs(),
        );
        self.replace(&mut inner, kind, key, &old, new)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply, creating if missing.
    pub fn apply(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<(Arc<Value>, bool), StatusError> {
        check_type(kind, config, true)?;
        match meta_str(config, "name") {
            Some(n) if n != name => {
                return Err(StatusError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if kind.namespaced
            && let Some(bns) = meta_str(config, "namespace")
            && bns != ns
        {
            return Err(StatusError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let ki = kind_index(kind);
        let old = inner.objects[ki].get(&key).cloned();
        if let Some(rv) = meta_str(config, "resourceVersion")
            && old
                .as_ref()
                .is_some_and(|o| meta_str(o, "resourceVersion") != Some(rv))
        {
            return Err(StatusError::stale(&kind.qualified_resource(), name));
        }
        let conflict = |c: apply::Conflicts| StatusError::apply_conflicts(&c);
        match old {
            None => {
                validate_name(kind, name)?;
                Self::check_namespace(&inner, kind, ns, name)?;
                let mut obj = apply::apply(
                    None,
                    config,
                    manager,
                    force,
                    &kind.api_version(),
                    &self.clock.now_secs(),
                )
                .map_err(conflict)?;
                let managed = obj["metadata"]["managedFields"].take();
                self.initialize(kind, ns, name, &mut obj);
                self.prepare_for_create(kind, &mut obj);
                obj["metadata"]["managedFields"] = managed;
                Ok((
                    self.commit(&mut inner, ki, key, EventType::Added, obj),
                    true,
                ))
            }
            Some(old) => {
                let mut obj = apply::apply(
                    Some(&old),
                    config,
                    manager,
                    force,
                    &kind.api_version(),
                    &self.clock.now_secs(),
                )
                .map_err(conflict)?;
                default_fields(kind, name, &mut obj);
                Ok((self.replace(&mut inner, kind, key, &old, obj)?, false))
            }
        }
    }

    /// A server-side status write (e.g. by the simulated kubelet): `f` edits a copy of the
    /// object, recorded as an `Update` of `manager` through the `status` subresource and
    /// committed as MODIFIED (nothing when `f` changed nothing). An error of `f` leaves the
    /// object as it was.
    pub fn modify_status(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        manager: &str,
        f: impl FnOnce(&mut Value) -> Result<(), StatusError>,
    ) -> Result<Arc<Value>, StatusError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let old = inner.objects[kind_index(kind)]
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(&kind.qualified_resource(), name))?;
        let mut new = (*old).clone();
        f(&mut new)?;
        apply::record_update_of(
            Some(&old),
            &mut new,
            manager,
            &kind.api_version(),
            Some("status"),
            &self.clock.now_secs(),
        );
        self.replace(&mut inner, kind, key, &old, new)
    }

    /// DELETE: removes an object, or starts namespace termination.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Deleted, StatusError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let ki = kind_index(kind);
        let old = inner.objects[ki]
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(&kind.qualified_resource(), name))?;
        if let Some(rv) = precondition_rv
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(StatusError::stale(&kind.qualified_resource(), name));
        }
        if kind.resource == "namespaces" {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Deleted::NamespaceTerminating((*old).clone()));
            }
            let mut new = (*old).clone();
            // No deletionGracePeriodSeconds: a namespace is not deleted gracefully.
            new["metadata"]["deletionTimestamp"] = json!(self.clock.now_secs());
            new["status"]["phase"] = json!("Terminating");
            let out = self.commit(&mut inner, ki, key, EventType::Modified, new);
            return Ok(Deleted::NamespaceTerminating((*out).clone()));
        }
        let out = self.commit(&mut inner, ki, key, EventType::Deleted, (*old).clone());
        // Pods answer with the object (graceful deletion); other kinds with a Status.
        if kind.resource == "pods" {
            Ok(Deleted::Gone((*out).clone()))
        } else {
            let uid = meta_str(&old, "uid").unwrap_or_default();
            Ok(Deleted::Gone(status::success(
                kind.resource,
                name,
                kind.group,
                uid,
            )))
        }
    }

    /// Namespace controller step: removes every object in `ns`, reports that on the
    /// namespace (`status.conditions`, written through `status` by
    /// kube-controller-manager), then removes the namespace itself. Each step is its own
    /// event, so watches see the teardown as on a real cluster: MODIFIED (Terminating),
    /// the contents' DELETED, MODIFIED (conditions), DELETED.
    pub fn finalize_namespace(&self, ns: &str) {
        for (ki, kind) in KINDS.iter().enumerate() {
            if !kind.namespaced {
                continue;
            }
            let mut inner = self.lock();
            let keys: Vec<Key> = inner.objects[ki]
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(obj) = inner.objects[ki].get(&key).cloned() {
                    self.commit(&mut inner, ki, key, EventType::Deleted, (*obj).clone());
                }
            }
        }
        let mut inner = self.lock();
        let nsi = kind_index(kinds::namespaces());
        let key = (String::new(), ns.to_string());
        let Some(obj) = inner.objects[nsi].get(&key).cloned() else {
            return;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let mut emptied = (*obj).clone();
        emptied["status"]["conditions"] = namespace_emptied_conditions(self.clock.now_secs());
        apply::record_update_of(
            Some(&obj),
            &mut emptied,
            "kube-controller-manager",
            "v1",
            Some("status"),
            &self.clock.now_secs(),
        );
        let emptied = self.commit(&mut inner, nsi, key.clone(), EventType::Modified, emptied);
        // Finalizing (`spec.finalizers` emptied through `finalize`) deletes the namespace
        // in the same write; the DELETED event shows its last stored state, finalizer
        // included, as etcd's previous value does.
        self.commit(&mut inner, nsi, key, EventType::Deleted, (*emptied).clone());
    }

    /// Starts a watch: the events after `from` (or a snapshot as synthetic ADDED events
    /// when `from` is `None`) plus a live receiver, taken atomically.
    /// A `from` older than the retained history is 410 Expired.
    pub fn watch_from(
        &self,
        kind: &ResourceKind,
        from: Option<u64>,
    ) -> Result<WatchStart, StatusError> {
        let inner = self.lock();
        let ki = kind_index(kind);
        let rx = self.events.subscribe();
        let backlog = match from {
            Some(from) => {
                let oldest = inner.log.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                if from + 1 < oldest && from < inner.rv {
                    return Err(StatusError::expired(format!(
                        "too old resource version: {from} ({})",
                        oldest - 1
                    )));
                }
                inner
                    .log
                    .iter()
                    .filter(|e| e.rv > from && e.kind == ki)
                    .cloned()
                    .collect()
            }
            None => inner.objects[ki]
                .values()
                .map(|o| {
                    Arc::new(Event {
                        rv: inner.rv,
                        kind: ki,
                        etype: EventType::Added,
                        object: o.clone(),
                        old: None,
                    })
                })
                .collect(),
        };
        Ok((backlog, inner.rv, rx))
    }
}

fn encode_continue(key: &Key) -> String {
    let raw = format!("{}/{}", key.0, key.1);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<Key, StatusError> {
    let bad = || StatusError::bad_request("continue key is not valid");
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    let raw = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (ns, name) = raw.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}
