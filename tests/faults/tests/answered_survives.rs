//! identity killed (SIGKILL) right after answering: every command it answered, and the event
//! of each, is there once it is started again. (A kill spares the machine's page cache; that a
//! power loss spares them too rests on the commits being synced, `synchronous = FULL`, which
//! `govbus-storage`'s tests check is in effect.)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use govbus_faults::Deployment;
use govbus_proto::identity::v1 as pb;
use prost::Message as _;

const COMMANDS: u64 = 300;
const KILL_AFTER: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_command_and_its_event_survive_a_kill() -> anyhow::Result<()> {
    let mut deployment = Deployment::start().await?;
    let client = deployment.identity_client()?;
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..COMMANDS {
        let (mut client, answered) = (client.clone(), answered.clone());
        tokio::spawn(async move {
            let request = govbus_bench::calls::registration(index)?;
            let nik = request.nik.clone();
            if let Ok(response) = client.register_citizen(request).await {
                let _ = answered.send((nik, response.into_inner().citizen_ref));
            }
            anyhow::Ok(())
        });
    }
    drop(answered);
    let mut acknowledged = Vec::new();
    while let Some(answer) = answers.recv().await {
        acknowledged.push(answer);
        if acknowledged.len() == KILL_AFTER {
            deployment.identity.kill()?;
        }
    }
    // Answers sent before the kill but read after it count too.
    let answered = acknowledged.len();
    deployment.identity.restart()?;
    deployment.wait_healthy("identity").await?;

    let mut verify = deployment.identity_client()?;
    for (nik, citizen_ref) in &acknowledged {
        let verification = verify
            .verify_citizen(pb::VerifyCitizenRequest {
                nik: nik.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(
            &verification.citizen_ref, citizen_ref,
            "an answered registration was lost"
        );
    }
    let registered = registered_in_stream(&deployment, &acknowledged).await?;
    eprintln!(
        "answered survives: {answered} of {COMMANDS} registrations answered before and around the \
         kill; all {answered} in the register after the restart, each event stored once \
         ({registered} events in the stream in all)"
    );
    Ok(())
}

/// Waits until every answered registration's event is in identity's stream; checks none is
/// there twice; returns how many registrations the stream holds.
async fn registered_in_stream(
    deployment: &Deployment,
    answered: &[(String, String)],
) -> anyhow::Result<usize> {
    let wanted: HashSet<&str> = answered
        .iter()
        .map(|(_, citizen_ref)| citizen_ref.as_str())
        .collect();
    let js = deployment.jetstream().await?;
    let started = Instant::now();
    loop {
        let stream = js.get_stream("GOVBUS_IDENTITY").await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let last = stream.cached_info().state.last_sequence;
        let mut seen = HashSet::new();
        let mut ids = HashSet::new();
        if last > 0 {
            let mut messages = consumer.messages().await?;
            while let Some(message) = messages.next().await {
                let message = message?;
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("ce-id"))
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default();
                anyhow::ensure!(ids.insert(id), "an event stored twice");
                let event = pb::CitizenRegistered::decode(message.payload.as_ref())?;
                seen.insert(event.citizen_ref);
                if message.info().map_err(anyhow::Error::msg)?.stream_sequence >= last {
                    break;
                }
            }
        }
        if wanted.iter().all(|citizen_ref| seen.contains(*citizen_ref)) {
            return Ok(seen.len());
        }
        anyhow::ensure!(
            started.elapsed() < govbus_faults::RECOVERY_LIMIT,
            "{} answered registrations have no event",
            wanted
                .iter()
                .filter(|citizen_ref| !seen.contains(**citizen_ref))
                .count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
