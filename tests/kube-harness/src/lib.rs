//! A real, throwaway Kubernetes control plane for tests: etcd,
//! kube-apiserver and kube-controller-manager (and a kubectl of the same
//! version) built from source (`tools/`), started on random loopback ports in a temporary directory,
//! with RBAC, the default admission plugins, TLS and client-certificate
//! authentication, and the project's `deploy/k3s` bundle installed.
//!
//! One server per test process ([`KubeServer::shared`]) or a dedicated one
//! ([`KubeServer::start`]). Cleanup works like `mtp-pg-harness`: a small shell
//! supervisor reads from a pipe the test process holds; when the process
//! exits, however it exits (a panic included), the pipe closes and the
//! supervisor stops the three processes and removes the directory.
//!
//! There is no kubelet, scheduler or CNI: pods are admitted (or refused) but
//! never run, and NetworkPolicies are stored, not enforced.

mod pki;
mod tools;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

pub use pki::CertPair;

/// The namespace and name of the agent's ServiceAccount in `deploy/k3s`.
pub const AGENT_NAMESPACE: &str = "mtp-system";
pub const AGENT_SERVICE_ACCOUNT: &str = "mtp-agent";

/// How to start a dedicated server.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--etcd-compaction-interval` of the apiserver: how soon old
    /// resourceVersions are compacted away (a watch from one gets 410 Gone).
    pub compaction_interval: Duration,
    /// Install `deploy/k3s` (namespace, agent RBAC, admission policies).
    pub install_bundle: bool,
    /// The apiserver's watch cache. Off, watches are served by etcd itself,
    /// so a resourceVersion older than the last compaction gets 410 Gone at
    /// once (with the cache, its own window decides).
    pub watch_cache: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compaction_interval: Duration::from_secs(300),
            install_bundle: true,
            watch_cache: true,
        }
    }
}

/// A running control plane. Dropping a dedicated one stops it.
pub struct KubeServer {
    dir: PathBuf,
    url: String,
    admin_kubeconfig: PathBuf,
    pki: pki::Pki,
    version: String,
    // Held, never written: closing it tells the supervisor to clean up.
    _supervisor_pipe: ChildStdin,
    _processes: Mutex<Vec<Child>>,
}

static SHARED: OnceLock<Result<KubeServer, String>> = OnceLock::new();
static START_LOCK: Mutex<()> = Mutex::new(());

