//! Events: protobuf messages tied to a versioned CloudEvents type.

use std::borrow::Cow;

use crate::error::{Error, error_kind};

/// A domain event that travels on the bus.
///
/// An event is a protobuf message (`prost::Message`) with a fully qualified protobuf name
/// (`prost::Name`, used as the CloudEvents `dataschema`) and a versioned CloudEvents type,
/// `<service>.<aggregate>.<happened>.v<N>`, for example `identity.citizen.deceased.v1`. The first
/// part names the service that owns and publishes the event; the NATS subject is the type under
/// the bus prefix (`govbus.identity.citizen.deceased.v1`), so permissions can be granted per
/// service with `govbus.identity.>`.
///
/// govbus contracts declare the type in the `.proto` file and the `govbus-proto` build generates
/// this implementation; an adapter with its own messages may implement it by hand:
///
/// ```
/// use govbus_bus::Event;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct ParcelDelivered {
///     #[prost(string, tag = "1")]
///     pub parcel_ref: String,
/// }
///
/// impl prost::Name for ParcelDelivered {
///     const PACKAGE: &'static str = "govbus.post.v1";
///     const NAME: &'static str = "ParcelDelivered";
/// }
///
/// impl Event for ParcelDelivered {
///     const TYPE: &'static str = "post.parcel.delivered.v1";
///
///     fn subject(&self) -> Option<std::borrow::Cow<'_, str>> {
///         Some(self.parcel_ref.as_str().into())
///     }
/// }
///
/// assert_eq!(govbus_bus::EventType::parse(ParcelDelivered::TYPE)?.service(), "post");
/// # Ok::<(), govbus_bus::EventTypeError>(())
/// ```
pub trait Event: prost::Message + prost::Name + Default + Send + Sync + 'static {
    /// The versioned CloudEvents type, `<service>.<aggregate>.<happened>.v<N>`.
    const TYPE: &'static str;

    /// The CloudEvents `subject`: the aggregate this event is about, if any.
    ///
    /// Events with the same subject are handled in order by a consumer. It must not be personal
    /// data (use a pseudonymous reference, never a NIK or a name): it travels as a header and
    /// appears in logs and traces.
    fn subject(&self) -> Option<Cow<'_, str>> {
        None
    }

    /// The pseudonymous reference of the person this event is about, if it is about one.
    ///
    /// Each delivery of such an event to a consumer is reported to the adapter's
    /// [`DeliveryObserver`](crate::DeliveryObserver), which keeps the processing log.
    fn data_subject(&self) -> Option<Cow<'_, str>> {
        None
    }
}

error_kind! {
    /// Why an event type name was refused.
    EventTypeErrorKind {
        /// The name does not have the `<service>.<aggregate>.<happened>.v<N>` shape.
        Malformed => "malformed event type",
    }
}

/// An event type name that was refused.
pub type EventTypeError = Error<EventTypeErrorKind>;

/// A checked CloudEvents type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType<'a> {
    name: &'a str,
    service: &'a str,
}

impl<'a> EventType<'a> {
    /// Checks `name` has the shape `<service>.<part>[.<part>…].v<N>`, each part lowercase
    /// ASCII letters, digits, `-` or `_`, starting with a letter.
    pub fn parse(name: &'a str) -> Result<Self, EventTypeError> {
        let malformed = |why: &str| {
            EventTypeError::with_detail(EventTypeErrorKind::Malformed, format!("{name:?}: {why}"))
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() < 3 {
            return Err(malformed("expected <service>.<aggregate>.<happened>.v<N>"));
        }
        for part in &parts {
            let mut chars = part.chars();
            let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
            let rest_ok =
                chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !starts_with_letter || !rest_ok {
                return Err(malformed(&format!(
                    "part {part:?} must be lowercase letters, digits, '-' or '_', starting with a letter"
                )));
            }
        }
        let version = parts[parts.len() - 1];
        if !(version.len() > 1 && version[1..].chars().all(|c| c.is_ascii_digit())) {
            return Err(malformed("the last part must be the version, v1, v2, …"));
        }
        Ok(Self {
            name,
            service: parts[0],
        })
    }

    /// The whole type name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The service that owns the event: the first part of the name.
    pub fn service(&self) -> &'a str {
        self.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_versioned_types() {
        let parsed = EventType::parse("identity.citizen.deceased.v1").expect("valid");
        assert_eq!(parsed.service(), "identity");
        assert_eq!(parsed.name(), "identity.citizen.deceased.v1");
    }

    #[test]
    fn refuses_malformed_types() {
        for name in [
            "",
            "identity",
            "identity.citizen.deceased",
            "identity.citizen.deceased.vX",
            "Identity.citizen.deceased.v1",
            "identity..deceased.v1",
            "identity.citizen deceased.v1",
            "identity.citizen.>.v1",
            "identity.citizen.*.v1",
        ] {
            assert!(EventType::parse(name).is_err(), "{name:?} must be refused");
        }
    }
}
