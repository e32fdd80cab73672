//! What the gateway tells the bus about the bus's use, as events of its own (`gateway.*`): how
//! often each application called each service's method through it, and how the link to the
//! national SPLP fares. Counted in memory on the request path and reported at an interval
//! through the gateway database's outbox; the evaluation service reads them as evidence of SPBE
//! indicator 18. They name applications, services and links, never a person.

use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Causality, Publisher, ServiceAdapter};
use govbus_kit::call_counts::{CallCounter, CallReporter, Counted};
use govbus_proto::gateway::v1::{ApplicationCallsCounted, LinkChecked};
use govbus_storage::Database;

/// The gateway's name on the bus: its events are `gateway.*`, in its own stream.
pub const SERVICE: &str = "gateway";

/// The gateway as a publisher on the bus.
pub fn adapter() -> ServiceAdapter {
    ServiceAdapter::new(SERVICE)
        .publishes::<ApplicationCallsCounted>()
        .publishes::<LinkChecked>()
}

/// A call through the gateway: the application, the service (`identity`) and the method.
type CallKey = (Arc<str>, Arc<str>, Arc<str>);

/// A use of a link: the link (`splp`), the operation (`publish`, `call`), and whether it
/// succeeded.
type LinkKey = (&'static str, &'static str, bool);

/// The counts, shared by the request handlers and the reporters.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    calls: CallCounter<CallKey>,
    links: CallCounter<LinkKey>,
}

/// The reporters of a [`Usage`], stopped together.
#[derive(Debug)]
pub struct UsageReporters {
    calls: CallReporter,
    links: CallReporter,
}

impl Usage {
    /// Counts a call of `service`'s `method` by `application`.
    pub fn call(&self, application: &Arc<str>, service: &Arc<str>, method: &Arc<str>) {
        self.calls.count((
            Arc::clone(application),
            Arc::clone(service),
            Arc::clone(method),
        ));
    }

    /// Counts a use of `link` for `operation`.
    pub fn link(&self, link: &'static str, operation: &'static str, succeeded: bool) {
        self.links.count((link, operation, succeeded));
    }

    /// Reports the counts into `db`'s outbox every `interval`, as `publisher`'s events.
    pub fn report(
        &self,
        db: &Database,
        publisher: &Publisher,
        interval: Duration,
    ) -> UsageReporters {
        let calls_publisher = publisher.clone();
        let calls = CallReporter::spawn(
            self.calls.clone(),
            db.clone(),
            interval,
            move |counted: Counted<'_, CallKey>| {
                let (application, service, method) = counted.key;
                calls_publisher.encode(
                    &ApplicationCallsCounted {
                        caller: application.to_string(),
                        method: method.to_string(),
                        calls: counted.calls,
                        period_start: counted.period_start.to_owned(),
                        period_end: counted.period_end.to_owned(),
                        service: service.to_string(),
                    },
                    &Causality::root(),
                )
            },
        );
        let links_publisher = publisher.clone();
        let links = CallReporter::spawn(
            self.links.clone(),
            db.clone(),
            interval,
            move |counted: Counted<'_, LinkKey>| {
                let (link, operation, succeeded) = *counted.key;
                let (ok, failed) = if succeeded {
                    (counted.calls, 0)
                } else {
                    (0, counted.calls)
                };
                links_publisher.encode(
                    &LinkChecked {
                        link: link.to_owned(),
                        operation: operation.to_owned(),
                        succeeded: ok,
                        failed,
                    },
                    &Causality::root(),
                )
            },
        );
        UsageReporters { calls, links }
    }
}

impl UsageReporters {
    /// Reports what was counted and stops.
    pub async fn stop(self) {
        self.calls.stop().await;
        self.links.stop().await;
    }
}
