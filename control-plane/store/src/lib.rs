//! Persistence for the control plane. `Store` owns every SQL statement.
//!
//! What is durable and why: PostgreSQL is the only state of the control plane
//! (replicas are stateless). Desired state (tenants, environments, clusters and
//! their revisions), credentials (token hashes only) and the audit chain live
//! here. Every mutation runs in one transaction together with its audit event
//! and, where it changes what a cluster should run, the cluster's revision bump,
//! so a failed call leaves nothing behind.

mod agents;
mod appliers;
mod audit;
mod clusters;
mod cost;
mod environments;
mod error;
mod identities;
mod profiles;
mod revisions;
mod tenants;
mod tokens;
mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

pub use agents::AckOutcome;
pub use appliers::{ApplierDecision, SessionStanding};
pub use audit::{AuditFilter, AuditReport};
pub use cost::{
    CostGrouping, NodeCell, ReportingNode, Rollup, StoredBudget, StoredPrice, UsageCell, UsageQuery,
};
pub use environments::EnvironmentFilter;
pub use error::{Error, Result};
pub use revisions::{AgentNotice, RevisionNotice, RevisionNotices};
pub use usage::{EnvironmentUsage, UsageRecord};

/// Who is changing state, for the audit event written with the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeContext {
    pub actor: String,
    pub request_id: String,
}

impl ChangeContext {
    pub fn system(component: &str) -> Self {
        ChangeContext {
            actor: format!("system:{component}"),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Receives the latency of each store operation (for `/metrics`).
pub type OperationObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    observer: Option<OperationObserver>,
    /// Days whose raw usage partitions this process made or saw exist, so
    /// storing a batch does not take the partition lock every time.
    usage_partitions: Arc<std::sync::Mutex<std::collections::BTreeSet<chrono::NaiveDate>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects without touching the schema; call [`Store::migrate`] next.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let options: PgConnectOptions = config.url.parse().map_err(Error::Database)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.application_name("mtp-control-plane"))
            .await?;
        Ok(Store {
            pool,
            observer: None,
            usage_partitions: Default::default(),
        })
    }

    pub fn with_observer(mut self, observer: OperationObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Applies pending migrations (forward-only) and writes the built-in profiles.
    /// Safe to run from several replicas at once: sqlx takes an advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        self.upsert_builtin_profiles().await
    }

    /// Whether PostgreSQL answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        self.timed("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Closes every connection, waiting for the ones in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn timed<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let out = fut.await;
        if let Some(observer) = &self.observer {
            observer(op, start.elapsed(), out.is_ok());
        }
        out
    }
}

/// Quantities are bounded far below `i64::MAX` by validation; the casts are exact.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
