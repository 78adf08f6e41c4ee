//! `ClusterService`: platform admins register clusters; everyone may list them
//! (cluster names are where environments go, not tenant data).

use mtp_proto::v1 as pb;
use mtp_proto::v1::cluster_service_server::ClusterService;
use mtp_store::NewCluster;
use tonic::{Request, Response, Status};

use super::convert::cluster_to_pb;
use super::error::ApiResult;
use super::Api;

const DEFAULT_INGRESS_NAMESPACE: &str = "kube-system";

impl Api {
    async fn create_cluster_inner(&self, request: Request<pb::CreateClusterRequest>) -> ApiResult<pb::Cluster> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("registering clusters")?;
        let r = request.into_inner();
        let new = NewCluster {
            name: r.name,
            labels: r.labels.into_iter().collect(),
            ingress_namespace: if r.ingress_namespace.is_empty() {
                DEFAULT_INGRESS_NAMESPACE.to_owned()
            } else {
                r.ingress_namespace
            },
        };
        new.validate()?;
        let cluster = self.store.create_cluster(&caller.ctx, &new).await?;
        tracing::info!(cluster = %cluster.name, "cluster registered");
        Ok(cluster_to_pb(&cluster))
    }

    async fn get_cluster_inner(&self, request: Request<pb::GetClusterRequest>) -> ApiResult<pb::Cluster> {
        self.caller(&request).await?;
        Ok(cluster_to_pb(&self.store.get_cluster(&request.get_ref().name).await?))
    }

    async fn list_clusters_inner(&self, request: Request<pb::ListClustersRequest>) -> ApiResult<pb::ListClustersResponse> {
        self.caller(&request).await?;
        let clusters = self.store.list_clusters().await?;
        Ok(pb::ListClustersResponse {
            clusters: clusters.iter().map(cluster_to_pb).collect(),
        })
    }
}

#[tonic::async_trait]
impl ClusterService for Api {
    async fn create_cluster(&self, request: Request<pb::CreateClusterRequest>) -> Result<Response<pb::Cluster>, Status> {
        Ok(Response::new(self.create_cluster_inner(request).await?))
    }

    async fn get_cluster(&self, request: Request<pb::GetClusterRequest>) -> Result<Response<pb::Cluster>, Status> {
        Ok(Response::new(self.get_cluster_inner(request).await?))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Ok(Response::new(self.list_clusters_inner(request).await?))
    }
}
