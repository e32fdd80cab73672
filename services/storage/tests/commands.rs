//! Commands with idempotency keys, handlers with the inbox, and retention, on SQLite and on
//! PostgreSQL.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use govbus_harness::TestBackend;
use govbus_storage::command::{run_command, stored_response};
use govbus_storage::retention::{self, RetentionSettings};
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest, inbox};
use support::{database, database_with_one_writer, hold_writer, open};

govbus_harness::on_both_backends!(
    concurrent_requests_with_one_key_run_once_and_all_get_the_first_answer,
    requests_with_one_key_in_one_group_run_once_and_all_get_the_first_answer,
    a_key_reused_for_another_request_is_refused,
    the_inbox_claims_each_event_once,
    a_batch_claims_each_event_once_in_one_statement,
    pruning_removes_expired_rows_in_batches_and_keeps_recent_ones,
    pruning_removes_old_published_outbox_rows_and_keeps_the_rest,
);

/// A command's answer, stored under its key: a protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(string, tag = "1")]
    account: String,
    #[prost(uint32, tag = "2")]
    execution: u32,
}

#[derive(Debug, PartialEq)]
enum CommandError {
    KeyReused,
    Db(String),
}

impl From<DbError> for CommandError {
    fn from(error: DbError) -> Self {
        Self::Db(error.to_string())
    }
}

impl From<IdempotencyError> for CommandError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::KeyReused { .. } => Self::KeyReused,
            IdempotencyError::Db(error) => Self::Db(error.to_string()),
        }
    }
}

async fn open_account(
    db: &Database,
    key: &str,
    request: &'static [u8],
    executions: Arc<AtomicU32>,
) -> Result<Answer, CommandError> {
    let idempotency = IdempotentRequest::new("tests.OpenAccount", key, request);
    run_command(db, Some(idempotency), async move |tx| {
        let execution = executions.fetch_add(1, Ordering::SeqCst) + 1;
        let account = format!("account-{execution}");
        tx.execute(
            "INSERT INTO accounts (name, balance) VALUES ($1, 0)",
            &[account.as_str().into()],
        )
        .await?;
        Ok(Answer { account, execution })
    })
    .await
}

/// The answer stored under `key` for [`open_account`]'s request, read outside the writer.
async fn stored_answer(db: &Database, key: &str) -> Option<Answer> {
    let request = IdempotentRequest::new("tests.OpenAccount", key, b"open an account");
    stored_response::<Answer, CommandError>(db, Some(&request))
        .await
        .expect("stored")
}

/// Fifty requests with one key at once, split over two handles with a writer each (as two
/// replicas are): one runs, fifty get its answer, one account exists.
async fn concurrent_requests_with_one_key_run_once_and_all_get_the_first_answer(
    backend: TestBackend,
) {
    let (test_db, first) = database(backend).await;
    let second = open(&test_db).await;
    let executions = Arc::new(AtomicU32::new(0));
    let mut requests = Vec::new();
    for n in 0..50 {
        let db = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let executions = Arc::clone(&executions);
        requests.push(tokio::spawn(async move {
            open_account(&db, "key-1", b"open an account", executions).await
        }));
    }
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("task").expect("answered"));
    }
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    let mut sql = first.read().await.expect("reader");
    let (accounts,): (i64,) = sql
        .query_one("SELECT COUNT(*) FROM accounts", &[])
        .await
        .expect("count");
    assert_eq!(accounts, 1);
    // What a later retry finds before it would call anything.
    assert_eq!(
        stored_answer(&first, "key-1").await.as_ref(),
        Some(&answers[0])
    );
}

