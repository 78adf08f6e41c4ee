//! Authorization: no token is UNAUTHENTICATED; tenant-bound tokens see only
//! their tenant (others do not even exist for them); read-only cannot write;
//! secrets are stored only as hashes.

use mtp_e2e::{TestPlane, quota};
use mtp_proto::v1 as pb;
use tonic::Code;

async fn two_tenants(plane: &TestPlane) {
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    for t in ["team-a", "team-b"] {
        admin
            .create_tenant(t, quota("8", "16Gi", "100Gi", 100, 5))
            .await
            .unwrap();
        admin.create_env(t, "dev", "k3s-1", "small").await.unwrap();
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let plane = TestPlane::start().await;
    for secret in [
        None,
        Some("not-a-token"),
        Some(
            "mtp_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let mut c = plane.clients(secret).await;
        let err = c
            .tenants
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{secret:?}");
    }
    // A real secret with one character changed is refused too.
    let mut forged = plane.admin_secret.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    let mut c = plane.clients(Some(&forged)).await;
    assert_eq!(
        c.tenants
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_tenant_owner_cannot_see_or_touch_another_tenant() {
    let plane = TestPlane::start().await;
    two_tenants(&plane).await;
    let secret = plane
        .admin()
        .await
        .mint(pb::TokenRole::TenantOwner, "team-a")
        .await;
    let mut owner = plane.clients(Some(&secret)).await;

    let listed = owner
        .tenants
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["team-a"]
    );
    let envs = owner
        .environments
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(envs.environments.iter().all(|e| e.tenant == "team-a"));
    assert_eq!(envs.environments.len(), 1);

    // Another tenant answers exactly like a tenant that does not exist.
    let other = owner
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-b".into(),
        })
        .await
        .unwrap_err();
    let missing = owner
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-zzz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (other.code(), missing.code()),
        (Code::NotFound, Code::NotFound)
    );
    assert_eq!(
        other.message().replace("team-b", "X"),
        missing.message().replace("team-zzz", "X")
    );
    // Authorization is decided before the rest of the request is validated:
    // a malformed request into another tenant still answers "not found".
    let err = owner
        .create_env("team-b", "Not A Name", "k3s-1", "no such profile")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = owner
        .create_env("team-b", "x", "k3s-1", "small")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = owner.delete_env("team-b", "dev").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = owner
        .environments
        .list_environments(pb::ListEnvironmentsRequest {
            tenant: "team-b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let events = owner.audit_events().await;
    assert!(!events.is_empty() && events.iter().all(|e| e.tenant == "team-a"));

    // Its own tenant works, but tenant administration stays with the platform.
    owner
        .create_env("team-a", "feature-1", "k3s-1", "small")
        .await
        .unwrap();
    let err = owner
        .create_tenant("team-c", quota("1", "1Gi", "1Gi", 1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = owner
        .tokens
        .create_token(pb::CreateTokenRequest {
            role: pb::TokenRole::PlatformAdmin as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn read_only_tokens_cannot_write() {
    let plane = TestPlane::start().await;
    two_tenants(&plane).await;
    let secret = plane.admin().await.mint(pb::TokenRole::ReadOnly, "").await;
    let mut ro = plane.clients(Some(&secret)).await;
    assert_eq!(
        ro.tenants
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap()
            .into_inner()
            .tenants
            .len(),
        2
    );
    let err = ro
        .create_env("team-a", "x", "k3s-1", "small")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        ro.create_cluster("k3s-2").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let err = ro
        .tokens
        .create_token(pb::CreateTokenRequest {
            role: pb::TokenRole::ReadOnly as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Even with an expiry in the past: who may mint is decided first.
    let err = ro
        .tokens
        .create_token(pb::CreateTokenRequest {
            role: pb::TokenRole::ReadOnly as i32,
            expire_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn secrets_are_stored_hashed_and_revocation_is_immediate() {
    let plane = TestPlane::start().await;
    two_tenants(&plane).await;
    let mut admin = plane.admin().await;
    let created = admin
        .tokens
        .create_token(pb::CreateTokenRequest {
            role: pb::TokenRole::TenantOwner as i32,
            tenant: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret;
    let id = created.token.unwrap().id;

    let sql = plane.sql().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_tokens")
        .fetch_all(&sql)
        .await
        .unwrap();
    let key = secret.rsplit('_').next().unwrap();
    assert!(
        stored
            .iter()
            .all(|h| !h.contains(key) && !secret.contains(h.as_str()))
    );
    let audit_text: Vec<String> = sqlx::query_scalar("SELECT details FROM audit_events")
        .fetch_all(&sql)
        .await
        .unwrap();
    assert!(
        audit_text.iter().all(|d| !d.contains(key)),
        "secrets never reach the audit log"
    );

    let mut owner = plane.clients(Some(&secret)).await;
    owner
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap();
    let listed = admin
        .tokens
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(listed.iter().any(|t| t.id == id && t.tenant == "team-a"));
    admin
        .tokens
        .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
        .await
        .unwrap();
    let err = owner
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
