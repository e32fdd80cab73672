//! Revoked certificates: the deployment CA's certificate revocation list (CRL), enforced at
//! every handshake and on connections already open, reloaded when the file changes.
//!
//! A [`ClientVerifier`] checks a client's certificate chain against the deployment's CA and
//! the CRL in `<certificates>/ca.crl` (PEM or DER, one or more lists). A task re-reads the file
//! every [`RELOAD_INTERVAL`] (and [`ClientVerifier::reload`] on demand); a file that cannot be
//! used is reported and the lists in force stay. When the lists change, each open connection
//! wrapped in [`Revalidated`] checks its client's chain again at its next read or write and
//! is closed if the chain no longer passes: a revoked service stops calling within one
//! interval, not at its next reconnection.
//!
//! The development CA publishes its list
//! ([`crate::development_ca::revoke_development_certificate`], `govbus certs revoke`); a
//! deployment with its own CA puts its CA's list at the same path.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a revocation list or the CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA certificate or the list is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// How often the CRL file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The CRL's file name in a certificates folder.
pub const CRL_FILE: &str = "ca.crl";

/// A client-certificate verifier over the deployment's CA and its CRL, reloaded on change.
#[derive(Clone)]
pub struct ClientVerifier {
    shared: Arc<Shared>,
}

struct Shared {
    roots: Arc<rustls::RootCertStore>,
    /// The CA certificates, whose keys must have signed every list.
    authorities: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Clients may connect without a certificate (the gateway's HTTPS, where a token may
    /// stand in for one).
    optional: bool,
    crl: Option<PathBuf>,
    current: RwLock<Current>,
    /// Bumped whenever the lists in force change.
    generation: AtomicU64,
    hints: Vec<DistinguishedName>,
}

struct Current {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The file's bytes the verifier was built from (`None`: there was no file yet).
    file: Option<Vec<u8>>,
    /// Each CA's list in force.
    numbers: InForce,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("crl", &self.shared.crl)
            .field("optional", &self.shared.optional)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl ClientVerifier {
    /// Verifies clients against the CA certificates `ca_pem` and, when `crl` is given, the
    /// lists in that file: one per CA, signed by it. A file that does not exist yet is no list
    /// (it is read once it appears); one that exists must be valid. `optional`: a client may
    /// present no certificate at all. Inside a tokio runtime, the file is re-read every
    /// [`RELOAD_INTERVAL`] for as long as the verifier is in use.
    pub fn new(ca_pem: &[u8], crl: Option<&Path>, optional: bool) -> Result<Self, RevocationError> {
        Self::with_interval(ca_pem, crl, optional, RELOAD_INTERVAL)
    }

    /// [`Self::new`], re-reading the file every `interval`.
    pub fn with_interval(
        ca_pem: &[u8],
        crl: Option<&Path>,
        optional: bool,
        interval: Duration,
    ) -> Result<Self, RevocationError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            let certificate = certificate.map_err(|error| {
                RevocationError::Invalid(format!("the CA certificate: {error}"))
            })?;
            roots.add(certificate).map_err(|error| {
                RevocationError::Invalid(format!("the CA certificate: {error}"))
            })?;
        }
        let roots = Arc::new(roots);
        let authorities = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| RevocationError::Invalid(format!("the CA certificate: {error}")))?;
        let (file, lists, numbers) = match crl.map(|path| (path, read_if_present(path))) {
            Some((path, Ok(Some(file)))) => {
                let (lists, numbers) =
                    validated(&file, &authorities, &BTreeMap::new()).map_err(|problem| {
                        RevocationError::Invalid(format!("{}: {problem}", path.display()))
                    })?;
                (Some(file), lists, numbers)
            }
            Some((_, Err(error))) => return Err(error),
            Some((_, Ok(None))) | None => (None, Vec::new(), BTreeMap::new()),
        };
        let verifier = build(&roots, &provider, optional, lists).map_err(|error| {
            RevocationError::Invalid(format!("the CA certificate or its CRL: {error}"))
        })?;
        let hints = verifier.root_hint_subjects().to_vec();
        let shared = Arc::new(Shared {
            roots,
            authorities,
            provider,
            optional,
            crl: crl.map(Path::to_owned),
            current: RwLock::new(Current {
                verifier,
                file,
                numbers,
            }),
            generation: AtomicU64::new(0),
            hints,
        });
        if shared.crl.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(watch(Arc::downgrade(&shared), interval));
        }
        Ok(Self { shared })
    }

    /// Reads the CRL file again; the lists in force change only if it is valid (each list
    /// signed by its CA, one per CA, none older than the one in force). Returns whether they
    /// changed. A file that has gone is an error, and the lists in force stay.
    pub fn reload(&self) -> Result<bool, RevocationError> {
        self.shared.reload()
    }

    /// Counts changes of the lists in force.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Whether `chain` (leaf first) still passes under the lists in force.
    pub fn still_valid(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return self.shared.optional;
        };
        self.shared
            .verifier()
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }

    /// The verifier for a rustls server configuration.
    pub fn for_rustls(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(self.clone())
    }
}

