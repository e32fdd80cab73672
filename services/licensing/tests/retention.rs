//! Rejected applications' details erased after their retention period, by several processes
//! at once (replicas on one database): each application once, and nothing else touched.

use std::time::Duration;

mod support;

use govbus_bus::{Bus, BusOptions};
use govbus_civil::calendar::WorkingCalendar;
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_licensing::store::MIGRATIONS;
use govbus_storage::time::now_micros;
use govbus_storage::{Storage, StorageSettings};

govbus_harness::on_both_backends!(rejected_details_are_erased_once_after_their_retention_period);

const DAY: i64 = 24 * 3600 * 1_000_000;

async fn rejected_details_are_erased_once_after_their_retention_period(backend: TestBackend) {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("licensing"))
        .await
        .expect("bus");
    let test_db = TestDatabase::new(backend).await.expect("database");
    let settings = StorageSettings::default();
    let open = || Storage::open(test_db.url(), "licensing", MIGRATIONS, &settings);
    let (first, second) = (open().await.expect("first"), open().await.expect("second"));
    // 10 rejected 800 days ago, one rejected yesterday, one approved and one pending long ago.
    let now = now_micros();
    let rows: Vec<(String, &str, i64)> = (0..10)
        .map(|n| (format!("old-{n}"), "rejected", now - 800 * DAY))
        .chain([
            ("recent".to_owned(), "rejected", now - DAY),
            ("approved".to_owned(), "approved", now - 800 * DAY),
            ("pending".to_owned(), "pending", now - 800 * DAY),
        ])
        .collect();
    first
        .write(async move |tx| {
            for (n, (application_ref, status, updated_at)) in rows.iter().enumerate() {
                tx.execute(
                    "INSERT INTO applications (application_ref, applicant_ref, business_name,
                         kbli_code, kelurahan_code, risk_level, nib, document, status,
                         decision_reason, submitted_at, updated_at)
                     VALUES ($1, 'c', 'Warung Bu Aminah', '56103', '35.73.02.1001', 'tinggi', $2,
                         'izin-usaha.pdf', $3, 'Lokasi tidak sesuai tata ruang', $4, $4)",
                    &[
                        application_ref.as_str().into(),
                        format!("{}", 1_000_000_000_000_i64 + n as i64)
                            .as_str()
                            .into(),
                        (*status).into(),
                        (*updated_at).into(),
                    ],
                )
                .await?;
            }
            Ok::<_, govbus_storage::DbError>(())
        })
        .await
        .expect("applications");
    let offices = [
        support::office(
            first.clone(),
            &bus,
            WorkingCalendar::shipped().expect("calendar"),
        ),
        support::office(
            second.clone(),
            &bus,
            WorkingCalendar::shipped().expect("calendar"),
        ),
    ];
    let keep = Duration::from_secs(730 * 24 * 3600);
    let mut rounds = Vec::new();
    for n in 0..6 {
        let office = offices[n % 2].clone();
        rounds.push(tokio::spawn(async move {
            office.erase_rejected_details(keep).await
        }));
    }
    let mut erased = 0;
    for round in rounds {
        erased += round.await.expect("task").expect("a round");
    }
    assert_eq!(
        erased, 10,
        "each application past its period erased once in all"
    );
    let mut reader = first.read().await.expect("reader");
    let kept: Vec<(String, String, String)> = reader
        .query_all(
            "SELECT application_ref, business_name, decision_reason FROM applications
             ORDER BY application_ref",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(kept.len(), 13);
    for (application_ref, business_name, reason) in kept {
        let past = application_ref.starts_with("old-");
        assert_eq!(business_name.is_empty(), past, "{application_ref}");
        assert_eq!(reason.is_empty(), past, "{application_ref}");
    }
    assert_eq!(
        offices[0]
            .erase_rejected_details(keep)
            .await
            .expect("a round"),
        0,
        "nothing twice"
    );
}
