//! Subscriptions: a subscriber's standing interest in one event type of one room, kept as a
//! durable JetStream consumer of the gateway's on the type's stream, filtered to its subject.
//!
//! A pull subscription hands out one event at a time: `pull` gives the next unconfirmed event
//! (the same one again until it is confirmed), `confirm` acknowledges it, after which it is never
//! handed out again, even when JetStream redelivers it because the confirmation came after its
//! wait (`TTL`). Which event is in hand is in the gateway's database, so any gateway on that
//! database answers alike.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use futures_util::StreamExt as _;
use govbus_storage::statement::Statement;
use govbus_storage::time::now_micros;
use govbus_storage::value::Value;
use govbus_storage::{DbError, Migration};
use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::{PubSub, PubSubError};

/// Whether `message` is an operator's replay of a dead letter for a consumer other than
/// `consumer` (replays go to the original subject, so every consumer of it sees them).
pub(crate) fn is_replay_for_another(
    message: &async_nats::jetstream::Message,
    consumer: &str,
) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(govbus_bus::dead_letter::headers::REPLAY_FOR))
        .is_some_and(|replay_for| replay_for.as_str() != consumer)
}

/// The gateway database's tables for subscriptions (migration 3 of the component `gateway`).
pub const MIGRATION: Migration = Migration {
    version: 3,
    description: "subscriptions and the events in their subscribers' hands",
    sqlite: TABLES,
    postgres: TABLES,
};

const TABLES: &str = "
    CREATE TABLE gateway_subscriptions (
        id TEXT PRIMARY KEY,
        subscriber TEXT NOT NULL,
        room TEXT NOT NULL,
        event_type TEXT NOT NULL,
        delivery TEXT NOT NULL,
        stream_name TEXT NOT NULL,
        consumer TEXT NOT NULL,
        ack_wait_seconds BIGINT NOT NULL,
        confirmed_through BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (subscriber, event_type)
    );
    CREATE TABLE gateway_pulls (
        subscription_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        stream_sequence BIGINT NOT NULL,
        reply_subject TEXT NOT NULL,
        item TEXT NOT NULL,
        pulled_at BIGINT NOT NULL
    )
";

/// The push subscriptions' webhook address and signing secrets (migration 4).
pub const PUSH_MIGRATION: Migration = Migration {
    version: 4,
    description: "push subscriptions: their webhooks and signing secrets",
    sqlite: PUSH_COLUMNS,
    postgres: PUSH_COLUMNS,
};

const PUSH_COLUMNS: &str = "
    ALTER TABLE gateway_subscriptions ADD COLUMN push_url TEXT;
    ALTER TABLE gateway_subscriptions ADD COLUMN secret TEXT;
    ALTER TABLE gateway_subscriptions ADD COLUMN previous_secret TEXT;
    ALTER TABLE gateway_subscriptions ADD COLUMN previous_secret_until BIGINT
";

/// How long a rotated webhook secret still signs deliveries beside the new one.
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// How a subscription's events reach its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// It pulls them and confirms each.
    Pull,
    /// They are posted to its webhook.
    Push {
        /// The webhook's address.
        url: String,
    },
}

/// How long a pull waits for an event before answering that there is none.
const PULL_WAIT: Duration = Duration::from_millis(500);

/// What a subscription is to: one event type on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The room (a service's name, or an application's).
    pub room: String,
    /// The full CloudEvents type (`identity.citizen.deceased.v1`, `dinkes.simpus.newBirth`).
    pub event_type: String,
    /// The stream that holds it.
    pub stream: String,
    /// Its NATS subject.
    pub subject: String,
}