impl Shared {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .verifier,
        )
    }

    fn reload(&self) -> Result<bool, RevocationError> {
        let Some(path) = &self.crl else {
            return Ok(false);
        };
        let in_force = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.file.clone(), current.numbers.clone())
        };
        let file = match read_if_present(path)? {
            Some(file) => file,
            // Never had one: still none.
            None if in_force.0.is_none() => return Ok(false),
            None => {
                return Err(RevocationError::Invalid(format!(
                    "{} has gone; the lists read before stay in force until a restart",
                    path.display()
                )));
            }
        };
        if in_force.0.as_deref() == Some(file.as_slice()) {
            return Ok(false);
        }
        let (lists, numbers) =
            validated(&file, &self.authorities, &in_force.1).map_err(|problem| {
                RevocationError::Invalid(format!("{}: {problem}", path.display()))
            })?;
        let count = lists.len();
        let verifier = build(&self.roots, &self.provider, self.optional, lists)
            .map_err(|error| RevocationError::Invalid(format!("{}: {error}", path.display())))?;
        {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            // Validated against the lists read above: if another reload replaced them since,
            // this one's check no longer holds, and the next round reads the file again.
            if current.file != in_force.0 {
                return Ok(false);
            }
            *current = Current {
                verifier,
                file: Some(file),
                numbers,
            };
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            message = "Certificate revocation list reloaded.",
            file = %path.display(),
            lists = count,
        );
        Ok(true)
    }
}

