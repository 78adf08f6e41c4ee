//! What the agent does to its cluster's API: server-side apply of a bundle
//! under one field manager, read-back verification, pruning and namespace
//! deletion — always refusing objects without the managed-by label.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, ResourceExt};

use crate::bundle::{
    Bundle, CLUSTER_ID_ANNOTATION, Kind, MANAGED_BY, MANAGED_BY_VALUE, MANAGED_SELECTOR,
    ManagedObject, stamped_cluster_id, stamped_revision,
};
use crate::verify::first_difference;

/// The field manager of every apply: one owner, so a second agent applying the
/// same state is a no-op rather than a conflict.
pub const FIELD_MANAGER: &str = "mtp-agent";

/// A failed call to the cluster, with the object it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {source}")]
pub struct ClusterError {
    pub action: &'static str,
    pub object: String,
    #[source]
    pub source: kube::Error,
}

impl ClusterError {
    /// For `map_err`: the call `action` on `object` failed.
    fn of(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let object = object.into();
        move |source| ClusterError {
            action,
            object,
            source,
        }
    }
}

/// `Kind/name` → resourceVersion of the objects of one namespace, as read.
pub type Versions = BTreeMap<String, String>;

/// An object whose live state differs from its apply configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `Kind/name`.
    pub object: String,
    pub description: String,
}

/// The managed objects of a cluster at one moment, by (kind, namespace, name).
#[derive(Debug, Default)]
pub struct LiveObjects {
    objects: std::collections::HashMap<(Kind, String, String), serde_json::Value>,
}

impl LiveObjects {
    /// Compares a bundle with this listing, as `ClusterApi::verify` does
    /// object by object. An object without the managed-by label does not show
    /// up in the listing and so counts as changed (and is re-applied).
    pub fn verify(&self, bundle: &Bundle) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for object in bundle.objects() {
            let key = (
                object.kind,
                object.namespace.clone().unwrap_or_default(),
                object.name.clone(),
            );
            let description = match self.objects.get(&key) {
                None => Some("deleted (or no longer labelled as managed by mtp)".to_string()),
                Some(live) if !live["metadata"]["deletionTimestamp"].is_null() => {
                    Some("being deleted".to_string())
                }
                Some(live) => first_difference(&object.body, live),
            };
            if let Some(description) = description {
                out.push(Mismatch {
                    object: object.id(),
                    description,
                });
            }
        }
        out
    }

    pub fn namespaces(&self) -> BTreeSet<String> {
        self.namespace_stamps().into_keys().collect()
    }

    /// The managed namespaces with the cluster identity each is stamped with.
    pub fn namespace_stamps(&self) -> Stamps {
        self.objects
            .iter()
            .filter(|((kind, _, _), _)| *kind == Kind::Namespace)
            .map(|((_, _, name), live)| {
                let stamp = live["metadata"]["annotations"][CLUSTER_ID_ANNOTATION]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                (name.clone(), stamp)
            })
            .collect()
    }
}

/// Managed namespace → the cluster identity it is stamped with (`None`:
/// not stamped).
pub type Stamps = BTreeMap<String, Option<String>>;

/// Whose namespaces a deletion may touch: those stamped with `cluster_id`;
/// an unstamped one counts as stamped `unstamped_as` (the identity the
/// agent's state was applied for), or as this cluster's when that is unknown.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub cluster_id: &'a str,
    pub unstamped_as: Option<&'a str>,
}

impl Owner<'_> {
    /// The identity a namespace with `stamp` belongs to, if not this one.
    pub fn foreign(&self, stamp: Option<&str>) -> Option<String> {
        let effective = stamp.or(self.unstamped_as)?;
        (effective != self.cluster_id).then(|| effective.to_string())
    }
}