/// A subscription, as its subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id.
    pub id: String,
    /// Who subscribed.
    pub subscriber: String,
    /// The room.
    pub room: String,
    /// The full event type.
    pub event_type: String,
    /// `PULL` (or `PUSH`).
    pub delivery: String,
    /// How long a handed-out event waits for its confirmation before it is handed out again.
    pub ack_wait: Duration,
    /// A push subscription's webhook.
    pub push_url: Option<String>,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    confirmed_through: i64,
    /// The secrets its deliveries are signed with: the current one, and the one before while
    /// it overlaps.
    pub(crate) secrets: Vec<String>,
}

type SubscriptionRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

const SUBSCRIPTION_COLUMNS: &str = "id, subscriber, room, event_type, delivery, stream_name, \
    consumer, ack_wait_seconds, confirmed_through, push_url, secret, previous_secret, \
    previous_secret_until";

impl Subscription {
    fn of_row(row: SubscriptionRow) -> Self {
        let (
            id,
            subscriber,
            room,
            event_type,
            delivery,
            stream,
            consumer,
            wait,
            confirmed,
            push_url,
            secret,
            previous,
            until,
        ) = row;
        let now = now_micros();
        let secrets = secret
            .into_iter()
            .chain(previous.filter(|_| until.is_some_and(|until| until > now)))
            .collect();
        Self {
            id,
            subscriber,
            room,
            event_type,
            delivery,
            ack_wait: Duration::from_secs(u64::try_from(wait).unwrap_or(1)),
            push_url,
            stream,
            consumer,
            confirmed_through: confirmed,
            secrets,
        }
    }
}

/// A webhook signing secret as Standard Webhooks writes it: `whsec_` and 32 random bytes in
/// base64.
fn new_secret() -> Result<String, PubSubError> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PubSubError::Bus("no randomness for a webhook secret".to_owned()))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The durable name of subscription `id`'s consumer: `gw-` and a digest, so that it can never be
/// a service's consumer name (which the gateway's NATS user may not touch).
fn consumer_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("gw-{}", &hex::encode(digest)[..24])
}

