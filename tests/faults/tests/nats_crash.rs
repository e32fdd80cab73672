//! Fault 1: nats-server is killed (SIGKILL) in the middle of a burst and started again on the
//! same port and store a second later. Commands keep succeeding meanwhile (their events wait in
//! identity's outbox); afterwards every death is stored once and has suspended its benefit once.

use std::time::Instant;

use govbus_faults::Deployment;

const PEOPLE: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_burst_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    let started = Instant::now();
    let retried = deployment
        .record_deaths(&niks, 8, |index, deployment| {
            if index as u64 == PEOPLE / 3 {
                deployment.nats.member_mut(0).kill()?;
            }
            if index as u64 == 2 * PEOPLE / 3 {
                deployment.nats.member_mut(0).restart()?;
            }
            Ok(())
        })
        .await?;
    let sent = started.elapsed();
    let caught_up = deployment.settle(&niks, 0, started).await?;
    eprintln!(
        "nats crash: {PEOPLE} deaths; nats-server killed after {} and restarted after {}; \
         {retried} calls retried; commands done {sent:?}, all suspensions applied {caught_up:?} \
         after the burst began; lost 0, duplicated 0, dead letters 0",
        PEOPLE / 3,
        2 * PEOPLE / 3
    );
    Ok(())
}
