//! The harness gives each test its own empty database, and dedicated servers
//! keep committed data across a restart.

#[tokio::test]
async fn concurrent_tests_get_separate_empty_databases() {
    let (a, b) = tokio::join!(
        mtp_pg_harness::fresh_database(),
        mtp_pg_harness::fresh_database()
    );
    assert_ne!(a.name(), b.name());
    let pa = sqlx::PgPool::connect(a.url()).await.unwrap();
    let pb = sqlx::PgPool::connect(b.url()).await.unwrap();
    sqlx::query("CREATE TABLE only_in_a (x INT)")
        .execute(&pa)
        .await
        .unwrap();
    let in_b: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .fetch_one(&pb)
            .await
            .unwrap();
    assert_eq!(in_b, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_server_keeps_committed_rows_across_restart() {
    let server = mtp_pg_harness::DedicatedServer::start().await.unwrap();
    let url = server.create_database().await.unwrap();
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE kept (x INT)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept VALUES (42)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    server.kill().await.unwrap();
    use sqlx::Connection;
    assert!(
        sqlx::PgConnection::connect(&url).await.is_err(),
        "nothing answers while it is down"
    );
    server.restart().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let x: i32 = sqlx::query_scalar("SELECT x FROM kept")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(x, 42);
}