impl KubeServer {
    /// The server of this test process, started on first use. Panics with the
    /// reason (and the failing component's log tail) if it cannot start: a
    /// test that cannot reach its server fails, it never passes silently.
    pub fn shared() -> &'static KubeServer {
        let _guard = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        match SHARED.get_or_init(|| KubeServer::start(Options::default())) {
            Ok(server) => server,
            Err(e) => panic!("mtp-kube-harness: the real Kubernetes API server did not start: {e}"),
        }
    }

    /// Starts a dedicated server. Blocks until it is ready (apiserver
    /// `/readyz`, the controller-manager's first ServiceAccount, the
    /// aggregated `admin` role and, if asked, the bundle's admission policy
    /// enforced). Callable from inside an async test: the waiting happens on
    /// a thread and runtime of its own.
    pub fn start(options: Options) -> Result<KubeServer, String> {
        let bin = tools::bin_dir()?;
        // Free ports are picked by binding and releasing them, so another
        // server starting at the same moment (another test process, or a
        // dedicated server beside the shared one) can take one first: the
        // component then exits at once, its log saying the address is in
        // use. Only such a start is retried, on fresh ports.
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            let bin = bin.clone();
            let options = options.clone();
            let started = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("starting a runtime: {e}"))?;
                runtime.block_on(start(bin, options))
            })
            .join()
            .map_err(|_| "the start-up thread panicked".to_string())?;
            match started {
                Ok(server) => return Ok(server),
                // Anything else (a bad flag, a missing binary) fails at once.
                Err(e) if !e.to_lowercase().contains("address already in use") => return Err(e),
                Err(e) => {
                    eprintln!(
                        "mtp-kube-harness: start attempt {attempt} of 3 lost a port to another process: {e}"
                    );
                    failures.push(e);
                }
            }
        }
        Err(failures.pop().unwrap_or_default())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA (PEM), which signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The temporary directory: logs (`etcd.log`, `kube-apiserver.log`,
    /// `kube-controller-manager.log`) and key material.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `gitVersion` the apiserver reports.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A kubeconfig file for `system:masters` (for kubectl).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A cluster-admin client (`system:masters`: bypasses RBAC, not the
    /// admission policies).
    pub async fn admin(&self) -> kube::Client {
        client(self.admin_config().await)
    }

    /// A client acting as `user` in `groups` (impersonated by the admin, so
    /// RBAC and admission see exactly that user).
    pub async fn impersonating(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.admin_config().await;
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = if groups.is_empty() {
            None
        } else {
            Some(groups.iter().map(|g| g.to_string()).collect())
        };
        client(config)
    }

    /// A client authenticated by a client certificate for `user` (in `group`).
    pub async fn certificate_user(&self, user: &str, group: Option<&str>) -> kube::Client {
        let pair = self.pki.client(user, group).expect("client certificate");
        client(config_of(&self.kubeconfig_yaml(user_with_cert(&pair))).await)
    }

    /// A client authenticated as the ServiceAccount `namespace/name` with a
    /// real token (TokenRequest, signed by the apiserver).
    pub async fn service_account(&self, namespace: &str, name: &str) -> kube::Client {
        let token = self.service_account_token(namespace, name).await;
        client(config_of(&self.kubeconfig_yaml(json!({ "token": token }))).await)
    }

    /// The ServiceAccount `namespace/name` reaching the server through `url`
    /// (a proxy in front of it on 127.0.0.1, which the serving certificate
    /// covers).
    pub async fn service_account_via(
        &self,
        namespace: &str,
        name: &str,
        url: &str,
    ) -> kube::Client {
        let token = self.service_account_token(namespace, name).await;
        client(
            config_of(&kubeconfig_yaml(
                url,
                &self.pki.ca_pem,
                json!({ "token": token }),
            ))
            .await,
        )
    }

    /// The agent as deployed: the `mtp-system/mtp-agent` ServiceAccount, with
    /// the RBAC and admission policy of `deploy/k3s`.
    pub async fn agent(&self) -> kube::Client {
        self.service_account(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)
            .await
    }

    /// Writes a kubeconfig for the ServiceAccount `namespace/name` (a token
    /// valid for a day) and returns its path, for binaries under test.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.service_account_token(namespace, name).await;
        let path = self.dir.join(format!(
            "{namespace}-{name}-{}.kubeconfig",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, self.kubeconfig_yaml(json!({ "token": token })))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// `kubectl` (built with the server, same version) against this server
    /// as the admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = kubectl();
        cmd.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        cmd
    }

    async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let api = Api::<ServiceAccount>::namespaced(self.admin().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        issued.status.expect("TokenRequest has a status").token
    }

    async fn admin_config(&self) -> kube::Config {
        config_of(&self.kubeconfig_yaml(user_with_cert(&self.pki.admin))).await
    }

    fn kubeconfig_yaml(&self, user: serde_json::Value) -> String {
        kubeconfig_yaml(&self.url, &self.pki.ca_pem, user)
    }
}

fn client(config: kube::Config) -> kube::Client {
    kube::Client::try_from(config).expect("building a kube client")
}

async fn config_of(yaml: &str) -> kube::Config {
    // kube-rs needs one crypto provider chosen when several are linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(yaml).expect("harness kubeconfig parses");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("harness kubeconfig loads")
}

fn b64(data: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(data.as_bytes())
}

fn user_with_cert(pair: &CertPair) -> serde_json::Value {
    json!({
        "client-certificate-data": b64(&pair.cert_pem),
        "client-key-data": b64(&pair.key_pem),
    })
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, user: serde_json::Value) -> String {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "mtp-harness", "cluster": {
            "server": url,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{ "name": "mtp-harness", "user": user }],
        "contexts": [{ "name": "mtp-harness", "context": { "cluster": "mtp-harness", "user": "mtp-harness" } }],
        "current-context": "mtp-harness",
    });
    serde_yaml::to_string(&doc).expect("kubeconfig serializes")
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Writes a file only its owner may read: most of what the harness writes
/// is key material or a credential.
fn write(path: &Path, contents: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(25).collect();
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// A started component: its process and its log, for error messages.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Component {
    fn spawn(
        dir: &Path,
        bin: &Path,
        name: &'static str,
        args: &[String],
        pids: &Path,
    ) -> Result<Component, String> {
        let log = dir.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin.join(name))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let mut pid_file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(pids)
            .map_err(|e| format!("opening {}: {e}", pids.display()))?;
        writeln!(pid_file, "{}", child.id()).map_err(|e| e.to_string())?;
        Ok(Component { name, child, log })
    }

    /// An error if the process has exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status})\n{}",
                self.name,
                log_tail(&self.log)
            )),
            Err(e) => Err(format!("waiting for {}: {e}", self.name)),
        }
    }
}

