//! A development CA: certificates for every part of a development or test deployment
//! (`govbus certs init`, `govbus up`'s first start), and its list of revoked certificates
//! (`govbus certs revoke`). Production installs certificates from its own CA instead, and that
//! CA publishes its own list (see [`crate::revocation`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::revocation::{CRL_FILE, parse};
use crate::tls::{SERVICE_URI_PREFIX, TlsError};

/// Makes a CA and a certificate for each of `names` in `dir` (`ca.pem`, `ca-key.pem`,
/// `<name>.pem`, `<name>-key.pem`; keys readable by the owner only). Each certificate names
/// its service as `spiffe://govbus/<name>`, as common name and as DNS name, plus `localhost`
/// and `127.0.0.1`, and serves both as server and as client certificate. Refuses to overwrite
/// an existing CA.
pub fn generate_development_certificates(dir: &Path, names: &[&str]) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::File { path, source }
    };
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() {
        return Err(TlsError::Exists(dir.to_owned()));
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_params = development_ca_params()?;
    let ca_certificate = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    write_private(
        &dir.join("ca-key.pem"),
        &pem("PRIVATE KEY", issuer.key().serialized_der())?,
    )?;
    for name in names {
        issue_development_certificate(dir, name, &issuer)?;
    }
    publish_development_crl(dir)?;
    // The CA certificate last: its presence means the set is complete.
    fs::write(&ca_path, pem("CERTIFICATE", ca_certificate.der())?).map_err(io(&ca_path))?;
    Ok(())
}

/// Issues a certificate to each of `names` that has none in `dir`, with the development CA
/// whose key is there (`ca-key.pem`): a stack made before a service or caller was added gets
/// that one's certificate too. Returns the names issued; nothing when `dir` holds no
/// development CA (certificates from the deployment's own CA are the operators' to issue).
pub fn issue_missing_development_certificates(
    dir: &Path,
    names: &[&str],
) -> Result<Vec<String>, TlsError> {
    let key_path = dir.join("ca-key.pem");
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !dir.join(format!("{name}.pem")).exists())
        .collect();
    if missing.is_empty() || !key_path.is_file() {
        return Ok(Vec::new());
    }
    let issuer = development_issuer(dir)?;
    for name in &missing {
        issue_development_certificate(dir, name, &issuer)?;
    }
    Ok(missing.into_iter().map(str::to_owned).collect())
}

/// The development CA whose key is in `dir` (`ca-key.pem`), to sign with.
fn development_issuer(dir: &Path) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, TlsError> {
    let key_path = dir.join("ca-key.pem");
    if !key_path.is_file() {
        return Err(TlsError::NotDevelopmentCa(dir.to_owned()));
    }
    let text = fs::read_to_string(&key_path).map_err(|source| TlsError::File {
        path: key_path.clone(),
        source,
    })?;
    let (_, der) = pem_rfc7468::decode_vec(text.as_bytes())
        .map_err(|error| TlsError::Pem(error.to_string()))?;
    let key = rcgen::KeyPair::try_from(der.as_slice())?;
    // The same subject and key as the CA certificate in `ca.pem`: what a certificate it
    // signed names as its issuer.
    Ok(rcgen::Issuer::new(development_ca_params()?, key))
}

fn development_ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "govbus development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(ca_params)
}

fn issue_development_certificate(
    dir: &Path,
    name: &str,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<(), TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned(), "localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    params.subject_alt_names.push(rcgen::SanType::URI(
        format!("{SERVICE_URI_PREFIX}{name}").try_into()?,
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let certificate = params.signed_by(&key, issuer)?;
    let path = dir.join(format!("{name}.pem"));
    // The key first: a certificate without its key would be taken for a complete pair.
    write_private(
        &dir.join(format!("{name}-key.pem")),
        &pem("PRIVATE KEY", key.serialized_der())?,
    )?;
    fs::write(&path, pem("CERTIFICATE", certificate.der())?).map_err(|source| TlsError::File {
        path: path.clone(),
        source,
    })
}

