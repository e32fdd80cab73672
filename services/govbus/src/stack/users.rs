//! The embedded NATS server's users: one per service, with the permissions its contract needs.

use govbus_bus::BusOptions;
use govbus_bus::permissions::{NatsUser, Permissions, authorization, inbox_prefix};

use super::callers::{CONSOLE, GATEWAY};
use super::error::StackError;
use crate::services::{SERVICES, others_than};

/// The NATS users of the embedded server: one per service with the permissions its contract
/// needs, and the console with an operator's. Passwords are random and new at every start;
/// they live only in memory and in the generated server configuration (readable by the owner).
#[derive(Debug, Clone, Default)]
pub(super) struct NatsUsers {
    passwords: std::collections::HashMap<String, String>,
    pub(super) authorization: String,
    stream_replicas: usize,
}

impl NatsUsers {
    pub(super) fn generate() -> Result<Self, StackError> {
        let topology = govbus_bus::Topology::default();
        let contracts = SERVICES
            .iter()
            .map(|declaration| {
                declaration
                    .contract
                    .among(&others_than(declaration.name))
                    .map_err(|error| StackError::Contract {
                        service: declaration.name,
                        reason: error.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut users: Vec<NatsUser> = contracts
            .iter()
            .map(|contract| NatsUser {
                name: contract.service.clone(),
                password: uuid::Uuid::new_v4().simple().to_string(),
                permissions: Permissions::for_service(contract, &topology),
            })
            .collect();
        users.push(NatsUser {
            name: GATEWAY.to_owned(),
            password: uuid::Uuid::new_v4().simple().to_string(),
            permissions: Permissions::gateway(&topology, GATEWAY, &contracts),
        });
        users.push(NatsUser {
            name: CONSOLE.to_owned(),
            password: uuid::Uuid::new_v4().simple().to_string(),
            permissions: Permissions::operator(&topology, CONSOLE),
        });
        Ok(Self {
            passwords: users
                .iter()
                .map(|user| (user.name.clone(), user.password.clone()))
                .collect(),
            authorization: authorization(&users),
            stream_replicas: 1,
        })
    }

    /// The same users; the streams the services create get `replicas` copies.
    pub(super) fn with_stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_replicas = replicas;
        self
    }

    /// Connection options for `name`: its user and reply prefix when users were generated.
    pub(super) fn options(&self, nats_url: &str, name: &str) -> BusOptions {
        let options = BusOptions::new(nats_url)
            .client_name(name)
            .stream_replicas(self.stream_replicas);
        match self.passwords.get(name) {
            Some(password) => options
                .user_password(name, password.clone())
                .inbox_prefix(inbox_prefix(name)),
            None => options,
        }
    }
}
