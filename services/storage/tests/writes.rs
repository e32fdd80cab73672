//! The writer on SQLite files and on PostgreSQL: group commits, savepoints, reads beside it,
//! durability settings, row locks across processes, deadlocks retried.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use govbus_harness::TestBackend;
use govbus_storage::{Backend, Database, DbError, DbErrorKind};
use support::{database, database_with_one_writer, hold_writer, hold_writer_after, open};

govbus_harness::on_both_backends!(
    migrations_can_run_twice,
    commands_waiting_together_commit_together_and_a_failing_one_alone_rolls_back,
    a_command_that_swallows_a_failed_statement_is_rolled_back_with_that_error,
    reads_run_beside_an_open_write_and_see_only_commits,
    row_locks_put_concurrent_commands_of_two_processes_in_order,
);

async fn balance(db: &Database, name: &str) -> Option<i64> {
    let mut sql = db.read().await.expect("reader");
    sql.query_opt::<(i64,)>(
        "SELECT balance FROM accounts WHERE name = $1",
        &[name.into()],
    )
    .await
    .expect("query")
    .map(|(balance,)| balance)
}

#[derive(Debug, PartialEq)]
enum TestError {
    Refused(usize),
    Db(DbErrorKind),
}

impl From<DbError> for TestError {
    fn from(error: DbError) -> Self {
        Self::Db(error.kind())
    }
}

async fn migrations_can_run_twice(backend: TestBackend) {
    let (test_db, _db) = database(backend).await;
    let _again = open(&test_db).await;
}

async fn commands_waiting_together_commit_together_and_a_failing_one_alone_rolls_back(
    backend: TestBackend,
) {
    let (_test_db, db) = database_with_one_writer(backend).await;
    let before = db.stats();
    let (release, holder) = hold_writer(&db).await;
    let mut commands = Vec::new();
    for n in 0..40_usize {
        let db = db.clone();
        commands.push(tokio::spawn(async move {
            db.write(async move |tx| {
                tx.execute(
                    "INSERT INTO accounts (name, balance) VALUES ($1, $2)",
                    &[format!("account-{n}").as_str().into(), 100_i64.into()],
                )
                .await?;
                if n % 7 == 3 {
                    // Fails after writing: its insert must not survive.
                    return Err(TestError::Refused(n));
                }
                Ok(n)
            })
            .await
        }));
    }
    // Every command is queued behind the holding job before it lets go.
    support::eventually("the commands are queued", async || {
        db.stats().submitted >= before.submitted + 41
    })
    .await;
    release.send(()).expect("release");
    holder.await.expect("holder");
    for (n, command) in commands.into_iter().enumerate() {
        let answer = command.await.expect("command task");
        if n % 7 == 3 {
            assert_eq!(answer, Err(TestError::Refused(n)));
            assert_eq!(balance(&db, &format!("account-{n}")).await, None);
        } else {
            assert_eq!(answer, Ok(n));
            assert_eq!(balance(&db, &format!("account-{n}")).await, Some(100));
        }
    }
    // The holding job's group, then one group for the forty.
    assert_eq!(db.stats().commits - before.commits, 2, "{:?}", db.stats());
    // On PostgreSQL the forty ran first without savepoints, then again with them once a
    // command had failed; SQLite's savepoints cost no round trip, so it runs them throughout.
    let expected_reruns = u64::from(matches!(backend, TestBackend::Postgres));
    assert_eq!(
        db.stats().groups_run_again - before.groups_run_again,
        expected_reruns,
        "{:?}",
        db.stats()
    );
}

async fn a_command_that_swallows_a_failed_statement_is_rolled_back_with_that_error(
    backend: TestBackend,
) {
    let (_test_db, db) = database_with_one_writer(backend).await;
    support::execute(
        &db,
        "INSERT INTO accounts (name, balance) VALUES ('taken', 1)",
    )
    .await
    .expect("first insert");
    let before = db.stats();
    let (release, holder) = hold_writer(&db).await;
    let swallowing = {
        let db = db.clone();
        tokio::spawn(async move {
            db.write(async |tx| {
                tx.execute(
                    "INSERT INTO accounts (name, balance) VALUES ('written-first', 5)",
                    &[],
                )
                .await?;
                // A duplicate key; the command ignores the error and carries on.
                let _ = tx
                    .execute(
                        "INSERT INTO accounts (name, balance) VALUES ('taken', 2)",
                        &[],
                    )
                    .await;
                Ok::<(), DbError>(())
            })
            .await
        })
    };
    let neighbour = {
        let db = db.clone();
        tokio::spawn(async move {
            support::execute(
                &db,
                "INSERT INTO accounts (name, balance) VALUES ('neighbour', 7)",
            )
            .await
        })
    };
    support::eventually("both are queued", async || {
        db.stats().submitted >= before.submitted + 3
    })
    .await;
    release.send(()).expect("release");
    holder.await.expect("holder");
    let error = swallowing
        .await
        .expect("task")
        .expect_err("the failed statement fails the command");
    assert_eq!(error.kind(), DbErrorKind::Duplicate, "{error}");
    neighbour
        .await
        .expect("task")
        .expect("the neighbour commits");
    assert_eq!(balance(&db, "written-first").await, None);
    assert_eq!(balance(&db, "taken").await, Some(1));
    assert_eq!(balance(&db, "neighbour").await, Some(7));
}

