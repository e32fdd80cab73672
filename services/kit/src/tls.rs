//! Service identity: mutual TLS between services, and the caller's name from its certificate.
//!
//! Every service holds a certificate issued by the deployment's CA and trusts only that CA.
//! A server requires a client certificate, so only holders of a certificate from that CA can
//! call; the caller's service name is read from its certificate (a `spiffe://govbus/<name>`
//! URI, else the common name), never from what the caller says about itself.
//! [`generate_development_certificates`] makes such a CA and certificates for a development or
//! test deployment (`govbus certs init`); production installs certificates from files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The URI prefix naming a govbus service in a certificate.
pub const SERVICE_URI_PREFIX: &str = "spiffe://govbus/";

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM encoding failed.
    #[error("PEM encoding: {0}")]
    Pem(String),
    /// Certificates already exist where new ones were asked for.
    #[error("{0} already holds certificates; remove them or keep using them")]
    Exists(PathBuf),
}

/// A service's certificate, key and the CA it trusts.
#[derive(Debug, Clone)]
pub struct ServiceTls {
    ca: Certificate,
    identity: Identity,
    name: String,
    /// Kept to sign the processing log with the same key (`audit::BlockSigner::of_service`).
    certificate_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
}

/// Where a certificate set lives: `<dir>/ca.pem`, `<dir>/<name>.pem`, `<dir>/<name>-key.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The service's certificate.
    pub certificate: PathBuf,
    /// The service's private key.
    pub key: PathBuf,
}

impl CertificatePaths {
    /// The files of `name` in a folder laid out by [`generate_development_certificates`].
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            certificate: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }
}

impl ServiceTls {
    /// Reads the PEM files of service `name`.
    pub fn from_files(name: &str, paths: &CertificatePaths) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| TlsError::File {
                path: path.to_owned(),
                source,
            })
        };
        let certificate_pem = read(&paths.certificate)?;
        let key_pem = read(&paths.key)?;
        Ok(Self {
            ca: Certificate::from_pem(read(&paths.ca)?),
            identity: Identity::from_pem(&certificate_pem, &key_pem),
            name: name.to_owned(),
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
        })
    }

    /// The certificates of service `name` in the folder `GOVBUS_TLS_DIR`, if that is set.
    pub fn from_env(name: &str) -> Result<Option<Self>, TlsError> {
        match std::env::var_os("GOVBUS_TLS_DIR") {
            Some(dir) => {
                Self::from_files(name, &CertificatePaths::in_dir(Path::new(&dir), name)).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The service name this identity belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificates this service trusts (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        self.ca.as_ref()
    }

    /// Its certificate (PEM).
    pub(crate) fn certificate_pem(&self) -> &[u8] {
        &self.certificate_pem
    }

    /// Its private key (PEM).
    pub(crate) fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// Server side, for the TLS acceptor of `peer::incoming`: present this identity, require a client
    /// certificate from the CA, speak HTTP/2.
    pub fn server_tls(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject as _;
        let pem = |what: &str| {
            let what = what.to_owned();
            move |error: rustls_pki_types::pem::Error| TlsError::Pem(format!("{what}: {error}"))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.ca_pem()) {
            roots
                .add(certificate.map_err(pem("the CA certificate"))?)
                .map_err(|error| TlsError::Pem(format!("the CA certificate: {error}")))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|error| TlsError::Pem(format!("the CA certificate: {error}")))?;
        let chain = CertificateDer::pem_slice_iter(&self.certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the service certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(pem("the service key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Pem(error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::Pem(format!("the service certificate: {error}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Server side with tonic's own TLS: present this identity, require a client certificate
    /// from the CA. (govbus servers use [`server_tls`](Self::server_tls), which reads the
    /// caller once per connection.)
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Client side, calling the service `server`: trust only the CA, check the server's
    /// certificate names `server`, present this identity.
    pub fn client_config(&self, server: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(server)
    }
}

/// The service named by a certificate: its `spiffe://govbus/<name>` URI, else its common name.
pub fn service_of_certificate(der: &[u8]) -> Option<String> {
    use x509_cert::der::{Decode as _, Tag, Tagged as _};
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;

    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let subject_alt_name = const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME;
    let names = certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == subject_alt_name)
        .filter_map(|extension| SubjectAltName::from_der(extension.extn_value.as_bytes()).ok());
    for SubjectAltName(names) in names {
        for name in names {
            if let GeneralName::UniformResourceIdentifier(uri) = name
                && let Some(service) = uri.as_str().strip_prefix(SERVICE_URI_PREFIX)
                && !service.is_empty()
            {
                return Some(service.to_owned());
            }
        }
    }
    let common_name = const_oid::db::rfc4519::CN;
    certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|attribute| attribute.oid == common_name)
        .and_then(|attribute| match attribute.value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                std::str::from_utf8(attribute.value.value())
                    .ok()
                    .map(str::to_owned)
            }
            _ => None,
        })
}

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
    let text = fs::read_to_string(&key_path).map_err(|source| TlsError::File {
        path: key_path.clone(),
        source,
    })?;
    let (_, der) = pem_rfc7468::decode_vec(text.as_bytes())
        .map_err(|error| TlsError::Pem(error.to_string()))?;
    let key = rcgen::KeyPair::try_from(der.as_slice())?;
    // The same subject and key as the CA certificate in `ca.pem`: what a certificate it
    // signed names as its issuer.
    let issuer = rcgen::Issuer::new(development_ca_params()?, key);
    for name in &missing {
        issue_development_certificate(dir, name, &issuer)?;
    }
    Ok(missing.into_iter().map(str::to_owned).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(service_of_certificate(b"not a certificate"), None);
    }
}