impl PubSub {
    /// Subscribes `subscriber` to `topic`, delivering as `delivery` says; events published
    /// from now on. A push subscription's signing secret is in the answer, and only there.
    pub async fn subscribe(
        &self,
        subscriber: &str,
        topic: &Topic,
        ack_wait: Duration,
        delivery: &Delivery,
    ) -> Result<(Subscription, Option<String>), PubSubError> {
        let (mode, push_url, secret) = match delivery {
            Delivery::Pull => ("PULL", None, None),
            Delivery::Push { url } => ("PUSH", Some(url.clone()), Some(new_secret()?)),
        };
        let id = Uuid::now_v7().to_string();
        let consumer = consumer_name(&id);
        let stream = self.stream_named(&topic.stream).await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(consumer.clone()),
                description: Some(format!(
                    "{subscriber}'s subscription to {}",
                    topic.event_type
                )),
                filter_subject: topic.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                deliver_policy: DeliverPolicy::New,
                // One event in hand at a time: delivered in the order they were stored.
                max_ack_pending: 1,
                ..Default::default()
            })
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        let wait = i64::try_from(ack_wait.as_secs()).unwrap_or(i64::MAX);
        let row = (
            id.clone(),
            subscriber.to_owned(),
            topic.room.clone(),
            topic.event_type.clone(),
            topic.stream.clone(),
            consumer.clone(),
            push_url.clone(),
            secret.clone(),
        );
        let inserted = self
            .inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "INSERT INTO gateway_subscriptions (id, subscriber, room, event_type, delivery, \
                     stream_name, consumer, ack_wait_seconds, confirmed_through, created_at, \
                     push_url, secret) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11) \
                     ON CONFLICT (subscriber, event_type) DO NOTHING",
                    &[
                        row.0.as_str().into(),
                        row.1.as_str().into(),
                        row.2.as_str().into(),
                        row.3.as_str().into(),
                        mode.into(),
                        row.4.as_str().into(),
                        row.5.as_str().into(),
                        wait.into(),
                        now_micros().into(),
                        row.6.as_deref().into(),
                        row.7.as_deref().into(),
                    ],
                )
                .await
            })
            .await?;
        if inserted == 0 {
            // Another request subscribed first: its consumer stands, this one goes.
            let _ = stream.delete_consumer(&consumer).await;
            return Err(PubSubError::Exists(format!(
                "subscription to {}",
                topic.event_type
            )));
        }
        Ok((
            Subscription {
                id,
                subscriber: subscriber.to_owned(),
                room: topic.room.clone(),
                event_type: topic.event_type.clone(),
                delivery: mode.to_owned(),
                ack_wait,
                push_url,
                stream: topic.stream.clone(),
                consumer,
                confirmed_through: 0,
                secrets: secret.iter().cloned().collect(),
            },
            secret,
        ))
    }

    /// Gives push `subscription` a new signing secret; the one before still signs deliveries
    /// beside it for [`SECRET_OVERLAP`], so that the subscriber can move over.
    pub async fn rotate_secret(&self, subscription: &Subscription) -> Result<String, PubSubError> {
        let secret = new_secret()?;
        let (id, key, overlap) = (
            subscription.id.clone(),
            secret.clone(),
            i64::try_from(SECRET_OVERLAP.as_micros()).unwrap_or(i64::MAX),
        );
        let changed = self
            .inner
            .db
            .write(async move |tx| {
                let now = now_micros();
                tx.execute(
                    "UPDATE gateway_subscriptions SET previous_secret = secret, \
                     previous_secret_until = $3, secret = $2 \
                     WHERE id = $1 AND delivery = 'PUSH'",
                    &[
                        id.as_str().into(),
                        key.as_str().into(),
                        (now + overlap).into(),
                    ],
                )
                .await
            })
            .await?;
        if changed == 1 {
            Ok(secret)
        } else {
            Err(PubSubError::UnknownType(subscription.event_type.clone()))
        }
    }

    /// Every push subscription, for the webhooks' deliveries.
    pub async fn push_subscriptions(&self) -> Result<Vec<Subscription>, PubSubError> {
        self.select("delivery = 'PUSH' ORDER BY id", &[]).await
    }

    /// The subscription `id`, if it still exists.
    pub async fn subscription_by_id(&self, id: &str) -> Result<Option<Subscription>, PubSubError> {
        Ok(self.select("id = $1", &[id.into()]).await?.pop())
    }

    /// The subscriptions the fixed `condition` (placeholders only, never values) selects.
    async fn select(
        &self,
        condition: &'static str,
        params: &[Value<'_>],
    ) -> Result<Vec<Subscription>, PubSubError> {
        let mut sql = self.inner.db.read().await?;
        let rows: Vec<SubscriptionRow> = sql
            .query_all(
                Statement::generated(format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM gateway_subscriptions WHERE {condition}"
                )),
                params,
            )
            .await?;
        Ok(rows.into_iter().map(Subscription::of_row).collect())
    }

    /// `subscriber`'s subscriptions in `room`.
    pub async fn subscriptions_of(
        &self,
        subscriber: &str,
        room: &str,
    ) -> Result<Vec<Subscription>, PubSubError> {
        self.select(
            "subscriber = $1 AND room = $2 ORDER BY event_type",
            &[subscriber.into(), room.into()],
        )
        .await
    }

    /// `subscriber`'s subscription to `event_type`, if it has one.
    pub async fn subscription(
        &self,
        subscriber: &str,
        event_type: &str,
    ) -> Result<Option<Subscription>, PubSubError> {
        Ok(self
            .select(
                "subscriber = $1 AND event_type = $2",
                &[subscriber.into(), event_type.into()],
            )
            .await?
            .pop())
    }

    /// Gives `subscription` a new wait for confirmations.
    pub async fn change_ack_wait(
        &self,
        subscription: &Subscription,
        ack_wait: Duration,
    ) -> Result<Subscription, PubSubError> {
        let stream = self.stream_named(&subscription.stream).await?;
        let mut consumer: consumer::PullConsumer = stream
            .get_consumer(&subscription.consumer)
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        let mut config = consumer
            .info()
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?
            .config
            .clone();
        config.ack_wait = ack_wait;
        stream
            .update_consumer(consumer::pull::Config {
                durable_name: config.durable_name,
                description: config.description,
                filter_subject: config.filter_subject,
                ack_policy: config.ack_policy,
                ack_wait: config.ack_wait,
                deliver_policy: config.deliver_policy,
                max_ack_pending: config.max_ack_pending,
                ..Default::default()
            })
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        let (id, wait) = (
            subscription.id.clone(),
            i64::try_from(ack_wait.as_secs()).unwrap_or(i64::MAX),
        );
        self.inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "UPDATE gateway_subscriptions SET ack_wait_seconds = $2 WHERE id = $1",
                    &[id.as_str().into(), wait.into()],
                )
                .await
            })
            .await?;
        Ok(Subscription {
            ack_wait,
            ..subscription.clone()
        })
    }

    /// Ends `subscription`: its consumer is deleted, its event in hand forgotten.
    pub async fn unsubscribe(&self, subscription: &Subscription) -> Result<(), PubSubError> {
        let id = subscription.id.clone();
        self.inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "DELETE FROM gateway_pulls WHERE subscription_id = $1",
                    &[id.as_str().into()],
                )
                .await?;
                tx.execute(
                    "DELETE FROM gateway_subscriptions WHERE id = $1",
                    &[id.as_str().into()],
                )
                .await
            })
            .await?;
        let stream = self.stream_named(&subscription.stream).await?;
        let _ = stream.delete_consumer(&subscription.consumer).await;
        self.inner
            .pull_turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&subscription.id);
        Ok(())
    }

    /// The next unconfirmed event of `subscription`, as `render` makes it an event item from the
    /// subscription and the stored event's id, stream sequence and payload (`None`: not for this
    /// subscriber any more); the same one again until it is confirmed; `None` when there is none.
    pub async fn pull(
        &self,
        subscription: &Subscription,
        render: impl Fn(&Subscription, &str, u64, &[u8]) -> Result<Option<Json>, PubSubError>,
    ) -> Result<Option<Json>, PubSubError> {
        // Pulls of one subscription take turns in this gateway; another gateway's pull that
        // took the event meanwhile is found by looking again after an empty fetch.
        let turn = self.turn_of(&subscription.id);
        let _turn = turn.lock().await;
        if let Some(item) = self.item_in_hand(&subscription.id).await? {
            return Ok(Some(item));
        }
        let stream = self.stream_named(&subscription.stream).await?;
        let consumer: consumer::PullConsumer = stream
            .get_consumer(&subscription.consumer)
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await
                .map_err(|error| PubSubError::Bus(error.to_string()))?;
            let Some(message) = batch.next().await else {
                return self.item_in_hand(&subscription.id).await;
            };
            let message = message.map_err(|error| PubSubError::Bus(error.to_string()))?;
            let (sequence, reply) = match (message.info(), message.reply.as_ref()) {
                (Ok(info), Some(reply)) => (info.stream_sequence, reply.to_string()),
                _ => {
                    return Err(PubSubError::Bus(
                        "a delivery without its ack subject".into(),
                    ));
                }
            };
            let at = i64::try_from(sequence).unwrap_or(i64::MAX);
            if at <= subscription.confirmed_through
                || is_replay_for_another(&message, &subscription.consumer)
            {
                // Confirmed already, redelivered because the confirmation came late.
                message
                    .ack()
                    .await
                    .map_err(|error| PubSubError::Bus(error.to_string()))?;
                continue;
            }
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(govbus_bus::envelope::headers::ID))
                .map(|value| value.as_str().to_owned())
                .unwrap_or_else(|| format!("{}:{sequence}", subscription.stream));
            let Some(item) = render(subscription, &id, sequence, &message.payload)? else {
                return Ok(None);
            };
            let (subscription_id, event_id, text) =
                (subscription.id.clone(), id.clone(), item.to_string());
            // Another pull of the same subscription may have taken it first: hand out theirs.
            self.inner
                .db
                .write(async move |tx| {
                    tx.execute(
                        "INSERT INTO gateway_pulls (subscription_id, event_id, stream_sequence, \
                         reply_subject, item, pulled_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (subscription_id) DO UPDATE SET reply_subject = $4 \
                         WHERE gateway_pulls.stream_sequence = $3",
                        &[
                            subscription_id.as_str().into(),
                            event_id.as_str().into(),
                            at.into(),
                            reply.as_str().into(),
                            text.as_str().into(),
                            now_micros().into(),
                        ],
                    )
                    .await
                })
                .await?;
            return match self.item_in_hand(&subscription.id).await? {
                Some(held) => Ok(Some(held)),
                None => Ok(Some(item)),
            };
        }
    }

    /// Confirms `subscription`'s event in hand, `event_id`: never handed out again.
    pub async fn confirm(
        &self,
        subscription: &Subscription,
        event_id: &str,
    ) -> Result<(), PubSubError> {
        let Some((held, reply, _)) = self.in_hand(&subscription.id).await? else {
            return Err(PubSubError::UnknownPublication(event_id.to_owned()));
        };
        if held.0 != event_id {
            return Err(PubSubError::UnknownPublication(event_id.to_owned()));
        }
        let (id, sequence, event) = (subscription.id.clone(), held.1, event_id.to_owned());
        let confirmed = self
            .inner
            .db
            .write(async move |tx| {
                let taken = tx
                    .execute(
                        "DELETE FROM gateway_pulls WHERE subscription_id = $1 AND event_id = $2",
                        &[id.as_str().into(), event.as_str().into()],
                    )
                    .await?;
                if taken == 1 {
                    tx.execute(
                        "UPDATE gateway_subscriptions SET confirmed_through = $2 \
                         WHERE id = $1 AND confirmed_through < $2",
                        &[id.as_str().into(), sequence.into()],
                    )
                    .await?;
                }
                Ok::<_, DbError>(taken)
            })
            .await?;
        if confirmed == 0 {
            // A concurrent confirmation took it: it is confirmed once, by that one.
            return Err(PubSubError::UnknownPublication(event_id.to_owned()));
        }
        // Lost, the acknowledgement is made good when JetStream redelivers the event: the
        // pull that gets it acknowledges it without handing it out.
        let client = self.inner.bus.client();
        if client.publish(reply, "+ACK".into()).await.is_ok() {
            let _ = client.flush().await;
        }
        Ok(())
    }

    /// The item of subscription `id`'s event in hand, if one is.
    async fn item_in_hand(&self, id: &str) -> Result<Option<Json>, PubSubError> {
        match self.in_hand(id).await? {
            Some((_, _, item)) => serde_json::from_str(&item)
                .map(Some)
                .map_err(|error| DbError::corrupt("reading an event in hand", error).into()),
            None => Ok(None),
        }
    }

    /// The lock that makes this gateway's pulls of subscription `id` take turns.
    fn turn_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self
            .inner
            .pull_turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(turns.entry(id.to_owned()).or_default())
    }

    /// The event in hand of subscription `id`: (its id and stream sequence), its ack subject
    /// and its item.
    async fn in_hand(
        &self,
        id: &str,
    ) -> Result<Option<((String, i64), String, String)>, PubSubError> {
        let mut sql = self.inner.db.read().await?;
        let row: Option<(String, i64, String, String)> = sql
            .query_opt(
                "SELECT event_id, stream_sequence, reply_subject, item FROM gateway_pulls \
                 WHERE subscription_id = $1",
                &[id.into()],
            )
            .await?;
        Ok(row.map(|(event, sequence, reply, item)| ((event, sequence), reply, item)))
    }
}
