//! The `govbus` binary as an operator runs it: `govbus up` on embedded defaults (free ports, a
//! temporary data folder), `govbus demo` against it, Ctrl-C, and traces exported over OTLP to a
//! real OTLP/gRPC receiver.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;

/// Spans as an OTLP collector received them: the name, the `govbus.service` attribute and the
/// `service.name` of the resource they came under.
#[derive(Debug, Clone, Default)]
struct Received(Arc<Mutex<Vec<ReceivedSpan>>>);

type ReceivedSpan = (String, Option<String>, Option<String>);

/// `value` if it is a string.
fn text_of(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value?.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource_name = resource_spans.resource.as_ref().and_then(|resource| {
                let name = resource
                    .attributes
                    .iter()
                    .find(|attribute| attribute.key == "service.name")?;
                text_of(name.value.as_ref())
            });
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let service = span
                        .attributes
                        .iter()
                        .find(|attribute| attribute.key == "govbus.service")
                        .and_then(|attribute| text_of(attribute.value.as_ref()));
                    received.push((span.name, service, resource_name.clone()));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running `govbus up`.
struct Up {
    child: Child,
    console: String,
    banner: String,
    /// Reads the rest of its output, so printing never meets a closed pipe.
    rest: std::thread::JoinHandle<String>,
}

/// `govbus up` with every address on a free port, reading its output until `Ready.`.
fn govbus_up(data_dir: &std::path::Path, extra: &[&str]) -> Up {
    govbus_up_logging_to(data_dir, extra, Stdio::inherit(), "warn")
}

/// `govbus up` with its logs (at `filter`) going to `stderr`.
fn govbus_up_logging_to(
    data_dir: &std::path::Path,
    extra: &[&str],
    stderr: Stdio,
    filter: &str,
) -> Up {
    let mut command = Command::new(env!("CARGO_BIN_EXE_govbus"));
    command
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--free-ports")
        .args(["--console-listen", "127.0.0.1:0"]);
    let mut child = command
        .args(extra)
        .env("GOVBUS_LOG", filter)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("govbus up runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    let mut console = None;
    for line in lines.by_ref() {
        let line = line.expect("output");
        if let Some(url) = line.trim().strip_prefix("console") {
            console = Some(url.trim().trim_end_matches('/').to_owned());
        }
        let ready = line == "Ready. Press Ctrl-C to stop.";
        banner.push(line);
        if ready {
            break;
        }
    }
    let console = console.unwrap_or_else(|| panic!("no console address in {banner:?}"));
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    Up {
        child,
        console,
        banner: banner.join("\n"),
        rest,
    }
}

/// Ctrl-C, then the exit code and what it printed while stopping.
fn interrupt_and_wait(mut up: Up) -> (Option<i32>, String) {
    let pid = Pid::from_raw(i32::try_from(up.child.id()).expect("pid"));
    signal::kill(pid, Signal::SIGINT).expect("Ctrl-C");
    let status = up.child.wait().expect("exits");
    let rest = up.rest.join().expect("output read");
    (status.code(), rest)
}

#[test]
fn up_runs_the_stack_the_demo_drives_it_and_ctrl_c_stops_it() {
    let data = tempfile::tempdir().expect("temp dir");
    let up = govbus_up(data.path(), &[]);
    let (console, banner) = (up.console.clone(), up.banner.clone());
    for part in ["nats", "console", "metrics"]
        .into_iter()
        .chain(govbus::services::names())
    {
        assert!(banner.contains(part), "{part} missing from:\n{banner}");
    }
    assert!(banner.contains("(embedded)"), "{banner}");

    let demo = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "demo",
            "--households",
            "6",
            "--json",
            "--console-url",
            &console,
        ])
        .output()
        .expect("govbus demo runs");
    assert_eq!(
        demo.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&demo.stdout).expect("JSON summary");
    assert_eq!(summary["citizens"], 12);
    assert_eq!(summary["failures"], 0);
    assert_eq!(summary["spbe_index"], "4.24");

    let services = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["services", "--console-url", &console])
        .output()
        .expect("govbus services runs");
    assert_eq!(services.status.code(), Some(0));

    let (code, stopping) = interrupt_and_wait(up);
    assert_eq!(code, Some(0), "Ctrl-C is a clean exit");
    assert!(stopping.contains("Stopped."), "{stopping}");
    // Stopped in order: the data folder is free for the next start, which sees the same events.
    let up = govbus_up(data.path(), &[]);
    let console = up.console.clone();
    let tail = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "tail",
            "--no-follow",
            "--history",
            "1000",
            "--json",
            "--service",
            "identity",
        ])
        .args([
            "--type",
            "identity.citizen.registered.v1",
            "--console-url",
            &console,
        ])
        .output()
        .expect("govbus tail runs");
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 12);
    let (code, _) = interrupt_and_wait(up);
    assert_eq!(code, Some(0));

    let after = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["services", "--console-url", &console])
        .output()
        .expect("govbus services runs");
    assert_eq!(after.status.code(), Some(1), "nothing answers once stopped");
    assert!(String::from_utf8_lossy(&after.stderr).contains("no govbus stack answers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_when_an_endpoint_is_set() {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream_of(listener)),
    );

    let data = tempfile::tempdir().expect("temp dir");
    let data_path = data.path().to_owned();
    let endpoint_for_up = endpoint.clone();
    let up = tokio::task::spawn_blocking(move || {
        govbus_up(&data_path, &["--otlp-endpoint", &endpoint_for_up])
    })
    .await
    .expect("started");
    let console = up.console.clone();
    let demo = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "demo",
            "--households",
            "3",
            "--json",
            "--console-url",
            &console,
        ])
        .output()
        .expect("govbus demo runs");
    assert_eq!(
        demo.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    // Ctrl-C flushes the spans still waiting for export.
    let (code, _) = tokio::task::spawn_blocking(move || interrupt_and_wait(up))
        .await
        .expect("stopped");
    assert_eq!(code, Some(0));

    let spans = received.0.lock().expect("lock").clone();
    // Each service's spans come under its own service.name: a tracing backend draws the city's
    // services, not one process.
    let name_with = |prefix: &str, service: &str| {
        spans.iter().any(|(name, attribute, resource)| {
            name.starts_with(prefix)
                && attribute.as_deref() == Some(service)
                && resource.as_deref() == Some(service)
        })
    };
    for (name, attribute, resource) in &spans {
        if let Some(service) = attribute {
            assert_eq!(resource.as_ref(), Some(service), "{name}");
        }
    }
    assert!(
        name_with(
            "govbus.identity.v1.IdentityService/RegisterCitizen",
            "identity"
        ),
        "{spans:?}"
    );
    assert!(
        name_with("process govbus.identity.citizen", "welfare"),
        "{spans:?}"
    );
    assert!(name_with("create govbus.welfare", "welfare"), "{spans:?}");
    collector.abort();
}