fn pem(label: &str, der: &[u8]) -> Result<Vec<u8>, TlsError> {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .map(String::into_bytes)
        .map_err(|error| TlsError::Pem(error.to_string()))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |source| TlsError::File {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)
}

/// Why a certificate is revoked (RFC 5280 `CRLReason`), as operators name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// Its private key is known or suspected to be in other hands.
    KeyCompromise,
    /// Replaced by a new certificate.
    Superseded,
    /// The part no longer runs.
    CessationOfOperation,
    /// No reason given.
    Unspecified,
}

impl RevocationReason {
    /// The names [`Self::parse`] takes.
    pub const NAMES: [&'static str; 4] = [
        "key-compromise",
        "superseded",
        "cessation-of-operation",
        "unspecified",
    ];

    /// `key-compromise`, `superseded`, `cessation-of-operation` or `unspecified`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "key-compromise" => Some(Self::KeyCompromise),
            "superseded" => Some(Self::Superseded),
            "cessation-of-operation" => Some(Self::CessationOfOperation),
            "unspecified" => Some(Self::Unspecified),
            _ => None,
        }
    }

    fn code(self) -> rcgen::RevocationReason {
        match self {
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
        }
    }
}

/// A certificate the development CA revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number, hexadecimal.
    pub serial: String,
    /// Where the revoked certificate and key were moved.
    pub kept_at: PathBuf,
}

/// How long a list the development CA signs stays current (it is signed again at every
/// revocation and whenever [`publish_development_crl`] finds it past half of this).
const CRL_VALIDITY: time::Duration = time::Duration::days(365);

/// Revokes the current certificate of `name` in the development CA's folder `dir`: adds its
/// serial to the CA's list (`ca.crl`, signed again with every earlier entry kept), moves the
/// certificate and key to `dir/revoked/`, and issues `name` a new certificate and key. A part
/// still running with the old certificate is refused once servers reload the list; restarted,
/// it uses the new one. Refused for a folder without the development CA's key (a deployment's
/// own CA revokes with its own tools and publishes its list at `dir/ca.crl`).
pub fn revoke_development_certificate(
    dir: &Path,
    name: &str,
    reason: RevocationReason,
) -> Result<Revoked, TlsError> {
    let issuer = development_issuer(dir)?;
    let certificate_path = dir.join(format!("{name}.pem"));
    let leaf = CertificateDer::from_pem_slice(&read(&certificate_path)?)
        .map_err(|error| TlsError::Pem(format!("{}: {error}", certificate_path.display())))?;
    let serial = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|error| TlsError::Pem(format!("{}: {error:?}", certificate_path.display())))?
        .serial()
        .to_vec();
    let mut entries = development_entries(dir)?;
    if !entries
        .iter()
        .any(|entry| entry.serial_number.as_ref() == serial.as_slice())
    {
        entries.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&serial),
            revocation_time: time::OffsetDateTime::now_utc(),
            reason_code: Some(reason.code()),
            invalidity_date: None,
        });
    }
    sign_development_crl(dir, &issuer, entries)?;
    let serial_hex: String = serial.iter().map(|byte| format!("{byte:02x}")).collect();
    let kept = dir.join("revoked");
    std::fs::create_dir_all(&kept).map_err(|source| TlsError::File {
        path: kept.clone(),
        source,
    })?;
    for (from, to) in [
        (format!("{name}.pem"), format!("{name}-{serial_hex}.pem")),
        (
            format!("{name}-key.pem"),
            format!("{name}-{serial_hex}-key.pem"),
        ),
    ] {
        std::fs::rename(dir.join(&from), kept.join(&to)).map_err(|source| TlsError::File {
            path: dir.join(&from),
            source,
        })?;
    }
    issue_missing_development_certificates(dir, &[name])?;
    tracing::warn!(
        message = "Certificate revoked; a new one issued.",
        name,
        serial = %serial_hex,
        reason = ?reason,
    );
    Ok(Revoked {
        serial: serial_hex,
        kept_at: kept,
    })
}

