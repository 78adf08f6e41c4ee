//! Pod Security Admission: what the `restricted` level guarantees, and the MTB checks it answers.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PsaLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PsaLevel {
    fn parse(s: &str) -> Option<PsaLevel> {
        match s {
            "privileged" => Some(PsaLevel::Privileged),
            "baseline" => Some(PsaLevel::Baseline),
            "restricted" => Some(PsaLevel::Restricted),
            _ => None,
        }
    }
}

pub(crate) struct PsaGuarantee {
    mtb_id: &'static str,
    title: &'static str,
    /// The lowest Pod Security Standards level whose enforcement rejects the
    /// pods this check tries to create (`restricted` includes `baseline`).
    level: PsaLevel,
    /// What that level guarantees on a real cluster with the namespace
    /// labelled `pod-security.kubernetes.io/enforce=<level>`.
    guarantee: &'static str,
}

/// MTB check id → what `pod-security.kubernetes.io/enforce=restricted`
/// guarantees (Pod Security Standards, kubernetes.io/docs/concepts/security/pod-security-standards).
pub(crate) const PSA_TABLE: &[PsaGuarantee] = &[
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-3",
        title: "Block add capabilities",
        level: PsaLevel::Restricted,
        guarantee: "containers must drop ALL capabilities and may add back only NET_BIND_SERVICE \
                    (baseline already rejects anything beyond the runtime's default set)",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-4",
        title: "Require run as non-root user",
        level: PsaLevel::Restricted,
        guarantee: "runAsNonRoot must be true (pod or every container) and runAsUser must not be 0",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-5",
        title: "Block privileged containers",
        level: PsaLevel::Baseline,
        guarantee: "securityContext.privileged must be unset or false in every (init/ephemeral) container",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-CPI-6",
        title: "Block privilege escalation",
        level: PsaLevel::Restricted,
        guarantee: "securityContext.allowPrivilegeEscalation must be false in every container",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-1",
        title: "Block use of host path volumes",
        level: PsaLevel::Baseline,
        guarantee: "hostPath volumes are rejected (restricted further allows only configMap, csi, \
                    downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret)",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-3",
        title: "Block use of host networking and ports",
        level: PsaLevel::Baseline,
        guarantee: "hostNetwork must be unset or false and every hostPort unset or 0",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-4",
        title: "Block use of host PID",
        level: PsaLevel::Baseline,
        guarantee: "hostPID must be unset or false",
    },
    PsaGuarantee {
        mtb_id: "MTB-PL1-BC-HI-5",
        title: "Block use of host IPC",
        level: PsaLevel::Baseline,
        guarantee: "hostIPC must be unset or false",
    },
];

pub(crate) fn valid_psa_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|minor| !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit()))
}

/// The namespace enforces (and audits and warns at) a level at least as
/// strict as `needed`, with a valid enforce-version.
pub(crate) fn check_psa(objects: &[ManagedObject], needed: PsaLevel) -> Result<(), String> {
    let labels = namespace_labels(objects)?;
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        let level = labels
            .get(&key)
            .ok_or_else(|| format!("namespace lacks {key}"))?;
        let parsed =
            PsaLevel::parse(level).ok_or_else(|| format!("{key}={level:?} is not a level"))?;
        ensure!(parsed >= needed, "{key}={level}, needs at least {needed:?}");
        ensure!(
            parsed == PsaLevel::Restricted,
            "{key}={level}: environments run at restricted"
        );
        let version_key = format!("{key}-version");
        match labels.get(&version_key) {
            Some(v) => ensure!(valid_psa_version(v), "{version_key}={v:?} is not a version"),
            None if mode == "enforce" => return Err(format!("namespace lacks {version_key}")),
            None => {}
        }
    }
    Ok(())
}

pub(crate) fn assert_psa_check(mtb_id: &str) {
    let row = PSA_TABLE
        .iter()
        .find(|r| r.mtb_id == mtb_id)
        .unwrap_or_else(|| panic!("{mtb_id} is not in the PSA table"));
    let failures: Vec<String> = rendered()
        .iter()
        .filter_map(|(c, objects)| {
            check_psa(objects, row.level).err().map(|e| {
                format!(
                    "{} ({}: {}) — on a real cluster: {}: {e}",
                    c.namespace, row.mtb_id, row.title, row.guarantee
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
pub(crate) fn mtb_block_add_capabilities_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-3");
}

#[test]
pub(crate) fn mtb_require_run_as_non_root_user_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-4");
}

#[test]
pub(crate) fn mtb_block_privileged_containers_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-5");
}

#[test]
pub(crate) fn mtb_block_privilege_escalation_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-CPI-6");
}

#[test]
pub(crate) fn mtb_block_use_of_host_path_volumes_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-1");
}

#[test]
pub(crate) fn mtb_block_use_of_host_networking_and_ports_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-3");
}

#[test]
pub(crate) fn mtb_block_use_of_host_pid_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-4");
}

#[test]
pub(crate) fn mtb_block_use_of_host_ipc_via_psa_restricted() {
    assert_psa_check("MTB-PL1-BC-HI-5");
}

#[test]
pub(crate) fn psa_table_lists_each_check_once() {
    let ids: BTreeSet<_> = PSA_TABLE.iter().map(|r| r.mtb_id).collect();
    assert_eq!(ids.len(), PSA_TABLE.len());
    assert_eq!(PSA_TABLE.len(), 8, "one test above per row");
}
