//! `ClusterService`: platform admins register clusters; everyone may list them
//! (cluster names are where environments go, not tenant data).

use mtp_core::agents::{JoinToken, join_token_ttl};
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

    async fn confirm_prune_inner(
        &self,
        request: Request<pb::ConfirmPruneRequest>,
    ) -> ApiResult<pb::Cluster> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("confirming a held prune")?;
        let r = request.into_inner();
        if r.revision <= 0 {
            return Err(mtp_core::Error::invalid(
                "revision",
                "must be positive (see the cluster's held_prune)",
            )
            .into());
        }
        let cluster = self
            .store
            .confirm_prune(&caller.ctx, &r.cluster, r.revision)
            .await?;
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
        let (secret, token) = self
            .store
            .create_join_token(&caller.ctx, &r.cluster, ttl, r.max_uses)
            .await?;
        tracing::info!(cluster = %r.cluster, join_token = %token.id, max_uses = r.max_uses, "join token minted");
        Ok(pb::JoinToken {
            secret,
            ..join_token_to_pb(&token)
        })
    }

    async fn list_join_tokens_inner(
        &self,
        request: Request<pb::ListJoinTokensRequest>,
    ) -> ApiResult<pb::ListJoinTokensResponse> {
        let caller = self.caller(&request).await?;
        // Who may join a cluster is the platform team's business.
        caller.principal.require_admin("listing join tokens")?;
        let cluster = non_empty(request.into_inner().cluster);
        let tokens = self.store.list_join_tokens(cluster.as_deref()).await?;
        Ok(pb::ListJoinTokensResponse {
            join_tokens: tokens.iter().map(join_token_to_pb).collect(),
        })
    }

    async fn revoke_join_token_inner(
        &self,
        request: Request<pb::RevokeJoinTokenRequest>,
    ) -> ApiResult<pb::JoinToken> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("revoking join tokens")?;
        let id = request.into_inner().id;
        let token = self.store.revoke_join_token(&caller.ctx, id.trim()).await?;
        tracing::info!(cluster = %token.cluster, join_token = %token.id, "join token revoked");
        Ok(join_token_to_pb(&token))
    }

    async fn revoke_agent_inner(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> ApiResult<pb::Agent> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("revoking agents")?;
        let id = request.into_inner().id;
        let id = id.trim();
        let (cluster, revoke_time) = self.store.revoke_agent(&caller.ctx, id).await?;
        let agent = self
            .store
            .list_agents(Some(&cluster))
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| mtp_core::Error::not_found("agent", id))?;
        Ok(pb::Agent {
            revoke_time: Some(timestamp(revoke_time)),
            ..agent_to_pb(&agent)
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

/// A join token as listed (never its secret).
fn join_token_to_pb(t: &JoinToken) -> pb::JoinToken {
    pb::JoinToken {
        cluster: t.cluster.clone(),
        secret: String::new(),
        expire_time: Some(timestamp(t.expire_time)),
        id: t.id.clone(),
        create_time: Some(timestamp(t.create_time)),
        revoke_time: t.revoke_time.map(timestamp),
        max_uses: t.max_uses,
        uses: t.uses,
        created_by: t.created_by.clone(),
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
        request: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        Ok(Response::new(self.list_join_tokens_inner(request).await?))
    }

    async fn revoke_join_token(
        &self,
        request: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        Ok(Response::new(self.revoke_join_token_inner(request).await?))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        Ok(Response::new(self.revoke_agent_inner(request).await?))
    }

    async fn confirm_prune(
        &self,
        request: Request<pb::ConfirmPruneRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Ok(Response::new(self.confirm_prune_inner(request).await?))
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
