//! Provisional deadlines counted again by several processes at once (replicas starting
//! together, on one database): each deadline is rewritten once, to the same value.

mod support;

use govbus_bus::{Bus, BusOptions};
use govbus_civil::calendar::WorkingCalendar;
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_licensing::store::MIGRATIONS;
use govbus_storage::time::{from_micros, now_micros, to_micros};
use govbus_storage::{Storage, StorageSettings};

govbus_harness::on_both_backends!(concurrent_recounts_rewrite_each_deadline_once);

const PENDING: i64 = 12;

/// A calendar that knows every year up to six years ahead (one test holiday each).
fn knowing_the_coming_years() -> &'static WorkingCalendar {
    let mut calendar = WorkingCalendar::shipped().expect("shipped").clone();
    let this_year = time::OffsetDateTime::now_utc().year();
    for year in 2025..=this_year + 6 {
        if !calendar.knows(year) {
            calendar
                .add_year(
                    year,
                    &format!("# source: test data\n{year}-02-03,libur,Uji\n"),
                )
                .expect("a year");
        }
    }
    Box::leak(Box::new(calendar))
}

async fn concurrent_recounts_rewrite_each_deadline_once(backend: TestBackend) {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("licensing"))
        .await
        .expect("bus");
    let test_db = TestDatabase::new(backend).await.expect("database");
    let settings = StorageSettings::default();
    let open = || Storage::open(test_db.url(), "licensing", MIGRATIONS, &settings);
    let (first, second) = (open().await.expect("first"), open().await.expect("second"));
    // Applications pending with a 1,000-working-day deadline counted without the coming years'
    // decrees (weekends only): provisional.
    let submitted = now_micros();
    let weekends_only = WorkingCalendar::default().deadline(from_micros(submitted), 1_000);
    first
        .write(async move |tx| {
            for n in 0..PENDING {
                tx.execute(
                    "INSERT INTO applications (application_ref, applicant_ref, business_name,
                         kbli_code, kelurahan_code, risk_level, nib, document, status, stage,
                         due_at, due_provisional, due_working_days, submitted_at, updated_at)
                     VALUES ($1, 'c', 'Usaha', '56103', '35.73.02.1001', 'tinggi', $2, 'izin',
                         'pending', 'approval', $3, 1, 1000, $4, $4)",
                    &[
                        format!("app-{n}").as_str().into(),
                        format!("{}", 1_000_000_000_000 + n).as_str().into(),
                        to_micros(weekends_only.at).into(),
                        submitted.into(),
                    ],
                )
                .await?;
            }
            Ok::<_, govbus_storage::DbError>(())
        })
        .await
        .expect("applications");

    let offices = [
        support::office(first.clone(), &bus, knowing_the_coming_years()),
        support::office(second, &bus, knowing_the_coming_years()),
    ];
    let mut recounts = Vec::new();
    for n in 0..8 {
        let office = offices[n % 2].clone();
        recounts.push(tokio::spawn(async move {
            office.recount_provisional_deadlines().await
        }));
    }
    let mut changed = 0;
    for recount in recounts {
        changed += recount.await.expect("task").expect("a recount");
    }
    assert_eq!(
        changed, PENDING as usize,
        "each deadline rewritten once in all"
    );

    let expected = knowing_the_coming_years().deadline(from_micros(submitted), 1_000);
    assert!(!expected.provisional);
    let mut sql = first.read().await.expect("reader");
    let rows: Vec<(i64, i64)> = sql
        .query_all(
            "SELECT due_at, due_provisional FROM applications ORDER BY application_ref",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len() as i64, PENDING);
    for (due_at, provisional) in rows {
        assert_eq!(due_at, to_micros(expected.at));
        assert_eq!(provisional, 0);
    }
}
