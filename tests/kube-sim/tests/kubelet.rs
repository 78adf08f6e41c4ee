//! The simulated kubelet on a manual clock: exact Summary counters, pod life driven by
//! the test, the kubelet endpoint's authorization, the `spec.nodeName` field selector
//! and the demo workload (kube-sim only: a real apiserver has no kubelet).

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{api_err, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube_sim::{ContainerUsage, SimClock, SimCluster, SimOptions, UsageCurve};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// A `metav1.Time` as it is on the wire.
fn wire(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    serde_json::to_value(t)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A cluster on a manual clock standing at [`t0`].
async fn manual_sim(bearer_token: Option<&str>) -> SimCluster {
    SimCluster::start(SimOptions {
        clock: SimClock::manual(t0()),
        bearer_token: bearer_token.map(String::from),
        ..Default::default()
    })
    .await
    .expect("sim starts")
}

fn cpu(nano_cores: u64) -> ContainerUsage {
    ContainerUsage {
        cpu_nano_cores: nano_cores,
        ..Default::default()
    }
}

async fn create_ns_and_node(sim: &SimCluster) {
    let c = sim.client();
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
        )
        .await
        .unwrap();
    for node in ["node-1", "node-2"] {
        Api::<Node>::all(c.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": node}})).unwrap(),
            )
            .await
            .unwrap();
    }
}

/// Creates pod `name` in `t` with the given containers, on `node` (unscheduled if `None`).
async fn create_pod(sim: &SimCluster, name: &str, node: Option<&str>, containers: &[&str]) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "x", "resources": {"requests": {"cpu": "250m"}}}))
        .collect();
    let mut spec = json!({ "containers": containers });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    Api::<Pod>::namespaced(sim.client(), "t")
        .create(&PostParams::default(), &p)
        .await
        .unwrap()
}

/// `GET {url}` over plain HTTP/1.1, with an optional bearer token: status and body.
async fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("plain http");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The node's Summary from its kubelet endpoint (must answer 200).
async fn summary(sim: &SimCluster, node: &str) -> Value {
    let (code, body) = http_get(&format!("{}/stats/summary", sim.kubelet_url(node)), None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn pod_entry<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in summary {s}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn a_pod_bound_to_a_node_runs_from_its_creation_by_the_clock() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        sim.clock().advance(secs(5));
        let p = create_pod(&sim, "web", Some("node-1"), &["main"]).await;
        let st = p.status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let at = "2026-01-01T00:00:05Z";
        assert_eq!(wire(&st.start_time.unwrap()), at);
        assert_eq!(wire(&p.metadata.creation_timestamp.unwrap()), at);
        let c = &st.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 0);
        let started = c
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .clone();
        assert_eq!(wire(&started.unwrap()), at);
        let pending = create_pod(&sim, "pending", None, &["main"]).await;
        assert!(
            pending.status.and_then(|s| s.phase).is_none(),
            "no node, no kubelet"
        );
    })
    .await;
}

#[tokio::test]
async fn the_cpu_counter_is_the_exact_integral_of_a_constant_usage() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "web", Some("node-1"), &["main"]).await;
        sim.set_container_curve("t", "web", "main", UsageCurve::constant(cpu(250_000_000)));
        sim.clock().advance(secs(60));
        let s = summary(&sim, "node-1").await;
        let p = pod_entry(&s, "web");
        let c = container(p, "main");
        assert_eq!(c["cpu"]["usageNanoCores"], 250_000_000u64);
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 15_000_000_000u64);
        assert_eq!(c["startTime"], "2026-01-01T00:00:00Z");
        assert_eq!(c["cpu"]["time"], "2026-01-01T00:01:00Z");
        assert_eq!(p["cpu"]["usageCoreNanoSeconds"], 15_000_000_000u64);
        assert_eq!(s["node"]["cpu"]["usageCoreNanoSeconds"], 15_000_000_000u64);
        assert_eq!(p["podRef"]["namespace"], "t");
        assert!(p["podRef"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    })
    .await;
}

