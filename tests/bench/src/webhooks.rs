//! Webhook deliveries against a raw forwarder: an application's events, published through the
//! gateway, delivered to a subscriber's webhook by the gateway (the subscription's durable
//! consumer, the event as its `EventItem`, Standard Webhooks signatures, one at a time in stored
//! order, acknowledged after the receiver's 2xx), beside a raw JetStream pull consumer that posts
//! each stored message's body to the same receiver and acks it, one at a time too. Both drain
//! the same events; latency is from the publish request (the same REST publish for both) to the
//! receiver's arrival, one event in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use futures_util::StreamExt as _;
use govbus_bus::{Bus, BusOptions};
use govbus_gateway::pubsub::webhooks::{self, WebhookSettings};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::gateway::{ServedGateway, serve};
use crate::measure::{Comparison, Run};

/// The goal: the gateway delivers at half the rate of a raw forwarder (each delivery signs,
/// reads the subscription's grant and answers to its durable consumer).
pub const GOAL: f64 = 0.5;

const PUBLISHER: &str = "dinkes.simpus";
const SUBSCRIBER: &str = "dinsos-p3ap2kb.siks";
const ROOM: &str = "/r1/ID-3573/GOV/dinkes/simpus";

const POLICY: &str = r#"
[[grant]]
callers = ["dinsos-p3ap2kb.siks"]
events = ["dinkes.simpus.newBirth"]
purpose = "Add newborns to their household's welfare record"
"#;

/// How many events each run delivers.
#[derive(Debug, Clone, Copy)]
pub struct WebhookBenchSettings {
    /// Events drained for the rate.
    pub events: u64,
    /// Events sent one at a time for the latency.
    pub latency_events: u64,
}

/// What the receiver has seen: arrivals, and a wake-up for whoever waits on them.
#[derive(Debug, Default)]
struct Arrivals {
    times: Mutex<Vec<Instant>>,
    arrived: Notify,
}

impl Arrivals {
    fn count(&self) -> usize {
        self.times.lock().map(|times| times.len()).unwrap_or(0)
    }

    async fn until(&self, count: usize) -> Instant {
        loop {
            let notified = self.arrived.notified();
            if let Ok(times) = self.times.lock()
                && times.len() >= count
            {
                return times[count - 1];
            }
            notified.await;
        }
    }
}