/// Makes sure the development CA in `dir` publishes a current list (`ca.crl`): signs an empty
/// one when there is none, and signs the entries again when the list is past half its
/// validity. Nothing happens in a folder without the development CA's key.
pub fn publish_development_crl(dir: &Path) -> Result<(), TlsError> {
    if !dir.join("ca-key.pem").is_file() {
        return Ok(());
    }
    let path = dir.join(CRL_FILE);
    if path.is_file() {
        let file = read(&path)?;
        let this_update = parse(&file)
            .ok()
            .and_then(|lists| lists.into_iter().next())
            .and_then(|list| {
                use x509_cert::der::Decode as _;
                x509_cert::crl::CertificateList::from_der(list.as_ref()).ok()
            })
            .map(|list| list.tbs_cert_list.this_update.to_unix_duration());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let half = Duration::from_secs(
            u64::try_from(CRL_VALIDITY.whole_seconds() / 2).unwrap_or(u64::MAX),
        );
        if this_update.is_some_and(|signed| now.saturating_sub(signed) < half) {
            return Ok(());
        }
    }
    let issuer = development_issuer(dir)?;
    sign_development_crl(dir, &issuer, development_entries(dir)?)
}

/// The entries of the development CA's current list, if it has one. Refused: no list although
/// certificates were revoked (`revoked/` holds some), which would un-revoke them.
fn development_entries(dir: &Path) -> Result<Vec<rcgen::RevokedCertParams>, TlsError> {
    use x509_cert::der::Decode as _;
    let path = dir.join(CRL_FILE);
    if !path.is_file() {
        let revoked = fs::read_dir(dir.join("revoked"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        if revoked > 0 {
            return Err(TlsError::Pem(format!(
                "{} is missing, but {} holds revoked certificates: restore the list from a backup \
                 rather than publish an empty one that would let them in again",
                path.display(),
                dir.join("revoked").display()
            )));
        }
        return Ok(Vec::new());
    }
    let file = read(&path)?;
    let invalid = |problem: String| TlsError::Pem(format!("{}: {problem}", path.display()));
    let mut entries = Vec::new();
    for list in parse(&file).map_err(invalid)? {
        let list = x509_cert::crl::CertificateList::from_der(list.as_ref())
            .map_err(|error| invalid(error.to_string()))?;
        for revoked in list
            .tbs_cert_list
            .revoked_certificates
            .into_iter()
            .flatten()
        {
            let seconds = revoked.revocation_date.to_unix_duration().as_secs();
            entries.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(revoked.serial_number.as_bytes()),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(
                    i64::try_from(seconds).unwrap_or(i64::MAX),
                )
                .map_err(|error| invalid(error.to_string()))?,
                reason_code: reason_of(&revoked),
                invalidity_date: None,
            });
        }
    }
    Ok(entries)
}

/// The `CRLReason` entry extension (OID 2.5.29.21, an ENUMERATED), when present.
fn reason_of(revoked: &x509_cert::crl::RevokedCert) -> Option<rcgen::RevocationReason> {
    let reason_oid = const_oid::db::rfc5280::ID_CE_CRL_REASONS;
    let extension = revoked
        .crl_entry_extensions
        .iter()
        .flatten()
        .find(|extension| extension.extn_id == reason_oid)?;
    match extension.extn_value.as_bytes() {
        [0x0a, 0x01, code] => Some(match code {
            1 => rcgen::RevocationReason::KeyCompromise,
            2 => rcgen::RevocationReason::CaCompromise,
            3 => rcgen::RevocationReason::AffiliationChanged,
            4 => rcgen::RevocationReason::Superseded,
            5 => rcgen::RevocationReason::CessationOfOperation,
            6 => rcgen::RevocationReason::CertificateHold,
            8 => rcgen::RevocationReason::RemoveFromCrl,
            9 => rcgen::RevocationReason::PrivilegeWithdrawn,
            10 => rcgen::RevocationReason::AaCompromise,
            _ => rcgen::RevocationReason::Unspecified,
        }),
        _ => None,
    }
}

