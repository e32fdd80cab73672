//! Fault 2: the consuming service (welfare) is killed (SIGKILL) in the middle of a burst of
//! deaths recorded at identity, stays down while the burst goes on, and is started again.
//! Afterwards every death has suspended its benefit exactly once: nothing lost, nothing applied
//! twice, no dead letters.

use std::time::Instant;

use govbus_faults::Deployment;
use govbus_proto::identity::v1::RecordDeathRequest;

const PEOPLE: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_burst_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let mut identity = deployment.identity_client()?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;

    // The burst: welfare is killed a third of the way in and started again at two thirds.
    let started = Instant::now();
    let mut killed_at = None;
    for (index, nik) in niks.iter().enumerate() {
        if index as u64 == PEOPLE / 3 {
            deployment.welfare.kill()?;
            killed_at = Some(started.elapsed());
        }
        if index as u64 == 2 * PEOPLE / 3 {
            deployment.welfare.restart()?;
        }
        identity
            .record_death(RecordDeathRequest {
                idempotency_key: format!("death-{index}"),
                nik: nik.clone(),
                date_of_death: "2025-01-02".to_owned(),
            })
            .await?;
    }
    let back_after = deployment.wait_healthy("welfare").await?;

    // Every death suspends its benefit; deliveries the dead process held come back after the
    // consumer's ack wait.
    let caught_up = deployment.settle(&niks, 0, started).await?;
    eprintln!(
        "consumer crash: {PEOPLE} deaths; welfare killed at {killed_at:?}, restarted after the \
         next {} deaths, healthy {back_after:?} after the burst; all {PEOPLE} suspensions \
         applied {caught_up:?} after the burst began; lost 0, duplicated 0, dead letters 0",
        PEOPLE / 3
    );
    Ok(())
}