#[tokio::test]
async fn a_curve_step_in_the_middle_is_integrated_piece_by_piece() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "web", Some("node-1"), &["main"]).await;
        let low = ContainerUsage {
            cpu_nano_cores: 100_000_000,
            memory_working_set_bytes: 64 << 20,
            network_receive_bytes_per_second: 1_000,
            ..Default::default()
        };
        let high = ContainerUsage {
            cpu_nano_cores: 400_000_000,
            memory_working_set_bytes: 256 << 20,
            network_receive_bytes_per_second: 3_000,
            ..Default::default()
        };
        sim.set_container_curve(
            "t",
            "web",
            "main",
            UsageCurve::new(vec![(secs(30), high), (Duration::ZERO, low)]),
        );
        sim.clock().advance(secs(20));
        let s = summary(&sim, "node-1").await;
        let c = container(pod_entry(&s, "web"), "main");
        assert_eq!(c["cpu"]["usageNanoCores"], 100_000_000u64);
        assert_eq!(c["memory"]["workingSetBytes"], 64u64 << 20);
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);

        sim.clock().advance(secs(70));
        let s = summary(&sim, "node-1").await;
        let p = pod_entry(&s, "web");
        let c = container(p, "main");
        // 100m for 30 s, then 400m for 60 s.
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 27_000_000_000u64);
        assert_eq!(c["cpu"]["usageNanoCores"], 400_000_000u64);
        assert_eq!(c["memory"]["workingSetBytes"], 256u64 << 20);
        assert_eq!(p["network"]["rxBytes"], 30_000u64 + 180_000);
        // A fraction of a second is integrated exactly, and floored once.
        sim.clock().advance(Duration::from_millis(1));
        let s = summary(&sim, "node-1").await;
        let c = container(pod_entry(&s, "web"), "main");
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 27_000_400_000u64);
    })
    .await;
}

#[tokio::test]
async fn a_container_restart_resets_its_counter_and_start_time() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "web", Some("node-1"), &["a", "b"]).await;
        for c in ["a", "b"] {
            sim.set_container_curve("t", "web", c, UsageCurve::constant(cpu(250_000_000)));
        }
        sim.clock().advance(secs(60));
        sim.restart_container("t", "web", "a").unwrap();
        let s = summary(&sim, "node-1").await;
        let p = pod_entry(&s, "web");
        assert_eq!(container(p, "a")["cpu"]["usageCoreNanoSeconds"], 0);
        assert_eq!(container(p, "a")["startTime"], "2026-01-01T00:01:00Z");
        assert_eq!(
            container(p, "b")["cpu"]["usageCoreNanoSeconds"],
            15_000_000_000u64
        );
        assert_eq!(container(p, "b")["startTime"], "2026-01-01T00:00:00Z");

        sim.clock().advance(secs(10));
        let s = summary(&sim, "node-1").await;
        let p = pod_entry(&s, "web");
        assert_eq!(
            container(p, "a")["cpu"]["usageCoreNanoSeconds"],
            2_500_000_000u64
        );
        assert_eq!(
            container(p, "b")["cpu"]["usageCoreNanoSeconds"],
            17_500_000_000u64
        );
        assert_eq!(
            p["startTime"], "2026-01-01T00:00:00Z",
            "the pod did not restart"
        );

        let pod = Api::<Pod>::namespaced(sim.client(), "t")
            .get("web")
            .await
            .unwrap();
        let st = pod.status.unwrap().container_statuses.unwrap();
        let a = st.iter().find(|c| c.name == "a").unwrap();
        assert_eq!(a.restart_count, 1);
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            wire(last.started_at.as_ref().unwrap()),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            wire(last.finished_at.as_ref().unwrap()),
            "2026-01-01T00:01:00Z"
        );
        assert_eq!(st.iter().find(|c| c.name == "b").unwrap().restart_count, 0);

        assert_eq!(
            sim.restart_container("t", "web", "nope").unwrap_err().code,
            400
        );
        assert_eq!(
            sim.restart_container("t", "ghost", "a").unwrap_err().code,
            404
        );
    })
    .await;
}

#[tokio::test]
async fn a_finished_pod_leaves_the_summary_but_stays_in_the_api() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "job", Some("node-1"), &["main"]).await;
        create_pod(&sim, "crash", Some("node-1"), &["main"]).await;
        create_pod(&sim, "web", Some("node-1"), &["main"]).await;
        sim.clock().advance(secs(30));
        sim.finish_pod("t", "job", true).unwrap();
        sim.finish_pod("t", "crash", false).unwrap();
        let s = summary(&sim, "node-1").await;
        let names: Vec<&str> = s["pods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["podRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web"]);

        let pods: Api<Pod> = Api::namespaced(sim.client(), "t");
        let job = pods.get("job").await.unwrap().status.unwrap();
        assert_eq!(job.phase.as_deref(), Some("Succeeded"));
        let term = job.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(term.exit_code, 0);
        assert_eq!(wire(&term.started_at.unwrap()), "2026-01-01T00:00:00Z");
        assert_eq!(wire(&term.finished_at.unwrap()), "2026-01-01T00:00:30Z");
        let crash = pods.get("crash").await.unwrap().status.unwrap();
        assert_eq!(crash.phase.as_deref(), Some("Failed"));
        assert_eq!(
            crash.container_statuses.unwrap()[0]
                .state
                .clone()
                .unwrap()
                .terminated
                .unwrap()
                .exit_code,
            1
        );
        assert_eq!(sim.finish_pod("t", "job", true).unwrap_err().code, 400);
        pods.delete("job", &DeleteParams::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn pvc_volumes_report_their_usage_with_a_pvc_ref() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "main", "image": "x"}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            }
        }))
        .unwrap();
        Api::<Pod>::namespaced(sim.client(), "t")
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
        sim.set_volume_usage("t", "db-data", 3 << 30, 10 << 30);
        let s = summary(&sim, "node-1").await;
        let vols = pod_entry(&s, "db")["volume"].as_array().unwrap().clone();
        assert_eq!(vols.len(), 1, "only the PVC has usage set: {vols:?}");
        assert_eq!(vols[0]["name"], "data");
        assert_eq!(vols[0]["usedBytes"], 3u64 << 30);
        assert_eq!(vols[0]["capacityBytes"], 10u64 << 30);
        assert_eq!(vols[0]["availableBytes"], 7u64 << 30);
        assert_eq!(
            vols[0]["pvcRef"],
            json!({"name": "db-data", "namespace": "t"})
        );
    })
    .await;
}