fn tokio_stream_of(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
}

/// Everything the collector received, as text, for searching.
#[derive(Debug, Clone, Default)]
struct Dump(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl TraceService for Dump {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut dump = self.0.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    dump.push(format!("{span:?}"));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_run_leaves_no_personal_data_in_logs_or_spans() {
    let spans = Dump::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(spans.clone()))
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let data = tempfile::tempdir().expect("temp dir");
    let log_path = data.path().join("captured.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let data_path = data.path().join("stack");
    let up = tokio::task::spawn_blocking(move || {
        govbus_up_logging_to(
            &data_path,
            &["--otlp-endpoint", &endpoint],
            Stdio::from(log),
            // Everything govbus logs, at every level.
            "info,govbus=trace,govbus_bus=trace,govbus_kit=trace,govbus_identity=trace,\
             govbus_welfare=trace,govbus_licensing=trace,govbus_evaluation=trace,\
             govbus_complaints=trace",
        )
    })
    .await
    .expect("started");
    let (seed, households) = (4242, 30);
    let demo = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["demo", "--json", "--console-url", &up.console])
        .args([
            "--seed",
            &seed.to_string(),
            "--households",
            &households.to_string(),
        ])
        .output()
        .expect("govbus demo runs");
    assert_eq!(
        demo.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let (code, _) = tokio::task::spawn_blocking(move || interrupt_and_wait(up))
        .await
        .expect("stopped");
    assert_eq!(code, Some(0));
    collector.abort();

    let logs = std::fs::read_to_string(&log_path).expect("captured logs");
    let spans = spans.0.lock().expect("lock").join("\n");
    assert!(logs.lines().count() > 40, "the logs were captured: {logs}");
    assert!(
        spans.matches("Span {").count() > 500,
        "the spans were captured"
    );
    let mut personal = Vec::new();
    for household in 0..households {
        let (members, kk) = govbus::demo::people::household(seed, household);
        personal.push(kk);
        for member in members {
            personal.push(member.nik);
            personal.push(member.name);
            personal.push(member.birth_date);
        }
        personal.push(format!("Jl. Merdeka {household}"));
    }
    // What residents, officers and agencies wrote in the demo's complaints.
    for text in [
        "belum diterima di rekening",
        "Lampu penerangan jalan",
        "Lokasi tidak disebutkan",
        "Sudah kami tindak lanjuti",
        "Masih belum selesai",
    ] {
        personal.push(text.to_owned());
    }
    // The values searched for are what the stack really handled: the register holds them.
    let mut register = std::fs::read(data.path().join("stack/identity.db")).expect("database");
    register.extend(std::fs::read(data.path().join("stack/identity.db-wal")).unwrap_or_default());
    let register = String::from_utf8_lossy(&register);
    let (first, _) = govbus::demo::people::household(seed, 0);
    assert!(
        register.contains(&first[0].nik),
        "the demo's NIKs are in the register"
    );
    for value in &personal {
        assert!(
            !logs.contains(value.as_str()),
            "the logs contain personal data: {value}"
        );
        assert!(
            !spans.contains(value.as_str()),
            "a span contains personal data: {value}"
        );
    }
}