/// The file's bytes, or `None` if there is no such file.
fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, RevocationError> {
    match std::fs::read(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RevocationError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The lists of `file` if each is signed by one of `authorities`, no two are of one CA, and
/// none is numbered below the list of its CA `in_force`; with each CA's number.
/// Each CA's list in force: issuer name (DER) → its CRL number (big-endian) and the list.
type InForce = BTreeMap<Vec<u8>, (Vec<u8>, Vec<u8>)>;

/// Lists, and each CA's in force once they are taken.
type Validated = (Vec<CertificateRevocationListDer<'static>>, InForce);

fn validated(
    file: &[u8],
    authorities: &[CertificateDer<'static>],
    in_force: &InForce,
) -> Result<Validated, String> {
    use x509_cert::der::{Decode as _, Encode as _};
    let lists = parse(file)?;
    let mut numbers = BTreeMap::new();
    for list in &lists {
        let parsed = x509_cert::crl::CertificateList::from_der(list.as_ref())
            .map_err(|error| format!("not a certificate revocation list: {error}"))?;
        let issuer = parsed
            .tbs_cert_list
            .issuer
            .to_der()
            .map_err(|error| error.to_string())?;
        let authority = authorities
            .iter()
            .find(|authority| {
                x509_cert::Certificate::from_der(authority.as_ref())
                    .ok()
                    .and_then(|certificate| certificate.tbs_certificate.subject.to_der().ok())
                    .is_some_and(|subject| subject == issuer)
            })
            .ok_or("a list not issued by the deployment's CA")?;
        let signed = parsed
            .tbs_cert_list
            .to_der()
            .map_err(|error| error.to_string())?;
        let algorithms = crate::signatures::algorithms(parsed.signature_algorithm.oid, None)
            .ok_or_else(|| {
                format!(
                    "a list signed with {}, which is not supported",
                    parsed.signature_algorithm.oid
                )
            })?;
        let signature = parsed.signature.raw_bytes();
        if !crate::signatures::signed_by(authority, &algorithms, &signed, signature) {
            return Err("a list whose signature is not the CA's".to_owned());
        }
        let number = crl_number(&parsed).ok_or("a list without a CRL number")?;
        // Another list with the number in force, or a lower one, is an older list put back
        // (a CA numbers each list it issues above the last).
        if let Some((older, older_list)) = in_force.get(&issuer)
            && (number.len(), &number) <= (older.len(), older)
            && older_list.as_slice() != list.as_ref()
        {
            return Err(
                "a list older than the one in force (its CRL number is not higher): refused"
                    .to_owned(),
            );
        }
        if numbers
            .insert(issuer, (number, list.as_ref().to_vec()))
            .is_some()
        {
            return Err("two lists of one CA: keep only its newest".to_owned());
        }
    }
    Ok((lists, numbers))
}

/// A list's CRL number, big-endian without leading zeros, if it has one.
pub(crate) fn crl_number(list: &x509_cert::crl::CertificateList) -> Option<Vec<u8>> {
    use x509_cert::der::Decode as _;
    let extension = list
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|extension| extension.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)?;
    let number =
        x509_cert::ext::pkix::crl::CrlNumber::from_der(extension.extn_value.as_bytes()).ok()?;
    let bytes = number.0.as_bytes();
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    Some(bytes[start..].to_vec())
}

/// The lists in `file`: PEM (`X509 CRL` blocks), else one DER list.
pub(crate) fn parse(file: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem: Result<Vec<_>, _> = CertificateRevocationListDer::pem_slice_iter(file).collect();
    let lists = match pem {
        Ok(lists) if !lists.is_empty() => lists,
        Ok(_) if file.first() == Some(&0x30) => {
            vec![CertificateRevocationListDer::from(file.to_vec())]
        }
        Ok(_) => return Err("holds no certificate revocation list".to_owned()),
        Err(error) => return Err(format!("not a PEM certificate revocation list: {error}")),
    };
    for list in &lists {
        webpki::OwnedCertRevocationList::from_der(list.as_ref())
            .map_err(|error| format!("not a valid certificate revocation list: {error:?}"))?;
    }
    Ok(lists)
}

fn build(
    roots: &Arc<rustls::RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    optional: bool,
    lists: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, VerifierBuilderError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .with_crls(lists)
            // Certificates are issued by the CA itself; its list speaks for them.
            .only_check_end_entity_revocation();
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build()
}

async fn watch(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.reload() {
            tracing::error!(
                message = "Cannot reload the certificate revocation list; the lists in force stay.",
                %error,
            );
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.shared.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.shared.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.shared
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.shared.verifier().supported_verify_schemes()
    }
}

/// A connection whose client certificate is checked again whenever the revocation lists
/// change, at its next read or write; once it fails, every read and write fails.
#[derive(Debug)]
pub struct Revalidated<S> {
    stream: S,
    check: Option<Check>,
    revoked: bool,
}

#[derive(Debug)]
struct Check {
    verifier: ClientVerifier,
    chain: Arc<[CertificateDer<'static>]>,
    caller: Option<Arc<str>>,
    seen: u64,
}

impl<S> Revalidated<S> {
    /// `stream`, whose client `caller` presented `chain` (none: nothing to check), checked
    /// against `verifier`'s lists whenever they differ from those of `generation`, the
    /// generation read *before* the handshake began: lists that changed during the handshake
    /// are checked at the first read.
    pub fn new(
        stream: S,
        verifier: Option<(ClientVerifier, u64)>,
        chain: Option<Arc<[CertificateDer<'static>]>>,
        caller: Option<Arc<str>>,
    ) -> Self {
        let check = match (verifier, chain) {
            (Some((verifier, generation)), Some(chain)) => Some(Check {
                seen: generation,
                verifier,
                chain,
                caller,
            }),
            _ => None,
        };
        Self {
            stream,
            check,
            revoked: false,
        }
    }

    /// The connection inside.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    fn refused(&mut self) -> Option<io::Error> {
        if let Some(check) = &mut self.check {
            let generation = check.verifier.generation();
            if generation != check.seen {
                check.seen = generation;
                if !check.verifier.still_valid(&check.chain) {
                    self.revoked = true;
                    metrics::counter!("govbus_tls_connections_revoked_total").increment(1);
                    tracing::warn!(
                        message =
                            "Connection closed: its client certificate no longer passes (revoked).",
                        caller = check.caller.as_deref().unwrap_or("(unnamed)"),
                    );
                }
            }
        }
        self.revoked.then(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the client certificate was revoked",
            )
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revalidated<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = this.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revalidated<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
