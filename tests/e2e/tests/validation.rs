//! Invariant 5 (docs/architecture.md): bad input is refused with INVALID_ARGUMENT naming the field,
//! and nothing is written.

use mtp_e2e::{TestPlane, count, quota};
use mtp_proto::v1 as pb;
use tonic::Code;

async fn snapshot(plane: &TestPlane) -> [i64; 4] {
    let sql = plane.sql().await;
    [
        count(&sql, "tenants").await,
        count(&sql, "environments").await,
        count(&sql, "audit_events").await,
        count(&sql, "clusters").await,
    ]
}

#[tokio::test]
async fn bad_tenants_are_refused_naming_the_field_and_nothing_is_written() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    let before = snapshot(&plane).await;
    let good = || quota("4", "8Gi", "10Gi", 50, 5);
    let cases: Vec<(&str, pb::TenantQuota, &str)> = vec![
        ("Team_A", good(), "name:"),
        ("kube-system", good(), "name:"),
        ("default", good(), "name:"),
        ("mtp-system", good(), "name:"),
        ("a-very-long-tenant-name-that-goes-on", good(), "name:"),
        ("-lead", good(), "name:"),
        ("ok", quota("-1", "8Gi", "10Gi", 50, 5), "quota.cpu:"),
        ("ok", quota("0", "8Gi", "10Gi", 50, 5), "quota.cpu:"),
        ("ok", quota("4", "1.5", "10Gi", 50, 5), "quota.memory:"),
        (
            "ok",
            quota("4", "8Gi", "99999999Ei", 50, 5),
            "quota.storage:",
        ),
        ("ok", quota("4", "8Gi", "10Gi", -5, 5), "quota.pods:"),
        (
            "ok",
            quota("4", "8Gi", "10Gi", 50, 0),
            "quota.max_environments:",
        ),
        ("ok", quota("4", "lots", "10Gi", 50, 5), "quota.memory:"),
    ];
    for (name, q, field) in cases {
        let err = admin.create_tenant(name, q).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{name}: expected {field} in {:?}",
            err.message()
        );
    }
    let err = admin
        .tenants
        .create_tenant(pb::CreateTenantRequest {
            name: "ok".into(),
            display_name: "x".repeat(300),
            quota: Some(good()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("display_name:"), "{err:?}");
    let err = admin
        .tenants
        .create_tenant(pb::CreateTenantRequest {
            name: "ok".into(),
            owners: Some(pb::Owners {
                service_accounts: vec!["no-namespace".into()],
                ..Default::default()
            }),
            quota: Some(good()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("owners.service_accounts[0]:"),
        "{err:?}"
    );
    let err = admin
        .tenants
        .create_tenant(pb::CreateTenantRequest {
            name: "ok".into(),
            quota: Some(good()),
            allowed_profiles: vec!["gigantic".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "allowed_profiles[0]: unknown profile \"gigantic\""
    );
    assert_eq!(
        snapshot(&plane).await,
        before,
        "refused requests write nothing"
    );
}

#[tokio::test]
async fn bad_environments_are_refused_naming_the_field_and_nothing_is_written() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-a", quota("4", "8Gi", "100Gi", 50, 5))
        .await
        .unwrap();
    let before = snapshot(&plane).await;

    let req = |name: &str, cluster: &str, profile: &str, over: Option<pb::Resources>| {
        pb::CreateEnvironmentRequest {
            tenant: "team-a".into(),
            name: name.into(),
            cluster: cluster.into(),
            profile: profile.into(),
            quota_override: over,
            expire_time: None,
        }
    };
    let cases = vec![
        (req("Dev!", "k3s-1", "small", None), "name:"),
        (req(&"d".repeat(33), "k3s-1", "small", None), "name:"),
        (
            req("dev", "k3s-9", "small", None),
            "cluster: unknown cluster \"k3s-9\"",
        ),
        (
            req("dev", "k3s-1", "huge", None),
            "profile: unknown profile \"huge\"",
        ),
        (
            req(
                "dev",
                "k3s-1",
                "small",
                Some(pb::Resources {
                    cpu: "3".into(),
                    ..Default::default()
                }),
            ),
            "quota_override.cpu: 3 is above the profile's maximum of 2",
        ),
        (
            req(
                "dev",
                "k3s-1",
                "small",
                Some(pb::Resources {
                    memory: "-1Gi".into(),
                    ..Default::default()
                }),
            ),
            "quota_override.memory:",
        ),
        (
            req(
                "dev",
                "k3s-1",
                "small",
                Some(pb::Resources {
                    pods: Some(0),
                    ..Default::default()
                }),
            ),
            "quota_override.pods:",
        ),
    ];
    for (r, expect) in cases {
        let err = admin
            .environments
            .create_environment(r.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{r:?}: {err:?}");
        assert!(
            err.message().starts_with(expect),
            "expected {expect:?}, got {:?}",
            err.message()
        );
    }
    let mut past = req("dev", "k3s-1", "small", None);
    past.expire_time = Some(prost_types::Timestamp {
        seconds: 1_000,
        nanos: 0,
    });
    let err = admin
        .environments
        .create_environment(past)
        .await
        .unwrap_err();
    assert!(err.message().starts_with("expire_time:"), "{err:?}");
    assert_eq!(
        snapshot(&plane).await,
        before,
        "refused requests write nothing"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_before_any_work() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    let before = snapshot(&plane).await;
    let err = admin
        .tenants
        .create_tenant(pb::CreateTenantRequest {
            name: "big".into(),
            display_name: "x".repeat(2 << 20),
            quota: Some(quota("4", "8Gi", "10Gi", 50, 5)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // Past the 1 MiB decoding limit, tonic refuses the message itself.
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    assert_eq!(snapshot(&plane).await, before);
}
