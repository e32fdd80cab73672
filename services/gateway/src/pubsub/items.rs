//! Events as subscribers get them: the `EventItem` of the GovStack PubSub specification, a
//! service's protobuf event as its proto3 JSON (without its personal fields unless the
//! subscriber's grant names a purpose), an application's JSON event as it was published.
//!
//! An event about a person handed out with its personal fields is a processing of that person's
//! data by the subscriber, through the gateway: it is recorded in the gateway's chain of the
//! processing log (the subscriber, the gateway, the event type and channel, the grant's purpose,
//! the person as a keyed hash of the event's citizen reference).

use std::sync::Arc;

use govbus_kit::access::AccessPolicy;
use govbus_kit::audit::{DataSubject, EntryKind, Processing, ProcessingLog};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value as Json, json};

use super::PubSubError;
use super::subscriptions::Subscription;
use crate::directory::Directory;

/// Makes the items subscribers get.
#[derive(Debug, Clone)]
pub struct Items {
    pool: DescriptorPool,
    directory: Arc<Directory>,
    policy: AccessPolicy,
    log: Option<ProcessingLog>,
}

/// The gateway, as the processing log names it when it hands a subscriber an event.
const GATEWAY: &str = "gateway";

impl Items {
    /// Services' events read with the contracts in `pool`, publishers named by `directory`,
    /// personal fields given as `policy`'s grants say, each handing-out of a person's data
    /// recorded in `log` (`None`: the processing log is off, as without TLS).
    pub fn new(
        pool: DescriptorPool,
        directory: Arc<Directory>,
        policy: AccessPolicy,
        log: Option<ProcessingLog>,
    ) -> Self {
        Self {
            pool,
            directory,
            policy,
            log,
        }
    }

    /// Whether `subscriber` is granted `event_type`, and with what purpose.
    pub fn grant(&self, subscriber: &str, event_type: &str) -> Option<Option<Arc<str>>> {
        self.policy.event_grant(subscriber, event_type)
    }

    /// The item of the event `id` (stream sequence `sequence`, `payload`) for `subscription`;
    /// `None` when its subscriber is no longer granted the type.
    pub fn item(
        &self,
        subscription: &Subscription,
        id: &str,
        sequence: u64,
        payload: &[u8],
    ) -> Result<Option<Json>, PubSubError> {
        let Some(purpose) = self.grant(&subscription.subscriber, &subscription.event_type) else {
            return Ok(None);
        };
        let event = match self.directory.event_message(&subscription.event_type) {
            Some(name) => {
                let descriptor = self
                    .pool
                    .get_message_by_name(name)
                    .ok_or_else(|| PubSubError::Bus(format!("the contracts lack {name}")))?;
                let mut decoded =
                    DynamicMessage::decode(descriptor, payload).map_err(|problem| {
                        PubSubError::Bus(format!("an event that is not its {name}: {problem}"))
                    })?;
                if purpose.is_none() {
                    crate::schema::strip_personal(&self.pool, &mut decoded);
                }
                decoded
                    .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
                    .map_err(|problem| PubSubError::Bus(problem.to_string()))?
            }
            None => serde_json::from_slice(payload).map_err(|problem| {
                PubSubError::Bus(format!("an application's event is not JSON: {problem}"))
            })?,
        };
        let publisher = self.directory.client_id_of(&subscription.room);
        Ok(Some(json!({
            "id": id,
            "sequence": sequence,
            "publisherId": {
                "instanceId": publisher.instance,
                "memberClass": publisher.member_class,
                "memberCode": publisher.member_code,
                "applicationCode": publisher.application_code,
            },
            "eventType": self.room_type(subscription),
            "event": event,
        })))
    }

    /// Records that `subscription`'s subscriber was handed the event `payload` with its
    /// personal fields, if its grant names a purpose and the event is about a person: called
    /// once the subscriber has it (a webhook's 2xx, a pull's answer), never for an attempt
    /// that failed.
    pub fn record_handed(&self, subscription: &Subscription, payload: &[u8]) {
        let Some(log) = &self.log else {
            return;
        };
        let Some(Some(purpose)) = self.grant(&subscription.subscriber, &subscription.event_type)
        else {
            return;
        };
        let Some(descriptor) = self
            .directory
            .event_message(&subscription.event_type)
            .and_then(|name| self.pool.get_message_by_name(name))
        else {
            return;
        };
        let Ok(event) = DynamicMessage::decode(descriptor, payload) else {
            return;
        };
        let Some(subject) = crate::schema::data_subject(&self.pool, &event) else {
            return;
        };
        let channel = if subscription.push_url.is_some() {
            "webhook"
        } else {
            "pull"
        };
        log.record(Processing {
            kind: EntryKind::Delivery,
            requester: &Arc::from(subscription.subscriber.as_str()),
            via: Some(&Arc::from(GATEWAY)),
            action: &Arc::from(format!(
                "{} by {channel} ({})",
                subscription.event_type, subscription.id
            )),
            purpose: &purpose,
            subject: DataSubject::Citizen(&subject),
            trace_id: None,
        });
    }

    /// The type's name as its room names it: the full type in a service's room, the
    /// application's own name in its room.
    pub fn room_type<'a>(&self, subscription: &'a Subscription) -> &'a str {
        subscription
            .event_type
            .strip_prefix(subscription.room.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|_| {
                self.directory
                    .event_message(&subscription.event_type)
                    .is_none()
            })
            .unwrap_or(&subscription.event_type)
    }
}
