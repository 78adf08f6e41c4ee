//! `TokenService`: minting (secret shown once), listing and revoking API tokens.

use mtp_core::tokens::NewToken;
use mtp_proto::v1 as pb;
use mtp_proto::v1::token_service_server::TokenService;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{FromRequest, token_to_pb};
use super::error::ApiResult;

impl Api {
    async fn create_token_inner(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let caller = self.caller(&request).await?;
        let new = NewToken::from_request(request.into_inner())?;
        if let Some(t) = &new.tenant {
            caller.principal.check_read_tenant(t)?;
        }
        caller
            .principal
            .check_create_token(new.role, new.tenant.as_deref())?;
        // The rest of validation only once the caller may mint this token, so
        // an unauthorized caller learns nothing from its description or expiry.
        new.validate(chrono::Utc::now())?;
        let (token, secret) = self.store.create_token(&caller.ctx, &new).await?;
        tracing::info!(token = %token.id, role = new.role.as_str(), "token created");
        Ok(pb::CreateTokenResponse {
            token: Some(token_to_pb(&token)),
            secret,
        })
    }

    async fn list_tokens_inner(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> ApiResult<pb::ListTokensResponse> {
        let caller = self.caller(&request).await?;
        let scope = caller.principal.tenant_scope();
        if scope.is_none() {
            caller.principal.require_admin("listing all tokens")?;
        }
        let tokens = self.store.list_tokens(scope).await?;
        Ok(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_pb).collect(),
        })
    }

    async fn revoke_token_inner(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> ApiResult<pb::Token> {
        let caller = self.caller(&request).await?;
        if caller.principal.role == mtp_core::access::Role::ReadOnly {
            return Err(mtp_core::Error::PermissionDenied("this token is read-only".into()).into());
        }
        let id = &request.get_ref().id;
        let token = self
            .store
            .revoke_token(&caller.ctx, id, caller.principal.tenant_scope())
            .await?;
        tracing::info!(token = %id, "token revoked");
        Ok(token_to_pb(&token))
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        Ok(Response::new(self.create_token_inner(request).await?))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(self.list_tokens_inner(request).await?))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        Ok(Response::new(self.revoke_token_inner(request).await?))
    }
}
