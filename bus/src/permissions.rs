//! NATS permissions per service, derived from its event contract.
//!
//! A service may publish only its own events and its own dead letters, manage only its own
//! stream, and read only the events its consumers declare: the JetStream API subjects for its
//! durable consumers on the source streams, and the acknowledgements of those consumers. It
//! subscribes only to its own reply prefix (`_INBOX_<service>`), so it cannot read another
//! client's replies or deliveries. It appends to its own chain of the processing log and reads
//! that chain's head, but may neither update nor delete the processing-log stream.
//! [`authorization`] renders users with these permissions as a
//! `nats-server` configuration block.

use crate::adapter::ServiceContract;
use crate::topology::Topology;

/// What one NATS user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may not publish to, though `publish` would allow them.
    pub publish_denied: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The reply-subject prefix of `service`'s connection.
pub fn inbox_prefix(service: &str) -> String {
    format!("_INBOX_{service}")
}

impl Permissions {
    /// The least a service needs to run its adapter: see the module docs.
    pub fn for_service(contract: &ServiceContract, topology: &Topology) -> Self {
        let service = &contract.service;
        let own_stream = topology.service_stream(service);
        let dead_letters = topology.dead_letter_stream();
        let mut publish = vec![
            "$JS.API.INFO".to_owned(),
            topology.service_subjects(service),
            format!(
                "{}.{service}.>",
                topology.dead_letter_subjects().trim_end_matches(".>")
            ),
        ];
        for stream in [&own_stream, &dead_letters] {
            for operation in ["INFO", "CREATE", "UPDATE"] {
                publish.push(format!("$JS.API.STREAM.{operation}.{stream}"));
            }
        }
        // The outbox relay, taking over, reads what its own stream already holds.
        publish.push(format!("$JS.API.STREAM.MSG.GET.{own_stream}"));
        // The processing log: append to its own chain, read its own head, create the stream
        // (with deletes and purges denied) if no service has yet; never update or delete it.
        let audit = topology.audit_stream();
        publish.push(topology.audit_subject(service));
        for operation in ["INFO", "CREATE", "MSG.GET"] {
            publish.push(format!("$JS.API.STREAM.{operation}.{audit}"));
        }
        for consumed in &contract.consumes {
            let stream = topology.service_stream(&consumed.source_service);
            let consumer = &consumed.consumer;
            publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
            for api in [
                format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
                format!("$JS.ACK.{stream}.{consumer}.>"),
            ] {
                publish.push(api);
            }
        }
        publish.sort();
        publish.dedup();
        Self {
            publish,
            publish_denied: Vec::new(),
            subscribe: vec![format!("{}.>", inbox_prefix(service))],
        }
    }

    /// The REST gateway: applications' events on their own subjects and stream, read back by
    /// sequence and deleted when a publisher withdraws one; consumers of its own on the streams
    /// of `contracts`' services and the applications' stream, for subscribers, but never one of
    /// the services' own consumers (each is denied by name); no service's subjects.
    pub fn gateway(topology: &Topology, name: &str, contracts: &[ServiceContract]) -> Self {
        let stream = topology.application_stream();
        let dead_letters = topology.dead_letter_stream();
        let mut publish = vec![
            "$JS.API.INFO".to_owned(),
            topology.application_subjects(),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            // Webhook deliveries it gives up on.
            format!(
                "{}.{name}.>",
                topology.dead_letter_subjects().trim_end_matches(".>")
            ),
        ];
        for operation in ["INFO", "CREATE", "UPDATE", "MSG.GET", "MSG.DELETE"] {
            publish.push(format!("$JS.API.STREAM.{operation}.{stream}"));
        }
        // Its own events (the calls through it, the SPLP link's use), in its own stream.
        let own = topology.service_stream(name);
        publish.push(topology.service_subjects(name));
        // Its outbox relay, taking over, reads what its stream already holds.
        publish.push(format!("$JS.API.STREAM.MSG.GET.{own}"));
        // Its chain of the processing log, as a service's (see `for_service`).
        let audit = topology.audit_stream();
        publish.push(topology.audit_subject(name));
        for operation in ["INFO", "CREATE", "MSG.GET"] {
            publish.push(format!("$JS.API.STREAM.{operation}.{audit}"));
        }
        for operation in ["INFO", "CREATE", "UPDATE"] {
            publish.push(format!("$JS.API.STREAM.{operation}.{dead_letters}"));
            publish.push(format!("$JS.API.STREAM.{operation}.{own}"));
        }
        let streams = contracts
            .iter()
            .map(|contract| topology.service_stream(&contract.service))
            .chain([stream.clone()]);
        for source in streams {
            if source != stream {
                publish.push(format!("$JS.API.STREAM.INFO.{source}"));
            }
            for api in [
                format!("$JS.API.CONSUMER.CREATE.{source}.*"),
                format!("$JS.API.CONSUMER.CREATE.{source}.*.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{source}.*"),
                format!("$JS.API.CONSUMER.INFO.{source}.*"),
                format!("$JS.API.CONSUMER.DELETE.{source}.*"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{source}.*"),
                format!("$JS.ACK.{source}.*.>"),
            ] {
                publish.push(api);
            }
        }
        let mut publish_denied = Vec::new();
        for contract in contracts {
            for consumed in &contract.consumes {
                let source = topology.service_stream(&consumed.source_service);
                let consumer = &consumed.consumer;
                publish_denied.extend([
                    format!("$JS.API.CONSUMER.*.{source}.{consumer}"),
                    format!("$JS.API.CONSUMER.*.{source}.{consumer}.>"),
                    format!("$JS.API.CONSUMER.*.*.{source}.{consumer}"),
                    format!("$JS.ACK.{source}.{consumer}.>"),
                ]);
            }
        }
        publish.sort();
        publish.dedup();
        publish_denied.sort();
        publish_denied.dedup();
        Self {
            publish,
            publish_denied,
            subscribe: vec![format!("{}.>", inbox_prefix(name))],
        }
    }

    /// An operator's tools (the console): read every stream, replay dead letters.
    pub fn operator(topology: &Topology, name: &str) -> Self {
        Self {
            publish: vec!["$JS.API.>".to_owned(), format!("{}.>", topology.prefix())],
            publish_denied: Vec::new(),
            subscribe: vec![
                format!("{}.>", topology.prefix()),
                format!("{}.>", inbox_prefix(name)),
            ],
        }
    }
}

/// A NATS user of the generated server configuration.
#[derive(Debug, Clone)]
pub struct NatsUser {
    /// User name (the service's name).
    pub name: String,
    /// Its password.
    pub password: String,
    /// What it may do.
    pub permissions: Permissions,
}

/// The `authorization { users = [...] }` block of a `nats-server` configuration.
pub fn authorization(users: &[NatsUser]) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|subject| quote(subject))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut block = String::from("authorization {\n  users = [\n");
    for user in users {
        let denied = if user.permissions.publish_denied.is_empty() {
            String::new()
        } else {
            format!(", deny: [{}]", list(&user.permissions.publish_denied))
        };
        block.push_str(&format!(
            "    {{\n      user: {}\n      password: {}\n      permissions: {{\n        publish: {{ allow: [{}]{denied} }}\n        subscribe: {{ allow: [{}] }}\n      }}\n    }}\n",
            quote(&user.name),
            quote(&user.password),
            list(&user.permissions.publish),
            list(&user.permissions.subscribe),
        ));
    }
    block.push_str("  ]\n}\n");
    block
}

