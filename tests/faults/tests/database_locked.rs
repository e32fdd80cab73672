//! Fault 6: the consumer's database is locked by another process's write transaction for longer
//! than the service waits for it (its busy timeout is 10 s) in the middle of a burst. The
//! handlers fail, the deliveries are retried after a back-off, and once the lock is gone every
//! death suspends its benefit exactly once.

use std::time::{Duration, Instant};

use govbus_faults::Deployment;

const PEOPLE: u64 = 150;
const LOCKED_FOR: Duration = Duration::from_secs(12);
const SUSPENDED: &str = "govbus.welfare.benefit.suspended.v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_delays_but_loses_nothing() -> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    let intruder = rusqlite::Connection::open(deployment.database_file("welfare"))?;
    // Another process takes the write lock and sits on it.
    intruder.execute_batch("BEGIN EXCLUSIVE")?;
    let started = Instant::now();
    deployment.record_deaths(&niks, 8, |_, _| Ok(())).await?;
    let remaining = LOCKED_FOR.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    let suspended_while_locked = deployment.stored("GOVBUS_WELFARE", SUSPENDED).await?;
    intruder.execute_batch("ROLLBACK")?;
    let released = started.elapsed();
    let caught_up = deployment.settle(&niks, 0, started).await?;
    assert_eq!(
        suspended_while_locked, 0,
        "nothing could be applied while locked"
    );
    eprintln!(
        "database locked: {PEOPLE} deaths while welfare's database was locked for {released:?}; \
         {suspended_while_locked} applied meanwhile; all applied {caught_up:?} after the burst \
         began; lost 0, duplicated 0, dead letters 0"
    );
    Ok(())
}
