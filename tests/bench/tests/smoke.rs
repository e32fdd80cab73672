//! Every scenario, tiny: the paths run end to end and move the counts they claim. No timing is
//! asserted; the figures come from `cargo bench -p govbus-bench`.

use govbus_bench::calls::{CallBench, CallSettings};
use govbus_bench::commit::{self, CommitSettings};
use govbus_bench::consume::{self, ConsumeSettings};
use govbus_bench::e2e;
use govbus_bench::gateway;
use govbus_bench::memory::{self, MemorySettings};
use govbus_bench::publish::{self, PublishSettings};
use govbus_bench::webhooks;
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
    assert!(comparison.steps.iter().all(|step| step.operations == 1_500));
    assert!(comparison.ratio > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_run_one_and_many_in_flight() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = commit::run(
        &server.client_url(),
        dir.path(),
        CommitSettings {
            commands: 400,
            postgres: false,
        },
    )
    .await
    .expect("runs");
    assert_eq!(runs.len(), 4);
    assert!(
        runs.iter()
            .all(|run| run.run.operations > 0 && run.per_commit >= 1.0)
    );
    // Every SQLite run has its floor beside it, with the same commands. (Runs this small may
    // end within one tick of the processor counters; their arithmetic has a unit test.)
    for run in &runs {
        let raw = run.raw.as_ref().expect("the raw SQLite run");
        assert_eq!(raw.operations, run.run.operations);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_through_the_gateway_runs_beside_grpc() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bench = CallBench::new(dir.path()).expect("certificates");
    bench.grow_to(500).await.expect("register filled");
    let comparisons = gateway::compare(
        &bench,
        &server.client_url(),
        CallSettings {
            calls: 640,
            in_flight: 64,
        },
        dir.path(),
    )
    .await
    .expect("runs");
    assert_eq!(
        comparisons.len(),
        8,
        "one in flight and 64; the gateway in process and on its own, over HTTPS and HTTP"
    );
    for comparison in &comparisons[..4] {
        assert_eq!(comparison.govbus.operations, 80, "{}", comparison.name);
    }
    for comparison in &comparisons[4..] {
        assert_eq!(comparison.govbus.operations, 640, "{}", comparison.name);
        assert_eq!(comparison.baseline.operations, 640, "{}", comparison.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_run_beside_a_raw_forwarder() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let comparison = webhooks::compare(
        &server.client_url(),
        dir.path(),
        webhooks::WebhookBenchSettings {
            events: 40,
            latency_events: 5,
        },
    )
    .await
    .expect("runs");
    assert_eq!(comparison.govbus.operations, 40);
    // The raw forwarder drains every event the gateway's run stored.
    assert_eq!(comparison.baseline.operations, 45);
    assert!(comparison.govbus.latency.is_some() && comparison.baseline.latency.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_applies_every_command_in_the_projection() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let calls = CallBench::new(dir.path()).expect("certificates");
    let settings = e2e::EndToEndSettings {
        peak_commands: 300,
        paced_commands: 100,
        in_flight: 16,
        postgres: false,
    };
    let run = e2e::run(&server.client_url(), dir.path(), &calls, settings)
        .await
        .expect("runs");
    assert_eq!(run.peak.operations, 300);
    assert_eq!(run.paced.operations, 100);
    let latency = run.paced.latency.expect("every event timed");
    assert!(latency.p50_ms <= latency.p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_read_from_every_service_process_under_load() {
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = MemorySettings {
        registrations: 200,
        in_flight: 16,
    };
    let run = memory::run(&server.client_url(), dir.path(), settings)
        .await
        .expect("runs");
    assert_eq!(
        run.commands.operations, 300,
        "200 registrations and 100 deaths"
    );
    assert_eq!(run.events, 300, "one event per command");
    let services: Vec<&str> = run.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, ["identity", "evaluation", "welfare", "licensing"]);
    assert!(
        run.services
            .iter()
            .all(|service| service.peak_rss_mib > 1.0)
    );
}