/// Ten requests with one key queued behind one job, so that they run in one group: the first
/// runs, the nine others find its response within the group, and every answer is the first
/// one's.
async fn requests_with_one_key_in_one_group_run_once_and_all_get_the_first_answer(
    backend: TestBackend,
) {
    let (_test_db, db) = database_with_one_writer(backend).await;
    let before = db.stats();
    let (release, holder) = hold_writer(&db).await;
    let executions = Arc::new(AtomicU32::new(0));
    let mut requests = Vec::new();
    for _ in 0..10 {
        let (db, executions) = (db.clone(), Arc::clone(&executions));
        requests.push(tokio::spawn(async move {
            open_account(&db, "key-group", b"open an account", executions).await
        }));
    }
    support::eventually("the requests are queued", async || {
        db.stats().submitted >= before.submitted + 11
    })
    .await;
    release.send(()).expect("release");
    holder.await.expect("holder");
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("task").expect("answered"));
    }
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    // The holding job's group, then one group for the ten.
    assert_eq!(db.stats().commits - before.commits, 2, "{:?}", db.stats());
    assert_eq!(
        stored_answer(&db, "key-group").await.as_ref(),
        Some(&answers[0])
    );
}

async fn a_key_reused_for_another_request_is_refused(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let executions = Arc::new(AtomicU32::new(0));
    open_account(&db, "key-2", b"request A", Arc::clone(&executions))
        .await
        .expect("first");
    assert_eq!(
        open_account(&db, "key-2", b"request B", Arc::clone(&executions)).await,
        Err(CommandError::KeyReused)
    );
    // The key means nothing in another scope.
    let other = IdempotentRequest::new("tests.CloseAccount", "key-2", b"request B");
    assert_eq!(
        stored_response::<Answer, CommandError>(&db, Some(&other)).await,
        Ok(None)
    );
    assert_eq!(executions.load(Ordering::SeqCst), 1);
}

async fn the_inbox_claims_each_event_once(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let claims = db
        .write(async |tx| {
            Ok::<_, DbError>([
                inbox::claim(tx, "welfare-identity", "event-1").await?,
                inbox::claim(tx, "welfare-identity", "event-1").await?,
                inbox::claim(tx, "licensing-identity", "event-1").await?,
            ])
        })
        .await
        .expect("claims");
    assert_eq!(claims, [true, false, true]);
    // A claim rolled back with its command leaves the event unprocessed.
    let rolled_back = db
        .write(async |tx| {
            inbox::claim(tx, "welfare-identity", "event-2").await?;
            Err::<(), DbError>(DbError::new(
                govbus_storage::DbErrorKind::Query,
                "testing",
                "the handler fails",
            ))
        })
        .await;
    assert!(rolled_back.is_err());
    let again = db
        .write(async |tx| inbox::claim(tx, "welfare-identity", "event-2").await)
        .await
        .expect("claim");
    assert!(again);
}

async fn a_batch_claims_each_event_once_in_one_statement(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    db.write(async |tx| inbox::claim(tx, "welfare-identity", "event-2").await)
        .await
        .expect("claim");
    // Already processed, new, repeated within the batch, and beyond one statement's chunk.
    let mut ids: Vec<String> = ["event-1", "event-2", "event-3", "event-1"]
        .map(str::to_owned)
        .to_vec();
    ids.extend((0..600).map(|n| format!("bulk-{n}")));
    let claim = |ids: Vec<String>, fail: bool| {
        let db = db.clone();
        async move {
            db.write(async move |tx| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let fresh = inbox::claim_all(tx, "welfare-identity", &refs).await?;
                if fail {
                    return Err(DbError::new(
                        govbus_storage::DbErrorKind::Query,
                        "testing",
                        "rolled back",
                    ));
                }
                Ok(fresh)
            })
            .await
        }
    };
    assert!(claim(ids.clone(), true).await.is_err());
    let fresh = claim(ids.clone(), false).await.expect("claimed");
    assert_eq!(&fresh[..4], [true, false, true, false]);
    assert!(fresh[4..].iter().all(|fresh| *fresh));
    let third = claim(ids[..5].to_vec(), false).await.expect("claimed");
    assert_eq!(third, [false; 5]);
}