async fn reads_run_beside_an_open_write_and_see_only_commits(backend: TestBackend) {
    let (_test_db, db) = database_with_one_writer(backend).await;
    let (release, writing) = hold_writer_after(
        &db,
        Some("INSERT INTO accounts (name, balance) VALUES ('pending', 1)"),
    )
    .await;
    // The write's transaction is open; reading neither waits for it nor sees its row.
    assert_eq!(balance(&db, "pending").await, None);
    release.send(()).expect("release");
    writing.await.expect("committed");
    assert_eq!(balance(&db, "pending").await, Some(1));
}

/// Two handles with a writer each (as two processes have) take money from one account at once;
/// the balance is read `FOR UPDATE`, so every withdrawal sees the one before it.
async fn row_locks_put_concurrent_commands_of_two_processes_in_order(backend: TestBackend) {
    let (test_db, first) = database(backend).await;
    let second = open(&test_db).await;
    first
        .write(async |tx| {
            tx.execute(
                "INSERT INTO accounts (name, balance) VALUES ('shared', 30)",
                &[],
            )
            .await
            .map(|_| ())
        })
        .await
        .expect("account");
    let mut withdrawals = Vec::new();
    for n in 0..50 {
        let db = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        withdrawals.push(tokio::spawn(async move {
            db.write(async |tx| {
                let (balance,): (i64,) = tx
                    .query_opt_for_update("SELECT balance FROM accounts WHERE name = 'shared'", &[])
                    .await?
                    .ok_or(TestError::Refused(0))?;
                if balance < 1 {
                    return Err(TestError::Refused(1));
                }
                tx.execute(
                    "UPDATE accounts SET balance = $1 WHERE name = 'shared'",
                    &[(balance - 1).into()],
                )
                .await?;
                Ok(())
            })
            .await
        }));
    }
    let mut done = 0;
    let mut refused = 0;
    for withdrawal in withdrawals {
        match withdrawal.await.expect("task") {
            Ok(()) => done += 1,
            Err(TestError::Refused(1)) => refused += 1,
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((done, refused), (30, 20));
    assert_eq!(balance(&first, "shared").await, Some(0));
}

/// Two processes' commands lock two rows in opposite orders: PostgreSQL breaks the deadlock by
/// failing one, whose writer runs it again; both callers get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deadlocks_are_run_again_not_answered() {
    let (test_db, first) = database(TestBackend::Postgres).await;
    assert_eq!(first.backend(), Backend::Postgres);
    let second = open(&test_db).await;
    first
        .write(async |tx| {
            tx.execute(
                "INSERT INTO accounts (name, balance) VALUES ('a', 0), ('b', 0)",
                &[],
            )
            .await
            .map(|_| ())
        })
        .await
        .expect("accounts");
    let attempts = Arc::new(AtomicU32::new(0));
    let transfer = |db: Database, from: &'static str, to: &'static str| {
        let attempts = Arc::clone(&attempts);
        tokio::spawn(async move {
            db.write(async move |tx| {
                attempts.fetch_add(1, Ordering::SeqCst);
                tx.execute(
                    "UPDATE accounts SET balance = balance - 1 WHERE name = $1",
                    &[from.into()],
                )
                .await?;
                // Both hold their first row when they ask for the second.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                tx.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE name = $1",
                    &[to.into()],
                )
                .await?;
                Ok::<(), DbError>(())
            })
            .await
        })
    };
    let one = transfer(first.clone(), "a", "b");
    let other = transfer(second.clone(), "b", "a");
    one.await.expect("task").expect("first transfer");
    other.await.expect("task").expect("second transfer");
    // One of them ran twice; on a loaded machine both may have: each backend's deadlock check
    // can find the cycle before the first one's abort has released its row.
    let attempts = attempts.load(Ordering::SeqCst);
    assert!((3..=4).contains(&attempts), "{attempts} attempts");
    assert_eq!(balance(&first, "a").await, Some(0));
    assert_eq!(balance(&first, "b").await, Some(0));
}

