//! Fault 3: the publishing service (identity) is killed (SIGKILL) between its database commit
//! and JetStream's acknowledgement.
//!
//! - Exactly there: nats-server is frozen, so identity commits deaths and its relay sends the
//!   first events but no acknowledgement comes (the rest wait behind them in the outbox);
//!   identity is killed with every death committed and none acknowledged, then NATS carries on
//!   (storing what had reached it, acknowledged to no one) and identity restarts and sends all
//!   of them again.
//! - Anywhere around there: identity is killed while deaths are recorded 16 at a time, so
//!   commands are cut before, at or after their commit (not controlled); clients retry with the
//!   same idempotency keys until the restarted service answers.
//!
//! Afterwards every death is stored once and has suspended its benefit once.

use std::time::Instant;

use govbus_faults::Deployment;

const PEOPLE: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_between_commit_and_ack_loses_and_repeats_nothing() -> anyhow::Result<()>
{
    let mut deployment = Deployment::start().await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    let started = Instant::now();
    let retried = deployment
        .record_deaths(&niks, 16, |index, deployment| {
            if index as u64 == PEOPLE / 3 {
                deployment.identity.kill()?;
                deployment.identity.restart()?;
            }
            Ok(())
        })
        .await?;
    let caught_up = deployment.settle(&niks, 0, started).await?;
    eprintln!(
        "publisher crash: {PEOPLE} deaths, 16 in flight; identity killed and restarted after {}; \
         {retried} calls retried by clients; all suspensions applied {caught_up:?} after the \
         burst began; lost 0, duplicated 0, dead letters 0",
        PEOPLE / 3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_with_every_event_committed_and_unacknowledged_loses_and_repeats_nothing()
-> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    let (first, rest) = niks.split_at(PEOPLE as usize / 3);
    let started = Instant::now();

    // The set-up's events are all acknowledged before NATS freezes.
    while deployment.pending_outbox_rows("identity").await? > 0 {
        anyhow::ensure!(
            started.elapsed() < govbus_faults::RECOVERY_LIMIT,
            "identity's set-up events were never all acknowledged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| deployment.nats.member_mut(0).pause())?;
    let retried = deployment.record_deaths(first, 8, |_, _| Ok(())).await?;
    // Every death is committed, none of their events acknowledged.
    let unacknowledged = deployment.pending_outbox_rows("identity").await?;
    anyhow::ensure!(
        unacknowledged == first.len() as u64,
        "{unacknowledged} of {} events unacknowledged at the kill",
        first.len()
    );
    deployment.identity.kill()?;
    tokio::task::block_in_place(|| deployment.nats.member_mut(0).resume())?;
    // What the killed process had sent before it died is stored now, unacknowledged to anyone.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let reached = deployment
        .stored("GOVBUS_IDENTITY", "govbus.identity.citizen.deceased.v1")
        .await?;
    deployment.identity.restart()?;
    deployment.wait_healthy("identity").await?;
    let retried = retried + deployment.record_deaths(rest, 8, |_, _| Ok(())).await?;

    let caught_up = deployment.settle(&niks, 0, started).await?;
    eprintln!(
        "publisher crash at the ack: {PEOPLE} deaths; identity killed with {unacknowledged} \
         committed and unacknowledged events while NATS was frozen ({reached} of them sent and \
         stored), then restarted and sent all {unacknowledged} again; {retried} calls \
         retried; all suspensions applied {caught_up:?} after the burst began; lost 0, \
         duplicated 0, dead letters 0"
    );
    Ok(())
}
