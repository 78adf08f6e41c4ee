//! Real, throwaway PostgreSQL for tests: one server per test process (or the
//! server named by `DATABASE_URL`), a fresh database per test, and dedicated
//! servers that fault tests can stop, restart and kill.
//!
//! Cleanup needs no unsafe exit hooks: each server is watched by a small shell
//! supervisor reading from a pipe held by the test process. When the process
//! exits, however it exits, the pipe closes, and the supervisor stops the
//! server and removes its directory.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use sqlx::Connection;

const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg_bin() -> PathBuf {
    std::env::var_os("MTP_PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A command for a PostgreSQL binary, run as `postgres` when we are root
/// (initdb and postgres refuse to run as root).
fn pg_command(binary: &str) -> Command {
    let path = pg_bin().join(binary);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str, log: &Path) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(20).collect();
    Err(format!(
        "{what} failed ({}): {}{}\n--- log tail ({}) ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A PostgreSQL server in a temporary directory, removed when the owner of the
/// supervisor pipe goes away.
#[derive(Debug)]
struct Instance {
    dir: PathBuf,
    port: u16,
    // Held, never written: closing it tells the supervisor to clean up.
    _supervisor_pipe: ChildStdin,
    _supervisor: Child,
}

impl Instance {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn create() -> Result<Instance, String> {
        let bin = pg_bin();
        if !bin.join("initdb").exists() {
            return Err(format!(
                "PostgreSQL server binaries not found in {} (install postgresql-15, or set MTP_PG_BIN, or set DATABASE_URL)",
                bin.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!("mtp-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if is_root() {
            let status = Command::new("chown").arg("postgres").arg(&dir).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("chown postgres {} failed", dir.display()));
            }
        }
        // Commits stay synchronous (fault tests crash the server and count on
        // committed rows); fsync is off because no test crashes the OS.
        // The supervisor outlives nothing: it waits for our pipe to close, then
        // stops the server (immediate: it is throwaway) and removes the directory.
        let script = format!(
            "read _ ; pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null) ; \
             [ -n \"$pid\" ] && kill -QUIT \"$pid\" 2>/dev/null ; \
             for _ in 1 2 3 4 5 6 7 8 9 10; do [ -f '{data}/postmaster.pid' ] || break ; sleep 0.2 ; done ; \
             rm -rf '{dir}'",
            data = dir.join("data").display(),
            dir = dir.display()
        );
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cleanup supervisor: {e}"))?;
        let pipe = supervisor.stdin.take().expect("stdin was piped");
        let instance = Instance {
            port: free_port()?,
            dir,
            _supervisor_pipe: pipe,
            _supervisor: supervisor,
        };
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(instance.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        run(initdb, "initdb", &instance.log())?;
        instance.start()?;
        Ok(instance)
    }

    fn start(&self) -> Result<(), String> {
        eprintln!(
            "mtp-pg-harness: starting throwaway PostgreSQL 15 at 127.0.0.1:{} (data dir {})",
            self.port,
            self.data().display()
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB",
            self.port,
            self.dir.display()
        );
        let mut cmd = pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null());
        run(cmd, "starting PostgreSQL", &self.log())
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        let mut cmd = pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null());
        run(cmd, "stopping PostgreSQL", &self.log())
    }
}

enum Shared {
    External(String),
    Started(Instance),
}

/// One server per test process. Only the URL and the process handles live
/// here: nothing tied to one test's tokio runtime.
static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
static START_LOCK: Mutex<()> = Mutex::new(());

fn shared_admin_url() -> String {
    let _guard = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let shared = SHARED.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(Shared::External(url)),
        _ => Instance::create().map(Shared::Started),
    });
    match shared {
        Ok(Shared::External(url)) => url.clone(),
        Ok(Shared::Started(instance)) => instance.admin_url(),
        Err(e) => panic!("mtp-pg-harness: no PostgreSQL for the tests: {e}"),
    }
}

/// Replaces the database of a connection URL, keeping credentials and options.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

async fn create_database_at(admin_url: &str) -> Result<String, String> {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("connecting to {admin_url}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("creating database {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(with_database(admin_url, &name))
}

/// A database of one test's own, on the shared server.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    url: String,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        self.url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
    }
}

/// Creates a fresh, empty database for the calling test (starting the shared
/// server on first use). Panics with a clear message if PostgreSQL is missing.
pub async fn fresh_database() -> TestDatabase {
    let admin = tokio::task::spawn_blocking(shared_admin_url)
        .await
        .expect("harness start-up panicked");
    let url = create_database_at(&admin)
        .await
        .unwrap_or_else(|e| panic!("mtp-pg-harness: {e}"));
    TestDatabase { url }
}

/// A server of its own for fault tests: stop, restart and kill it at will.
/// Dropping it stops it and removes its data.
#[derive(Debug)]
pub struct DedicatedServer {
    instance: Instance,
}

impl DedicatedServer {
    pub async fn start() -> Result<DedicatedServer, String> {
        let instance = tokio::task::spawn_blocking(Instance::create)
            .await
            .map_err(|e| e.to_string())??;
        Ok(DedicatedServer { instance })
    }

    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self) -> Result<String, String> {
        create_database_at(&self.instance.admin_url()).await
    }

    /// Clean shutdown (as `pg_ctl stop -m fast`).
    pub async fn stop(&self) -> Result<(), String> {
        self.blocking(|i| i.stop("fast")).await
    }

    /// A crash: no shutdown checkpoint, connections cut (as `-m immediate`).
    pub async fn kill(&self) -> Result<(), String> {
        self.blocking(|i| i.stop("immediate")).await
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&self) -> Result<(), String> {
        self.blocking(Instance::start).await
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&Instance) -> Result<(), String>,
    ) -> Result<(), String> {
        // pg_ctl waits synchronously. On a multi-threaded runtime, let other
        // tasks move meanwhile; on a current-thread one, a short block is fine.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| f(&self.instance))
            }
            _ => f(&self.instance),
        }
    }
}

impl Drop for DedicatedServer {
    fn drop(&mut self) {
        // Closing the pipe (dropping `instance`) triggers the supervisor.
        let _ = self.instance._supervisor_pipe.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_credentials_and_options() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres", "t_1"),
            "postgres://u:p@h:5/t_1"
        );
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "t_1"),
            "postgres://u@h:5/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5", "t_1"), "postgres://h:5/t_1");
        assert_eq!(
            with_database("postgresql://h?application_name=x", "t"),
            "postgresql://h/t?application_name=x"
        );
    }
}
