//! Fault 3: the publishing service (identity) is killed (SIGKILL) while deaths are being
//! recorded, 16 at a time, so commands are cut off around their database commit and JetStream's
//! acknowledgement of their events (where exactly each one is cut is not controlled). Clients
//! retry with the same idempotency keys until the restarted service answers. Afterwards every
//! death is stored once and has suspended its benefit once.

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
