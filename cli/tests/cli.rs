//! The real `mtp` binary against a real control plane on a real PostgreSQL:
//! the tour from the README, exit codes, JSON output, errors, config sources.

use std::process::Output;
use std::time::Duration;

use mtp_e2e::TestPlane;
use mtp_e2e::agent::{self, ScriptedAgent};
use mtp_proto::v1 as pb;
use mtp_proto::v1::agent_message::Kind as AgentKind;
use mtp_proto::v1::control_message::Kind as ControlKind;
use serde_json::Value;

/// Runs `mtp` with only the given settings: the caller's own MTP_* variables
/// and config file must not leak into the test.
fn mtp(plane_url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mtp"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MTP_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path()).env("MTP_ADDR", plane_url);
    // Test planes serve TLS with a certificate of the test CA, as up.sh's
    // does; the CLI trusts it as a user would (an http:// address that some
    // tests give only warns that it is unused).
    cmd.env("MTP_CA_CERT", mtp_e2e::pki().ca_path());
    if let Some(t) = token {
        cmd.env("MTP_TOKEN", t);
    }
    cmd.args(args).output().expect("mtp runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "mtp failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `tenant create NAME` with a full quota of `cpu` CPUs.
fn tenant_create<'a>(name: &'a str, cpu: &'a str) -> Vec<&'a str> {
    vec![
        "tenant",
        "create",
        name,
        "--cpu",
        cpu,
        "--memory",
        "16Gi",
        "--storage",
        "100Gi",
        "--pods",
        "200",
        "--max-environments",
        "5",
    ]
}

fn json(o: Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_tour_works_and_json_is_parseable() {
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    let run = |args: &[&str]| mtp(&url, Some(&admin), args);

    let profiles = json(run(&["profile", "list", "-o", "json"]));
    let names: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "medium", "large"]);

    ok(run(&[
        "cluster",
        "create",
        "k3s-eu-1",
        "--label",
        "region=eu-west",
    ]));
    ok(run(&[
        "tenant",
        "create",
        "team-a",
        "--display-name",
        "Team A",
        "--owner-user",
        "alice@example.com",
        "--cpu",
        "8",
        "--memory",
        "16Gi",
        "--storage",
        "100Gi",
        "--pods",
        "200",
        "--max-environments",
        "10",
    ]));
    let created = ok(run(&[
        "env",
        "create",
        "team-a",
        "dev",
        "--cluster",
        "k3s-eu-1",
        "--profile",
        "small",
    ]));
    assert!(created.contains("team-a-dev"), "{created}");
    ok(run(&[
        "env",
        "create",
        "team-a",
        "perf",
        "--cluster",
        "k3s-eu-1",
        "--profile",
        "small",
        "--cpu",
        "2",
        "--expire-in",
        "8h",
    ]));

    let table = ok(run(&["env", "list", "--tenant", "team-a"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("TENANT") && header.contains("STATUS"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");

    let envs = json(run(&["env", "list", "-o", "json"]));
    let envs = envs["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 2);
    let perf = envs.iter().find(|e| e["name"] == "perf").unwrap();
    assert_eq!(perf["quota"]["cpu"], "2");
    assert_eq!(perf["status"], "pending");
    assert!(perf["expire_time"].is_string());

    let tenant = json(run(&["tenant", "get", "team-a", "-o", "json"]));
    assert_eq!(tenant["display_name"], "Team A");
    // The table adds the month's cost against the budget; a tenant without
    // a budget says so.
    let details = ok(run(&["tenant", "get", "team-a"]));
    let budget = details
        .lines()
        .find(|l| l.starts_with("Budget:"))
        .unwrap_or_else(|| panic!("no Budget line:\n{details}"));
    assert_eq!(
        budget.trim_start_matches("Budget:").trim(),
        "none",
        "{details}"
    );

    // Prices, a unit mistake caught, a budget, and a report for scripts.
    let price = [
        "price",
        "set",
        "--memory-gib-hour",
        "0.0042",
        "--storage-gib-month",
        "0.04",
        "--currency",
        "EUR",
    ];
    let monthly = run(&[&price[..], &["--cpu-hour", "22.6", "--from", "2026-01-01"]].concat());
    assert_eq!(monthly.status.code(), Some(2), "{}", stderr(&monthly));
    assert!(
        stderr(&monthly).contains("--allow-high"),
        "{}",
        stderr(&monthly)
    );
    ok(run(&[
        &price[..],
        &["--cpu-hour", "0.031", "--from", "2026-01-01"],
    ]
    .concat()));
    assert!(ok(run(&["price", "list"])).contains("0.031"));
    ok(run(&["budget", "set", "team-a", "--monthly", "500"]));
    let details = ok(run(&["tenant", "get", "team-a"]));
    let budget = details
        .lines()
        .find_map(|l| l.strip_prefix("Budget:"))
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        budget.starts_with("EUR 0.00 of EUR 500.00 this month"),
        "{details}"
    );
    let report = json(run(&["cost", "report", "--window", "24h", "-o", "json"]));
    assert_eq!(report["currency"], "EUR", "{report}");
    assert!(report["rows"].is_array(), "{report}");

    let token = json(run(&[
        "token",
        "create",
        "--role",
        "tenant-owner",
        "--tenant",
        "team-a",
        "--description",
        "team-a CI",
        "-o",
        "json",
    ]));
    let secret = token["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mtp_"));

    // The tenant-owner token sees its tenant and nothing else.
    ok(run(&tenant_create("team-b", "8")));
    let owner_view = json(mtp(&url, Some(&secret), &["tenant", "list", "-o", "json"]));
    assert_eq!(owner_view["tenants"].as_array().unwrap().len(), 1);
    let hidden = mtp(&url, Some(&secret), &["tenant", "get", "team-b"]);
    assert_eq!(hidden.status.code(), Some(3), "{}", stderr(&hidden));

    let audit = json(run(&["audit", "list", "--tenant", "team-a", "-o", "json"]));
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "environment.create",
            "environment.create",
            "budget.set",
            "token.create"
        ]
    );
    assert!(ok(run(&["audit", "verify"])).contains("intact"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_have_distinct_exit_codes_and_readable_errors() {
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    let run = |args: &[&str]| mtp(&url, Some(&admin), args);
    ok(run(&["cluster", "create", "c1"]));
    ok(run(&tenant_create("team-a", "1")));

    // INVALID_ARGUMENT → 2, and the message names the field, not a Status dump.
    let bad = run(&tenant_create("Not_A_Label", "1"));
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(err.starts_with("error: create tenant"), "{err}");
    assert!(err.contains(": name: "), "{err}");
    assert!(err.contains("request id:"), "{err}");
    assert!(!err.contains("Status {"), "{err}");

    // NOT_FOUND → 3.
    assert_eq!(
        run(&["env", "get", "team-a", "nope"]).status.code(),
        Some(3)
    );

    // No token → 4 with a hint; a wrong token → 4 and the secret is not echoed.
    let anon = mtp(&url, None, &["tenant", "list"]);
    assert_eq!(anon.status.code(), Some(4));
    assert!(
        stderr(&anon).contains("hint: set MTP_TOKEN"),
        "{}",
        stderr(&anon)
    );
    let forged = "mtp_0123456789abcdef_".to_owned() + &"0".repeat(64);
    let wrong = mtp(&url, Some(&forged), &["tenant", "list"]);
    assert_eq!(wrong.status.code(), Some(4));
    assert!(!stderr(&wrong).contains(&forged));

    // Quota → 5, saying which resource ran out.
    ok(run(&[
        "env",
        "create",
        "team-a",
        "a",
        "--cluster",
        "c1",
        "--profile",
        "small",
    ]));
    let over = run(&[
        "env",
        "create",
        "team-a",
        "b",
        "--cluster",
        "c1",
        "--profile",
        "small",
        "-o",
        "json",
    ]);
    assert_eq!(over.status.code(), Some(5));
    let body: Value = serde_json::from_str(stderr(&over).trim()).unwrap();
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("cpu"),
        "{body}"
    );
    assert_eq!(body["error"]["exit_code"], 5);

    // Client-side usage errors → 2 before anything is sent.
    assert_eq!(
        run(&[
            "env",
            "create",
            "team-a",
            "c",
            "--cluster",
            "c1",
            "--profile",
            "small",
            "--expire-in",
            "30"
        ])
        .status
        .code(),
        Some(2)
    );

    // Nothing listening → 7 with a hint naming the address.
    let down = mtp("http://127.0.0.1:1", Some(&admin), &["tenant", "list"]);
    assert_eq!(down.status.code(), Some(7));
    assert!(stderr(&down).contains("127.0.0.1:1"), "{}", stderr(&down));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_exits_6_after_tampering() {
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    ok(mtp(&url, Some(&admin), &tenant_create("team-a", "4")));
    ok(mtp(&url, Some(&admin), &tenant_create("team-b", "4")));

    let sql = plane.sql().await;
    let mut conn = sql.acquire().await.unwrap();
    // Superuser bypass of the append-only trigger: what an attacker with DB access does.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET target = 'tenant/x' WHERE sequence = 2")
        .execute(&mut *conn)
        .await
        .unwrap();

    let out = mtp(&url, Some(&admin), &["audit", "verify", "-o", "json"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_broken_sequence"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_come_from_the_config_file_and_flags_win() {
    let plane = TestPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        format!("{}\n", plane.admin_secret),
    )
    .unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "addr = {}\ntoken_file = token\noutput = json\n",
            plane.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // Address, token (relative to the file) and output all from the file.
    let out = mtp(
        "http://127.0.0.1:1",
        None,
        &[
            "--config",
            config,
            "--addr",
            &plane.url(),
            "profile",
            "list",
        ],
    );
    let v: Value = serde_json::from_str(&ok(out)).unwrap();
    assert!(v["profiles"].is_array());

    // Without the flag, MTP_ADDR beats the file's addr.
    let out = mtp(
        "http://127.0.0.1:1",
        None,
        &["--config", config, "profile", "list"],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "env MTP_ADDR must beat the file"
    );

    // A typo in the file is an error naming the key, not a silent default.
    std::fs::write(dir.path().join("bad"), "adress = x\n").unwrap();
    let bad = dir.path().join("bad");
    let out = mtp(
        &plane.url(),
        None,
        &["--config", bad.to_str().unwrap(), "profile", "list"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("adress"), "{}", stderr(&out));
}

/// Registers an agent with `join_token` as `node` and opens its session as
/// the applier, with a background keepalive so the session outlives slow
/// steps; returns it after the first snapshot, with that snapshot's revision.
async fn applier_agent(url: &str, join_token: &str, node: &str) -> (ScriptedAgent, i64) {
    let reg = agent::register(url, join_token, node)
        .await
        .expect("the printed join token registers an agent");
    let mut a = ScriptedAgent::connect(url, &reg, 0, true)
        .await
        .expect("session opens");
    let first = a.next_desired(Duration::from_secs(10)).await;
    assert!(matches!(first, ControlKind::Snapshot(_)), "{first:?}");
    let tx = a.outbound.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let beat = pb::AgentMessage {
                kind: Some(AgentKind::Keepalive(pb::Keepalive { time: None })),
            };
            if tx.send(beat).await.is_err() {
                return;
            }
        }
    });
    (a, agent::revision(&first))
}

/// Runs `mtp` on a blocking thread so the scripted agent can act meanwhile.
fn mtp_in_background(url: &str, token: &str, args: &[&str]) -> tokio::task::JoinHandle<Output> {
    let (url, token) = (url.to_owned(), token.to_owned());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mtp(&url, Some(&token), &args)
    })
}

/// The next desired-state message as changes: (revision, upserts, deletes).
async fn next_changes(a: &mut ScriptedAgent) -> (i64, Vec<String>, Vec<String>) {
    match a.next_desired(Duration::from_secs(10)).await {
        ControlKind::Changes(c) => (
            c.revision,
            c.upserts.iter().map(|n| n.namespace.clone()).collect(),
            c.deletes.clone(),
        ),
        other => panic!("expected changes, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_create_prints_a_join_token_that_registers_an_agent() {
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    let run = |args: &[&str]| mtp(&url, Some(&admin), args);

    // JSON: the cluster, the token and the command line to run.
    let created = json(run(&[
        "cluster",
        "create",
        "c1",
        "--join-token-ttl",
        "2h",
        "-o",
        "json",
    ]));
    assert_eq!(created["name"], "c1");
    let secret = created["join_token"]["secret"].as_str().unwrap().to_owned();
    assert!(!secret.is_empty());
    let expires = created["join_token"]["expire_time"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let ttl = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        ttl > chrono::Duration::minutes(110) && ttl <= chrono::Duration::hours(2),
        "--join-token-ttl 2h gave {ttl}"
    );
    // The printed command reads the token from a file: never a secret in argv.
    assert_eq!(
        created["agent_command"],
        format!(
            "mtp-agent --control-plane {url} --ca-cert /etc/mtp/ca.pem --join-token-file /etc/mtp/join-token --node-name <node>"
        )
    );

    // Table: the secret and the command on stdout, the one-time warning on stderr.
    let out = run(&["cluster", "create", "c2"]);
    let (text, warn) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{warn}");
    assert!(
        text.contains(&format!("mtp-agent --control-plane {url} --ca-cert /etc/mtp/ca.pem --join-token-file /etc/mtp/join-token ")),
        "{text}"
    );
    assert!(text.contains("umask 077"), "{text}");
    assert!(text.contains("--from-file=join-token="), "{text}");
    assert!(text.contains("Join token:"), "{text}");
    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("Join token:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        text.matches(printed.as_str()).count(),
        1,
        "the secret is printed once, in no command line: {text}"
    );
    assert!(
        warn.starts_with("warning: ") && warn.contains("only time"),
        "{warn}"
    );

    // --no-join-token: no token at all.
    let bare = json(run(&[
        "cluster",
        "create",
        "c3",
        "--no-join-token",
        "-o",
        "json",
    ]));
    assert!(bare.get("join_token").is_none(), "{bare}");

    // `cluster join-token` mints another, which works as well.
    let again = json(run(&[
        "cluster",
        "join-token",
        "c3",
        "--ttl",
        "10m",
        "-o",
        "json",
    ]));
    assert_eq!(again["cluster"], "c3");
    let second = again["join_token"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, secret);
    let missing = run(&["cluster", "join-token", "nope"]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));

    // The printed secret registers an agent of c1, which `agent list` shows.
    let (_agent, _) = applier_agent(&url, &secret, "node-1").await;
    let reg = agent::register(&url, &second, "node-9").await.unwrap();
    assert_eq!(reg.cluster, "c3");

    let agents = json(run(&["agent", "list", "--cluster", "c1", "-o", "json"]));
    let agents = agents["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["cluster"], "c1");
    assert_eq!(agents[0]["node_name"], "node-1");
    assert_eq!(agents[0]["applier"], true);
    assert_eq!(agents[0]["connected"], true);
    assert_eq!(agents[0]["agent_version"], "scripted");
    let all = json(run(&["agents", "ls", "-o", "json"]));
    assert_eq!(all["agents"].as_array().unwrap().len(), 2);

    let table = ok(run(&["agent", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("CLUSTER   NODE     APPLIER   CONNECTED   ACKED REVISION   LAST SEEN"),
        "{table}"
    );
    let node1 = table.lines().find(|l| l.contains("node-1")).unwrap();
    assert!(node1.starts_with("c1"), "{table}");
    assert_eq!(node1.split_whitespace().nth(2), Some("yes"), "{table}");

    // The cluster views count agents: connected/registered.
    let c1 = json(run(&["cluster", "get", "c1", "-o", "json"]));
    assert_eq!(c1["agents"]["registered"], 1);
    assert_eq!(c1["agents"]["connected"], 1);
    let list = ok(run(&["cluster", "list"]));
    assert!(
        list.lines().next().unwrap().contains("REVISION   AGENTS"),
        "{list}"
    );
    let c3 = list.lines().find(|l| l.starts_with("c3")).unwrap();
    assert!(c3.contains(" 0/1 "), "{list}");

    // Join tokens: listed without secrets, limited in uses, revoked.
    let limited = json(run(&[
        "cluster",
        "join-token",
        "create",
        "c1",
        "--max-uses",
        "1",
        "-o",
        "json",
    ]));
    assert_eq!(limited["join_token"]["max_uses"], 1);
    let limited_secret = limited["join_token"]["secret"].as_str().unwrap().to_owned();
    let limited_id = limited["join_token"]["id"].as_str().unwrap().to_owned();
    agent::register(&url, &limited_secret, "node-2")
        .await
        .unwrap();
    let refused = agent::register(&url, &limited_secret, "node-3")
        .await
        .unwrap_err();
    assert!(refused.message().contains("used up"), "{refused:?}");
    let tokens = json(run(&["cluster", "join-token", "list", "c1", "-o", "json"]));
    let tokens = tokens["join_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    let t = tokens
        .iter()
        .find(|t| t["id"] == limited_id.as_str())
        .unwrap();
    assert_eq!(
        (
            t["uses"].as_u64(),
            t["max_uses"].as_u64(),
            t["state"].as_str()
        ),
        (Some(1), Some(1), Some("used up"))
    );
    let table = ok(run(&["cluster", "join-token", "ls"]));
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        !table.contains("mtpjoin_"),
        "no secret in the list: {table}"
    );
    assert_eq!(table.lines().count(), 1 + 4, "{table}");
    ok(run(&["cluster", "join-token", "revoke", &limited_id]));
    let tokens = json(run(&["cluster", "join-token", "list", "c1", "-o", "json"]));
    let t = tokens["join_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == limited_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(t["state"], "revoked");
    let unknown = run(&["cluster", "join-token", "revoke", "0000000000000000"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    let bare = run(&["cluster", "join-token"]);
    assert_eq!(bare.status.code(), Some(2), "{}", stderr(&bare));

    // Revoking an agent: its certificate stops working.
    let node9 = json(run(&["agent", "list", "--cluster", "c3", "-o", "json"]));
    let id = node9["agents"][0]["id"].as_str().unwrap().to_owned();
    let revoked = json(run(&["agent", "revoke", &id, "-o", "json"]));
    assert_eq!(revoked["id"], id.as_str());
    assert!(revoked["revoke_time"].is_string(), "{revoked}");
    let err = ScriptedAgent::connect(&url, &reg, 0, false)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let unknown = run(&["agent", "revoke", "mtpagent_0000000000000000"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_wait_follows_the_agent_to_ready_failed_and_deleted() {
    let plane = TestPlane::start().await;
    let (url, admin) = (plane.url(), plane.admin_secret.clone());
    let run = |args: &[&str]| mtp(&url, Some(&admin), args);
    let created = json(run(&["cluster", "create", "c1", "-o", "json"]));
    ok(run(&["cluster", "create", "idle", "--no-join-token"]));
    ok(run(&tenant_create("team-a", "8")));
    let secret = created["join_token"]["secret"].as_str().unwrap();
    let (mut agent, _) = applier_agent(&url, secret, "node-1").await;

    // Ready: the CLI returns once the applier acknowledges the revision as verified.
    let create = |name: &str| {
        mtp_in_background(
            &url,
            &admin,
            &[
                "env",
                "create",
                "team-a",
                name,
                "--cluster",
                "c1",
                "--profile",
                "small",
                "--wait",
                "-o",
                "json",
            ],
        )
    };
    let cli = create("dev");
    let (revision, upserts, _) = next_changes(&mut agent).await;
    assert_eq!(upserts, ["team-a-dev"]);
    // Long enough for the CLI to see (and report) `applying`.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !cli.is_finished(),
        "--wait returned before the agent acknowledged"
    );
    agent
        .ack(
            revision,
            vec![("team-a-dev".into(), pb::NamespaceOutcome::Verified, "")],
        )
        .await;
    let out = cli.await.unwrap();
    let progress = stderr(&out);
    let env = json(out);
    assert_eq!(env["status"], "ready", "{env}");
    assert_eq!(env["applied_revision"], revision);
    assert!(env["ready_time"].is_string(), "{env}");
    assert!(
        env["time_to_ready_seconds"].as_f64().unwrap() >= 1.0,
        "{env}"
    );
    let lines: Vec<&str> = progress.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("team-a/dev: "))
            .count(),
        lines.len(),
        "{progress}"
    );
    assert!(
        lines.contains(&format!("team-a/dev: applying (revision {revision})").as_str()),
        "{progress}"
    );
    assert!(
        lines.last().unwrap().starts_with("team-a/dev: ready in "),
        "{progress}"
    );
    let details = ok(run(&["env", "get", "team-a", "dev"]));
    assert!(details.contains("Time to ready:"), "{details}");
    assert!(
        details
            .lines()
            .any(|l| l.starts_with("Applied revision:") && l.ends_with(&format!(" {revision}"))),
        "{details}"
    );

    // Failed: exit code 5 and the agent's reason on stderr.
    let cli = create("broken");
    let (revision, upserts, _) = next_changes(&mut agent).await;
    assert_eq!(upserts, ["team-a-broken"]);
    agent
        .ack(
            revision,
            vec![(
                "team-a-broken".into(),
                pb::NamespaceOutcome::Failed,
                "LimitRange rejected by admission webhook",
            )],
        )
        .await;
    let out = cli.await.unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err: Value = serde_json::from_str(stderr(&out).lines().last().unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "FAILED");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "team-a/broken failed on cluster c1: LimitRange rejected by admission webhook"
        ),
        "{message}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    // No agent: times out with exit code 1 and the last status.
    let started = std::time::Instant::now();
    let out = run(&[
        "env",
        "create",
        "team-a",
        "late",
        "--cluster",
        "idle",
        "--profile",
        "small",
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr(&out);
    assert!(err.contains("team-a/late: pending"), "{err}");
    assert!(
        err.contains(
            "error: timed out after 1s waiting for team-a/late to become ready (status: pending)"
        ),
        "{err}"
    );

    // Delete: returns once the agent confirms the namespace is gone.
    let cli = mtp_in_background(
        &url,
        &admin,
        &["env", "delete", "team-a", "dev", "--wait", "-o", "json"],
    );
    let (revision, _, deletes) = next_changes(&mut agent).await;
    assert_eq!(deletes, ["team-a-dev"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !cli.is_finished(),
        "--wait returned before the agent deleted"
    );
    agent
        .ack(
            revision,
            vec![("team-a-dev".into(), pb::NamespaceOutcome::Deleted, "")],
        )
        .await;
    let out = cli.await.unwrap();
    let progress = stderr(&out);
    let env = json(out);
    assert_eq!(env["status"], "deleted", "{env}");
    assert!(progress.contains("team-a/dev: deleting"), "{progress}");
    assert!(
        progress
            .lines()
            .last()
            .unwrap()
            .starts_with("team-a/dev: deleted in "),
        "{progress}"
    );
}
