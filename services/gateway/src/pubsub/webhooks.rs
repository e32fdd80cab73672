//! Push subscriptions' deliveries: each event posted to the subscriber's webhook as the Standard
//! Webhooks specification describes (`webhook-id`, `webhook-timestamp`, `webhook-signature`:
//! `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the secret; during a rotation
//! one signature per secret), one at a time in the order stored, so in order per aggregate.
//!
//! A delivery the webhook does not answer with a 2xx is tried again after a back-off that
//! doubles from [`WebhookSettings::first_retry`]; after [`WebhookSettings::attempts`] it is
//! dead-lettered with the answer it got, and the next event goes. An operator's replay of the
//! dead letter (console or `govbus`) delivers it again to this webhook only.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use govbus_bus::dead_letter::Failure;
use govbus_kit::outbound::{HttpTarget, HttpTargetSettings};
use http::HeaderValue;
use http::header::HeaderName;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PubSub;
use super::items::Items;
use super::subscriptions::{Subscription, is_replay_for_another};

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    /// Deliveries of one event before it is dead-lettered.
    pub attempts: u64,
    /// The wait before the second attempt; it doubles with each attempt after.
    pub first_retry: Duration,
    /// The longest wait between attempts.
    pub longest_retry: Duration,
    /// The longest one attempt may take, answer included.
    pub timeout: Duration,
    /// How often new and removed push subscriptions are looked for.
    pub scan_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            attempts: 10,
            first_retry: Duration::from_secs(2),
            longest_retry: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(10),
            scan_interval: Duration::from_secs(1),
        }
    }
}

/// The component name dead letters of webhook deliveries are filed under.
const DEAD_LETTER_SERVICE: &str = "gateway";

/// Delivers every push subscription's events until `stop`: one task per subscription, started
/// when it appears and ended when it is removed.
pub fn spawn(
    pubsub: PubSub,
    items: Items,
    settings: WebhookSettings,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            match pubsub.push_subscriptions().await {
                Ok(subscriptions) => {
                    running.retain(|_, task| !task.is_finished());
                    for subscription in subscriptions {
                        if running.contains_key(&subscription.id) {
                            continue;
                        }
                        let task = tokio::spawn(deliver(
                            pubsub.clone(),
                            items.clone(),
                            settings,
                            subscription.id.clone(),
                            stop.clone(),
                        ));
                        running.insert(subscription.id, task);
                    }
                }
                Err(error) => {
                    tracing::error!(message = "Cannot read the push subscriptions.", %error);
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(settings.scan_interval) => {}
            }
        }
        for (_, task) in running {
            let _ = task.await;
        }
    })
}

/// The signatures of `body` sent as `id` at `timestamp`, one per secret (`v1,<base64>`, space
/// separated).
pub fn signatures(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .ok()?;
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
            let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
            signed.extend_from_slice(id.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(timestamp.to_string().as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(body);
            let tag = ring::hmac::sign(&key, &signed);
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Delivers subscription `id`'s events until it is removed or `stop`.
async fn deliver(
    pubsub: PubSub,
    items: Items,
    settings: WebhookSettings,
    id: String,
    stop: CancellationToken,
) {
    // A subscription's webhook does not change (a new one is a new subscription): connected
    // once, again only after the consumer failed.
    let mut connected: Option<(PullConsumer, HttpTarget)> = None;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some((pull, target)) = connected.as_ref() else {
            match pubsub.subscription_by_id(&id).await {
                Ok(Some(subscription)) => match connect(&pubsub, &subscription, settings).await {
                    Ok(both) => connected = Some(both),
                    Err(problem) => {
                        tracing::warn!(message = "Cannot deliver to a webhook.", subscription = %id, %problem);
                        pause(&stop, settings.scan_interval).await;
                    }
                },
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(message = "Cannot read a push subscription.", %error);
                    pause(&stop, settings.scan_interval).await;
                }
            }
            continue;
        };
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = next_message(pull) => next,
        };
        let message = match next {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(problem) => {
                // An unsubscribed subscription's consumer is gone: the next read says so.
                tracing::warn!(message = "Cannot fetch an event for a webhook.", subscription = %id, %problem);
                connected = None;
                pause(&stop, settings.scan_interval).await;
                continue;
            }
        };
        // Read as the event goes: a secret rotated meanwhile signs it.
        let subscription = match pubsub.subscription_by_id(&id).await {
            Ok(Some(subscription)) => subscription,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(message = "Cannot read a push subscription.", %error);
                let _ = message
                    .ack_with(AckKind::Nak(Some(settings.scan_interval)))
                    .await;
                continue;
            }
        };
        deliver_one(&pubsub, &items, &settings, &subscription, target, message).await;
    }
}

