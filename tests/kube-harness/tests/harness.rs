//! The harness itself: a real server starts, authenticates each kind of
//! identity it hands out, authorizes with RBAC, and goes away with its process.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use mtp_kube_harness::{KubeServer, Options};

#[tokio::test]
async fn a_server_starts_with_rbac_and_real_authentication() {
    let server = KubeServer::shared();
    assert!(server.version().starts_with("v1."), "{}", server.version());
    let admin = server.admin().await;
    let names: Vec<String> = Api::<Namespace>::all(admin)
        .list(&ListParams::default())
        .await
        .expect("the admin lists namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "mtp-system"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    // RBAC, not AlwaysAllow: a user with no bindings is refused, whether
    // impersonated or authenticated by a certificate of their own.
    for client in [
        server.impersonating("nobody@example.com", &[]).await,
        server.certificate_user("nobody@example.com", None).await,
    ] {
        match Api::<Secret>::namespaced(client, "kube-system")
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
            other => panic!("an unbound user must be refused: {other:?}"),
        }
    }
    // The agent's ServiceAccount token authenticates (and is not an admin).
    let agent = server.agent().await;
    Api::<Namespace>::all(agent.clone())
        .list(&ListParams::default())
        .await
        .expect("the agent lists namespaces");
    assert!(
        Api::<Secret>::all(agent)
            .list(&ListParams::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_dedicated_server_is_stopped_and_removed_when_dropped() {
    let server = KubeServer::start(Options {
        install_bundle: false,
        ..Options::default()
    })
    .expect("a dedicated server starts");
    let dir = server.dir().to_path_buf();
    let url = server.url().to_string();
    assert!(dir.exists());
    drop(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still there",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // An apiserver that ignored TERM for 5 s is sent KILL and the directory
    // removed without waiting for it to die, so on a loaded machine its
    // socket can outlive the directory by a moment.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the apiserver still listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