fn sign_development_crl(
    dir: &Path,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    revoked_certs: Vec<rcgen::RevokedCertParams>,
) -> Result<(), TlsError> {
    let now = time::OffsetDateTime::now_utc();
    // Seconds since the epoch, and always above the list it replaces (two lists in a second, a
    // clock stepped back): servers refuse a list numbered below the one in force.
    let number = u64::try_from(now.unix_timestamp())
        .unwrap_or_default()
        .max(current_number(dir).saturating_add(1));
    let list = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(issuer)?;
    let pem = pem("X509 CRL", list.der().as_ref())?;
    // Written whole under a name of its own, synced, then renamed: a server reloading it never
    // reads half a list, and a power cut leaves the old list or the new one.
    let path = dir.join(CRL_FILE);
    let partial = dir.join(format!(
        "{CRL_FILE}.{}.{}.partial",
        std::process::id(),
        now.unix_timestamp_nanos()
    ));
    let written = (|| {
        use std::io::Write as _;
        let mut file = fs::File::create(&partial)?;
        file.write_all(&pem)?;
        file.sync_all()
    })();
    written.map_err(|source| TlsError::File {
        path: partial.clone(),
        source,
    })?;
    std::fs::rename(&partial, &path).map_err(|source| TlsError::File { path, source })
}

/// The number of the development CA's current list (0: none, or unreadable).
fn current_number(dir: &Path) -> u64 {
    use x509_cert::der::Decode as _;
    let Ok(file) = fs::read(dir.join(CRL_FILE)) else {
        return 0;
    };
    parse(&file)
        .ok()
        .and_then(|lists| lists.into_iter().next())
        .and_then(|list| x509_cert::crl::CertificateList::from_der(list.as_ref()).ok())
        .and_then(|list| crate::revocation::crl_number(&list))
        .map_or(0, |number| {
            number.iter().fold(0_u64, |value, byte| {
                value.saturating_mul(256).saturating_add(u64::from(*byte))
            })
        })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tls::{CertificatePaths, ServiceTls, service_of_certificate};

    #[test]
    fn generated_certificates_name_their_service() {
        let dir = tempfile::tempdir().expect("temp dir");
        generate_development_certificates(dir.path(), &["welfare", "identity"]).expect("generated");
        let pem = fs::read_to_string(dir.path().join("welfare.pem")).expect("certificate");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|certificate: CertificateDer<'static>| certificate)
            .expect("PEM");
        assert_eq!(
            service_of_certificate(der.as_ref()).as_deref(),
            Some("welfare")
        );
        let key_mode = fs::metadata(dir.path().join("identity-key.pem"))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
            0o600
        );
        assert!(matches!(
            generate_development_certificates(dir.path(), &["welfare"]),
            Err(TlsError::Exists(_))
        ));
    }

    #[test]
    fn a_missing_certificate_is_issued_by_the_same_development_ca() {
        use rustls_pki_types::pem::PemObject as _;
        let dir = tempfile::tempdir().expect("temp dir");
        generate_development_certificates(dir.path(), &["identity"]).expect("generated");
        let issued = issue_missing_development_certificates(dir.path(), &["identity", "gateway"])
            .expect("issued");
        assert_eq!(issued, vec!["gateway".to_owned()]);
        let gateway =
            ServiceTls::from_files("gateway", &CertificatePaths::in_dir(dir.path(), "gateway"))
                .expect("a usable identity");
        // Verified up to the CA in ca.pem, as a server verifies a client.
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(gateway.ca_pem()) {
            roots.add(certificate.expect("CA")).expect("added");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let pem = fs::read(dir.path().join("gateway.pem")).expect("certificate");
        let leaf = CertificateDer::from_pem_slice(&pem).expect("PEM");
        verifier
            .verify_client_cert(&leaf, &[], rustls_pki_types::UnixTime::now())
            .expect("signed by the CA in ca.pem");
        assert!(
            issue_missing_development_certificates(dir.path(), &["identity", "gateway"])
                .expect("nothing to do")
                .is_empty()
        );
    }
}
