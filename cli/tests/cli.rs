//! The real `mtp` binary against a real control plane on a real PostgreSQL:
//! the tour from the README, exit codes, JSON output, errors, config sources.

use std::process::Output;

use mtp_e2e::TestPlane;
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
