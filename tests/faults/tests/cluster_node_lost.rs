//! Fault 4: a three-node NATS cluster with every stream replicated three times (R3) loses one
//! node (SIGKILL) in the middle of a burst, the node leading identity's stream, and gets it back
//! later. The survivors elect new leaders and the services, connected to every member, carry on;
//! afterwards every death is stored once and has suspended its benefit once, and the returning
//! node holds a current copy of every stream.

use std::time::Instant;

use govbus_faults::Deployment;

const PEOPLE: u64 = 150;
const NODES: usize = 3;
const STREAMS: &[&str] = &["GOVBUS_IDENTITY", "GOVBUS_WELFARE"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_losing_a_node_mid_burst_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut deployment = Deployment::start_clustered(NODES).await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    deployment.wait_fully_replicated(STREAMS).await?;
    let leader = deployment
        .stream_leader("GOVBUS_IDENTITY")
        .await?
        .ok_or_else(|| anyhow::anyhow!("identity's stream has no leader in the cluster"))?;

    let started = Instant::now();
    let mut killed_at = None;
    let mut back_at = None;
    let retried = deployment
        .record_deaths(&niks, 8, |index, deployment| {
            let node = deployment
                .nats
                .member_named(&leader)
                .ok_or_else(|| anyhow::anyhow!("no member named {leader}"))?;
            if index as u64 == PEOPLE / 3 {
                node.kill()?;
                killed_at = Some(started.elapsed());
            }
            if index as u64 == 2 * PEOPLE / 3 {
                node.restart()?;
                back_at = Some(started.elapsed());
            }
            Ok(())
        })
        .await?;
    let sent = started.elapsed();
    let caught_up = deployment.settle(&niks, 0, started).await?;
    let replicated = deployment.wait_fully_replicated(STREAMS).await?;
    let new_leader = deployment.stream_leader("GOVBUS_IDENTITY").await?;
    eprintln!(
        "cluster node lost: {PEOPLE} deaths on {NODES} nodes (R{NODES}); {leader}, leading \
         identity's stream, killed after {} deaths ({killed_at:?}) and back after {} \
         ({back_at:?}, healthy); identity's stream now led by {new_leader:?}; {retried} calls \
         retried; commands done {sent:?}, all suspensions applied {caught_up:?} after the burst \
         began; every replica current {replicated:?} after that; lost 0, duplicated 0, dead \
         letters 0",
        PEOPLE / 3,
        2 * PEOPLE / 3
    );
    Ok(())
}
