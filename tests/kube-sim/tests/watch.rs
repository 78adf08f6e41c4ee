//! Watches and kube-runtime's watcher on kube-sim and the real apiserver (fault-driven: kube-sim).

mod common;

use std::time::Duration;

use common::{Cluster, on_both, within};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

on_both!(
    a_real_apiserver_would_stream_added_modified_deleted_from_a_version,
    // A version gets too old on kube-sim past its `watch_history`; on a real server past
    // etcd's compaction, which a watch sees only without the watch cache (whose window
    // grows while its events are younger than 75 s, so it expires nothing on demand): a
    // dedicated server compacting every second, without the cache.
    a_real_apiserver_would_answer_gone_for_a_too_old_version with kube_sim::SimOptions {
        watch_history: 3,
        ..Default::default()
    }; real mtp_kube_harness::Options {
        compaction_interval: Duration::from_secs(1),
        watch_cache: false,
        install_bundle: false,
    },
    a_real_apiserver_would_send_bookmarks_when_asked with kube_sim::SimOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    },
    a_real_apiserver_would_show_namespace_deletion_step_by_step,
    a_real_apiserver_would_send_deleted_when_an_object_leaves_the_selector,
    a_real_apiserver_would_serve_kube_runtime_watcher_and_reflector,
    a_real_apiserver_would_serve_streaming_lists_to_the_watcher,
);

fn ns(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn name_of(ev: &WatchEvent<Namespace>) -> (String, String) {
    match ev {
        WatchEvent::Added(n) => ("ADDED".into(), n.metadata.name.clone().unwrap()),
        WatchEvent::Modified(n) => ("MODIFIED".into(), n.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(n) => ("DELETED".into(), n.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK".into(), String::new()),
        WatchEvent::Error(e) => ("ERROR".into(), e.code.to_string()),
    }
}

/// The next event of `stream` about an object `wanted` accepts, skipping BOOKMARKs (kube-rs
/// asks for them by default; they may come at any time) and events about other objects:
/// none on a fresh kube-sim, everyone else's on the shared real server.
async fn next_event<K, S>(stream: &mut S, wanted: impl Fn(&K) -> bool) -> WatchEvent<K>
where
    K: kube::Resource + Clone + std::fmt::Debug,
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    loop {
        let ev = stream
            .try_next()
            .await
            .unwrap()
            .expect("the watch ended early");
        match &ev {
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)
                if !wanted(o) => {}
            _ => return ev,
        }
    }
}

async fn a_real_apiserver_would_stream_added_modified_deleted_from_a_version(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let (w1, w2) = (c.name("w1"), c.name("w2"));
    let ours = |n: &Namespace| c.is_ours(&n.name_any());
    within(async {
        let created = api
            .create(&PostParams::default(), &ns(&w1, json!({})))
            .await
            .unwrap();
        let rv = created.metadata.resource_version.unwrap();
        api.patch(
            &w1,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
        // Resume from the create's version: we see the change made after it, then live ones.
        let mut stream = api
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        assert_eq!(
            name_of(&next_event(&mut stream, ours).await),
            ("MODIFIED".into(), w1.clone())
        );
        api.create(&PostParams::default(), &ns(&w2, json!({})))
            .await
            .unwrap();
        assert_eq!(
            name_of(&next_event(&mut stream, ours).await),
            ("ADDED".into(), w2.clone())
        );
    })
    .await;
}

async fn a_real_apiserver_would_answer_gone_for_a_too_old_version(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        let mut versions = Vec::new();
        for i in 0..6 {
            let created = api
                .create(
                    &PostParams::default(),
                    &ns(&c.name(&format!("g{i}")), json!({})),
                )
                .await
                .unwrap();
            versions.push(created.metadata.resource_version.unwrap());
        }
        // The first create's version: out of kube-sim's history at once, compacted away on
        // the real server within about two compaction intervals. Until then the real server
        // replays what followed it.
        let wp = WatchParams::default().timeout(1);
        loop {
            let mut stream = api.watch(&wp, &versions[0]).await.unwrap().boxed();
            match stream.try_next().await.unwrap() {
                Some(WatchEvent::Error(e)) => {
                    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
                    break;
                }
                Some(WatchEvent::Added(n)) if c.sim().is_none() && c.is_ours(&n.name_any()) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => panic!("expected 410, got {other:?}"),
            }
        }
    })
    .await;
}

