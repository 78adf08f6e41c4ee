//! Quotas and limit ranges: the MTB resource, object-count and service-type checks.

use super::*;

pub(crate) fn hard(objects: &[ManagedObject]) -> Result<BTreeMap<String, Quantity>, String> {
    let q: ResourceQuota = one(objects, Kind::ResourceQuota)?;
    ensure!(
        q.metadata.name.as_deref() == Some(bundle::QUOTA_NAME),
        "quota is called {:?}",
        q.metadata.name
    );
    let spec = q.spec.ok_or("quota has no spec")?;
    ensure!(
        spec.scopes.is_none() && spec.scope_selector.is_none(),
        "quota is scoped: it must cover every pod"
    );
    spec.hard
        .ok_or_else(|| "quota has no spec.hard".to_string())
}

pub(crate) fn quota_entry(
    hard: &BTreeMap<String, Quantity>,
    key: &str,
    want_milli: i128,
) -> Result<(), String> {
    let q = hard.get(key).ok_or_else(|| format!("quota lacks {key}"))?;
    let value = milli(q)?;
    ensure!(value >= 0, "quota {key}={} is negative", q.0);
    ensure!(
        value == want_milli,
        "quota {key}={}, config says {want_milli}/1000",
        q.0
    );
    Ok(())
}

/// MTB-PL1-CC-FNS-1: cpu, memory and storage are limited, as configured.
pub(crate) fn check_resource_quotas(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let hard = hard(objects)?;
    let q = c.quota.unwrap_or_default();
    let bytes = |n: i64| i128::from(n) * 1000;
    quota_entry(&hard, "requests.cpu", i128::from(q.cpu_millis))?;
    quota_entry(&hard, "limits.cpu", i128::from(q.cpu_millis))?;
    quota_entry(&hard, "requests.memory", bytes(q.memory_bytes))?;
    quota_entry(&hard, "limits.memory", bytes(q.memory_bytes))?;
    quota_entry(&hard, "requests.storage", bytes(q.storage_bytes))?;
    for (key, value) in &hard {
        ensure!(milli(value)? >= 0, "quota {key}={} is negative", value.0);
    }
    Ok(())
}

/// MTB-PL1-CC-FNS-2: object counts are limited, as configured.
pub(crate) fn check_object_quotas(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let hard = hard(objects)?;
    let q = c.quota.unwrap_or_default();
    let n = |v: i64| i128::from(v) * 1000;
    quota_entry(&hard, "pods", n(q.pods))?;
    quota_entry(&hard, "services", n(q.services))?;
    quota_entry(
        &hard,
        "persistentvolumeclaims",
        n(q.persistent_volume_claims),
    )?;
    Ok(())
}

/// MTB-PL1-BC-HI-2 ("Block use of NodePort services"; the upstream config
/// file reuses HI-1) and load balancers alike: a quota of zero for both.
pub(crate) fn check_no_node_ports_or_load_balancers(
    _: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let hard = hard(objects)?;
    quota_entry(&hard, "services.nodeports", 0)?;
    quota_entry(&hard, "services.loadbalancers", 0)?;
    Ok(())
}

/// The LimitRange that gives every container requests and limits (so the
/// quota on requests/limits admits pods that set none) and caps one container.
pub(crate) fn check_container_limit_range(
    c: &NamespaceConfig,
    objects: &[ManagedObject],
) -> Result<(), String> {
    let lr: LimitRange = one(objects, Kind::LimitRange)?;
    let items = lr.spec.ok_or("limit range has no spec")?.limits;
    let containers: Vec<_> = items.iter().filter(|i| i.type_ == "Container").collect();
    let [item] = containers.as_slice() else {
        return Err(format!(
            "want one Container limit, found {}",
            containers.len()
        ));
    };
    let d = c.container_defaults.unwrap_or_default();
    let get = |which: &str,
               map: &Option<BTreeMap<String, Quantity>>,
               resource: &str|
     -> Result<i128, String> {
        let q = map
            .as_ref()
            .and_then(|m| m.get(resource))
            .ok_or_else(|| format!("Container {which} lacks {resource}"))?;
        let v = milli(q)?;
        ensure!(v >= 0, "Container {which}.{resource}={} is negative", q.0);
        Ok(v)
    };
    for (resource, want) in [
        (
            "cpu",
            [
                d.default_request_cpu_millis,
                d.default_limit_cpu_millis,
                d.max_cpu_millis,
            ]
            .map(i128::from),
        ),
        (
            "memory",
            [
                d.default_request_memory_bytes,
                d.default_limit_memory_bytes,
                d.max_memory_bytes,
            ]
            .map(|b| i128::from(b) * 1000),
        ),
    ] {
        let request = get("defaultRequest", &item.default_request, resource)?;
        let limit = get("default", &item.default, resource)?;
        let max = get("max", &item.max, resource)?;
        ensure!(
            [request, limit, max] == want,
            "Container {resource}: defaultRequest/default/max = {request}/{limit}/{max} milli, config says {want:?}"
        );
        ensure!(
            limit <= max,
            "Container {resource}: default {limit} > max {max}"
        );
        ensure!(
            request <= limit,
            "Container {resource}: defaultRequest {request} > default {limit}"
        );
    }
    Ok(())
}

#[test]
pub(crate) fn mtb_configure_ns_quotas_for_cpu_memory_and_storage() {
    assert_holds(check_resource_quotas);
}

#[test]
pub(crate) fn mtb_configure_ns_object_limits_for_pods_services_and_claims() {
    assert_holds(check_object_quotas);
}

#[test]
pub(crate) fn mtb_configure_ns_quotas_with_container_defaults_and_maximum() {
    assert_holds(check_container_limit_range);
}

#[test]
pub(crate) fn mtb_block_use_of_nodeport_and_load_balancer_services() {
    assert_holds(check_no_node_ports_or_load_balancers);
}
