//! What generic tools and operators rely on: server reflection, the standard
//! health service, and /healthz, /readyz, /metrics on the admin port.

use mtp_e2e::{TestPlane, quota};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn reflection_lists_every_service_and_health_reports_serving() {
    let plane = TestPlane::start().await;
    let mut reflection = ServerReflectionClient::new(plane.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "mtp.v1.AuditService",
        "mtp.v1.ClusterService",
        "mtp.v1.EnvironmentService",
        "mtp.v1.ProfileService",
        "mtp.v1.TenantService",
        "mtp.v1.TokenService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut health = HealthClient::new(plane.channel().await);
    for service in ["", "mtp.v1.EnvironmentService"] {
        let status = wait_serving(&mut health, service).await;
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

async fn wait_serving(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    // The health task publishes its first status right after start-up.
    for _ in 0..100 {
        if let Ok(r) = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
        {
            let s = r.into_inner().status();
            if s == ServingStatus::Serving {
                return s;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ServingStatus::Unknown
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::iter([item])
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn admin_port_serves_liveness_readiness_and_metrics() {
    let plane = TestPlane::start().await;
    let mut admin = plane.admin().await;
    admin.create_cluster("k3s-1").await.unwrap();
    admin
        .create_tenant("team-a", quota("2", "4Gi", "10Gi", 10, 2))
        .await
        .unwrap();
    let _ = admin.create_env("team-a", "Bad", "k3s-1", "small").await;

    let addr = plane.running.admin_addr;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"mtp_grpc_requests_total{code="Ok",method="/mtp.v1.TenantService/CreateTenant"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mtp_grpc_requests_total{code="InvalidArgument",method="/mtp.v1.EnvironmentService/CreateEnvironment"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"mtp_grpc_request_duration_seconds_bucket{method="/mtp.v1.ClusterService/CreateCluster""#
    ));
    assert!(
        metrics.contains(
            r#"mtp_db_operation_duration_seconds_count{operation="create_tenant",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_fails_when_postgres_is_gone() {
    let server = mtp_e2e::mtp_pg_harness::DedicatedServer::start()
        .await
        .expect("dedicated postgres");
    let url = server.create_database().await.expect("database");
    let plane = TestPlane::start_on(url).await;
    assert_eq!(http_get(plane.running.admin_addr, "/readyz").await.0, 200);
    server.stop().await.expect("postgres stops");
    let (status, body) = http_get(plane.running.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let mut admin = plane.admin().await;
    let err = admin.create_cluster("k3s-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    server.restart().await.expect("postgres restarts");
    // The pool reconnects by itself once PostgreSQL is back.
    let mut ready = false;
    for _ in 0..100 {
        if http_get(plane.running.admin_addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again after PostgreSQL came back");
    admin.create_cluster("k3s-1").await.unwrap();
}
