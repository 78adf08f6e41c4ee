//! The quick-start workload (`kube-sim --simulate-pods N`): one simulated node running N
//! pods, with resource requests and usage curves, in every namespace the k8s-mtp agent
//! manages, so that the agent has usage to sample from the node's kubelet.

use std::time::Duration;

use serde_json::{Value, json};

use crate::kinds;
use crate::kubelet::{ContainerUsage, UsageCurve};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::StatusError;
use crate::{SimCluster, store::Store};

/// The label selector of the namespaces the agent manages (its `MANAGED_SELECTOR`).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=mtp";

/// Field manager of the objects the demo creates.
pub const DEMO_MANAGER: &str = "kube-sim-demo";

/// Name of the demo pod with `index` (`demo-0`, `demo-1`, ...).
pub fn pod_name(index: usize) -> String {
    format!("demo-{index}")
}

/// The demo pod `index`'s requests: CPU 100m..500m and memory 128Mi..512Mi, cycling so
/// neighbouring pods differ.
pub fn requests(index: usize) -> (u64, u64) {
    let cpu_millis = 100 + (index % 5) as u64 * 100;
    let memory_mib = 128 * (1 + (index % 4) as u64);
    (cpu_millis, memory_mib)
}

/// Usage as percent of the requests, before and after the step two minutes into a
/// container's run: some pods stay below their requests, some go above (they are the
/// ones whose cost exceeds what they reserved).
const PROFILES: [(u64, u64); 4] = [(50, 60), (120, 140), (80, 110), (30, 30)];

/// When the demo curves step from their first to their second level.
pub const STEP_AFTER: Duration = Duration::from_secs(120);

/// The usage curve of demo pod `index`'s only container.
pub fn curve(index: usize) -> UsageCurve {
    let (cpu_millis, memory_mib) = requests(index);
    let (before, after) = PROFILES[index % PROFILES.len()];
    let usage = |pct: u64| ContainerUsage {
        cpu_nano_cores: cpu_millis * 1_000_000 * pct / 100,
        memory_working_set_bytes: (memory_mib << 20) * pct / 100,
        ephemeral_storage_bytes: (16 + index as u64 % 8) << 20,
        network_receive_bytes_per_second: 2_000 * (1 + index as u64 % 3),
        network_transmit_bytes_per_second: 1_000 * (1 + index as u64 % 3),
    };
    UsageCurve::new(vec![
        (Duration::ZERO, usage(before)),
        (STEP_AFTER, usage(after)),
    ])
}

/// The demo pod `index` bound to `node`.
fn pod_body(index: usize, node: &str) -> Value {
    let (cpu_millis, memory_mib) = requests(index);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(index),
            "labels": { "app.kubernetes.io/name": "kube-sim-demo" },
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "containers": [{
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {
                    "requests": { "cpu": format!("{cpu_millis}m"), "memory": format!("{memory_mib}Mi") },
                },
            }],
        },
    })
}

/// Keeps the demo workload on one node.
#[derive(Debug, Clone)]
pub struct DemoPods {
    /// The node the pods run on (created when absent).
    pub node: String,
    /// Pods kept in each managed namespace.
    pub pods_per_namespace: usize,
}

impl DemoPods {
    /// Creates the Node object when absent: 8 CPUs and 32Gi, `Ready`.
    pub fn ensure_node(&self, store: &Store) -> Result<(), StatusError> {
        let nodes = kinds::nodes();
        if store.get(nodes, "", &self.node).is_ok() {
            return Ok(());
        }
        let now = store.clock().now_secs();
        let resources =
            json!({ "cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi" });
        let body = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }],
                "addresses": [
                    { "type": "InternalIP", "address": "127.0.0.1" },
                    { "type": "Hostname", "address": self.node },
                ],
                "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            },
        });
        match store.create(nodes, "", body, DEMO_MANAGER) {
            // Someone else created it in between: fine, it exists.
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One pass: creates the missing demo pods (and sets their curves) in every managed,
    /// non-terminating namespace. Returns how many pods it created.
    pub fn reconcile(&self, sim: &SimCluster) -> Result<usize, StatusError> {
        let store = sim.store();
        self.ensure_node(store)?;
        let managed = LabelSelector::parse(MANAGED_SELECTOR)?;
        let namespaces = store.list(
            kinds::namespaces(),
            None,
            &managed,
            &FieldSelector::default(),
            None,
            None,
        )?;
        let pods = kinds::pods();
        let mut created = 0;
        for ns in &namespaces.items {
            if ns.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let Some(ns) = ns.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            for i in 0..self.pods_per_namespace {
                let name = pod_name(i);
                if store.get(pods, ns, &name).is_ok() {
                    continue;
                }
                // The curve first, so that the pod's first Summary already has usage.
                sim.set_container_curve(ns, &name, "app", curve(i));
                match store.create(pods, ns, pod_body(i, &self.node), DEMO_MANAGER) {
                    Ok(_) => created += 1,
                    // Created concurrently, or the namespace began terminating: next pass.
                    Err(e) if e.code == 409 || e.code == 403 || e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_pods_vary_and_some_exceed_their_requests() {
        let over = (0..8)
            .filter(|&i| {
                let (cpu, _) = requests(i);
                curve(i).at(STEP_AFTER).cpu_nano_cores > cpu * 1_000_000
            })
            .count();
        assert!(over > 0 && over < 8);
        assert_eq!(requests(0), (100, 128));
        assert_eq!(requests(4), (500, 128));
        assert_eq!(requests(3), (400, 512));
    }
}
