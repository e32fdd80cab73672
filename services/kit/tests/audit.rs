//! The processing log on a real nats-server: appending, verifying, a person's history, and every
//! kind of tampering an operator with full rights on the stream could try.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use govbus_bus::{Bus, BusOptions, Topology};
use govbus_harness::NatsServer;
use govbus_kit::audit::{
    self, Block, BlockSigner, DataSubject, EntryKind, ProblemKind, Processing, ProcessingLog,
    Report, StoredBlock, SubjectKey, TrustAnchors,
};
use govbus_kit::development_ca::generate_development_certificates;
use govbus_kit::tls::{CertificatePaths, ServiceTls};

const AMINAH: &str = "3573015508900001";
const BUDI: &str = "3573011203850002";

struct Deployment {
    _certificates: tempfile::TempDir,
    dir: std::path::PathBuf,
    key: SubjectKey,
    trust: TrustAnchors,
}

impl Deployment {
    fn new() -> Self {
        let certificates = tempfile::tempdir().expect("temp dir");
        let dir = certificates.path().to_owned();
        generate_development_certificates(&dir, &["identity", "welfare"]).expect("certificates");
        let trust = TrustAnchors::from_pem(&std::fs::read(dir.join("ca.pem")).expect("ca"))
            .expect("trust anchors");
        Self {
            _certificates: certificates,
            dir,
            key: SubjectKey::new([42; 32]),
            trust,
        }
    }

    fn signer(&self, service: &str) -> BlockSigner {
        signer_in(&self.dir, service)
    }
}

fn signer_in(dir: &Path, service: &str) -> BlockSigner {
    let tls = ServiceTls::from_files(service, &CertificatePaths::in_dir(dir, service))
        .expect("certificate");
    BlockSigner::of_service(&tls).expect("signer")
}

async fn bus(server: &NatsServer) -> Bus {
    Bus::connect(BusOptions::new(server.client_url()).client_name("audit-tests"))
        .await
        .expect("bus connects")
}

fn call(log: &ProcessingLog, requester: &str, method: &str, nik: &str) {
    log.record(Processing {
        kind: EntryKind::Call,
        requester: &std::sync::Arc::from(requester),
        via: None,
        action: &std::sync::Arc::from(method),
        purpose: &std::sync::Arc::from("verify a resident"),
        subject: DataSubject::Nik(nik),
        trace_id: opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").ok(),
    });
}

async fn written(log: &ProcessingLog) {
    for _ in 0..500 {
        if log.pending() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} entries still not written", log.pending());
}

/// Identity writes three blocks (2, 3 and 2 entries), welfare one; returns what is stored.
async fn filled_log(server: &NatsServer, deployment: &Deployment) -> Vec<StoredBlock> {
    let bus = bus(server).await;
    let (identity, identity_writer) = ProcessingLog::start(
        &bus,
        deployment.signer("identity"),
        deployment.key.clone(),
        None,
    )
    .await
    .expect("identity's log");
    let (welfare, welfare_writer) = ProcessingLog::start(
        &bus,
        deployment.signer("welfare"),
        deployment.key.clone(),
        None,
    )
    .await
    .expect("welfare's log");
    let verify = "govbus.identity.v1.IdentityService/VerifyCitizen";
    for batch in [
        vec![AMINAH, BUDI],
        vec![AMINAH, BUDI, AMINAH],
        vec![BUDI, AMINAH],
    ] {
        for nik in batch {
            call(&identity, "welfare", verify, nik);
        }
        written(&identity).await;
    }
    call(
        &welfare,
        "operator",
        "govbus.welfare.v1.WelfareService/ApplyForProgramme",
        AMINAH,
    );
    written(&welfare).await;
    identity_writer.shutdown().await;
    welfare_writer.shutdown().await;
    audit::read_log(bus.jetstream(), bus.topology())
        .await
        .expect("log read")
}

fn check(blocks: &[StoredBlock], deployment: &Deployment, heads: &[audit::Head]) -> Report {
    audit::verify(blocks, &Topology::default(), &deployment.trust, heads)
}

fn kinds(report: &Report) -> Vec<ProblemKind> {
    let mut kinds: Vec<ProblemKind> = report.problems.iter().map(|problem| problem.kind).collect();
    kinds.dedup();
    kinds
}

