//! Applying one namespace: render its bundle, server-side apply it under the
//! fence, read it back, and replace what someone else holds fields of.

use mtp_proto::v1::NamespaceConfig;

use crate::bundle::Bundle;
use crate::kubernetes::{Applied, ClusterApi, IfAbsent, Versions};
use crate::lease::Fence;
use crate::report::NamespaceReport;

/// What became of applying one namespace.
pub enum Attempt {
    /// Applied and read back (with the versions read, when verified), or
    /// failed: `Verified` or `Failed`.
    Done(NamespaceReport, Versions),
    /// The fence closed: not (completely) written, nothing to acknowledge.
    Fenced,
    /// The namespace carries this newer revision than the config: this
    /// agent's state is behind; nothing was written.
    Superseded(i64),
    /// The namespace is missing and was not to be created. Nothing written.
    Withheld,
}

/// Applies and verifies one namespace, stamped for cluster `cluster_id`.
pub async fn apply_one(
    cluster: &ClusterApi,
    fence: &Fence,
    config: &NamespaceConfig,
    if_absent: IfAbsent,
    cluster_id: Option<&str>,
) -> Attempt {
    if !fence.may_apply() {
        return Attempt::Fenced;
    }
    let bundle = Bundle::render(config).stamped(cluster_id);
    match cluster
        .apply_fenced(&bundle, if_absent, || fence.may_apply())
        .await
    {
        Ok(Applied::Done) => {}
        // The lease may have lapsed mid-way: stop, report nothing.
        Ok(Applied::Fenced) => return Attempt::Fenced,
        Ok(Applied::Newer(live)) => {
            // This agent's state is older than what a newer applier wrote:
            // touch nothing until the newer state arrives.
            tracing::info!(namespace = %config.namespace, live_revision = live, desired_revision = config.revision, "the cluster holds a newer revision of this namespace; not applying stale state");
            return Attempt::Superseded(live);
        }
        Ok(Applied::Absent) => return Attempt::Withheld,
        Err(e) => return failed(e),
    }
    let mismatches = match cluster.verify_versions(&bundle).await {
        Ok((m, versions)) if m.is_empty() => {
            return Attempt::Done(NamespaceReport::Verified, versions);
        }
        Ok((m, _)) => m,
        Err(e) => return failed(e),
    };
    // Still different after a forced apply: someone else owns fields mtp
    // does not set (an added ingress rule, say). Replace those objects.
    let ids = mismatches.iter().map(|m| m.object.clone()).collect();
    match cluster
        .replace_fenced(&bundle, &ids, || fence.may_apply())
        .await
    {
        Ok(true) => {}
        Ok(false) => return Attempt::Fenced,
        Err(e) => return failed(e),
    }
    match cluster.verify_versions(&bundle).await {
        Ok((m, versions)) if m.is_empty() => Attempt::Done(NamespaceReport::Verified, versions),
        Ok((m, _)) => Attempt::Done(
            NamespaceReport::Failed(format!(
                "read back differs: {}: {}",
                m[0].object, m[0].description
            )),
            Versions::new(),
        ),
        Err(e) => failed(e),
    }
}

fn failed(e: impl std::fmt::Display) -> Attempt {
    Attempt::Done(NamespaceReport::Failed(e.to_string()), Versions::new())
}