async fn a_real_apiserver_would_send_bookmarks_when_asked(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        // From the current version: an old one may have left a long-running server's cache.
        let rv = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        // The real server sends a bookmark about every minute and 2 s before the watch's
        // timeout; kube-sim every `bookmark_interval`. Either way one comes before the end.
        let wp = WatchParams {
            bookmarks: true,
            timeout: Some(5),
            ..WatchParams::default()
        };
        let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
        loop {
            match stream.try_next().await.unwrap() {
                Some(WatchEvent::Bookmark(b)) => {
                    assert!(!b.metadata.resource_version.is_empty());
                    break;
                }
                Some(_) => {}
                None => panic!("the watch ended without a bookmark"),
            }
        }
    })
    .await;
}

async fn a_real_apiserver_would_show_namespace_deletion_step_by_step(c: Cluster) {
    let client = c.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let doomed = c.name("doomed");
    let is_doomed = |n: &Namespace| n.name_any() == doomed;
    // The bot only: on the real server the serviceaccount controller adds `default` to
    // every namespace (kube-sim runs no such controller) and other tests add their own.
    let is_bot = |s: &ServiceAccount| {
        s.namespace().as_deref() == Some(doomed.as_str()) && s.name_any() == "bot"
    };
    within(async {
        let created = nss
            .create(&PostParams::default(), &ns(&doomed, json!({})))
            .await
            .unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &doomed);
        sa.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap(),
        )
        .await
        .unwrap();
        let rv = created.metadata.resource_version.unwrap();
        let mut ns_events = nss
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        let all_sa: Api<ServiceAccount> = Api::all(client.clone());
        let mut sa_events = all_sa
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        nss.delete(&doomed, &DeleteParams::default()).await.unwrap();
        match next_event(&mut ns_events, is_doomed).await {
            WatchEvent::Modified(n) => {
                assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"))
            }
            other => panic!("expected MODIFIED, got {other:?}"),
        }
        assert!(matches!(
            next_event(&mut sa_events, is_bot).await,
            WatchEvent::Added(_)
        ));
        assert!(matches!(
            next_event(&mut sa_events, is_bot).await,
            WatchEvent::Deleted(_)
        ));
        // The namespace controller reports the namespace emptied (every condition False),
        // then finalizes it, which removes it.
        match next_event(&mut ns_events, is_doomed).await {
            WatchEvent::Modified(n) => {
                let status = n.status.unwrap();
                assert_eq!(status.phase.as_deref(), Some("Terminating"));
                let conditions = status.conditions.unwrap_or_default();
                let state = |kind: &str| {
                    conditions
                        .iter()
                        .find(|c| c.type_ == kind)
                        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
                };
                assert_eq!(
                    state("NamespaceContentRemaining"),
                    Some(("False".into(), "ContentRemoved".into())),
                    "{conditions:?}"
                );
                assert_eq!(
                    state("NamespaceFinalizersRemaining"),
                    Some(("False".into(), "ContentHasNoFinalizers".into())),
                    "{conditions:?}"
                );
                assert_eq!(conditions.len(), 5, "{conditions:?}");
                assert!(
                    conditions.iter().all(|c| c.status == "False"),
                    "{conditions:?}"
                );
            }
            other => panic!("expected MODIFIED (conditions), got {other:?}"),
        }
        match next_event(&mut ns_events, is_doomed).await {
            WatchEvent::Deleted(n) => {
                assert_eq!(n.name_any(), doomed);
                // The last stored state: the finalizer is still listed.
                assert_eq!(
                    n.spec.unwrap().finalizers,
                    Some(vec!["kubernetes".to_string()])
                );
            }
            other => panic!("expected DELETED, got {other:?}"),
        }
    })
    .await;
}

