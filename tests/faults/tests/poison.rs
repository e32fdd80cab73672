//! Fault 5: poison messages (a death event whose payload is not protobuf) planted among a burst
//! of real deaths. Each ends in the dead-letter stream; none blocks the deaths behind it.

use std::time::Instant;

use govbus_faults::Deployment;

const PEOPLE: u64 = 150;
const POISON: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_blocks_nothing() -> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let niks = deployment.people_with_benefits(PEOPLE).await?;
    let started = Instant::now();
    // Deaths in five rounds, a poison message planted after each.
    let round = niks.len().div_ceil(POISON as usize);
    for (number, deaths) in niks.chunks(round).enumerate() {
        deployment.record_deaths(deaths, 8, |_, _| Ok(())).await?;
        deployment.plant_poison(&format!("poison-{number}")).await?;
    }
    let caught_up = deployment.settle(&niks, POISON, started).await?;
    // Each service's peak memory over the run (setup and burst), as its own process.
    let rss =
        |kib: Option<u64>| kib.map_or_else(|| "?".to_owned(), |kib| format!("{} MiB", kib / 1024));
    eprintln!(
        "poison: {PEOPLE} deaths and {POISON} poison messages; all suspensions applied \
         {caught_up:?} after the burst began; {POISON} dead letters, lost 0, duplicated 0; \
         peak RSS identity {}, welfare {}",
        rss(deployment.identity.peak_rss_kib()),
        rss(deployment.welfare.peak_rss_kib()),
    );
    Ok(())
}
