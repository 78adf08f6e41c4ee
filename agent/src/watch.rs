//! Watches on every kind the agent manages (label-selected), turning "someone
//! changed or deleted a managed object" into a prompt check of its namespace.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bundle::{MANAGED_SELECTOR, object_id};
use crate::kubernetes::Versions;

/// Objects remembered per namespace between two looks; past this the
/// namespace is simply checked.
const MAX_SIGHTED_OBJECTS: usize = 64;

/// What the watches saw, shared with the watch tasks so that a burst of
/// events never blocks the reconciler's input queue (and with it the
/// session's keepalives).
pub type Touched = Arc<Watched>;

#[derive(Debug, Default)]
pub struct Watched {
    /// Namespaces whose managed objects a watch saw change.
    sightings: Mutex<BTreeMap<String, Sighting>>,
    /// A watch had to list again (its resourceVersion was compacted away:
    /// 410 Gone). What changed in between came back only as the new listing,
    /// and deletions not at all, so everything needs one full check.
    relisted: AtomicBool,
}

impl Watched {
    pub fn sightings(&self) -> MutexGuard<'_, BTreeMap<String, Sighting>> {
        // A panicking watch task leaves plain data behind; keep using it.
        self.sightings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a watch re-listed since the last call.
    pub fn take_relisted(&self) -> bool {
        self.relisted.swap(false, Ordering::SeqCst)
    }

    /// Asks for a full check (again).
    pub fn mark_relisted(&self) {
        self.relisted.store(true, Ordering::SeqCst);
    }
}

/// What the watches saw of one namespace since the reconciler last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// When the latest event came.
    pub at: Instant,
    /// `Kind/name` → the resourceVersion of its latest event; `None` for a
    /// deletion.
    versions: BTreeMap<String, Option<String>>,
    /// More objects changed than are remembered.
    overflowed: bool,
}

impl Sighting {
    pub fn new(at: Instant) -> Self {
        Sighting {
            at,
            versions: BTreeMap::new(),
            overflowed: false,
        }
    }

    /// Records an event of `object` (`Kind/name`) at `version`.
    pub fn saw(&mut self, object: String, version: Option<String>, at: Instant) {
        self.at = at;
        if self.versions.len() >= MAX_SIGHTED_OBJECTS && !self.versions.contains_key(&object) {
            self.overflowed = true;
        } else {
            self.versions.insert(object, version);
        }
    }

    /// Whether the events may show anything other than the state last read
    /// back and found right (`verified`). Every write, the agent's own
    /// included, comes back as an event; those whose resourceVersion is the
    /// one verified need no second read. A deletion, an unknown object or
    /// another version does.
    pub fn needs_check(&self, verified: Option<&Versions>) -> bool {
        let Some(verified) = verified else {
            return true;
        };
        self.overflowed
            || self
                .versions
                .iter()
                .any(|(object, seen)| seen.as_ref() != verified.get(object))
    }
}

/// Spawns one watch per managed kind; they end with `shutdown`.
pub fn spawn_all(client: &Client, to: &Touched, shutdown: &CancellationToken) {
    spawn::<Namespace>(client, to, shutdown, true);
    spawn::<ResourceQuota>(client, to, shutdown, false);
    spawn::<LimitRange>(client, to, shutdown, false);
    spawn::<NetworkPolicy>(client, to, shutdown, false);
    spawn::<ServiceAccount>(client, to, shutdown, false);
    spawn::<RoleBinding>(client, to, shutdown, false);
}

fn spawn<K>(client: &Client, to: &Touched, shutdown: &CancellationToken, cluster_scoped: bool)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let to = to.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        // default_backoff: a failing watch (API down, 410 Gone) re-lists with
        // growing delays instead of hammering the server.
        let mut events = watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR))
            .default_backoff()
            .boxed();
        let mut listed = false;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            let object = match &event {
                None => return,
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))) => o,
                // The first listing: the reconciler checks everything at start.
                // Any later one follows an interrupted watch whose place in the
                // history was lost (410 Gone): ask for a full check.
                Some(Ok(watcher::Event::InitDone)) => {
                    if listed {
                        tracing::info!(
                            kind = K::kind(&()).as_ref(),
                            "watch re-listed after losing its place; checking every namespace"
                        );
                        to.mark_relisted();
                    }
                    listed = true;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(kind = K::kind(&()).as_ref(), error = %e, "watch interrupted; resuming");
                    continue;
                }
            };
            let namespace = if cluster_scoped {
                Some(object.name_any())
            } else {
                object.namespace()
            };
            let version = match &event {
                Some(Ok(watcher::Event::Apply(_))) => object.resource_version(),
                _ => None,
            };
            if let Some(ns) = namespace {
                let now = Instant::now();
                to.sightings()
                    .entry(ns)
                    .or_insert_with(|| Sighting::new(now))
                    .saw(object_id(&K::kind(&()), &object.name_any()), version, now);
            }
        }
    }
    .instrument(tracing::info_span!("watch", kind = K::kind(&()).as_ref())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(pairs: &[(&str, &str)]) -> Versions {
        pairs
            .iter()
            .map(|(o, v)| (o.to_string(), v.to_string()))
            .collect()
    }

    fn sighting(events: &[(&str, Option<&str>)]) -> Sighting {
        let now = Instant::now();
        let mut s = Sighting::new(now);
        for (object, version) in events {
            s.saw(object.to_string(), version.map(str::to_string), now);
        }
        s
    }

    #[test]
    fn the_agents_own_writes_at_the_verified_versions_need_no_second_read() {
        let v = verified(&[("Namespace/a", "10"), ("ResourceQuota/quota", "11")]);
        // Several events of one object: the latest counts.
        let s = sighting(&[
            ("Namespace/a", Some("9")),
            ("Namespace/a", Some("10")),
            ("ResourceQuota/quota", Some("11")),
        ]);
        assert!(!s.needs_check(Some(&v)));
    }

    #[test]
    fn another_version_a_deletion_or_an_unknown_object_needs_a_check() {
        let v = verified(&[("Namespace/a", "10"), ("NetworkPolicy/default-deny", "12")]);
        assert!(sighting(&[("NetworkPolicy/default-deny", Some("13"))]).needs_check(Some(&v)));
        assert!(sighting(&[("NetworkPolicy/default-deny", None)]).needs_check(Some(&v)));
        assert!(sighting(&[("RoleBinding/extra", Some("14"))]).needs_check(Some(&v)));
        // A later event of the verified object at another version wins.
        assert!(
            sighting(&[
                ("NetworkPolicy/default-deny", Some("12")),
                ("NetworkPolicy/default-deny", Some("15")),
            ])
            .needs_check(Some(&v))
        );
        // Nothing verified (never applied by this process, or failed).
        assert!(sighting(&[("Namespace/a", Some("10"))]).needs_check(None));
    }

    #[test]
    fn too_many_objects_in_one_namespace_means_a_check() {
        let v: Versions = (0..MAX_SIGHTED_OBJECTS + 1)
            .map(|i| (format!("RoleBinding/b{i}"), "1".to_string()))
            .collect();
        let now = Instant::now();
        let mut s = Sighting::new(now);
        for i in 0..MAX_SIGHTED_OBJECTS {
            s.saw(format!("RoleBinding/b{i}"), Some("1".into()), now);
        }
        assert!(!s.needs_check(Some(&v)));
        // One more object than remembered: it could be anything.
        s.saw(
            format!("RoleBinding/b{MAX_SIGHTED_OBJECTS}"),
            Some("1".into()),
            now,
        );
        assert!(s.needs_check(Some(&v)));
    }
}
