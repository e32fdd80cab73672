//! What the console's handlers share.

use std::sync::Arc;

use govbus_bus::Bus;
use govbus_kit::audit::{SubjectKey, TrustAnchors};
use govbus_kit::tls::ServiceTls;
use tokio_util::sync::CancellationToken;

use super::inspect::Rates;
use crate::endpoints::Endpoints;
use crate::observability::Observability;

/// What the console needs to read the processing log: the subject key and the CA that issued
/// the writers' certificates.
#[derive(Debug, Clone)]
pub struct AuditAccess {
    /// The deployment's key for hashing people.
    pub subject_key: SubjectKey,
    /// The CA the writers' certificates must chain to.
    pub trust: TrustAnchors,
}

/// What the console's handlers share.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    bus: Bus,
    endpoints: Endpoints,
    observability: Observability,
    rates: Rates,
    /// The console's identity for its gRPC calls, when the services speak mutual TLS.
    tls: Option<ServiceTls>,
    /// Reading the processing log, when the stack keeps one.
    audit: Option<AuditAccess>,
    /// Cancelled when the console stops, ending open event streams.
    closing: CancellationToken,
}

impl ConsoleState {
    /// State over a bus connection of its own.
    pub fn new(
        bus: Bus,
        endpoints: Endpoints,
        observability: Observability,
        tls: Option<ServiceTls>,
        audit: Option<AuditAccess>,
    ) -> Self {
        Self {
            inner: Arc::new(StateInner {
                bus,
                endpoints,
                observability,
                rates: Rates::default(),
                tls,
                audit,
                closing: CancellationToken::new(),
            }),
        }
    }

    pub(super) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub(super) fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    pub(super) fn observability(&self) -> &Observability {
        &self.inner.observability
    }

    pub(super) fn rates(&self) -> &Rates {
        &self.inner.rates
    }

    pub(super) fn tls(&self) -> Option<&ServiceTls> {
        self.inner.tls.as_ref()
    }

    pub(super) fn audit(&self) -> Option<&AuditAccess> {
        self.inner.audit.as_ref()
    }

    pub(super) fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }
}
