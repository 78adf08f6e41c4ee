//! Where samples come from: the kubelet Summary API of this node (with the
//! agent's own Kubernetes credentials, `nodes/stats` only), the node's pods
//! and its allocatable from the apiserver.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use super::sample::{self, Nanos, PodInfo, PodStats};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pods per list page.
const POD_PAGE: u32 = 250;

#[derive(Clone)]
pub struct NodeSource {
    /// Based at the kubelet URL (its path prefix kept).
    kubelet: kube::Client,
    api: kube::Client,
    node: String,
}

impl NodeSource {
    /// `credentials`: the agent's Kubernetes client configuration, whose
    /// credentials and CA are used for the kubelet at `kubelet_url`.
    pub fn new(
        credentials: &kube::Config,
        kubelet_url: &str,
        api: kube::Client,
        node: String,
    ) -> anyhow::Result<NodeSource> {
        let mut config = credentials.clone();
        config.cluster_url = kubelet_url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow::anyhow!("--kubelet-url {kubelet_url:?}: {e}"))?;
        config.read_timeout = Some(REQUEST_TIMEOUT);
        config.connect_timeout = Some(REQUEST_TIMEOUT);
        let kubelet = kube::Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("a client for the kubelet at {kubelet_url}: {e}"))?;
        Ok(NodeSource { kubelet, api, node })
    }

    /// `GET /stats/summary`: the kubelet's time and its pods.
    pub async fn summary(&self) -> Result<(Nanos, Vec<PodStats>), String> {
        let request = http::Request::get("/stats/summary")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let body = tokio::time::timeout(REQUEST_TIMEOUT, self.kubelet.request_text(request))
            .await
            .map_err(|_| format!("the kubelet did not answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("the kubelet Summary API: {e}"))?;
        let (time, pods) = sample::parse_summary(body.as_bytes())
            .map_err(|e| format!("the kubelet Summary: {e}"))?;
        let time = time.ok_or("the kubelet Summary has no node time")?;
        Ok((time, pods))
    }

    /// The pods of this node in `managed` namespaces, read in pages of
    /// [`POD_PAGE`] so that a node with thousands of pods never holds their
    /// full objects all at once (only what the sampler keeps of each).
    pub async fn pods(&self, managed: &BTreeSet<String>) -> Result<Vec<PodInfo>, String> {
        let api = Api::<Pod>::all(self.api.clone());
        let mut infos = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default()
                .fields(&format!("spec.nodeName={}", self.node))
                .limit(POD_PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = tokio::time::timeout(REQUEST_TIMEOUT, api.list(&params))
                .await
                .map_err(|_| format!("listing pods took more than {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| format!("listing the pods of node {}: {e}", self.node))?;
            infos.extend(
                page.items
                    .iter()
                    .filter(|p| {
                        p.metadata
                            .namespace
                            .as_ref()
                            .is_some_and(|ns| managed.contains(ns))
                    })
                    .map(sample::pod_info),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(infos),
            }
        }
    }

    /// This node's allocatable CPU (millis) and memory (bytes).
    pub async fn allocatable(&self) -> Result<(i64, i64), String> {
        let node = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Api::<Node>::all(self.api.clone()).get(&self.node),
        )
        .await
        .map_err(|_| {
            format!(
                "reading node {} took more than {REQUEST_TIMEOUT:?}",
                self.node
            )
        })?
        .map_err(|e| format!("reading node {}: {e}", self.node))?;
        Ok(sample::node_allocatable(&node))
    }
}