async fn connect(
    pubsub: &PubSub,
    subscription: &Subscription,
    settings: WebhookSettings,
) -> Result<(PullConsumer, HttpTarget), String> {
    let target = HttpTarget::new(HttpTargetSettings {
        name: "webhook",
        url: subscription.push_url.clone().unwrap_or_default(),
        bearer_token: None,
        extra_roots_pem: None,
        timeout: settings.timeout,
    })
    .map_err(|error| error.to_string())?;
    let stream = pubsub
        .stream_named(&subscription.stream)
        .await
        .map_err(|error| error.to_string())?;
    let pull: PullConsumer = stream
        .get_consumer(&subscription.consumer)
        .await
        .map_err(|error| error.to_string())?;
    Ok((pull, target))
}

async fn next_message(
    pull: &PullConsumer,
) -> Result<Option<async_nats::jetstream::Message>, String> {
    let mut batch = pull
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|error| error.to_string())?;
    match batch.next().await {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(error)) => Err(error.to_string()),
        None => Ok(None),
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// One attempt at one event: acknowledged when delivered (or not for this subscriber),
/// redelivered after the back-off when not, dead-lettered when the attempts are spent.
async fn deliver_one(
    pubsub: &PubSub,
    items: &Items,
    settings: &WebhookSettings,
    subscription: &Subscription,
    target: &HttpTarget,
    message: async_nats::jetstream::Message,
) {
    let acknowledge = |message: &async_nats::jetstream::Message, kind: AckKind| {
        let message = message.clone();
        async move {
            if let Err(error) = message.ack_with(kind).await {
                tracing::warn!(message = "Cannot acknowledge a webhook delivery.", %error);
            }
        }
    };
    if is_replay_for_another(&message, &subscription.consumer) {
        acknowledge(&message, AckKind::Ack).await;
        return;
    }
    let Ok(info) = message.info() else {
        acknowledge(&message, AckKind::Term).await;
        return;
    };
    let (sequence, delivered) = (
        info.stream_sequence,
        u64::try_from(info.delivered).unwrap_or(1),
    );
    let event_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(govbus_bus::envelope::headers::ID))
        .map(|value| value.as_str().to_owned())
        .unwrap_or_else(|| format!("{}:{sequence}", subscription.stream));
    let item = match items.item(subscription, &event_id, sequence, &message.payload) {
        Ok(Some(item)) => item,
        Ok(None) => {
            tracing::warn!(
                message = "Event not delivered: its subscriber is no longer granted the type.",
                subscriber = %subscription.subscriber,
                event_type = %subscription.event_type,
            );
            acknowledge(&message, AckKind::Ack).await;
            return;
        }
        Err(error) => {
            dead_letter(
                pubsub,
                subscription,
                &message,
                delivered,
                &error.to_string(),
            )
            .await;
            return;
        }
    };
    let body = Bytes::from(serde_json::to_vec(&item).unwrap_or_default());
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = signatures(&subscription.secrets, &event_id, timestamp, &body);
    let headers = [
        ("webhook-id", event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        HeaderValue::from_str(&value)
            .ok()
            .map(|value| (HeaderName::from_static(name), value))
    })
    .collect();
    match target.post_bytes(headers, body).await {
        Ok(_) => {
            metrics::counter!("govbus_webhook_deliveries_total", "outcome" => "delivered")
                .increment(1);
            items.record_handed(subscription, &message.payload);
            acknowledge(&message, AckKind::Ack).await;
        }
        Err(error) if delivered >= settings.attempts => {
            metrics::counter!("govbus_webhook_deliveries_total", "outcome" => "dead_lettered")
                .increment(1);
            let reason = format!("after {delivered} attempts, the last: {error}");
            dead_letter(pubsub, subscription, &message, delivered, &reason).await;
        }
        Err(error) => {
            metrics::counter!("govbus_webhook_deliveries_total", "outcome" => "retried")
                .increment(1);
            let doubling =
                2u32.saturating_pow(u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX));
            let wait = settings
                .first_retry
                .saturating_mul(doubling)
                .min(settings.longest_retry);
            tracing::info!(
                message = "Webhook delivery failed; trying again later.",
                subscription = %subscription.id,
                attempt = delivered,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                %error,
            );
            acknowledge(&message, AckKind::Nak(Some(wait))).await;
        }
    }
}

async fn dead_letter(
    pubsub: &PubSub,
    subscription: &Subscription,
    message: &async_nats::jetstream::Message,
    delivered: u64,
    reason: &str,
) {
    let stream_sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    let failure = Failure {
        service: DEAD_LETTER_SERVICE,
        consumer: &subscription.consumer,
        stream: &subscription.stream,
        stream_sequence,
        subject: message.subject.as_str(),
        deliveries: delivered,
        reason,
    };
    match pubsub
        .bus()
        .dead_letters()
        .write(message.headers.as_ref(), message.payload.clone(), &failure)
        .await
    {
        Ok(()) => {
            tracing::warn!(
                message = "Webhook delivery dead-lettered.",
                subscription = %subscription.id,
                %reason,
            );
            if let Err(error) = message.ack_with(AckKind::Ack).await {
                tracing::warn!(message = "Cannot acknowledge a dead-lettered delivery.", %error);
            }
        }
        Err(error) => {
            // Not stored: it stays pending and is delivered again later.
            tracing::error!(message = "Cannot dead-letter a webhook delivery.", %error);
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}
