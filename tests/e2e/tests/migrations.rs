//! Migrations run at start-up, are forward-only, and work from an empty
//! database, also when several replicas start at once.

use mtp_store::{Store, StoreConfig};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let db = mtp_pg_harness::fresh_database().await;
    let store = Store::connect(&StoreConfig::new(db.url())).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let sql = sqlx::PgPool::connect(db.url()).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&sql)
            .await
            .unwrap();
    assert_eq!(applied, [1, 2, 3, 4, 5]);
    let profiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles WHERE builtin")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(profiles, 3);
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let db = mtp_pg_harness::fresh_database().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url().to_owned();
        tasks.push(tokio::spawn(async move {
            let store = Store::connect(&StoreConfig::new(url)).await.unwrap();
            store.migrate().await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused_not_reapplied() {
    let db = mtp_pg_harness::fresh_database().await;
    let store = Store::connect(&StoreConfig::new(db.url())).await.unwrap();
    store.migrate().await.unwrap();
    let sql = sqlx::PgPool::connect(db.url()).await.unwrap();
    // Simulate an edited, already-released migration: its checksum differs.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&sql)
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("previously applied but has been modified"),
        "{err}"
    );
}