/// Replaces the whole stream with `blocks`, as an operator with every right could.
async fn rewrite(server: &NatsServer, blocks: &[(String, Block)]) -> Vec<StoredBlock> {
    let bus = bus(server).await;
    let name = bus.topology().audit_stream();
    let js = bus.jetstream();
    let config = js
        .get_stream(&name)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    // The server removes the old store in the background; creating the stream again can fail
    // until it has, or (creating a stream is idempotent) find the old one still there.
    let mut attempts = 0;
    loop {
        let _ = js.delete_stream(&name).await;
        if let Ok(mut created) = js.create_stream(config.clone()).await
            && created
                .info()
                .await
                .is_ok_and(|info| info.state.messages == 0)
        {
            break;
        }
        attempts += 1;
        assert!(attempts < 100, "stream not recreated empty");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (subject, block) in blocks {
        let payload = serde_json::to_vec(block).expect("json");
        js.publish(subject.clone(), payload.into())
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    audit::read_log(js, bus.topology()).await.expect("log read")
}

fn editable(blocks: &[StoredBlock]) -> Vec<(String, Block)> {
    blocks
        .iter()
        .map(|stored| {
            (
                stored.nats_subject.clone(),
                stored.block.clone().expect("readable block"),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_intact_log_verifies_and_gives_each_person_their_history() {
    let server = NatsServer::start().expect("nats-server");
    let deployment = Deployment::new();
    let blocks = filled_log(&server, &deployment).await;
    assert_eq!(
        blocks.len(),
        4,
        "three identity blocks and one welfare block"
    );

    let report = check(&blocks, &deployment, &[]);
    assert!(report.intact(), "{:#?}", report.problems);
    assert_eq!(report.entries, 8);
    let heads: Vec<(String, u64)> = report
        .heads()
        .into_iter()
        .map(|head| (head.writer, head.seq))
        .collect();
    assert_eq!(
        heads,
        [("identity".to_owned(), 7), ("welfare".to_owned(), 1)]
    );

    let aminah = deployment.key.digest(DataSubject::Nik(AMINAH));
    let history = audit::history(&blocks, std::slice::from_ref(&aminah));
    let by_writer: Vec<(&str, u64)> = history
        .iter()
        .map(|entry| (entry.writer.as_str(), entry.seq))
        .collect();
    assert_eq!(history.len(), 5, "{by_writer:?}");
    assert!(history.iter().all(|entry| entry.subject == aminah));
    assert!(history.windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert_eq!(
        by_writer
            .iter()
            .filter(|(writer, _)| *writer == "identity")
            .map(|(_, seq)| *seq)
            .collect::<Vec<_>>(),
        [1, 3, 5, 7]
    );
    let entry = &history[0];
    assert_eq!(entry.requester, "welfare");
    assert_eq!(entry.purpose, "verify a resident");
    assert_eq!(entry.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let stored = serde_json::to_string(&blocks[0].block.clone().expect("block")).expect("json");
    assert!(
        !stored.contains(AMINAH) && !stored.contains(BUDI),
        "no NIK is stored"
    );
}

/// Rewrites the stream as `original` edited by `edit`, and verifies it against `heads`.
async fn tampered(
    server: &NatsServer,
    deployment: &Deployment,
    original: &[StoredBlock],
    heads: &[audit::Head],
    edit: impl FnOnce(&mut Vec<(String, Block)>),
) -> Report {
    let mut blocks = editable(original);
    edit(&mut blocks);
    check(&rewrite(server, &blocks).await, deployment, heads)
}

/// Recomputes the hashes of `block`'s entries from `from` on, as a forger would.
fn rehash(block: &mut Block, from: usize) {
    for index in from..block.entries.len() {
        if index > 0 {
            block.entries[index].prev = block.entries[index - 1].hash.clone();
        }
        block.entries[index].hash = block.entries[index].computed_hash();
    }
}

#[track_caller]
fn assert_only(report: &Report, kind: ProblemKind) {
    assert_eq!(kinds(report), [kind], "{:#?}", report.problems);
}

#[track_caller]
fn assert_includes(report: &Report, kind: ProblemKind) {
    assert!(kinds(report).contains(&kind), "{:#?}", report.problems);
}

#[tokio::test]
async fn each_kind_of_tampering_is_detected() {
    let server = NatsServer::start().expect("nats-server");
    let deployment = Deployment::new();
    let original = filled_log(&server, &deployment).await;
    let intact = check(&original, &deployment, &[]);
    assert!(intact.intact());
    let heads = intact.heads();
    let (server, deployment, original) = (&server, &deployment, original.as_slice());
    // identity's blocks are [0] (entries 1–2), [1] (3–5), [2] (6–7); welfare's is [3].

    // An entry's purpose changed in place.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks[1].1.entries[1].purpose = "marketing".to_owned();
    })
    .await;
    assert_only(&report, ProblemKind::Altered);
    assert_eq!(report.problems[0].entry, Some(4));

    // The same, with the entry's and its successors' hashes recomputed: the signature breaks.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks[1].1.entries[1].requester = "licensing".to_owned();
        rehash(&mut blocks[1].1, 1);
    })
    .await;
    assert_includes(&report, ProblemKind::Altered);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.detail.contains("signature")),
        "{:#?}",
        report.problems
    );

    // A block removed from the middle.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks.remove(1);
    })
    .await;
    assert_only(&report, ProblemKind::Removed);
    assert_eq!(report.problems[0].detail, "entries 3–5 are missing");

    // One entry removed from within a block.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks[1].1.entries.remove(1);
    })
    .await;
    assert_only(&report, ProblemKind::Removed);
    assert_eq!(report.problems[0].detail, "entry 4 is missing");

    // Two blocks swapped.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks.swap(1, 2);
    })
    .await;
    assert_only(&report, ProblemKind::Reordered);

    // The end cut off: only an earlier verification's heads can tell.
    let unanchored = tampered(server, deployment, original, &[], |blocks| {
        blocks.remove(2);
    })
    .await;
    assert!(unanchored.intact());
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks.remove(2);
    })
    .await;
    assert_only(&report, ProblemKind::Removed);
    assert!(report.problems[0].detail.contains("cut off"));

    // A block re-signed with a certificate for "identity" from another CA.
    let other_ca = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(other_ca.path(), &["identity"]).expect("certificates");
    let forger = signer_in(other_ca.path(), "identity");
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks[1].1.entries[0].action = "govbus.identity.v1.IdentityService/RecordDeath".to_owned();
        rehash(&mut blocks[1].1, 0);
        forger.sign(&mut blocks[1].1).expect("signed");
    })
    .await;
    assert_includes(&report, ProblemKind::Forged);

    // welfare's block put on identity's chain, signed by welfare.
    let report = tampered(server, deployment, original, &heads, |blocks| {
        blocks[3].0 = blocks[0].0.clone();
    })
    .await;
    assert_includes(&report, ProblemKind::Forged);

    // Not a block at all.
    rewrite(server, &editable(original)).await;
    let bus = bus(server).await;
    bus.jetstream()
        .publish(
            Topology::default().audit_subject("identity"),
            "{\"writer\":".into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
    let stored = audit::read_log(bus.jetstream(), bus.topology())
        .await
        .expect("log read");
    assert_only(&check(&stored, deployment, &heads), ProblemKind::Unreadable);
}