/// A webhook receiver on a loopback port that answers 204 to every POST: its URL.
async fn receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<String> {
    let router = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(arrivals): axum::extract::State<Arc<Arrivals>>,
                 _body: Bytes| async move {
                    if let Ok(mut times) = arrivals.times.lock() {
                        times.push(Instant::now());
                    }
                    arrivals.arrived.notify_waiters();
                    http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// A JSON request to the gateway as `application`.
async fn call(
    served: &ServedGateway,
    application: &str,
    method: http::Method,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let token = served.tokens.get(application).cloned().unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", served.base))
        .header("authorization", format!("Bearer {token}"))
        .header(
            "x-govstack-client",
            format!("ID-3573/GOV/{}", application.replacen('.', "/", 1)),
        )
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{path}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn publish(served: &ServedGateway, weight: u64) -> anyhow::Result<()> {
    call(
        served,
        PUBLISHER,
        http::Method::POST,
        &format!("{ROOM}/pub/v1/newBirth"),
        &json!({"eventType": "newBirth", "event": {"weight": weight}}),
    )
    .await
    .map(drop)
}

/// Both paths: the drain rate over `settings.events`, the latency over
/// `settings.latency_events` one at a time.
pub async fn compare(
    nats_url: &str,
    dir: &std::path::Path,
    settings: WebhookBenchSettings,
) -> anyhow::Result<Comparison> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("gateway")).await?;
    let served = serve(
        dir,
        &[PUBLISHER, SUBSCRIBER],
        POLICY,
        Default::default(),
        Some(bus.clone()),
        None,
    )
    .await?;
    call(
        &served,
        PUBLISHER,
        http::Method::POST,
        &format!("{ROOM}/api/v1/eventType"),
        &json!({"eventType": "newBirth", "schema": {
            "type": "object", "required": ["weight"],
            "properties": {"weight": {"type": "number"}}, "additionalProperties": false
        }}),
    )
    .await?;

    // The gateway: a push subscription, the events stored, then its deliveries drain them.
    let gateway_arrivals = Arc::new(Arrivals::default());
    let hook = receiver(Arc::clone(&gateway_arrivals)).await?;
    call(
        &served,
        SUBSCRIBER,
        http::Method::POST,
        &format!("{ROOM}/api/v1/subs/newBirth"),
        &json!({"eventType": "newBirth", "pushUrl": hook}),
    )
    .await?;
    for weight in 0..settings.events {
        publish(&served, weight).await?;
    }
    let pubsub = served
        .pubsub
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a gateway without publish/subscribe"))?;
    let started = Instant::now();
    let stop_deliveries = served.stop.child_token();
    let deliveries = webhooks::spawn(
        pubsub,
        served.gateway.subscribers_items(),
        WebhookSettings {
            scan_interval: Duration::from_millis(10),
            ..WebhookSettings::default()
        },
        stop_deliveries.clone(),
    );
    let done = gateway_arrivals
        .until(usize::try_from(settings.events)?)
        .await;
    let drain = done - started;
    let latencies = one_at_a_time(&served, &gateway_arrivals, settings.latency_events).await?;
    let govbus = Run::new(
        "the gateway's webhook: durable consumer, signed EventItem, one at a time",
        settings.events,
        drain,
    )
    .with_latencies(latencies);

    // The gateway's deliveries stop, so that the raw forwarder has the machine to itself.
    stop_deliveries.cancel();
    deliveries.await?;

    // The raw forwarder over the same stream: each stored body posted, then acked.
    let raw_arrivals = Arc::new(Arrivals::default());
    let raw_hook = receiver(Arc::clone(&raw_arrivals)).await?;
    let baseline = raw_forward(&bus, &raw_hook, settings, &served, &raw_arrivals).await?;
    served.stop.cancel();
    Ok(Comparison::new(
        format!(
            "webhook deliveries: {} events drained, latency one at a time (events/s)",
            settings.events
        ),
        govbus,
        baseline,
        GOAL,
    ))
}

/// Publishes `count` events one at a time, each after the previous arrived: the latency of
/// each, from the publish request (through the gateway, stored by JetStream) to the receiver's
/// arrival, in microseconds.
async fn one_at_a_time(
    served: &ServedGateway,
    arrivals: &Arrivals,
    count: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    for weight in 0..count {
        let before = arrivals.count();
        // From the publish request: the delivery often arrives before the publisher has read
        // its own answer.
        let sent = Instant::now();
        publish(served, weight).await?;
        let arrived = arrivals.until(before + 1).await;
        latencies.push(u64::try_from(
            arrived.saturating_duration_since(sent).as_micros(),
        )?);
    }
    Ok(latencies)
}

/// The raw forwarder: a pull consumer on the applications' stream that posts each message's
/// body to `hook` and acks it once answered; drains every event the gateway run stored (its
/// rate), then forwards `settings.latency_events` new events one at a time (its latency).
async fn raw_forward(
    bus: &Bus,
    hook: &str,
    settings: WebhookBenchSettings,
    served: &ServedGateway,
    arrivals: &Arc<Arrivals>,
) -> anyhow::Result<Run> {
    let stream = bus.jetstream().get_stream("GOVBUS_APP").await?;
    let stored = stream.get_info().await?.state.last_sequence;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 1,
            ..Default::default()
        })
        .await?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let hook = hook.to_owned();
    let forwarder = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| anyhow::anyhow!("{error}"))?;
            let request = http::Request::post(&hook)
                .header("content-type", "application/json")
                .body(Full::new(message.payload.clone()))?;
            let response = client.request(request).await?;
            response.into_body().collect().await?;
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        anyhow::Ok(())
    });
    let started = Instant::now();
    let drained = arrivals.until(usize::try_from(stored)?).await;
    let drain = drained - started;
    let latencies = one_at_a_time(served, arrivals, settings.latency_events).await?;
    forwarder.abort();
    Ok(Run::new(
        "raw: pull consumer, POST the stored body, ack, one at a time",
        stored,
        drain,
    )
    .with_latencies(latencies))
}
