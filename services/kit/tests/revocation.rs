//! The development CA's list of revoked certificates: what `govbus certs revoke` writes is a CRL
//! that openssl verifies against the CA, that keeps every earlier entry, and that servers'
//! verifiers enforce; a list that does not parse leaves the one in force.

use std::path::Path;
use std::process::Command;

use govbus_kit::development_ca::{
    RevocationReason, generate_development_certificates, publish_development_crl,
    revoke_development_certificate,
};
use govbus_kit::revocation::{CRL_FILE, ClientVerifier};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

fn chain(dir: &Path, file: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&std::fs::read(dir.join(file)).expect("certificate"))
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM")
}

/// What `openssl crl` makes of the list: its text, after checking its signature with the CA.
fn openssl_reads(dir: &Path) -> String {
    let output = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(dir.join(CRL_FILE))
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .output()
        .expect("openssl runs (Debian package openssl)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("verify OK"), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn revocations_accumulate_in_a_list_openssl_verifies_and_servers_enforce() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(dir.path(), &["welfare", "licensing", "identity"])
        .expect("certificates");
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("CA");
    let crl = dir.path().join(CRL_FILE);
    assert!(
        crl.is_file(),
        "the development CA publishes a list from the start"
    );
    let text = openssl_reads(dir.path());
    assert!(text.contains("No Revoked Certificates"), "{text}");

    let verifier = ClientVerifier::new(&ca, Some(&crl), false).expect("verifier");
    let welfare = chain(dir.path(), "welfare.pem");
    let licensing = chain(dir.path(), "licensing.pem");
    assert!(verifier.still_valid(&welfare));
    assert!(verifier.still_valid(&licensing));

    let first =
        revoke_development_certificate(dir.path(), "welfare", RevocationReason::KeyCompromise)
            .expect("revoked");
    let second =
        revoke_development_certificate(dir.path(), "licensing", RevocationReason::Superseded)
            .expect("revoked");
    let text = openssl_reads(dir.path()).to_lowercase();
    for serial in [&first.serial, &second.serial] {
        assert!(
            text.replace(':', "")
                .contains(serial.trim_start_matches("00")),
            "serial {serial} listed: {text}"
        );
    }
    assert!(
        text.contains("key compromise"),
        "the first reason kept: {text}"
    );
    assert!(text.contains("superseded"), "{text}");

    assert!(verifier.reload().expect("reloaded"), "the list changed");
    assert!(!verifier.still_valid(&welfare), "revoked");
    assert!(!verifier.still_valid(&licensing), "revoked");
    assert!(
        verifier.still_valid(&chain(dir.path(), "welfare.pem")),
        "the certificate issued in its place passes"
    );
    assert!(verifier.still_valid(&chain(dir.path(), "identity.pem")));
    assert!(
        dir.path()
            .join("revoked")
            .join(format!("welfare-{}.pem", first.serial))
            .is_file(),
        "the revoked certificate is kept aside"
    );

    // A list that does not parse is refused, and the one in force stays.
    std::fs::write(
        &crl,
        b"-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n",
    )
    .expect("written");
    assert!(verifier.reload().is_err());
    assert!(!verifier.still_valid(&welfare), "still revoked");

    // Kept current at a start: a fresh list is not signed again; a broken one is refused.
    assert!(publish_development_crl(dir.path()).is_err());
    revoke_development_certificate(dir.path(), "identity", RevocationReason::Unspecified)
        .expect_err("the broken list is not overwritten silently");
}

#[test]
fn a_folder_without_the_development_ca_key_cannot_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(dir.path(), &["welfare"]).expect("certificates");
    std::fs::remove_file(dir.path().join("ca-key.pem")).expect("removed");
    let error = revoke_development_certificate(dir.path(), "welfare", RevocationReason::Superseded)
        .expect_err("refused");
    assert!(error.to_string().contains("own CA"), "{error}");
}

#[tokio::test]
async fn only_a_newer_list_signed_by_the_ca_is_taken_and_a_late_list_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(dir.path(), &["welfare", "identity"]).expect("certificates");
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("CA");
    let crl = dir.path().join(CRL_FILE);
    let welfare = chain(dir.path(), "welfare.pem");

    // No list yet: nothing revoked, and the list is read once it appears.
    let empty = std::fs::read(&crl).expect("the first list");
    std::fs::remove_file(&crl).expect("removed");
    let verifier = ClientVerifier::new(&ca, Some(&crl), false).expect("verifier without a list");
    assert!(!verifier.reload().expect("still none"));
    revoke_development_certificate(dir.path(), "welfare", RevocationReason::KeyCompromise)
        .expect("revoked");
    let newer = std::fs::read(&crl).expect("the list");
    assert!(
        verifier.reload().expect("read"),
        "the list that appeared is read"
    );
    assert!(!verifier.still_valid(&welfare));

    // Put back, the older (empty) list is refused: it would let the revoked certificate in.
    std::fs::write(&crl, &empty).expect("written");
    let older = verifier.reload().expect_err("older list refused");
    assert!(older.to_string().contains("older"), "{older}");
    assert!(!verifier.still_valid(&welfare), "still revoked");

    // Two lists of one CA in the file, and a list another CA signed, are refused.
    std::fs::write(&crl, [newer.clone(), newer.clone()].concat()).expect("written");
    let twice = verifier.reload().expect_err("two lists refused");
    assert!(twice.to_string().contains("two lists"), "{twice}");
    let stranger = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(stranger.path(), &["welfare"]).expect("another CA");
    std::fs::copy(stranger.path().join(CRL_FILE), &crl).expect("copied");
    // (Both development CAs bear the same name: the signature tells them apart.)
    let foreign = verifier.reload().expect_err("foreign list refused");
    assert!(
        foreign.to_string().contains("signature is not the CA's"),
        "{foreign}"
    );
    assert!(!verifier.still_valid(&welfare), "still revoked");

    // A list gone after it was read: refused, and the development CA will not publish an empty
    // one while certificates are revoked.
    std::fs::remove_file(&crl).expect("removed");
    assert!(verifier.reload().is_err());
    assert!(!verifier.still_valid(&welfare), "still revoked");
    let refused = publish_development_crl(dir.path()).expect_err("no empty list");
    assert!(refused.to_string().contains("revoked"), "{refused}");
}

#[test]
fn reloads_at_once_never_put_an_older_list_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(dir.path(), &["welfare", "licensing", "identity"])
        .expect("certificates");
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("CA");
    let crl = dir.path().join(CRL_FILE);
    let verifier = ClientVerifier::new(&ca, Some(&crl), false).expect("verifier");
    let chains: Vec<_> = ["welfare", "licensing", "identity"]
        .iter()
        .map(|name| chain(dir.path(), &format!("{name}.pem")))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloaders: Vec<_> = (0..6)
        .map(|_| {
            let (verifier, stop) = (verifier.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = verifier.reload();
                }
            })
        })
        .collect();
    for (revoked, name) in ["welfare", "licensing", "identity"].iter().enumerate() {
        revoke_development_certificate(dir.path(), name, RevocationReason::KeyCompromise)
            .expect("revoked");
        // Once a revocation is in force, no later reload takes it back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while verifier.still_valid(&chains[revoked]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the new list never taken"
            );
            std::thread::yield_now();
        }
        for _ in 0..200 {
            for earlier in &chains[..=revoked] {
                assert!(!verifier.still_valid(earlier), "a revocation was undone");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for reloader in reloaders {
        reloader.join().expect("joined");
    }
}
