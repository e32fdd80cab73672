//! Per-service NATS users with the permissions derived from the services' contracts, on a real
//! nats-server: each service runs its adapter, but cannot publish another service's events nor
//! read events it was not granted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use govbus_bus::permissions::{NatsUser, Permissions, authorization, inbox_prefix};
use govbus_bus::{Bus, BusOptions, Consumer, RetryPolicy, ServiceAdapter};
use govbus_harness::NatsServer;
use govbus_proto::identity::v1::CitizenDeceased;
use govbus_proto::welfare::v1::BenefitSuspended;

fn identity_adapter() -> ServiceAdapter {
    ServiceAdapter::new("identity").publishes::<CitizenDeceased>()
}

fn welfare_adapter(handled: Arc<AtomicUsize>) -> ServiceAdapter {
    ServiceAdapter::new("welfare")
        .publishes::<BenefitSuspended>()
        .consumer(
            Consumer::new("welfare-identity").on(move |_event: CitizenDeceased, _meta| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
        )
}

fn options(server: &NatsServer, user: &str) -> BusOptions {
    BusOptions::new(server.client_url())
        .client_name(user)
        .user_password(user, format!("{user}-secret"))
        .inbox_prefix(inbox_prefix(user))
        .request_timeout(Duration::from_secs(2))
        .publish_retry(RetryPolicy::default().give_up_after(Some(Duration::from_secs(2))))
}

/// A nats-server with exactly `users`, each `<name>-secret`.
async fn with_users(users: Vec<NatsUser>) -> NatsServer {
    tokio::task::spawn_blocking(move || NatsServer::start_with_config(&authorization(&users)))
        .await
        .expect("joined")
        .expect("nats-server with users")
}

/// Identity's adapter running with its own user.
async fn identity_running(server: &NatsServer) -> (Bus, govbus_bus::RunningAdapter) {
    let bus = Bus::connect(options(server, "identity"))
        .await
        .expect("identity connects");
    let identity = identity_adapter()
        .start(&bus)
        .await
        .expect("identity provisions its stream");
    (bus, identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_do_only_what_their_contracts_grant() {
    let topology = govbus_bus::Topology::new("govbus").expect("topology");
    let handled = Arc::new(AtomicUsize::new(0));
    let contracts = [
        identity_adapter().contract().expect("identity contract"),
        welfare_adapter(handled.clone())
            .contract()
            .expect("welfare contract"),
        ServiceAdapter::new("licensing")
            .contract()
            .expect("licensing contract"),
    ];
    let users: Vec<NatsUser> = contracts
        .iter()
        .map(|contract| NatsUser {
            name: contract.service.clone(),
            password: format!("{}-secret", contract.service),
            permissions: Permissions::for_service(contract, &topology),
        })
        .collect();
    let server = with_users(users).await;

    // Each service runs its adapter with its own user.
    let (identity_bus, identity) = identity_running(&server).await;
    let welfare_bus = Bus::connect(options(&server, "welfare"))
        .await
        .expect("welfare connects");
    let welfare = welfare_adapter(handled.clone())
        .start(&welfare_bus)
        .await
        .expect("welfare provisions its stream and its consumer of identity's events");
    identity
        .publisher()
        .publish(&CitizenDeceased {
            citizen_ref: "cit-1".to_owned(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await
        .expect("identity publishes its own event");
    let deadline = Instant::now() + Duration::from_secs(20);
    while handled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "welfare never received the granted event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Welfare cannot publish identity's events.
    let forged = welfare_bus
        .publisher("identity")
        .expect("a publisher object")
        .publish(&CitizenDeceased {
            citizen_ref: "cit-2".to_owned(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await;
    assert!(forged.is_err(), "welfare published an identity event");

    // Licensing, granted nothing of identity's, can neither consume nor listen to it.
    let licensing_bus = Bus::connect(options(&server, "licensing"))
        .await
        .expect("licensing connects");
    let stolen = ServiceAdapter::new("licensing")
        .consumer(
            Consumer::new("licensing-identity")
                .on(|_event: CitizenDeceased, _meta| async { Ok(()) }),
        )
        .start(&licensing_bus)
        .await;
    assert!(
        stolen.is_err(),
        "licensing created a consumer on identity's stream"
    );
    let mut eavesdropper = licensing_bus
        .client()
        .subscribe("govbus.identity.>")
        .await
        .expect("the subscribe call itself succeeds; the server refuses it");
    identity
        .publisher()
        .publish(&CitizenDeceased {
            citizen_ref: "cit-3".to_owned(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await
        .expect("published");
    let overheard = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut eavesdropper),
    )
    .await;
    assert!(
        !matches!(overheard, Ok(Some(_))),
        "licensing read identity's events"
    );
    assert!(
        server.log().contains("Subscription Violation")
            || server.log().contains("Permissions Violation"),
        "the server logged the refused subscription"
    );

    let stored = identity_bus.jetstream().get_stream("GOVBUS_IDENTITY").await;
    // Identity's user may read its own stream's info: only its own two events are stored.
    let mut stream = stored.expect("identity reads its stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 2);

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_publishes_applications_events_and_none_of_a_service() {
    let topology = govbus_bus::Topology::new("govbus").expect("topology");
    let identity_contract = identity_adapter().contract().expect("identity contract");
    let users = vec![
        NatsUser {
            name: "identity".to_owned(),
            password: "identity-secret".to_owned(),
            permissions: Permissions::for_service(&identity_contract, &topology),
        },
        NatsUser {
            name: "gateway".to_owned(),
            password: "gateway-secret".to_owned(),
            permissions: Permissions::gateway(
                &topology,
                "gateway",
                &[
                    identity_contract.clone(),
                    welfare_adapter(Arc::new(AtomicUsize::new(0)))
                        .contract()
                        .expect("welfare contract"),
                ],
            ),
        },
    ];
    let server = with_users(users).await;
    let (_identity_bus, identity) = identity_running(&server).await;
    let gateway = Bus::connect(options(&server, "gateway"))
        .await
        .expect("the gateway connects");

    // Its own stream and subjects: created, published to and read back.
    govbus_bus::provision::ensure_stream(
        gateway.jetstream(),
        gateway.stream_settings(),
        &topology.application_stream(),
        vec![topology.application_subjects()],
        "applications' events",
    )
    .await
    .expect("the gateway makes the applications' stream");
    let stored = gateway
        .jetstream()
        .publish(
            topology.application_subject("dinkes.simpus", "newBirth"),
            "{}".into(),
        )
        .await
        .expect("sent")
        .await
        .expect("stored");
    let stream = gateway
        .jetstream()
        .get_stream(topology.application_stream())
        .await
        .expect("its stream");
    stream
        .get_raw_message(stored.sequence)
        .await
        .expect("read back");

    // A service's event, a service's stream: refused.
    let forged = gateway
        .publisher("identity")
        .expect("a publisher object")
        .publish(&CitizenDeceased {
            citizen_ref: "cit-9".to_owned(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await;
    assert!(forged.is_err(), "the gateway published an identity event");

    // A consumer of its own on identity's stream, for a subscriber; never welfare's.
    let identity_stream = gateway
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("the gateway reads identity's stream's info");
    let consumer = |name: &str| async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: "govbus.identity.citizen.deceased.v1".to_owned(),
        ..Default::default()
    };
    identity_stream
        .create_consumer(consumer("gw-subscriber"))
        .await
        .expect("a subscriber's consumer");
    assert!(
        identity_stream
            .create_consumer(consumer("welfare-identity"))
            .await
            .is_err(),
        "the gateway took welfare's consumer name"
    );
    identity.shutdown().await;
}