/// The documented durability: SQLite syncs every commit (`synchronous = FULL`) in WAL mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_synced_to_disk() {
    let (_test_db, db) = database(TestBackend::Sqlite).await;
    let (synchronous, journal): (i64, String) = db
        .write(async |tx| {
            let (synchronous,): (i64,) = tx.query_one("PRAGMA synchronous", &[]).await?;
            let (journal,): (String,) = tx.query_one("PRAGMA journal_mode", &[]).await?;
            Ok::<_, DbError>((synchronous, journal))
        })
        .await
        .expect("pragmas");
    // 2 is FULL.
    assert_eq!((synchronous, journal.as_str()), (2, "wal"));
}

/// Reading connections map the file only when asked to (identity asks, for its register).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_readers_map_the_file_only_when_asked() {
    async fn mapped(options: govbus_storage::DatabaseOptions) -> i64 {
        let test_db = govbus_harness::TestDatabase::sqlite().expect("test database");
        let db = govbus_storage::open(test_db.url(), "test", &[], options)
            .await
            .expect("opens");
        let mut reader = db.read().await.expect("a reader");
        let (size,): (i64,) = reader
            .query_one("PRAGMA mmap_size", &[])
            .await
            .expect("pragma");
        drop(reader);
        db.close().await;
        size
    }
    assert_eq!(mapped(govbus_storage::DatabaseOptions::default()).await, 0);
    let asked = govbus_storage::DatabaseOptions {
        sqlite_reader_map: Some(1 << 20),
        ..govbus_storage::DatabaseOptions::default()
    };
    assert_eq!(mapped(asked).await, 1 << 20);
}

/// On PostgreSQL the writer's connections run groups at once: a command is answered while
/// another connection's group is held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commits_a_command_while_another_connections_group_is_open() {
    let (_test_db, db) = database(TestBackend::Postgres).await;
    let (release, holder) = hold_writer_after(
        &db,
        Some("INSERT INTO accounts (name, balance) VALUES ('held', 1)"),
    )
    .await;
    support::execute(
        &db,
        "INSERT INTO accounts (name, balance) VALUES ('beside', 2)",
    )
    .await
    .expect("a command beside the held group commits");
    assert_eq!(balance(&db, "beside").await, Some(2));
    assert_eq!(
        balance(&db, "held").await,
        None,
        "the held group is still open"
    );
    release.send(()).expect("release");
    holder.await.expect("the held group commits");
    assert_eq!(balance(&db, "held").await, Some(1));
}

/// Under writes that never pause, SQLite's log is written from its start again once it passes
/// its limit, rather than growing by every commit (it once grew to 2 GB in a minute's benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_log_stays_near_its_limit_under_writes_that_never_pause() {
    const LIMIT: u64 = 1024 * 1024;
    const WRITTEN: u64 = 32 * LIMIT;
    let test_db = govbus_harness::TestDatabase::new(TestBackend::Sqlite)
        .await
        .expect("test database");
    let db = govbus_storage::open(
        test_db.url(),
        "storage-tests",
        support::ACCOUNTS,
        govbus_storage::DatabaseOptions {
            sqlite_log_limit: LIMIT,
            ..govbus_storage::DatabaseOptions::default()
        },
    )
    .await
    .expect("database opens");
    let log = format!("{}-wal", test_db.url().trim_start_matches("sqlite://"));
    let note = "n".repeat(4_000);
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let (db, note, written) = (db.clone(), note.clone(), Arc::clone(&written));
        writers.spawn(async move {
            let mut command = 0;
            while written.load(Ordering::Relaxed) < WRITTEN {
                let (name, row_note) = (format!("{writer}-{command}"), note.clone());
                db.write(async move |tx| {
                    tx.execute(
                        "INSERT INTO accounts (name, balance, note) VALUES ($1, 0, $2)",
                        &[name.as_str().into(), row_note.as_str().into()],
                    )
                    .await
                    .map(|_| ())
                })
                .await
                .expect("insert");
                written.fetch_add(note.len() as u64, Ordering::Relaxed);
                command += 1;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }
    let log_size = std::fs::metadata(&log).expect("the log").len();
    assert!(
        log_size <= 8 * LIMIT,
        "the log holds {log_size} bytes after {WRITTEN} bytes were written (limit {LIMIT})"
    );
    db.close().await;
    assert_eq!(
        std::fs::metadata(&log).map(|meta| meta.len()).unwrap_or(0),
        0,
        "closing empties the log"
    );
}
