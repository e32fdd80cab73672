//! The durability nats-server runs with is the documented one, read back from the running
//! server (its `/varz`), not from the file govbus writes: a single server started as `govbus up`
//! starts it syncs every message before acknowledging it; the interval variant (clusters with
//! R3 streams, tests) leaves JetStream's own interval.

use std::net::SocketAddr;
use std::time::Duration;

use govbus_natsd::readiness::monitor_get;
use govbus_natsd::{EmbeddedNats, EmbeddedNatsSettings, JetStreamSync};

/// The `jetstream.config` object of the server's `/varz`.
fn jetstream_config(monitor_port: u16) -> serde_json::Value {
    let body = monitor_get(monitor_port, "/varz").expect("/varz answers");
    let varz: serde_json::Value = serde_json::from_str(&body).expect("/varz is JSON");
    varz["jetstream"]["config"].clone()
}

fn sync_always_in_effect(sync: JetStreamSync) -> bool {
    let dir = tempfile::tempdir().expect("a temp folder");
    let server = EmbeddedNats::start(&EmbeddedNatsSettings {
        binary: None,
        dir: dir.path().to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        extra_config: None,
        sync,
    })
    .expect("starting nats-server");
    let config = jetstream_config(server.monitor_port());
    server
        .stop(Duration::from_secs(10))
        .expect("stopping nats-server");
    assert!(
        config["store_dir"]
            .as_str()
            .is_some_and(|store| store.starts_with(&*dir.path().to_string_lossy())),
        "JetStream stores in the server's folder: {config}"
    );
    config["sync_always"].as_bool().unwrap_or(false)
}

#[test]
fn a_single_server_syncs_every_acknowledged_message() {
    assert!(sync_always_in_effect(JetStreamSync::default()));
    assert!(sync_always_in_effect(JetStreamSync::Always));
}

#[test]
fn the_interval_variant_leaves_jetstreams_interval() {
    assert!(!sync_always_in_effect(JetStreamSync::Interval));
}