/// Where a namespace deletion stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Gone,
    Terminating,
    /// A namespace of that name exists but mtp does not manage it: never touched.
    NotManaged,
    /// The namespace carries a newer revision than the caller knows of: it
    /// was re-created since the caller's state. Not touched.
    Newer(i64),
    /// The namespace belongs to another cluster identity (stamped, or the
    /// caller's state was applied for it): never deleted.
    OtherCluster(String),
    /// `may_write` said no before the delete: nothing was done.
    Fenced,
}

/// What became of an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Every object written.
    Done,
    /// `may_write` said no part-way: not (completely) applied.
    Fenced,
    /// The live namespace carries a newer revision than the bundle: the
    /// caller's desired state is stale. Nothing written.
    Newer(i64),
    /// The namespace does not exist and the caller asked not to create it.
    /// Nothing written.
    Absent,
}

/// A bundle's namespace on the cluster, before applying.
enum Live {
    Absent,
    /// Managed, at the bundle's revision or older.
    Current,
    /// Managed, stamped with this newer revision.
    Newer(i64),
}

/// What to do when a bundle's namespace does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    Create,
    /// Only bring existing namespaces back to their configuration: a desired
    /// state the control plane has not confirmed may be older than a
    /// deletion another applier made since.
    Skip,
}

#[derive(Clone)]
pub struct ClusterApi {
    client: Client,
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Namespace => ApiResource::erase::<Namespace>(&()),
        Kind::ResourceQuota => ApiResource::erase::<ResourceQuota>(&()),
        Kind::LimitRange => ApiResource::erase::<LimitRange>(&()),
        Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        Kind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
        Kind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
    }
}

fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// 422: the change is refused as invalid (e.g. an immutable field).
fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

