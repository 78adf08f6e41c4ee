//! Pod life as the simulated kubelet drives it: the status of a pod started on its node,
//! a container restart and a pod finishing, each stamped with the cluster's clock.
//!
//! The kubelet counters integrate from a container's `state.running.startedAt`, so these
//! status edits are what resets (restart) or ends (finish) a container's usage.

use serde_json::{Value, json};

use crate::status::StatusError;

/// Manager name of the status writes (as a real kubelet records them).
pub const KUBELET_MANAGER: &str = "kubelet";

/// Whether a pod is `Running` (what a kubelet reports stats for: finished pods' cgroups
/// are gone).
pub fn is_running(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
}

fn new_container_id() -> String {
    format!("containerd://{}", uuid::Uuid::new_v4().simple())
}

/// The status a kubelet reports for a pod it has just started at `at`: `Running`, every
/// container running since `at` with no restarts.
pub fn running_status(pod: &Value, at: &str) -> Value {
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c.get("name").cloned().unwrap_or(Value::Null),
                        "image": c.get("image").cloned().unwrap_or(Value::Null),
                        "imageID": "",
                        "containerID": new_container_id(),
                        "state": { "running": { "startedAt": at } },
                        "lastState": {},
                        "ready": true,
                        "started": true,
                        "restartCount": 0,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str| json!({ "type": t, "status": "True", "lastTransitionTime": at });
    json!({
        "phase": "Running",
        "startTime": at,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": statuses,
        "qosClass": "Burstable",
    })
}

fn not_running(pod: &Value) -> StatusError {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    StatusError::bad_request(format!("pod is not running (phase {phase})"))
}

/// The old run of a container as `lastState`/`state` `terminated` reports it.
fn terminated(status: &Value, at: &str, exit_code: i32) -> Value {
    json!({
        "exitCode": exit_code,
        "reason": if exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": status.pointer("/state/running/startedAt").cloned().unwrap_or(Value::Null),
        "finishedAt": at,
        "containerID": status.get("containerID").cloned().unwrap_or(Value::Null),
    })
}

/// Restarts `container` of a running pod at `at`: its previous run moves to
/// `lastState.terminated` (exit code 1, as after a crash), a new run starts at `at` with a
/// new container ID and `restartCount` grows by one.
pub fn restart(pod: &mut Value, container: &str, at: &str) -> Result<(), StatusError> {
    if !is_running(pod) {
        return Err(not_running(pod));
    }
    let status = pod
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
        .and_then(|cs| {
            cs.iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        })
        .ok_or_else(|| StatusError::bad_request(format!("pod has no container {container:?}")))?;
    let restarts = status
        .get("restartCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    status["lastState"] = json!({ "terminated": terminated(status, at, 1) });
    status["state"] = json!({ "running": { "startedAt": at } });
    status["containerID"] = json!(new_container_id());
    status["restartCount"] = json!(restarts + 1);
    Ok(())
}

/// Ends a running pod at `at`: phase `Succeeded` (every container exited 0) or `Failed`
/// (exit code 1), every container `terminated`, the pod no longer ready.
pub fn finish(pod: &mut Value, succeeded: bool, at: &str) -> Result<(), StatusError> {
    if !is_running(pod) {
        return Err(not_running(pod));
    }
    let exit_code = if succeeded { 0 } else { 1 };
    pod["status"]["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
    if let Some(cs) = pod
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            c["state"] = json!({ "terminated": terminated(c, at, exit_code) });
            c["ready"] = json!(false);
            c["started"] = json!(false);
        }
    }
    if let Some(conds) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conds {
            if matches!(
                c.get("type").and_then(Value::as_str),
                Some("Ready" | "ContainersReady")
            ) {
                c["status"] = json!("False");
                c["reason"] = json!("PodCompleted");
                c["lastTransitionTime"] = json!(at);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        let spec = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let mut p = spec.clone();
        p["status"] = running_status(&spec, "2026-01-01T00:00:00Z");
        p
    }

    #[test]
    fn a_restart_keeps_the_old_run_in_last_state() {
        let mut p = pod();
        restart(&mut p, "a", "2026-01-01T00:01:00Z").unwrap();
        let c = &p["status"]["containerStatuses"][0];
        assert_eq!(c["restartCount"], 1);
        assert_eq!(c["state"]["running"]["startedAt"], "2026-01-01T00:01:00Z");
        assert_eq!(
            c["lastState"]["terminated"]["startedAt"],
            "2026-01-01T00:00:00Z"
        );
        assert!(restart(&mut p, "b", "2026-01-01T00:02:00Z").is_err());
    }

    #[test]
    fn a_finished_pod_cannot_finish_or_restart_again() {
        let mut p = pod();
        finish(&mut p, true, "2026-01-01T00:01:00Z").unwrap();
        assert_eq!(p["status"]["phase"], "Succeeded");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 0);
        assert_eq!(t["finishedAt"], "2026-01-01T00:01:00Z");
        assert!(!is_running(&p));
        assert!(finish(&mut p, false, "2026-01-01T00:02:00Z").is_err());
        assert!(restart(&mut p, "a", "2026-01-01T00:02:00Z").is_err());
    }
}
