//! Starting the declared services in dependency order, each after the services it calls; when
//! one fails to start, those already started are stopped again, in reverse.

use std::collections::BTreeMap;
use std::sync::Arc;

use govbus_civil::agencies::Agencies;

use govbus_kit::access::AccessPolicy;
use govbus_kit::audit::SubjectKey;
use govbus_kit::declaration::{
    RunningService, ServiceDeclaration, ServiceEnvironment, start_order,
};
use govbus_kit::in_process::InProcessChannel;

use super::error::StackError;
use super::trust::Certificates;
use super::users::NatsUsers;
use crate::config::StackConfig;
use crate::endpoints::ServiceEndpoint;
use crate::services::{SERVICES, others_than};

/// What a service needs from the stack to start, beside its own configuration.
pub(super) struct Shared<'a> {
    pub(super) config: &'a StackConfig,
    pub(super) nats_url: &'a str,
    pub(super) users: &'a NatsUsers,
    pub(super) certificates: Option<&'a Certificates>,
    pub(super) access: Option<&'a AccessPolicy>,
    pub(super) audit_subject_key: Option<&'a SubjectKey>,
    pub(super) audit_timestamps: Option<&'a govbus_kit::audit::Tsa>,
    pub(super) agencies: &'a Arc<Agencies>,
}

/// The started services, in the order they started.
#[derive(Debug)]
pub(super) struct RunningServices {
    started: Vec<(&'static str, Box<dyn RunningService>)>,
}

impl RunningServices {
    /// Starts every declared service, or none: on a failure, what started is stopped again.
    pub(super) async fn start(shared: &Shared<'_>) -> Result<Self, StackError> {
        let order = start_order(SERVICES).map_err(StackError::Declarations)?;
        let mut running = Self {
            started: Vec::with_capacity(order.len()),
        };
        for declaration in order {
            match running.start_one(declaration, shared).await {
                Ok(service) => running.started.push((declaration.name, service)),
                Err(error) => {
                    running.stop().await;
                    return Err(error);
                }
            }
        }
        Ok(running)
    }

    async fn start_one(
        &self,
        declaration: &'static ServiceDeclaration,
        shared: &Shared<'_>,
    ) -> Result<Box<dyn RunningService>, StackError> {
        let name = declaration.name;
        let section = shared
            .config
            .service(name)
            .ok_or_else(|| StackError::Declarations(format!("{name} has no configuration")))?;
        let scheme = if shared.certificates.is_some() {
            "https"
        } else {
            "http"
        };
        let mut peers = BTreeMap::new();
        for called in declaration.calls {
            let address = self.address_of(called).ok_or_else(|| {
                StackError::Declarations(format!("{name} calls {called}, not started"))
            })?;
            peers.insert(*called, format!("{scheme}://{address}"));
        }
        let tls = match shared.certificates {
            Some(certificates) => Some(certificates.identity(name)?),
            None => None,
        };
        let environment = ServiceEnvironment {
            database_url: shared.config.database_url(name),
            listen: section.listen,
            bus: shared
                .users
                .options(shared.nats_url, name)
                .wait_for_server(true),
            storage: shared.config.storage.settings(),
            tls,
            access: shared.access.cloned(),
            audit_subject_key: shared.audit_subject_key.cloned(),
            audit_timestamps: shared.audit_timestamps.cloned(),
            peers,
            others: others_than(name),
            agencies: Arc::clone(shared.agencies),
            members: shared.config.instance.members(&shared.config.services),
            settings: section.settings.clone(),
        };
        (declaration.start)(environment)
            .await
            .map_err(|source| StackError::Service {
                service: name,
                source,
            })
    }

    fn address_of(&self, service: &str) -> Option<std::net::SocketAddr> {
        self.started
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, running)| running.address())
    }

    /// The gRPC services of `service` for `caller` in this process (see
    /// [`govbus_kit::in_process`]).
    pub(super) fn in_process(&self, service: &str, caller: &str) -> Option<InProcessChannel> {
        self.started
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, running)| running.in_process(caller))
    }

    /// Where each service listens, in the order of the services' list.
    pub(super) fn endpoints(&self) -> Vec<ServiceEndpoint> {
        SERVICES
            .iter()
            .filter_map(|declaration| {
                let address = self.address_of(declaration.name)?;
                Some(ServiceEndpoint::new(declaration.name, address))
            })
            .collect()
    }

    /// Stops them in reverse order of their start: callers before the services they call, so
    /// their calls in flight can finish.
    pub(super) async fn stop(self) {
        for (_, service) in self.started.into_iter().rev() {
            service.stop().await;
        }
    }
}
