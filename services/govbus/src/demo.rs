//! `govbus demo`: events through the bus, end to end, on a real nats-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use govbus_bus::{
    Bus, BusOptions, Causality, Consumer, EventMeta, HandleError, Publisher, ServiceAdapter,
};
use govbus_harness::NatsServer;
use govbus_proto::identity::v1::{CitizenDeceased, CitizenRegistered, Sex};
use govbus_proto::welfare::v1::BenefitSuspended;

/// Kota Malang's five kecamatan, with one kelurahan each.
const KELURAHAN: [(&str, &str); 5] = [
    ("35.73.01.1001", "Blimbing"),
    ("35.73.02.1001", "Klojen"),
    ("35.73.03.1001", "Kedungkandang"),
    ("35.73.04.1001", "Sukun"),
    ("35.73.05.1001", "Lowokwaru"),
];

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Use this NATS server (JetStream enabled) instead of starting a private one.
    #[arg(long, env = "GOVBUS_NATS_URL")]
    nats_url: Option<String>,
    /// Citizens to register.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    citizens: u32,
}

#[derive(Debug, Default)]
struct Tally {
    registered: AtomicUsize,
    deaths: AtomicUsize,
    suspended: AtomicUsize,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // Keep the private server alive until the demo ends; it is removed on drop.
    let (_server, url) = match args.nats_url {
        Some(url) => (None, url),
        None => {
            let server = tokio::task::spawn_blocking(NatsServer::start)
                .await?
                .context(
                    "starting a private nats-server (run scripts/install-nats-server first)",
                )?;
            let url = server.client_url();
            println!("Started nats-server with JetStream at {url} (temporary store).");
            (Some(server), url)
        }
    };
    let bus = Bus::connect(BusOptions::new(&url).client_name("govbus-demo"))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let tally = Arc::new(Tally::default());

    let identity = ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .publishes::<CitizenDeceased>()
        .start(&bus)
        .await?;
    let welfare = start_welfare(&bus, &tally).await?;
    let monitoring = start_monitoring(&bus, &tally).await?;
    println!("Adapters running: identity (publisher), welfare (identity consumer), monitoring.\n");

    let publisher = identity.publisher().clone();
    for n in 0..args.citizens {
        let (kelurahan, kecamatan) = KELURAHAN[n as usize % KELURAHAN.len()];
        let event = CitizenRegistered {
            citizen_ref: format!("warga-{n:05}"),
            kelurahan_code: kelurahan.to_owned(),
            birth_year: 1950 + n % 60,
            sex: if n % 2 == 0 { Sex::Female } else { Sex::Male }.into(),
        };
        let receipt = publisher
            .publish_with(&event, &Causality::request(format!("demo-register-{n}")))
            .await?;
        println!(
            "identity  → {} {} ({kecamatan}) stored as {}#{}",
            govbus_bus::Event::subject(&event).unwrap_or_default(),
            <CitizenRegistered as govbus_bus::Event>::TYPE,
            receipt.stream,
            receipt.sequence
        );
    }
    let death = CitizenDeceased {
        citizen_ref: "warga-00000".to_owned(),
        date_of_death: "2024-11-28".to_owned(),
    };
    publisher
        .publish_with(&death, &Causality::request("demo-death-1"))
        .await?;
    println!("identity  → warga-00000 identity.citizen.deceased.v1");

    // A message with no CloudEvents headers: the consumer cannot read it.
    bus.jetstream()
        .publish("govbus.identity.citizen.deceased.v1", "garbage".into())
        .await?
        .await?;
    println!("(someone) → a malformed message on govbus.identity.citizen.deceased.v1");

