//! One session's usage ingest, off the session loop: batches are stored and answered in order by a task of their own, so a slow insert never holds back desired state.

use mtp_core::agents::AgentIdentity;
use mtp_core::usage::UsageBatchClaim;
use mtp_proto::v1 as pb;
use mtp_proto::v1::control_message::Kind as ControlKind;
use mtp_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::metrics::Metrics;

/// Batches waiting to be stored, at most. An agent keeps at most 4 in
/// flight, so an honest one never fills this; a batch that does not fit is
/// dropped unanswered (counted), and its agent sends it again on its next
/// session.
pub(super) const USAGE_QUEUE: usize = 8;

/// The ingest task of one session, and how it reports a store failure (the
/// session then ends, and the agent resends what was not answered).
pub(super) struct UsageIngest {
    queue: mpsc::Sender<UsageBatchClaim>,
    pub(super) failures: mpsc::Receiver<mtp_store::Error>,
    cluster: String,
    metrics: Metrics,
    task: JoinHandle<()>,
}

impl UsageIngest {
    pub(super) fn start(
        store: Store,
        metrics: Metrics,
        identity: AgentIdentity,
        outbound: mpsc::Sender<Result<pb::ControlMessage, Status>>,
    ) -> UsageIngest {
        let (queue, mut batches) = mpsc::channel::<UsageBatchClaim>(USAGE_QUEUE);
        let (failed, failures) = mpsc::channel(1);
        let cluster = identity.cluster.clone();
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                let record = match store
                    .record_usage(&identity, &batch, chrono::Utc::now())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = failed.send(e).await;
                        return;
                    }
                };
                task_metrics.usage_recorded(
                    &identity.cluster,
                    record.duplicate,
                    record.namespace_windows,
                    record.unknown_namespaces,
                );
                if record.unknown_namespaces > 0 {
                    tracing::debug!(
                        unknown = record.unknown_namespaces,
                        "usage of namespaces that are no environment of this cluster ignored"
                    );
                }
                let answer = pb::ControlMessage {
                    kind: Some(ControlKind::UsageRecorded(pb::UsageRecorded {
                        spool_epoch: batch.spool_epoch,
                        sequence: batch.sequence,
                    })),
                };
                // The session's own send deadline ends a session whose agent
                // stops reading; here a closed stream just ends the task.
                if outbound.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        UsageIngest {
            queue,
            failures,
            cluster,
            metrics,
            task,
        }
    }

    /// Queues a batch; a full queue drops it unanswered.
    pub(super) fn submit(&self, batch: UsageBatchClaim) {
        if let Err(e) = self.queue.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            tracing::warn!(
                epoch = batch.spool_epoch,
                sequence = batch.sequence,
                "usage batch dropped unanswered: {USAGE_QUEUE} batches already wait to be stored"
            );
            self.metrics.usage_dropped(&self.cluster);
        }
    }
}

impl Drop for UsageIngest {
    fn drop(&mut self) {
        // A batch half-stored when the session ends is rolled back with its
        // transaction; the agent sends it again.
        self.task.abort();
    }
}