async fn a_real_apiserver_would_send_deleted_when_an_object_leaves_the_selector(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    let sel = c.name("sel");
    within(async {
        api.create(&PostParams::default(), &ns(&sel, c.run_labels()))
            .await
            .unwrap();
        let wp = WatchParams::default().labels(&c.run_selector());
        let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
        let all = |_: &Namespace| true;
        assert_eq!(
            name_of(&next_event(&mut stream, all).await),
            ("ADDED".into(), sel.clone())
        );
        let p = json!({"metadata": {"labels": {common::RUN_LABEL: null}}});
        api.patch(&sel, &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
        assert_eq!(
            name_of(&next_event(&mut stream, all).await),
            ("DELETED".into(), sel.clone())
        );
    })
    .await;
}

async fn a_real_apiserver_would_serve_kube_runtime_watcher_and_reflector(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        api.create(&PostParams::default(), &ns(&c.name("r1"), c.run_labels()))
            .await
            .unwrap();
        api.create(&PostParams::default(), &ns(&c.name("other"), json!({})))
            .await
            .unwrap();
        let (reader, writer) = reflector::store::<Namespace>();
        let cfg = watcher::Config::default().labels(&c.run_selector());
        let stream = reflector(writer, watcher(api.clone(), cfg))
            .applied_objects()
            .boxed();
        let task = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(ev) = stream.next().await {
                ev.expect("watcher stays healthy");
            }
        });
        reader.wait_until_ready().await.unwrap();
        assert_eq!(reader.state().len(), 1);
        api.create(&PostParams::default(), &ns(&c.name("r2"), c.run_labels()))
            .await
            .unwrap();
        while reader.state().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Gone from the store only once the namespace controller has emptied it.
        api.delete(&c.name("r1"), &DeleteParams::default())
            .await
            .unwrap();
        while reader.state().len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    })
    .await;
}

async fn a_real_apiserver_would_serve_streaming_lists_to_the_watcher(c: Cluster) {
    let api: Api<Namespace> = Api::all(c.client());
    within(async {
        api.create(&PostParams::default(), &ns(&c.name("s1"), c.run_labels()))
            .await
            .unwrap();
        let (reader, writer) = reflector::store::<Namespace>();
        let cfg = watcher::Config::default()
            .streaming_lists()
            .labels(&c.run_selector());
        let stream = reflector(writer, watcher(api.clone(), cfg)).boxed();
        let task = tokio::spawn(async move {
            let mut stream = stream;
            while stream.next().await.is_some() {}
        });
        reader.wait_until_ready().await.unwrap();
        assert_eq!(reader.state().len(), 1);
        task.abort();
    })
    .await;
}

/// Tests that need kube-sim's knobs. What they pin is Kubernetes semantics, but the real
/// server cannot be made to show it on demand within a test.
mod kube_sim_only {
    use super::*;
    use common::sim;

    /// Watches dropped by the server (here by fault injection, which the real server has
    /// no switch for) are resumed by kube-runtime's watcher without losing events.
    #[tokio::test]
    async fn a_real_apiserver_would_let_watchers_recover_after_watches_are_dropped() {
        let sim = sim().await;
        let api: Api<Namespace> = Api::all(sim.client());
        within(async {
            let (reader, writer) = reflector::store::<Namespace>();
            let stream =
                reflector(writer, watcher(api.clone(), watcher::Config::default())).boxed();
            let task = tokio::spawn(async move {
                let mut stream = stream;
                while stream.next().await.is_some() {}
            });
            reader.wait_until_ready().await.unwrap();
            sim.faults().drop_watches();
            api.create(&PostParams::default(), &ns("after-drop", json!({})))
                .await
                .unwrap();
            while reader.state().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            task.abort();
        })
        .await;
    }
}
