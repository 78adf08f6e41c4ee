//! An environment namespace made by the agent as shipped, on the real server,
//! and the people who use it: its owner (impersonated), its CI
//! ServiceAccount (its own token), an admin, the agent.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ServiceAccount};
use kube::api::Api;
use kube::{Client, Resource};
use mtp_agent::bundle::{self, Bundle};
use mtp_agent::kubernetes::ClusterApi;
use mtp_kube_harness::KubeServer;
use mtp_proto::v1::{NamespaceConfig, TenantOwners};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::support::config;
use crate::test_id;

pub struct Env {
    pub ns: String,
    pub tenant: String,
    /// The tenant's owner, bound to `admin` by the bundle.
    pub owner: String,
    /// The tenant's group, bound to `admin` too.
    pub group: String,
    pub config: NamespaceConfig,
    pub server: &'static KubeServer,
}

impl Env {
    /// A new environment of a new tenant whose owner is `owner`, applied by
    /// the agent and ready for pods (its `default` ServiceAccount exists and
    /// the quota controller has computed the quota's usage: until then quota
    /// admission refuses every pod).
    pub async fn create(owner: &str) -> Env {
        let server = KubeServer::shared();
        let tenant = test_id();
        let ns = format!("{tenant}-dev");
        let group = format!("{tenant}-devs");
        let mut config = config(&ns, &tenant);
        config.owners = Some(TenantOwners {
            users: vec![owner.to_string()],
            groups: vec![group.clone()],
            service_accounts: vec![],
        });
        let env = Env {
            ns,
            tenant,
            owner: owner.to_string(),
            group,
            config,
            server,
        };
        env.apply().await;
        env.wait_until_usable().await;
        env
    }

    /// Applies the environment's bundle as the agent and checks it reads back.
    pub async fn apply(&self) {
        let cluster = ClusterApi::new(self.agent().await);
        let b = Bundle::render(&self.config);
        cluster
            .apply(&b)
            .await
            .expect("the agent applies the bundle");
        assert_eq!(cluster.verify(&b).await.unwrap(), vec![], "verifies");
    }

    async fn wait_until_usable(&self) {
        let admin = self.admin().await;
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &self.ns);
        let quotas = Api::<ResourceQuota>::namespaced(admin, &self.ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let account = accounts.get_opt("default").await.unwrap();
            let quota = quotas.get_opt(bundle::QUOTA_NAME).await.unwrap();
            let counted = quota.and_then(|q| q.status).and_then(|s| s.used).is_some();
            if account.is_some() && counted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no default ServiceAccount or quota status after 60 s",
                self.ns
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The owner as the API server sees them: the user and the tenant's group.
    pub async fn owner(&self) -> Client {
        self.server.impersonating(&self.owner, &[&self.group]).await
    }

    /// A member of the tenant's group (bound through the group, not by name).
    pub async fn group_member(&self) -> Client {
        self.server
            .impersonating(&format!("member-of-{}", self.group), &[&self.group])
            .await
    }

    /// The environment's CI ServiceAccount, with a token of its own.
    pub async fn ci(&self) -> Client {
        self.server
            .service_account(&self.ns, bundle::CI_ACCOUNT)
            .await
    }

    pub async fn admin(&self) -> Client {
        self.server.admin().await
    }

    pub async fn agent(&self) -> Client {
        self.server.agent().await
    }

    /// `client` tries to raise the environment's pod quota to 1000.
    pub async fn raise_quota(&self, client: Client) -> Result<ResourceQuota, kube::Error> {
        self.api::<ResourceQuota>(client)
            .patch(
                bundle::QUOTA_NAME,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "spec": { "hard": { "pods": "1000" } } })),
            )
            .await
    }

    /// `kind`'s API in this environment's namespace for `client`.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned,
        K::DynamicType: Default,
    {
        Api::namespaced(client, &self.ns)
    }
}

/// A pod Pod Security `restricted` admits (non-root, the runtime's seccomp
/// profile), with the given containers.
pub fn restricted_pod(name: &str, containers: Vec<Value>) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": containers,
        },
    })
}

/// A container `restricted` admits (no privilege escalation, every
/// capability dropped), with the given resources.
pub fn restricted_container(name: &str, resources: Value) -> Value {
    json!({
        "name": name,
        "image": "registry.example/app:1",
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
    })
}

/// `client` tries to set Pod Security enforcement of namespace `ns` to
/// `privileged`.
pub async fn relax_pod_security(client: Client, ns: &str) -> Result<Namespace, kube::Error> {
    Api::<Namespace>::all(client)
        .patch(
            ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "privileged" } } }),
            ),
        )
        .await
}

/// Parses a JSON literal into a typed object (test fixtures).
pub fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("fixture parses")
}

/// The status of a refused request: panics (naming `what`) if it was admitted.
pub fn refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
) -> kube::core::Status {
    match result {
        Ok(admitted) => panic!("{what}: admitted, but must be refused: {admitted:?}"),
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("{what}: failed for another reason than a refusal: {other}"),
    }
}

/// Asserts that a request was refused with `code` and a message containing
/// every one of `fragments`.
pub fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
    code: u16,
    fragments: &[&str],
) {
    let status = refused(what, result);
    assert_eq!(status.code, code, "{what}: {status:?}");
    for fragment in fragments {
        assert!(
            status.message.contains(fragment),
            "{what}: expected {fragment:?} in {:?}",
            status.message
        );
    }
}