#[tokio::test]
async fn the_kubelet_authorizes_get_nodes_stats() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        let kubelet = format!("{}/stats/summary", sim.kubelet_url("node-1"));
        let proxy = format!("{}/api/v1/nodes/node-1/proxy/stats/summary", sim.url());
        sim.faults().deny("get", "nodes/stats");
        let (code, body) = http_get(&kubelet, None).await;
        assert_eq!(code, 403);
        assert!(
            body.contains("verb=get, resource=nodes, subresource=stats"),
            "{body}"
        );
        assert_eq!(
            http_get(&proxy, None).await.0,
            200,
            "the proxy is nodes/proxy"
        );
        sim.faults().allow("get", "nodes/stats");
        sim.faults().deny("get", "nodes/proxy");
        assert_eq!(http_get(&kubelet, None).await.0, 200);
        assert_eq!(http_get(&proxy, None).await.0, 403);
        // A real kubelet does not exist for a node the cluster does not have.
        assert_eq!(
            http_get(
                &format!("{}/stats/summary", sim.kubelet_url("node-9")),
                None
            )
            .await
            .0,
            404
        );
        assert_eq!(
            http_get(&format!("{}/pods/nope", sim.kubelet_url("node-1")), None)
                .await
                .0,
            404
        );
    })
    .await;
}

#[tokio::test]
async fn the_kubelet_wants_the_bearer_token() {
    let sim = manual_sim(Some("s3cret")).await;
    within(async {
        create_ns_and_node(&sim).await;
        let url = format!("{}/stats/summary", sim.kubelet_url("node-1"));
        assert_eq!(http_get(&url, None).await.0, 401);
        assert_eq!(http_get(&url, Some("wrong")).await.0, 401);
        let (code, body) = http_get(&url, Some("s3cret")).await;
        assert_eq!(code, 200);
        let s: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["node"]["nodeName"], "node-1");
        // The kube client carries the token too, so it reaches the kubelet path as well.
        let req = http::Request::get("/kubelet/node-1/stats/summary")
            .body(Vec::new())
            .unwrap();
        let s: Value = sim.client().request(req).await.unwrap();
        assert_eq!(s["node"]["nodeName"], "node-1");
    })
    .await;
}

#[tokio::test]
async fn the_summary_lists_only_the_running_pods_of_its_node() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "a", Some("node-1"), &["main"]).await;
        create_pod(&sim, "b", Some("node-2"), &["main"]).await;
        create_pod(&sim, "c", None, &["main"]).await;
        let s = summary(&sim, "node-1").await;
        assert_eq!(s["pods"].as_array().unwrap().len(), 1);
        assert_eq!(s["pods"][0]["podRef"]["name"], "a");
        let s = summary(&sim, "node-2").await;
        assert_eq!(s["pods"].as_array().unwrap().len(), 1);
        assert_eq!(s["pods"][0]["podRef"]["name"], "b");
    })
    .await;
}