    let expected_suspensions = 1;
    wait_for("the events to be handled", || {
        tally.registered.load(Ordering::SeqCst) >= args.citizens as usize
            && tally.suspended.load(Ordering::SeqCst) >= expected_suspensions
    })
    .await?;
    let dead_letters = bus.dead_letters();
    wait_until_dead_letters(&dead_letters, 1).await?;
    for letter in dead_letters.list(1, 10).await? {
        println!(
            "\nDead letter #{}: consumer {} gave up on {}#{} after {} delivery: {}",
            letter.sequence,
            letter.consumer,
            letter.stream,
            letter.stream_sequence,
            letter.deliveries,
            letter.reason
        );
    }

    welfare.shutdown().await;
    monitoring.shutdown().await;
    identity.shutdown().await;
    println!(
        "\nSummary: {} citizens registered, {} death, {} benefit suspended, {} dead letter.",
        tally.registered.load(Ordering::SeqCst),
        tally.deaths.load(Ordering::SeqCst),
        tally.suspended.load(Ordering::SeqCst),
        dead_letters.count().await?
    );
    Ok(())
}

async fn start_welfare(
    bus: &Bus,
    tally: &Arc<Tally>,
) -> anyhow::Result<govbus_bus::RunningAdapter> {
    // The publisher exists only once the adapter started; handlers reach it through this cell.
    let publisher: Arc<tokio::sync::OnceCell<Publisher>> = Arc::default();
    let handler_publisher = Arc::clone(&publisher);
    let handler_tally = Arc::clone(tally);
    let running = ServiceAdapter::new("welfare")
        .publishes::<BenefitSuspended>()
        .consumer(Consumer::new("welfare-identity").on(
            move |event: CitizenDeceased, meta: EventMeta| {
                let publisher = Arc::clone(&handler_publisher);
                let tally = Arc::clone(&handler_tally);
                async move {
                    tally.deaths.fetch_add(1, Ordering::SeqCst);
                    let publisher = publisher
                        .get()
                        .ok_or_else(|| HandleError::transient(std::io::Error::other("starting")))?;
                    let suspended = BenefitSuspended {
                        benefit_ref: format!("pkh-{}", event.citizen_ref),
                        citizen_ref: event.citizen_ref.clone(),
                        programme: "PKH".to_owned(),
                        reason: "recipient deceased".to_owned(),
                    };
                    publisher
                        .publish_with(&suspended, &Causality::following(&meta))
                        .await
                        .map_err(HandleError::transient)?;
                    println!(
                        "welfare   ← {} {}: PKH benefit suspended",
                        event.citizen_ref, meta.envelope.event_type
                    );
                    Ok(())
                }
            },
        ))
        .start(bus)
        .await?;
    let _ = publisher.set(running.publisher().clone());
    Ok(running)
}

async fn start_monitoring(
    bus: &Bus,
    tally: &Arc<Tally>,
) -> anyhow::Result<govbus_bus::RunningAdapter> {
    let registered = Arc::clone(tally);
    let suspended = Arc::clone(tally);
    Ok(ServiceAdapter::new("monitoring")
        .consumer(Consumer::new("monitoring-identity").on(
            move |_: CitizenRegistered, _meta: EventMeta| {
                let tally = Arc::clone(&registered);
                async move {
                    tally.registered.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandleError>(())
                }
            },
        ))
        .consumer(Consumer::new("monitoring-welfare").on(
            move |event: BenefitSuspended, meta: EventMeta| {
                let tally = Arc::clone(&suspended);
                async move {
                    tally.suspended.fetch_add(1, Ordering::SeqCst);
                    println!(
                        "monitor   ← {} {} (correlation {}, caused by {})",
                        event.benefit_ref,
                        meta.envelope.event_type,
                        meta.envelope.correlation_id,
                        meta.envelope.causation_id.as_deref().unwrap_or("-")
                    );
                    Ok::<(), HandleError>(())
                }
            },
        ))
        .start(bus)
        .await?)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..600 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

async fn wait_until_dead_letters(
    dead_letters: &govbus_bus::DeadLetters,
    count: u64,
) -> anyhow::Result<()> {
    for _ in 0..600 {
        if dead_letters.count().await? >= count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for the dead letter")
}
