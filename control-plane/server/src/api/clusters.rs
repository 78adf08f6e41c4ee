//! `ClusterService`: platform admins register clusters; everyone may list them
//! (cluster names are where environments go, not tenant data).

use mtp_core::agents::join_token_ttl;
use mtp_core::clusters::NewCluster;
use mtp_proto::v1 as pb;
use mtp_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{FromRequest, agent_to_pb, cluster_to_pb, non_empty, timestamp};
use super::error::ApiResult;

impl Api {
    async fn create_cluster_inner(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> ApiResult<pb::Cluster> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("registering clusters")?;
        let new = NewCluster::from_request(request.into_inner())?;
        let cluster = self.store.create_cluster(&caller.ctx, &new).await?;
        tracing::info!(cluster = %cluster.name, "cluster registered");
        Ok(cluster_to_pb(&cluster))
    }

    async fn get_cluster_inner(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> ApiResult<pb::Cluster> {
        self.caller(&request).await?;
        Ok(cluster_to_pb(
            &self.store.get_cluster(&request.get_ref().name).await?,
        ))
    }

    async fn list_clusters_inner(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> ApiResult<pb::ListClustersResponse> {
        self.caller(&request).await?;
        let clusters = self.store.list_clusters().await?;
        Ok(pb::ListClustersResponse {
            clusters: clusters.iter().map(cluster_to_pb).collect(),
        })
    }
}

impl Api {
    async fn create_join_token_inner(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> ApiResult<pb::JoinToken> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("minting join tokens")?;
        let r = request.into_inner();
        let ttl = join_token_ttl(r.ttl_seconds)?;
        let (secret, expire) = self
            .store
            .create_join_token(&caller.ctx, &r.cluster, ttl)
            .await?;
        tracing::info!(cluster = %r.cluster, "join token minted");
        Ok(pb::JoinToken {
            cluster: r.cluster,
            secret,
            expire_time: Some(timestamp(expire)),
            ..Default::default()
        })
    }

    async fn list_agents_inner(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> ApiResult<pb::ListAgentsResponse> {
        self.caller(&request).await?;
        let cluster = non_empty(request.into_inner().cluster);
        let agents = self.store.list_agents(cluster.as_deref()).await?;
        Ok(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_to_pb).collect(),
        })
    }
}

#[tonic::async_trait]
impl ClusterService for Api {
    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        Ok(Response::new(self.create_join_token_inner(request).await?))
    }

    async fn list_join_tokens(
        &self,
        _request: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        Err(Status::unimplemented("todo(issue 11)"))
    }

    async fn revoke_join_token(
        &self,
        _request: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        Err(Status::unimplemented("todo(issue 11)"))
    }

    async fn revoke_agent(
        &self,
        _request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        Err(Status::unimplemented("todo(issue 11)"))
    }

    async fn confirm_prune(
        &self,
        _request: Request<pb::ConfirmPruneRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Err(Status::unimplemented("todo(issue 11)"))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Ok(Response::new(self.list_agents_inner(request).await?))
    }

    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Ok(Response::new(self.create_cluster_inner(request).await?))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Ok(Response::new(self.get_cluster_inner(request).await?))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Ok(Response::new(self.list_clusters_inner(request).await?))
    }
}
