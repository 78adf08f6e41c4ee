//! Watch semantics with the real kube-rs client and kube_runtime::watcher/reflector.

mod common;

use std::time::Duration;

use common::{sim, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

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

#[tokio::test]
async fn a_real_apiserver_would_stream_added_modified_deleted_from_a_version() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let created = api
            .create(&PostParams::default(), &ns("w1", json!({})))
            .await
            .unwrap();
        let rv = created.metadata.resource_version.unwrap();
        api.patch(
            "w1",
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
            name_of(&stream.try_next().await.unwrap().unwrap()),
            ("MODIFIED".into(), "w1".into())
        );
        api.create(&PostParams::default(), &ns("w2", json!({})))
            .await
            .unwrap();
        assert_eq!(
            name_of(&stream.try_next().await.unwrap().unwrap()),
            ("ADDED".into(), "w2".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_answer_gone_for_a_too_old_version() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions {
        watch_history: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        for i in 0..6 {
            api.create(&PostParams::default(), &ns(&format!("g{i}"), json!({})))
                .await
                .unwrap();
        }
        let mut stream = api
            .watch(&WatchParams::default(), "2")
            .await
            .unwrap()
            .boxed();
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Error(e) => assert_eq!(e.code, 410),
            other => panic!("expected 410, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_send_bookmarks_when_asked() {
    let sim = kube_sim::SimCluster::start(kube_sim::SimOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let mut stream = api
            .watch(
                &WatchParams {
                    bookmarks: true,
                    ..WatchParams::default()
                },
                "1",
            )
            .await
            .unwrap()
            .boxed();
        loop {
            if let WatchEvent::Bookmark(b) = stream.try_next().await.unwrap().unwrap() {
                assert!(!b.metadata.resource_version.is_empty());
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_show_namespace_deletion_step_by_step() {
    let sim = sim().await;
    let client = sim.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    within(async {
        let created = nss
            .create(&PostParams::default(), &ns("doomed", json!({})))
            .await
            .unwrap();
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "doomed");
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
        nss.delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        match ns_events.try_next().await.unwrap().unwrap() {
            WatchEvent::Modified(n) => {
                assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"))
            }
            other => panic!("expected MODIFIED, got {other:?}"),
        }
        assert!(matches!(
            sa_events.try_next().await.unwrap().unwrap(),
            WatchEvent::Added(_)
        ));
        assert!(matches!(
            sa_events.try_next().await.unwrap().unwrap(),
            WatchEvent::Deleted(_)
        ));
        assert_eq!(
            name_of(&ns_events.try_next().await.unwrap().unwrap()),
            ("DELETED".into(), "doomed".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_send_deleted_when_an_object_leaves_the_selector() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.create(
            &PostParams::default(),
            &ns("sel", json!({"app.kubernetes.io/managed-by": "mtp"})),
        )
        .await
        .unwrap();
        let wp = WatchParams::default().labels("app.kubernetes.io/managed-by=mtp");
        let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
        assert_eq!(
            name_of(&stream.try_next().await.unwrap().unwrap()),
            ("ADDED".into(), "sel".into())
        );
        let p = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
        api.patch("sel", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
        assert_eq!(
            name_of(&stream.try_next().await.unwrap().unwrap()),
            ("DELETED".into(), "sel".into())
        );
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_serve_kube_runtime_watcher_and_reflector() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.create(
            &PostParams::default(),
            &ns("r1", json!({"app.kubernetes.io/managed-by": "mtp"})),
        )
        .await
        .unwrap();
        api.create(&PostParams::default(), &ns("other", json!({})))
            .await
            .unwrap();
        let (reader, writer) = reflector::store::<Namespace>();
        let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=mtp");
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
        api.create(
            &PostParams::default(),
            &ns("r2", json!({"app.kubernetes.io/managed-by": "mtp"})),
        )
        .await
        .unwrap();
        while reader.state().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api.delete("r1", &DeleteParams::default()).await.unwrap();
        while reader.state().len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn a_real_apiserver_would_let_watchers_recover_after_watches_are_dropped() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        let (reader, writer) = reflector::store::<Namespace>();
        let stream = reflector(writer, watcher(api.clone(), watcher::Config::default())).boxed();
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

#[tokio::test]
async fn a_real_apiserver_would_serve_streaming_lists_to_the_watcher() {
    let sim = sim().await;
    let api: Api<Namespace> = Api::all(sim.client());
    within(async {
        api.create(&PostParams::default(), &ns("s1", json!({})))
            .await
            .unwrap();
        let (reader, writer) = reflector::store::<Namespace>();
        let stream = reflector(
            writer,
            watcher(api.clone(), watcher::Config::default().streaming_lists()),
        )
        .boxed();
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