#[tokio::test]
async fn a_restarted_writer_continues_its_chain_and_cannot_delete_from_it() {
    let server = NatsServer::start().expect("nats-server");
    let deployment = Deployment::new();
    let bus = bus(&server).await;
    for _ in 0..2 {
        let (log, writer) = ProcessingLog::start(
            &bus,
            deployment.signer("identity"),
            deployment.key.clone(),
            None,
        )
        .await
        .expect("log");
        call(
            &log,
            "licensing",
            "govbus.identity.v1.IdentityService/VerifyCitizen",
            BUDI,
        );
        call(
            &log,
            "licensing",
            "govbus.identity.v1.IdentityService/VerifyCitizen",
            BUDI,
        );
        // Shutting down writes what is queued.
        writer.shutdown().await;
        assert_eq!(log.pending(), 0);
    }
    let blocks = audit::read_log(bus.jetstream(), bus.topology())
        .await
        .expect("log read");
    let report = check(&blocks, &deployment, &[]);
    assert!(report.intact(), "{:#?}", report.problems);
    assert_eq!(report.heads()[0].seq, 4);

    let mut stream = bus
        .jetstream()
        .get_stream(bus.topology().audit_stream())
        .await
        .expect("stream");
    assert!(stream.info().await.expect("info").config.deny_delete);
    let deleted = bus
        .jetstream()
        .get_stream(bus.topology().audit_stream())
        .await
        .expect("stream")
        .delete_message(1)
        .await;
    assert!(deleted.is_err(), "the stream refuses deletes");
    let purge: Result<jetstream::stream::PurgeResponse, _> = bus
        .jetstream()
        .get_stream(bus.topology().audit_stream())
        .await
        .expect("stream")
        .purge()
        .await;
    assert!(purge.is_err(), "the stream refuses purges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_stamped_by_a_real_authority_and_verification_checks_the_tokens() {
    use base64::Engine as _;
    let server = NatsServer::start().expect("nats-server");
    let deployment = Deployment::new();
    let authority = govbus_harness::TimestampAuthority::start().expect("the TSA starts");
    let bus = bus(&server).await;
    let (identity, writer) = ProcessingLog::start(
        &bus,
        deployment.signer("identity"),
        deployment.key.clone(),
        Some(audit::Tsa::new(&authority.url(), None).expect("TSA client")),
    )
    .await
    .expect("identity's log");
    let verify = "govbus.identity.v1.IdentityService/VerifyCitizen";
    for nik in [AMINAH, BUDI] {
        call(&identity, "welfare", verify, nik);
        written(&identity).await;
    }
    writer.shutdown().await;
    let blocks = audit::read_log(bus.jetstream(), bus.topology())
        .await
        .expect("log read");
    assert_eq!(blocks.len(), 2, "one block per wait");
    assert_eq!(authority.answered(), 2, "each block stamped once");

    let tsa_trust = audit::TsaTrust::from_pem(&std::fs::read(authority.ca_path()).expect("CA"))
        .expect("TSA trust");
    let trust = deployment.trust.clone().with_tsa(tsa_trust);
    let report = audit::verify(&blocks, &Topology::default(), &trust, &[]);
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.writers[0].timestamped, 2);
    assert_eq!(report.writers[0].untimestamped, 0);
    // Without the authority's certificate the tokens are reported, not believed.
    let unchecked = check(&blocks, &deployment, &[]);
    assert!(unchecked.intact());
    assert_eq!(unchecked.writers[0].timestamps_unchecked, 2);

    // A court checks a block's token with openssl alone: the token and the signature's bytes.
    let first = blocks[0].block.as_ref().expect("a block").clone();
    let token = base64::engine::general_purpose::STANDARD
        .decode(&first.timestamp)
        .expect("base64");
    authority
        .openssl_verify(&token, &first.timestamped_bytes())
        .expect("openssl ts -verify says OK");

    // A token moved to another block, and an altered token, are reported.
    let mut moved = blocks.clone();
    if let Ok(second) = &mut moved[1].block {
        second.timestamp = first.timestamp.clone();
    }
    let report = audit::verify(&moved, &Topology::default(), &trust, &[]);
    assert_eq!(kinds(&report), vec![ProblemKind::Timestamp], "{report:?}");
    let mut altered = blocks.clone();
    if let Ok(block) = &mut altered[0].block {
        let mut token = token.clone();
        let last = token.len() - 1;
        token[last] ^= 1;
        block.timestamp = base64::engine::general_purpose::STANDARD.encode(token);
    }
    let report = audit::verify(&altered, &Topology::default(), &trust, &[]);
    assert_eq!(kinds(&report), vec![ProblemKind::Timestamp], "{report:?}");

    // Blocks written without an authority: in a chain that never had one, counted as
    // untimestamped; after stamped blocks, a gap in the evidence.
    let plain = filled_log(&server, &deployment).await;
    let report = audit::verify(&plain, &Topology::default(), &trust, &[]);
    let welfare = report
        .writers
        .iter()
        .find(|writer| writer.writer == "welfare")
        .expect("welfare's chain");
    assert_eq!(welfare.untimestamped, 1);
    assert!(
        report
            .problems
            .iter()
            .all(|problem| problem.writer == "identity" && problem.kind == ProblemKind::Timestamp),
        "{:?}",
        report.problems
    );
    assert_eq!(
        report.problems.len(),
        3,
        "identity's three unstamped blocks after two stamped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_that_does_not_answer_leaves_the_block_untimestamped_not_lost() {
    let server = NatsServer::start().expect("nats-server");
    let deployment = Deployment::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    drop(listener);
    let bus = bus(&server).await;
    let (identity, writer) = ProcessingLog::start(
        &bus,
        deployment.signer("identity"),
        deployment.key.clone(),
        Some(audit::Tsa::new(&url, None).expect("TSA client")),
    )
    .await
    .expect("identity's log");
    call(
        &identity,
        "welfare",
        "govbus.identity.v1.IdentityService/VerifyCitizen",
        AMINAH,
    );
    written(&identity).await;
    writer.shutdown().await;
    let blocks = audit::read_log(bus.jetstream(), bus.topology())
        .await
        .expect("log read");
    let report = check(&blocks, &deployment, &[]);
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.entries, 1, "the entry is kept");
    assert_eq!(report.writers[0].untimestamped, 1);
}