impl ClusterApi {
    pub fn new(client: Client) -> Self {
        ClusterApi { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = resource(kind);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Server-side applies every object (Namespace first), then removes
    /// managed NetworkPolicies the bundle no longer has (e.g. a switched-off
    /// allow rule). Objects of that name that mtp does not manage are refused.
    pub async fn apply(&self, bundle: &Bundle) -> Result<Applied, ClusterError> {
        self.apply_fenced(bundle, IfAbsent::Create, || true).await
    }

    /// As `apply`, but asks `may_write` before every write and stops as soon
    /// as it says no: an applier whose lease may have lapsed must not keep
    /// writing through a slow API server.
    pub async fn apply_fenced(
        &self,
        bundle: &Bundle,
        if_absent: IfAbsent,
        may_write: impl Fn() -> bool,
    ) -> Result<Applied, ClusterError> {
        let objects = bundle.objects();
        let namespace = objects[0].name.clone();
        match self
            .check_live_namespace(&objects[0], bundle.revision())
            .await?
        {
            Live::Newer(newer) => return Ok(Applied::Newer(newer)),
            Live::Absent if if_absent == IfAbsent::Skip => return Ok(Applied::Absent),
            Live::Absent | Live::Current => {}
        }
        for object in &objects {
            match self.apply_object(object, &may_write).await {
                Ok(true) => {}
                Ok(false) => return Ok(Applied::Fenced),
                Err(e) if is_invalid(&e.source) => {
                    if !self.recover_invalid(object, e, &may_write).await? {
                        return Ok(Applied::Fenced);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let wanted: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o.kind == Kind::NetworkPolicy)
            .map(|o| o.name.as_str())
            .collect();
        let policies = self.api(Kind::NetworkPolicy, Some(&namespace));
        let live = policies
            .list_metadata(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(ClusterError::of(
                "list",
                format!("NetworkPolicy in {namespace}"),
            ))?;
        for stale in live
            .items
            .iter()
            .filter(|p| !wanted.contains(p.name_any().as_str()))
        {
            if !may_write() {
                return Ok(Applied::Fenced);
            }
            let name = stale.name_any();
            match policies.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(namespace = %namespace, policy = %name, "removed a network policy the environment no longer has")
                }
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(ClusterError {
                        action: "delete",
                        object: format!("NetworkPolicy/{name}"),
                        source,
                    });
                }
            }
        }
        Ok(Applied::Done)
    }

    /// After a write of `object` was refused as invalid (422): a RoleBinding
    /// whose live roleRef differs from the desired one (immutable; re-created
    /// by hand to bind another role) is deleted, only that very one (by uid),
    /// and applied afresh. Any other refusal is returned as it was: an error
    /// to report, not a reason to delete access. `false` if the fence closed.
    async fn recover_invalid(
        &self,
        object: &ManagedObject,
        refused: ClusterError,
        may_write: &impl Fn() -> bool,
    ) -> Result<bool, ClusterError> {
        if object.kind != Kind::RoleBinding {
            return Err(refused);
        }
        let api = self.api(object.kind, object.namespace.as_deref());
        let err = |action, source| ClusterError {
            action,
            object: object.id(),
            source,
        };
        let live = api.get_opt(&object.name).await.map_err(|e| err("get", e))?;
        let Some(live) = live.filter(|l| l.data.get("roleRef") != object.body.get("roleRef"))
        else {
            return Err(refused);
        };
        if !is_managed(live.labels()) {
            return Err(err(
                "refuse to replace",
                kube::Error::Api(
                    kube::core::Status::failure("not labelled as managed by mtp", "Conflict")
                        .with_code(409)
                        .boxed(),
                ),
            ));
        }
        tracing::warn!(object = %object.id(), namespace = ?object.namespace, error = %refused, "cannot apply in place; deleting and re-creating");
        if !may_write() {
            return Ok(false);
        }
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: live.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(err("delete", e)),
        }
        self.apply_object(object, may_write).await
    }

    /// Server-side applies one object; `false` (nothing written) if the
    /// fence is closed.
    async fn apply_object(
        &self,
        object: &ManagedObject,
        may_write: &impl Fn() -> bool,
    ) -> Result<bool, ClusterError> {
        if !may_write() {
            return Ok(false);
        }
        self.api(object.kind, object.namespace.as_deref())
            .patch(
                &object.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object.body),
            )
            .await
            .map_err(ClusterError::of("apply", object.id()))?;
        Ok(true)
    }

    /// Replaces (PUT, at the live resourceVersion) the objects of a bundle
    /// whose ids are given. Server-side apply never removes a field another
    /// manager added (an extra ingress rule in the default-deny policy, a
    /// subject's extra field); a replace does. Labels and annotations others
    /// set are kept. `false` if the fence closed first.
    pub async fn replace_fenced(
        &self,
        bundle: &Bundle,
        ids: &BTreeSet<String>,
        may_write: impl Fn() -> bool,
    ) -> Result<bool, ClusterError> {
        for object in bundle.objects().iter().filter(|o| ids.contains(&o.id())) {
            let api = self.api(object.kind, object.namespace.as_deref());
            let err = |action, source| ClusterError {
                action,
                object: object.id(),
                source,
            };
            let Some(live) = api.get_opt(&object.name).await.map_err(|e| err("get", e))? else {
                // Gone meanwhile: a plain apply re-creates it.
                if !self.apply_object(object, &may_write).await? {
                    return Ok(false);
                }
                continue;
            };
            if !is_managed(live.labels()) {
                continue;
            }
            // The live object with mtp's content put back: what others keep in
            // its metadata (finalizers, owner references, their labels) stays.
            let desired: DynamicObject = serde_json::from_value(object.body.clone())
                .map_err(|e| err("render", kube::Error::SerdeError(e)))?;
            let mut body = live.clone();
            let mut content = body.data.as_object().cloned().unwrap_or_default();
            for (key, value) in desired.data.as_object().into_iter().flatten() {
                content.insert(key.clone(), value.clone());
            }
            body.data = serde_json::Value::Object(content);
            body.labels_mut().extend(desired.labels().clone());
            body.annotations_mut().extend(desired.annotations().clone());
            body.metadata.managed_fields = None;
            if !may_write() {
                return Ok(false);
            }
            let params = kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            match api.replace(&object.name, &params, &body).await {
                Ok(_) => {}
                Err(e) if is_invalid(&e) => {
                    if !self
                        .recover_invalid(object, err("replace", e), &may_write)
                        .await?
                    {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(err("replace", e)),
            }
        }
        Ok(true)
    }

    /// An existing namespace of the same name that mtp does not manage
    /// belongs to someone else: applying would take it over. One stamped with
    /// a revision newer than `revision` was written from newer state: its
    /// revision is returned, and the caller must not overwrite it.
    /// Whether the bundle's namespace exists, is mtp's, and is not newer.
    async fn check_live_namespace(
        &self,
        namespace: &ManagedObject,
        revision: i64,
    ) -> Result<Live, ClusterError> {
        match self
            .api(Kind::Namespace, None)
            .get_opt(&namespace.name)
            .await
        {
            Ok(Some(live)) if !is_managed(live.labels()) => Err(ClusterError {
                action: "refuse to adopt",
                object: namespace.id(),
                source: kube::Error::Api(
                    kube::core::Status::failure(
                        "the namespace exists and is not labelled app.kubernetes.io/managed-by=mtp",
                        "AlreadyExists",
                    )
                    .with_code(409)
                    .boxed(),
                ),
            }),
            Ok(Some(live)) => {
                // A namespace written for another cluster identity (another
                // control-plane database) is not rewritten either: an
                // unknown database must not hand its owners, quotas or
                // policies to someone else's tenant. Unstamped ones (older
                // agents) and bundles not stamped yet are compared by
                // nothing.
                let desired = namespace
                    .body
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(CLUSTER_ID_ANNOTATION))
                    .and_then(|v| v.as_str());
                let live_id = stamped_cluster_id(live.metadata.annotations.as_ref());
                if let (Some(desired), Some(live_id)) = (desired, live_id.as_deref())
                    && desired != live_id
                {
                    return Err(ClusterError {
                        action: "refuse to overwrite",
                        object: namespace.id(),
                        source: kube::Error::Api(
                            kube::core::Status::failure(
                                &format!("the namespace is stamped {CLUSTER_ID_ANNOTATION}={live_id}, another cluster identity than this control plane's ({desired})"),
                                "Conflict",
                            )
                            .with_code(409)
                            .boxed(),
                        ),
                    });
                }
                let live_revision = stamped_revision(live.metadata.annotations.as_ref());
                Ok(if live_revision > revision {
                    Live::Newer(live_revision)
                } else {
                    Live::Current
                })
            }
            Ok(None) => Ok(Live::Absent),
            Err(source) => Err(ClusterError {
                action: "get",
                object: namespace.id(),
                source,
            }),
        }
    }

    /// Reads every object back and compares it with its apply configuration.
    pub async fn verify(&self, bundle: &Bundle) -> Result<Vec<Mismatch>, ClusterError> {
        Ok(self.verify_versions(bundle).await?.0)
    }

    /// [`verify`](Self::verify), also returning the resourceVersion of every
    /// object read, so that later watch events can be told apart from this
    /// state (the agent's own writes) and from someone else's change.
    pub async fn verify_versions(
        &self,
        bundle: &Bundle,
    ) -> Result<(Vec<Mismatch>, Versions), ClusterError> {
        let mut mismatches = Vec::new();
        let mut versions = Versions::new();
        for object in bundle.objects() {
            let live = self
                .api(object.kind, object.namespace.as_deref())
                .get_opt(&object.name)
                .await
                .map_err(ClusterError::of("read back", object.id()))?;
            let description = match live {
                None => Some("deleted".to_string()),
                Some(live) => {
                    if let Some(version) = &live.metadata.resource_version {
                        versions.insert(object.id(), version.clone());
                    }
                    if live.metadata.deletion_timestamp.is_some() {
                        Some("being deleted".to_string())
                    } else {
                        let live = serde_json::to_value(&live).unwrap_or_default();
                        first_difference(&object.body, &live)
                    }
                }
            };
            if let Some(description) = description {
                mismatches.push(Mismatch {
                    object: object.id(),
                    description,
                });
            }
        }
        Ok((mismatches, versions))
    }

    /// Every managed object of every kind, read with one label-selected LIST
    /// per kind: the periodic verification of a thousand namespaces costs six
    /// requests, not eleven thousand.
    pub async fn managed_objects(&self) -> Result<LiveObjects, ClusterError> {
        let mut live = LiveObjects::default();
        for kind in Kind::ALL {
            let list = self
                .api(kind, None)
                .list(&ListParams::default().labels(MANAGED_SELECTOR))
                .await
                .map_err(ClusterError::of(
                    "list",
                    format!("managed {}s", kind.name()),
                ))?;
            for mut object in list.items {
                // Items of a LIST carry no kind/apiVersion on a real API
                // server; put them back so they compare like a GET.
                let ar = resource(kind);
                object.types = Some(kube::core::TypeMeta {
                    api_version: ar.api_version,
                    kind: ar.kind,
                });
                let key = (
                    kind,
                    object.namespace().unwrap_or_default(),
                    object.name_any(),
                );
                live.objects
                    .insert(key, serde_json::to_value(&object).unwrap_or_default());
            }
        }
        Ok(live)
    }

    /// Namespaces on the cluster that carry the managed-by label.
    pub async fn managed_namespaces(&self) -> Result<BTreeSet<String>, ClusterError> {
        Ok(self.managed_namespace_stamps().await?.into_keys().collect())
    }

    /// Namespaces on the cluster that carry the managed-by label, with the
    /// cluster identity each is stamped with.
    pub async fn managed_namespace_stamps(&self) -> Result<Stamps, ClusterError> {
        let list = self
            .api(Kind::Namespace, None)
            .list_metadata(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(ClusterError::of("list", "managed namespaces"))?;
        Ok(list
            .items
            .iter()
            .map(|ns| {
                (
                    ns.name_any(),
                    stamped_cluster_id(ns.metadata.annotations.as_ref()),
                )
            })
            .collect())
    }

    /// Deletes a managed namespace (and with it everything in it) and says
    /// whether it is gone yet. Safe to call again while it terminates.
    pub async fn remove_namespace(&self, name: &str) -> Result<Removal, ClusterError> {
        self.remove_namespace_fenced(name, i64::MAX, None, || true)
            .await
    }

    /// As `remove_namespace`, for a caller whose desired state is at
    /// `known_revision`, who may delete only namespaces of `owner` (any, for
    /// `None`), and who may write only while `may_write` says so.
    pub async fn remove_namespace_fenced(
        &self,
        name: &str,
        known_revision: i64,
        owner: Option<Owner<'_>>,
        may_write: impl Fn() -> bool,
    ) -> Result<Removal, ClusterError> {
        let api = self.api(Kind::Namespace, None);
        let err = |action, source| ClusterError {
            action,
            object: format!("Namespace/{name}"),
            source,
        };
        let Some(live) = api.get_opt(name).await.map_err(|e| err("get", e))? else {
            return Ok(Removal::Gone);
        };
        if !is_managed(live.labels()) {
            return Ok(Removal::NotManaged);
        }
        let live_revision = stamped_revision(live.metadata.annotations.as_ref());
        if live_revision > known_revision {
            return Ok(Removal::Newer(live_revision));
        }
        let stamp = stamped_cluster_id(live.metadata.annotations.as_ref());
        if let Some(other) = owner.and_then(|o| o.foreign(stamp.as_deref())) {
            return Ok(Removal::OtherCluster(other));
        }
        if live.metadata.deletion_timestamp.is_none() {
            if !may_write() {
                return Ok(Removal::Fenced);
            }
            // Precondition on the uid: never delete a namespace recreated by
            // someone else between the read and the delete.
            let params = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(Removal::Gone),
                Err(e) => return Err(err("delete", e)),
            }
        }
        match api.get_opt(name).await.map_err(|e| err("get", e))? {
            None => Ok(Removal::Gone),
            Some(_) => Ok(Removal::Terminating),
        }
    }
}
