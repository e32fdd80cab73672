//! Where things live on NATS: subjects and stream names, derived from one prefix.
//!
//! | what | name |
//! | --- | --- |
//! | an event of type `identity.citizen.deceased.v1` | subject `govbus.identity.citizen.deceased.v1` |
//! | everything the `identity` service publishes | subjects `govbus.identity.>`, stream `GOVBUS_IDENTITY` |
//! | dead letters of consumer `welfare-identity` of `welfare` | subject `govbus.deadletter.welfare.welfare-identity` |
//! | all dead letters | stream `GOVBUS_DEADLETTER` |
//! | event `newBirth` of the application `dinkes.simpus` (through the gateway) | subject `govbus.app.dinkes.simpus.newBirth`, stream `GOVBUS_APP` |
//!
//! Because every subject a service publishes starts with `<prefix>.<service>.`, NATS permissions
//! can be granted per service.

use crate::error::{Error, error_kind};

/// Service names that would collide with the bus's own subjects.
const RESERVED_SERVICE_NAMES: &[&str] = &["deadletter", "audit", "bus", "app"];

error_kind! {
    /// Why a name was refused.
    NameErrorKind {
        /// The prefix is not a single NATS subject token.
        InvalidPrefix => "invalid subject prefix",
        /// The service name is not usable in subjects and stream names.
        InvalidServiceName => "invalid service name",
        /// The consumer name is not usable as a durable consumer name.
        InvalidConsumerName => "invalid consumer name",
    }
}

/// A refused prefix, service name or consumer name.
pub type NameError = Error<NameErrorKind>;

/// The naming scheme of one bus deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            prefix: "govbus".to_owned(),
        }
    }
}

impl Topology {
    /// A topology under `prefix` (lowercase letters, digits, `-` or `_`).
    pub fn new(prefix: impl Into<String>) -> Result<Self, NameError> {
        let prefix = prefix.into();
        if !is_token(&prefix) {
            return Err(NameError::with_detail(
                NameErrorKind::InvalidPrefix,
                format!(
                    "{prefix:?}: use lowercase letters, digits, '-' or '_', starting with a letter"
                ),
            ));
        }
        Ok(Self { prefix })
    }

    /// The subject prefix, `govbus` by default.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks a service name can be used in subjects and stream names.
    pub fn check_service(&self, service: &str) -> Result<(), NameError> {
        if !is_token(service) || RESERVED_SERVICE_NAMES.contains(&service) {
            return Err(NameError::with_detail(
                NameErrorKind::InvalidServiceName,
                format!(
                    "{service:?}: use lowercase letters, digits, '-' or '_', starting with a letter, \
                     and none of {RESERVED_SERVICE_NAMES:?}"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a durable consumer name.
    pub fn check_consumer(&self, consumer: &str) -> Result<(), NameError> {
        if !is_token(consumer) {
            return Err(NameError::with_detail(
                NameErrorKind::InvalidConsumerName,
                format!(
                    "{consumer:?}: use lowercase letters, digits, '-' or '_', starting with a letter"
                ),
            ));
        }
        Ok(())
    }

    /// The subject an event type is published on.
    pub fn event_subject(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.prefix)
    }

    /// The stream holding the events applications publish through the gateway.
    pub fn application_stream(&self) -> String {
        stream_name(&[&self.prefix, "app"])
    }

    /// The subjects of every application's events (`<prefix>.app.>`).
    pub fn application_subjects(&self) -> String {
        format!("{}.app.>", self.prefix)
    }

    /// The subject of `event_type` of the application `<agency>.<application>`
    /// (`<prefix>.app.<agency>.<application>.<event_type>`); the caller checks each part is
    /// one subject token.
    pub fn application_subject(&self, application: &str, event_type: &str) -> String {
        format!("{}.app.{application}.{event_type}", self.prefix)
    }

    /// The subjects a service publishes on (`<prefix>.<service>.>`).
    pub fn service_subjects(&self, service: &str) -> String {
        format!("{}.{service}.>", self.prefix)
    }

    /// The stream holding a service's events.
    pub fn service_stream(&self, service: &str) -> String {
        stream_name(&[&self.prefix, service])
    }

    /// The stream holding every dead letter.
    pub fn dead_letter_stream(&self) -> String {
        stream_name(&[&self.prefix, "deadletter"])
    }

    /// The subjects of the dead-letter stream.
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.deadletter.>", self.prefix)
    }

    /// The stream holding the processing log (every writer's hash chain).
    pub fn audit_stream(&self) -> String {
        stream_name(&[&self.prefix, "audit"])
    }

    /// The subjects of the processing-log stream.
    pub fn audit_subjects(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }

    /// The subject a service appends its processing-log entries to.
    pub fn audit_subject(&self, writer: &str) -> String {
        format!("{}.audit.{writer}", self.prefix)
    }

    /// The subject a consumer's dead letters are written to.
    pub fn dead_letter_subject(&self, service: &str, consumer: &str) -> String {
        format!("{}.deadletter.{service}.{consumer}", self.prefix)
    }
}

fn is_token(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

fn stream_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| part.to_ascii_uppercase().replace('-', "_"))
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let topology = Topology::new("kota-malang").expect("valid prefix");
        assert_eq!(
            topology.event_subject("identity.citizen.deceased.v1"),
            "kota-malang.identity.citizen.deceased.v1"
        );
        assert_eq!(
            topology.service_subjects("identity"),
            "kota-malang.identity.>"
        );
        assert_eq!(topology.service_stream("identity"), "KOTA_MALANG_IDENTITY");
        assert_eq!(topology.dead_letter_stream(), "KOTA_MALANG_DEADLETTER");
        assert_eq!(
            topology.dead_letter_subject("welfare", "welfare-identity"),
            "kota-malang.deadletter.welfare.welfare-identity"
        );
    }

    #[test]
    fn refuses_names_that_break_subjects() {
        assert!(Topology::new("gov.bus").is_err());
        assert!(Topology::new("").is_err());
        let topology = Topology::default();
        assert!(topology.check_service("deadletter").is_err());
        assert!(topology.check_service("iden>tity").is_err());
        assert!(topology.check_consumer("a b").is_err());
        assert!(topology.check_service("identity").is_ok());
    }
}