#[tokio::test]
async fn pods_are_listed_and_watched_by_node_name() {
    let sim = manual_sim(None).await;
    within(async {
        create_ns_and_node(&sim).await;
        create_pod(&sim, "a", Some("node-1"), &["main"]).await;
        create_pod(&sim, "b", Some("node-2"), &["main"]).await;
        let all: Api<Pod> = Api::all(sim.client());
        let names = |l: kube::core::ObjectList<Pod>| {
            l.items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect::<Vec<_>>()
        };
        let mine = all
            .list(&ListParams::default().fields("spec.nodeName=node-1"))
            .await
            .unwrap();
        assert_eq!(names(mine), ["a"]);
        let not_mine = all
            .list(&ListParams::default().fields("spec.nodeName!=node-1"))
            .await
            .unwrap();
        assert_eq!(names(not_mine), ["b"]);
        let by_name = all
            .list(&ListParams::default().fields("metadata.namespace=t,metadata.name=b"))
            .await
            .unwrap();
        assert_eq!(names(by_name), ["b"]);
        assert_eq!(
            api_err(all.list(&ListParams::default().fields("spec.foo=x")).await).0,
            400
        );

        let rv = all
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut events = all
            .watch(&WatchParams::default().fields("spec.nodeName=node-1"), &rv)
            .await
            .unwrap()
            .boxed();
        create_pod(&sim, "c", Some("node-2"), &["main"]).await;
        create_pod(&sim, "d", Some("node-1"), &["main"]).await;
        match events.try_next().await.unwrap() {
            Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("d")),
            other => panic!("expected d added, got {other:?}"),
        }
        sim.finish_pod("t", "d", true).unwrap();
        match events.try_next().await.unwrap() {
            Some(WatchEvent::Modified(p)) => {
                assert_eq!(p.status.unwrap().phase.as_deref(), Some("Succeeded"));
            }
            other => panic!("expected d modified, got {other:?}"),
        }
        match all
            .watch(&WatchParams::default().fields("spec.foo=x"), "0")
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
            Err(e) => panic!("expected a 400, got {e}"),
            Ok(_) => panic!("expected a 400, got a watch"),
        }
    })
    .await;
}

#[tokio::test]
async fn the_demo_keeps_pods_with_requests_in_managed_namespaces() {
    let sim = manual_sim(None).await;
    within(async {
        let nss: Api<Namespace> = Api::all(sim.client());
        for (name, managed) in [("tenant-a", true), ("other", false)] {
            let mut ns = json!({"metadata": {"name": name}});
            if managed {
                ns["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "mtp"});
            }
            nss.create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
                .await
                .unwrap();
        }
        let demo = kube_sim::demo::DemoPods {
            node: "node-1".into(),
            pods_per_namespace: 3,
        };
        assert_eq!(demo.reconcile(&sim).unwrap(), 3);
        assert_eq!(demo.reconcile(&sim).unwrap(), 0, "nothing missing");

        let node = Api::<Node>::all(sim.client()).get("node-1").await.unwrap();
        let alloc = node.status.unwrap().allocatable.unwrap();
        assert_eq!(alloc["cpu"].0, "8");
        assert_eq!(alloc["memory"].0, "32Gi");
        assert!(
            Api::<Pod>::namespaced(sim.client(), "other")
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let pods: Api<Pod> = Api::namespaced(sim.client(), "tenant-a");
        let p = pods.get("demo-1").await.unwrap();
        let req = p.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(req["cpu"].0, "200m");
        assert_eq!(req["memory"].0, "256Mi");

        sim.clock().advance(secs(10));
        let s = summary(&sim, "node-1").await;
        assert_eq!(s["pods"].as_array().unwrap().len(), 3);
        // demo-1 runs at 120% of its 200m request in its first two minutes.
        let c = container(pod_entry(&s, "demo-1"), "app");
        assert_eq!(c["cpu"]["usageNanoCores"], 240_000_000u64);
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 2_400_000_000u64);

        pods.delete("demo-0", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(
            demo.reconcile(&sim).unwrap(),
            1,
            "a deleted demo pod comes back"
        );
    })
    .await;
}

#[tokio::test]
async fn object_timestamps_follow_the_cluster_clock() {
    let sim = manual_sim(None).await;
    within(async {
        sim.clock().advance(secs(5));
        create_ns_and_node(&sim).await;
        let ns = sim.object("namespaces", "", "t").unwrap().unwrap();
        assert_eq!(ns["metadata"]["creationTimestamp"], "2026-01-01T00:00:05Z");
        assert_eq!(
            ns["metadata"]["managedFields"][0]["time"],
            "2026-01-01T00:00:05Z"
        );

        sim.clock().advance(secs(90));
        let req = http::Request::get("/api/v1/namespaces/t")
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
        let table: Value = sim.client().request(req).await.unwrap();
        let cells = table["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells.last().unwrap(), "90s", "{table}");

        let deleted = Api::<Namespace>::all(sim.client())
            .delete("t", &DeleteParams::default())
            .await
            .unwrap()
            .left()
            .expect("a namespace answers with itself, terminating");
        assert_eq!(
            wire(&deleted.metadata.deletion_timestamp.unwrap()),
            "2026-01-01T00:01:35Z"
        );
    })
    .await;
}
