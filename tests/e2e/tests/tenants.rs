//! Tenant life cycle: deletes with environments are refused unless cascaded,
//! cascades are recorded per environment, and names derive valid namespaces.

use mtp_e2e::{TestPlane, quota};
use mtp_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn deleting_a_tenant_with_environments_needs_cascade_and_is_recorded() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-a", quota("8", "16Gi", "100Gi", 100, 5))
        .await
        .unwrap();
    admin
        .create_env("team-a", "dev", "k3s-1", "small")
        .await
        .unwrap();
    admin
        .create_env("team-a", "qa", "k3s-1", "small")
        .await
        .unwrap();
    let owner_secret = admin.mint(pb::TokenRole::TenantOwner, "team-a").await;

    let err = admin
        .tenants
        .delete_tenant(pb::DeleteTenantRequest {
            name: "team-a".into(),
            cascade: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("2 environment(s) (dev, qa)"),
        "{}",
        err.message()
    );
    admin
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap();

    let deleted = admin
        .tenants
        .delete_tenant(pb::DeleteTenantRequest {
            name: "team-a".into(),
            cascade: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_environments, ["dev", "qa"]);
    let err = admin
        .tenants
        .get_tenant(pb::GetTenantRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The environments are marked for deletion (their namespaces must be
    // removed by the agent), each with its own audit event.
    let sql = plane.sql().await;
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM environments ORDER BY name")
        .fetch_all(&sql)
        .await
        .unwrap();
    assert_eq!(statuses, ["deleting", "deleting"]);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events ORDER BY sequence DESC LIMIT 3")
            .fetch_all(&sql)
            .await
            .unwrap();
    assert_eq!(
        actions,
        ["tenant.delete", "environment.delete", "environment.delete"]
    );
    // The tenant's tokens died with it.
    let mut owner = plane.clients(Some(&owner_secret)).await;
    assert_eq!(
        owner
            .tenants
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Cluster revision moved with every change to what it should run.
    let cluster = admin
        .clusters
        .get_cluster(pb::GetClusterRequest {
            name: "k3s-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.revision, 4, "2 creates + 2 deletes");
}

#[tokio::test]
async fn namespaces_are_derived_unique_and_valid() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("a-b", quota("8", "16Gi", "100Gi", 100, 5))
        .await
        .unwrap();
    admin
        .create_tenant("a", quota("8", "16Gi", "100Gi", 100, 5))
        .await
        .unwrap();
    let first = admin
        .create_env("a-b", "c", "k3s-1", "small")
        .await
        .unwrap();
    let second = admin
        .create_env("a", "b-c", "k3s-1", "small")
        .await
        .unwrap();
    assert_eq!(first.namespace, "a-b-c");
    assert_ne!(second.namespace, first.namespace);
    assert!(second.namespace.starts_with("a-b-c-") && second.namespace.len() <= 63);

    let long_tenant = "t".repeat(30);
    admin
        .create_tenant(&long_tenant, quota("8", "16Gi", "100Gi", 100, 5))
        .await
        .unwrap();
    let env = admin
        .create_env(&long_tenant, &"e".repeat(32), "k3s-1", "small")
        .await
        .unwrap();
    assert_eq!(env.namespace.len(), 63);
    assert_eq!(env.status, pb::EnvironmentStatus::Pending as i32);
    assert_eq!(env.quota.unwrap().cpu, "1");
}

#[tokio::test]
async fn profiles_bound_overrides_and_tenants_can_restrict_them() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    let names: Vec<String> = admin
        .profiles
        .list_profiles(pb::ListProfilesRequest {})
        .await
        .unwrap()
        .into_inner()
        .profiles
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["small", "medium", "large"]);
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .tenants
        .create_tenant(pb::CreateTenantRequest {
            name: "team-a".into(),
            quota: Some(quota("32", "64Gi", "1Ti", 500, 10)),
            allowed_profiles: vec!["small".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = admin
        .create_env("team-a", "dev", "k3s-1", "medium")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("profile: tenant \"team-a\" may only use profiles small"),
        "{}",
        err.message()
    );
    let env = admin
        .environments
        .create_environment(pb::CreateEnvironmentRequest {
            tenant: "team-a".into(),
            name: "dev".into(),
            cluster: "k3s-1".into(),
            profile: "small".into(),
            quota_override: Some(pb::Resources {
                cpu: "1500m".into(),
                memory: "3Gi".into(),
                ..Default::default()
            }),
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    let q = env.quota.unwrap();
    assert_eq!(
        (q.cpu.as_str(), q.memory.as_str(), q.storage.as_str()),
        ("1500m", "3Gi", "10Gi")
    );
}