/// Polls `ready` every 100 ms until it answers `Ok(true)`, a component dies or
/// `limit` passes; says on stderr what it is waiting for when it takes long.
async fn wait_for<F, Fut>(
    what: &str,
    limit: Duration,
    components: &mut [&mut Component],
    mut ready: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let started = Instant::now();
    let mut said = Duration::ZERO;
    let mut last = String::new();
    loop {
        for c in components.iter_mut() {
            c.alive()?;
        }
        match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        let waited = started.elapsed();
        if waited > limit {
            let logs: Vec<String> = components.iter().map(|c| log_tail(&c.log)).collect();
            return Err(format!(
                "{what}: not ready after {limit:?} (last answer: {last})\n{}",
                logs.join("\n")
            ));
        }
        if waited - said > Duration::from_secs(10) {
            said = waited;
            eprintln!("mtp-kube-harness: still waiting for {what} ({waited:.0?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(bin: PathBuf, options: Options) -> Result<KubeServer, String> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("mtp-kube-{}", uuid::Uuid::new_v4().simple()));
    {
        use std::os::unix::fs::DirBuilderExt;
        // Owner only: the directory holds the CA's and the token signer's keys.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("etcd"))
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let pids = dir.join("pids");

    // The supervisor waits for our pipe to close, stops the components
    // (TERM, then KILL after 5 s) and removes the directory, unless
    // MTP_KUBE_KEEP is set (to read the logs of a failed run).
    let keep = std::env::var_os("MTP_KUBE_KEEP").is_some_and(|v| !v.is_empty());
    let script = format!(
        "read _ ; pids=$(cat '{pids}' 2>/dev/null) ; \
         [ -n \"$pids\" ] && kill $pids 2>/dev/null ; \
         for _ in $(seq 50); do alive= ; for p in $pids; do kill -0 $p 2>/dev/null && alive=1 ; done ; \
         [ -z \"$alive\" ] && break ; sleep 0.1 ; done ; \
         [ -n \"$pids\" ] && kill -9 $pids 2>/dev/null ; {remove}",
        pids = pids.display(),
        remove = if keep {
            "true".to_string()
        } else {
            format!("rm -rf '{}'", dir.display())
        }
    );
    // A process group of its own: Ctrl-C on `cargo test` must not kill the
    // supervisor before the test process, or nobody removes the directory.
    let mut supervisor = Command::new("sh")
        .process_group(0)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the cleanup supervisor: {e}"))?;
    let pipe = supervisor.stdin.take().expect("stdin was piped");

    let pki = pki::Pki::generate()?;
    let file = |name: &str| dir.join(name);
    write(&file("ca.crt"), &pki.ca_pem)?;
    write(&file("apiserver.crt"), &pki.serving.cert_pem)?;
    write(&file("apiserver.key"), &pki.serving.key_pem)?;
    write(&file("sa.key"), &pki.service_account_key_pem)?;
    write(&file("sa.pub"), &pki.service_account_public_pem)?;

    let etcd_client = free_port()?;
    let etcd_peer = free_port()?;
    let api_port = free_port()?;
    let url = format!("https://127.0.0.1:{api_port}");
    eprintln!(
        "mtp-kube-harness: starting etcd, kube-apiserver ({url}) and kube-controller-manager in {}",
        dir.display()
    );

    let s = |v: &str| v.to_string();
    let p = |name: &str| file(name).display().to_string();
    let mut etcd = Component::spawn(
        &dir,
        &bin,
        "etcd",
        &[
            format!("--data-dir={}", p("etcd")),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            // Throwaway data: no test crashes the machine.
            s("--unsafe-no-fsync=true"),
            s("--log-level=warn"),
        ],
        &pids,
    )?;
    wait_for(
        "etcd",
        Duration::from_secs(30),
        &mut [&mut etcd],
        || async { Ok(TcpStream::connect(("127.0.0.1", etcd_client)).is_ok()) },
    )
    .await?;

    let mut apiserver = Component::spawn(
        &dir,
        &bin,
        "kube-apiserver",
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            s("--bind-address=127.0.0.1"),
            s("--advertise-address=127.0.0.1"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            // The default is AlwaysAllow: RBAC must be asked for.
            s("--authorization-mode=RBAC"),
            s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            s("--service-cluster-ip-range=10.96.0.0/16"),
            // Without it `privileged: true` is refused by validation before
            // Pod Security admission sees it, and a test would prove nothing
            // about Pod Security. K3s allows privileged pods too.
            s("--allow-privileged=true"),
            format!(
                "--etcd-compaction-interval={}s",
                options.compaction_interval.as_secs().max(1)
            ),
            // The loopback advertise address must not be published as the
            // `kubernetes` Service's endpoint; nothing here routes to it.
            s("--endpoint-reconciler-type=none"),
            format!("--watch-cache={}", options.watch_cache),
            s("--profiling=false"),
            s("--v=1"),
        ],
        &pids,
    )?;
    let admin_kubeconfig = file("admin.kubeconfig");
    write(
        &admin_kubeconfig,
        &kubeconfig_yaml(&url, &pki.ca_pem, user_with_cert(&pki.admin)),
    )?;
    let admin_client = client(
        config_of(&kubeconfig_yaml(
            &url,
            &pki.ca_pem,
            user_with_cert(&pki.admin),
        ))
        .await,
    );
    wait_for(
        "kube-apiserver /readyz",
        Duration::from_secs(120),
        &mut [&mut etcd, &mut apiserver],
        || {
            let c = admin_client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
                match c.request_text(req).await {
                    Ok(body) => Ok(body.trim() == "ok"),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await?;
    let version = admin_client
        .apiserver_version()
        .await
        .map_err(|e| format!("GET /version: {e}"))?
        .git_version;

    let kcm_kubeconfig = file("kube-controller-manager.kubeconfig");
    write(
        &kcm_kubeconfig,
        &kubeconfig_yaml(&url, &pki.ca_pem, user_with_cert(&pki.controller_manager)),
    )?;
    let mut controller_manager = Component::spawn(
        &dir,
        &bin,
        "kube-controller-manager",
        &[
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            s("--leader-elect=false"),
            // Namespace finalization, quota status, default ServiceAccounts
            // and their tokens, cascading deletion, the aggregated
            // admin/edit/view roles and kube-root-ca.crt.
            s(
                "--controllers=serviceaccount-token-controller,serviceaccount-controller,namespace-controller,resourcequota-controller,garbage-collector-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller",
            ),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            // As K3s runs it: each controller with its own ServiceAccount
            // (system:serviceaccount:kube-system:namespace-controller, …),
            // which is what the bundle's admission policy expects.
            s("--use-service-account-credentials=true"),
            // No serving port: readiness is judged by what it does.
            s("--secure-port=0"),
            s("--v=1"),
        ],
        &pids,
    )?;
    // The serviceaccount controller creates `default` in every namespace (the
    // ServiceAccount admission plugin refuses pods without it); the
    // aggregation controller fills `admin` with the rules of the roles it
    // aggregates (it has none of its own).
    wait_for(
        "kube-controller-manager (default ServiceAccount, aggregated admin role)",
        Duration::from_secs(120),
        &mut [&mut etcd, &mut apiserver, &mut controller_manager],
        || {
            let c = admin_client.clone();
            async move {
                let sa = Api::<ServiceAccount>::namespaced(c.clone(), "default")
                    .get_opt("default")
                    .await
                    .map_err(|e| e.to_string())?;
                let admin_role = Api::<ClusterRole>::all(c)
                    .get_opt("admin")
                    .await
                    .map_err(|e| e.to_string())?;
                let aggregated = admin_role
                    .and_then(|r| r.rules)
                    .is_some_and(|rules| rules.len() > 5);
                Ok(sa.is_some() && aggregated)
            }
        },
    )
    .await?;

    let server = KubeServer {
        dir,
        url,
        admin_kubeconfig,
        pki,
        version,
        _supervisor_pipe: pipe,
        _processes: Mutex::new(vec![etcd.child, apiserver.child, controller_manager.child]),
    };
    if options.install_bundle {
        install_bundle(&server, &admin_client).await?;
    }
    eprintln!(
        "mtp-kube-harness: Kubernetes {} ready at {} in {:.1?}",
        server.version,
        server.url,
        started.elapsed()
    );
    Ok(server)
}

/// The kubectl built with the server (tools/build.sh), building it first if
/// needed: tests that drive kubectl need no kubectl installed.
pub fn kubectl_binary() -> Result<PathBuf, String> {
    Ok(tools::bin_dir()?.join("kubectl"))
}

fn kubectl() -> Command {
    Command::new(kubectl_binary().expect("the Kubernetes binaries were built"))
}

/// The repository's root (this crate lives in `tests/kube-harness`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Installs `deploy/k3s` as shipped (rendered with `kubectl kustomize`,
/// applied server-side as the admin) and waits until each of its admission
/// policies is enforced.
async fn install_bundle(server: &KubeServer, admin: &kube::Client) -> Result<(), String> {
    let bundle = repo_root().join("deploy/k3s");
    let rendered = kubectl()
        .arg("kustomize")
        .arg(&bundle)
        .output()
        .map_err(|e| format!("running kubectl kustomize: {e}"))?;
    if !rendered.status.success() {
        return Err(format!(
            "kubectl kustomize {}: {}",
            bundle.display(),
            String::from_utf8_lossy(&rendered.stderr)
        ));
    }
    let manifest = server.dir.join("deploy-k3s.yaml");
    std::fs::write(&manifest, &rendered.stdout).map_err(|e| e.to_string())?;
    let applied = server
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--field-manager=mtp-kube-harness",
            "-f",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running kubectl apply: {e}"))?;
    if !applied.status.success() {
        return Err(format!(
            "kubectl apply -f {}: {}{}",
            manifest.display(),
            String::from_utf8_lossy(&applied.stdout),
            String::from_utf8_lossy(&applied.stderr)
        ));
    }
    // Each policy takes effect a moment after it is created: probe each
    // with a request it must refuse. A dry run is admitted like a real one.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let agent = server.agent().await;
    let namespaces = Api::<Namespace>::all(admin.clone());
    let labelled: Namespace = object(json!({
        "metadata": { "name": "mtp-harness-probe", "labels": { "app.kubernetes.io/managed-by": "mtp" } }
    }));
    until_refused("mtp-protect-managed-objects", || {
        namespaces.create(&dry_run, &labelled)
    })
    .await?;
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(agent.clone(), "kube-system");
    let lease = object(json!({ "metadata": { "name": "mtp-harness-probe" }, "spec": {} }));
    until_refused("mtp-agent-lease-name", || leases.create(&dry_run, &lease)).await?;
    // The Service policy matches environment namespaces only: the agent makes
    // one for the probe and removes it afterwards.
    let environment: Namespace = object(json!({
        "metadata": { "name": "mtp-harness-probe", "labels": {
            "app.kubernetes.io/managed-by": "mtp",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        } }
    }));
    let agent_namespaces = Api::<Namespace>::all(agent);
    agent_namespaces
        .create(&PostParams::default(), &environment)
        .await
        .map_err(|e| format!("the agent creating a probe environment namespace: {e}"))?;
    let services =
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), "mtp-harness-probe");
    let service = object(json!({
        "metadata": { "name": "probe" },
        "spec": { "ports": [{ "port": 80 }], "externalIPs": ["203.0.113.1"] },
    }));
    until_refused("mtp-environment-services", || {
        services.create(&dry_run, &service)
    })
    .await?;
    agent_namespaces
        .delete("mtp-harness-probe", &Default::default())
        .await
        .map_err(|e| format!("removing the probe namespace: {e}"))?;
    Ok(())
}

fn object<K: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("harness fixture parses")
}

/// Repeats `request` until the admission policy `policy` refuses it (60 s).
async fn until_refused<T, F, Fut>(policy: &str, mut request: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let started = Instant::now();
    let mut last = String::from("admitted");
    while started.elapsed() < Duration::from_secs(60) {
        match request().await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(policy) => {
                return Ok(());
            }
            Err(e) => last = e.to_string(),
            Ok(_) => last = "admitted".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the admission policy {policy} was not enforced 60 s after it was installed (last answer: {last})"
    ))
}
