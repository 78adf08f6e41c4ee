//! Watches on every kind the agent manages (label-selected), turning "someone
//! changed or deleted a managed object" into a prompt check of its namespace.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::bundle::MANAGED_SELECTOR;
use crate::reconciler::Touched;

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
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            let object = match event {
                None => return,
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))) => o,
                // The initial listing: the periodic verification covers it.
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
            if let Some(ns) = namespace
                && let Ok(mut touched) = to.lock()
            {
                touched.insert(ns, tokio::time::Instant::now());
            }
        }
    });
}