/// Old rows go, recent ones stay, a batch at a time; a redelivery inside the window is still
/// recognised.
async fn pruning_removes_expired_rows_in_batches_and_keeps_recent_ones(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let day: i64 = 24 * 60 * 60 * 1_000_000;
    let now = govbus_storage::time::now_micros();
    db.write(async move |tx| {
        for n in 0..1200_i64 {
            // 1,000 rows 450 days old, 200 a day old.
            let processed_at = if n < 1000 { now - 450 * day } else { now - day };
            tx.execute(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('c', $1, $2)",
                &[format!("event-{n}").as_str().into(), processed_at.into()],
            )
            .await?;
            let created_at = if n < 1000 { now - 40 * day } else { now - day };
            tx.execute(
                "INSERT INTO idempotency_keys
                     (scope, idempotency_key, request_hash, response, created_at, completed)
                 VALUES ('s', $1, 'h', $2, $3, 1)",
                &[
                    format!("key-{n}").as_str().into(),
                    (&[1_u8] as &[u8]).into(),
                    created_at.into(),
                ],
            )
            .await?;
        }
        Ok::<(), DbError>(())
    })
    .await
    .expect("rows");
    let before = db.stats().commits;
    let settings = RetentionSettings {
        batch: 300,
        interval: Duration::from_secs(60),
        ..RetentionSettings::default()
    };
    let pruned = retention::prune(&db, &settings).await.expect("pruned");
    assert_eq!((pruned.inbox, pruned.idempotency_keys), (1000, 1000));
    // 300 at a time: four commits for each table (the last one finds less than a batch),
    // one for the outbox.
    assert_eq!(db.stats().commits - before, 9);
    let count = async |table: &'static str| {
        let mut sql = db.read().await.expect("reader");
        let statement = match table {
            "inbox" => "SELECT COUNT(*) FROM inbox",
            _ => "SELECT COUNT(*) FROM idempotency_keys",
        };
        let (count,): (i64,) = sql.query_one(statement, &[]).await.expect("count");
        count
    };
    assert_eq!(count("inbox").await, 200);
    assert_eq!(count("keys").await, 200);
    // A day-old event delivered again is still known.
    let fresh = db
        .write(async |tx| inbox::claim(tx, "c", "event-1100").await)
        .await
        .expect("claim");
    assert!(!fresh);
}

/// Published rows older than the window go; recent ones, unpublished ones and refused ones stay.
async fn pruning_removes_old_published_outbox_rows_and_keeps_the_rest(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let day: i64 = 24 * 60 * 60 * 1_000_000;
    let now = govbus_storage::time::now_micros();
    db.write(async move |tx| {
        for n in 0..30_i64 {
            // 1–10 old and published, 11 old and refused, 12–20 recent and published, 21–30 old
            // but not yet published.
            let created_at = if (11..20).contains(&n) {
                now - day
            } else {
                now - 8 * day
            };
            let failed_at: Option<i64> = (n == 10).then_some(now);
            tx.execute(
                "INSERT INTO outbox (event_id, subject, headers, payload, created_at, failed_at)
                 VALUES ($1, 'govbus.tests.x.v1', '', $2, $3, $4)",
                &[
                    format!("event-{n}").as_str().into(),
                    (&[0_u8] as &[u8]).into(),
                    created_at.into(),
                    failed_at.into(),
                ],
            )
            .await?;
        }
        tx.execute(
            "UPDATE outbox_relay SET published_position = 20 WHERE name = 'outbox'",
            &[],
        )
        .await?;
        Ok::<(), DbError>(())
    })
    .await
    .expect("rows");
    let settings = RetentionSettings {
        batch: 4,
        ..RetentionSettings::default()
    };
    let pruned = retention::prune(&db, &settings).await.expect("pruned");
    assert_eq!(pruned.outbox, 10);
    let mut sql = db.read().await.expect("reader");
    let positions: Vec<(i64,)> = sql
        .query_all("SELECT position FROM outbox ORDER BY position", &[])
        .await
        .expect("rows");
    let positions: Vec<i64> = positions.into_iter().map(|(position,)| position).collect();
    assert_eq!(positions, (11..=30).collect::<Vec<_>>());
}
