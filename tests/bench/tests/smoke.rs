//! Every scenario, tiny: the paths run end to end and move the counts they claim. No timing is
//! asserted; the figures come from `cargo bench -p govbus-bench`.

use govbus_bench::calls::{CallBench, CallSettings};
use govbus_bench::consume::{self, ConsumeSettings};
use govbus_bench::publish::{self, PublishSettings};
use govbus_harness::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_runs_both_paths() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = PublishSettings {
        events: 1_500,
        payload: 256,
        in_flight: 64,
    };
    let comparison = publish::compare(&server.client_url(), dir.path(), settings)
        .await
        .expect("runs");
    assert_eq!(comparison.govbus.operations, 1_500);
    assert_eq!(comparison.baseline.operations, 1_500);
    assert!(comparison.ratio > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_runs_both_paths() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = ConsumeSettings {
        events: 1_500,
        payload: 256,
    };
    let comparison = consume::compare(&server.client_url(), dir.path(), settings)
        .await
        .expect("runs");
    assert_eq!(comparison.govbus.operations, 1_500);
    assert_eq!(comparison.baseline.operations, 1_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_both_paths_over_a_growing_register() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bench = CallBench::new(dir.path()).expect("certificates");
    let settings = CallSettings {
        calls: 640,
        in_flight: 64,
    };
    for citizens in [500, 2_000] {
        bench.grow_to(citizens).await.expect("register filled");
        assert_eq!(bench.citizens(), citizens);
        let comparison = bench
            .compare(&server.client_url(), settings)
            .await
            .expect("runs");
        assert_eq!(comparison.govbus.operations, 640);
        assert_eq!(comparison.baseline.operations, 640);
        assert!(comparison.govbus.latency.is_some());
    }
}