/// A double-quoted configuration string.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{ConsumedEvents, PublishedEvent};

    fn welfare() -> ServiceContract {
        ServiceContract {
            service: "welfare".to_owned(),
            publishes: vec![PublishedEvent {
                event_type: "welfare.benefit.suspended.v1",
                schema: "govbus.welfare.v1.BenefitSuspended".to_owned(),
            }],
            consumes: vec![ConsumedEvents {
                consumer: "welfare-identity".to_owned(),
                source_service: "identity".to_owned(),
                event_types: vec!["identity.citizen.deceased.v1"],
            }],
        }
    }

    #[test]
    fn a_service_publishes_its_own_subjects_and_reads_only_its_consumers() {
        let topology = Topology::new("govbus").expect("topology");
        let permissions = Permissions::for_service(&welfare(), &topology);
        for expected in [
            "govbus.welfare.>",
            "govbus.deadletter.welfare.>",
            "$JS.API.STREAM.CREATE.GOVBUS_WELFARE",
            "$JS.API.CONSUMER.MSG.NEXT.GOVBUS_IDENTITY.welfare-identity",
            "$JS.ACK.GOVBUS_IDENTITY.welfare-identity.>",
        ] {
            assert!(
                permissions
                    .publish
                    .iter()
                    .any(|subject| subject == expected),
                "{expected}"
            );
        }
        assert!(
            !permissions
                .publish
                .iter()
                .any(|subject| subject.starts_with("govbus.identity"))
        );
        assert!(
            !permissions
                .publish
                .iter()
                .any(|subject| subject.contains("STREAM.CREATE.GOVBUS_IDENTITY"))
        );
        assert_eq!(permissions.subscribe, vec!["_INBOX_welfare.>".to_owned()]);
    }

    #[test]
    fn the_gateway_consumes_for_subscribers_but_never_as_a_service() {
        let topology = Topology::new("govbus").expect("topology");
        let permissions = Permissions::gateway(&topology, "gateway", &[welfare()]);
        for expected in [
            "govbus.app.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.GOVBUS_WELFARE.*",
            "$JS.API.CONSUMER.MSG.NEXT.GOVBUS_APP.*",
        ] {
            assert!(
                permissions
                    .publish
                    .iter()
                    .any(|subject| subject == expected),
                "{expected}"
            );
        }
        assert!(
            !permissions
                .publish
                .iter()
                .any(|subject| subject.starts_with("govbus.welfare")),
            "no service's events"
        );
        for denied in [
            "$JS.API.CONSUMER.*.GOVBUS_IDENTITY.welfare-identity",
            "$JS.API.CONSUMER.*.*.GOVBUS_IDENTITY.welfare-identity",
            "$JS.ACK.GOVBUS_IDENTITY.welfare-identity.>",
        ] {
            assert!(
                permissions
                    .publish_denied
                    .iter()
                    .any(|subject| subject == denied),
                "{denied}"
            );
        }
        let block = authorization(&[NatsUser {
            name: "gateway".to_owned(),
            password: "x".to_owned(),
            permissions,
        }]);
        assert!(block.contains("deny: ["), "{block}");
    }

    #[test]
    fn the_authorization_block_quotes_every_value() {
        let block = authorization(&[NatsUser {
            name: "welfare".to_owned(),
            password: "p\"w".to_owned(),
            permissions: Permissions {
                publish: vec!["govbus.welfare.>".to_owned()],
                publish_denied: Vec::new(),
                subscribe: vec!["_INBOX_welfare.>".to_owned()],
            },
        }]);
        assert!(block.contains(r#"password: "p\"w""#), "{block}");
        assert!(
            block.contains(r#"publish: { allow: ["govbus.welfare.>"] }"#),
            "{block}"
        );
    }
}
