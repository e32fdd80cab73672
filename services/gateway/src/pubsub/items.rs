//! Events as subscribers get them: the `EventItem` of the GovStack PubSub specification, a
//! service's protobuf event as its proto3 JSON (without its personal fields unless the
//! subscriber's grant names a purpose), an application's JSON event as it was published.

use std::sync::Arc;

use govbus_kit::access::AccessPolicy;
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
}

impl Items {
    /// Services' events read with the contracts in `pool`, publishers named by `directory`,
    /// personal fields given as `policy`'s grants say.
    pub fn new(pool: DescriptorPool, directory: Arc<Directory>, policy: AccessPolicy) -> Self {
        Self {
            pool,
            directory,
            policy,
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
