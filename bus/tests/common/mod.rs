//! Shared pieces of the bus tests: events defined in Rust with prost's derive, and a connected
//! bus on a fresh server.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use govbus_bus::{
    Backoff, Bus, BusOptions, Consumer, Event, EventMeta, HandleError, RetryPolicy, RunningAdapter,
    ServiceAdapter,
};
use govbus_harness::NatsServer;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CitizenRegistered {
    #[prost(string, tag = "1")]
    pub citizen_ref: String,
    #[prost(string, tag = "2")]
    pub kelurahan_code: String,
}

impl prost::Name for CitizenRegistered {
    const PACKAGE: &'static str = "govbus.identity.v1";
    const NAME: &'static str = "CitizenRegistered";
}

impl Event for CitizenRegistered {
    const TYPE: &'static str = "identity.citizen.registered.v1";

    fn subject(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.citizen_ref.as_str().into())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CitizenDeceased {
    #[prost(string, tag = "1")]
    pub citizen_ref: String,
}

impl prost::Name for CitizenDeceased {
    const PACKAGE: &'static str = "govbus.identity.v1";
    const NAME: &'static str = "CitizenDeceased";
}

impl Event for CitizenDeceased {
    const TYPE: &'static str = "identity.citizen.deceased.v1";
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BenefitSuspended {
    #[prost(string, tag = "1")]
    pub benefit_ref: String,
}

impl prost::Name for BenefitSuspended {
    const PACKAGE: &'static str = "govbus.welfare.v1";
    const NAME: &'static str = "BenefitSuspended";
}

impl Event for BenefitSuspended {
    const TYPE: &'static str = "welfare.benefit.suspended.v1";
}

pub fn registered(n: usize) -> CitizenRegistered {
    CitizenRegistered {
        citizen_ref: format!("citizen-{n}"),
        kelurahan_code: "35.73.02.1001".to_owned(),
    }
}

pub fn options(server: &NatsServer) -> BusOptions {
    BusOptions::new(server.client_url())
        .client_name("bus-tests")
        .request_timeout(Duration::from_secs(2))
        .publish_retry(
            RetryPolicy::default()
                .backoff(Backoff::new(
                    Duration::from_millis(20),
                    Duration::from_millis(500),
                ))
                .give_up_after(Some(Duration::from_secs(60))),
        )
}

pub async fn start() -> (NatsServer, Bus) {
    let server = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(options(&server)).await.expect("bus connects");
    (server, bus)
}

/// Polls `check` every 20 ms until it returns true or `limit` passes (then panics with `what`).
/// Waiting for a condition is not a timed assertion: the limit only bounds a hung test.
pub async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The identity service as a publisher of `CitizenRegistered`.
pub async fn identity(bus: &Bus) -> RunningAdapter {
    ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .start(bus)
        .await
        .expect("identity adapter starts")
}

/// A consumer of `CitizenRegistered` that only counts what it handles.
pub fn counting_consumer(name: &str, counter: &Arc<AtomicUsize>) -> Consumer {
    let counter = Arc::clone(counter);
    Consumer::new(name).on(move |_: CitizenRegistered, _meta: EventMeta| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandleError>(())
        }
    })
}
