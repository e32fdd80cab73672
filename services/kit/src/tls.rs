//! Service identity: mutual TLS between services, and the caller's name from its certificate.
//!
//! Every service holds a certificate issued by the deployment's CA and trusts only that CA.
//! A server requires a client certificate, so only holders of a certificate from that CA can
//! call; the caller's service name is read from its certificate (a `spiffe://govbus/<name>`
//! URI, else the common name), never from what the caller says about itself.
//! [`crate::development_ca`] makes such a CA and certificates for a development or test
//! deployment (`govbus certs init`); production installs certificates from files.

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
    /// The folder holds no development CA key: its certificates come from the deployment's
    /// own CA, whose tools issue and revoke them.
    #[error(
        "{0} holds no development CA key (ca-key.pem): certificates from your own CA are issued and revoked with its tools, its list of revoked certificates put at ca.crl"
    )]
    NotDevelopmentCa(PathBuf),
    /// The CA certificate or its list of revoked certificates cannot be used.
    #[error(transparent)]
    Revocation(#[from] crate::revocation::RevocationError),
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
    /// The CA's list of revoked certificates, when it publishes one.
    crl: Option<PathBuf>,
}

/// Where a certificate set lives: `<dir>/ca.pem`, `<dir>/<name>.pem`, `<dir>/<name>-key.pem`,
/// and the CA's list of revoked certificates, `<dir>/ca.crl`, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The service's certificate.
    pub certificate: PathBuf,
    /// The service's private key.
    pub key: PathBuf,
    /// The CA's certificate revocation list (see [`crate::revocation`]); the file need not
    /// exist yet.
    pub crl: Option<PathBuf>,
}

impl CertificatePaths {
    /// The files of `name` in a folder laid out by
    /// [`crate::development_ca::generate_development_certificates`].
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            certificate: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            // Watched even before it exists: a deployment's CA may publish its first list later.
            crl: Some(dir.join(crate::revocation::CRL_FILE)),
        }
    }
}

/// A server's TLS: its rustls configuration, and the verifier of its clients' certificates
/// (which also checks connections already open when the revocation list changes).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// For the TLS acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// Its clients' verifier.
    pub clients: crate::revocation::ClientVerifier,
}

impl ServerTls {
    /// A server presenting `chain` and `key`, speaking `alpn`, its clients checked by
    /// `clients`, without session resumption: a resumed session skips the certificate check,
    /// so a certificate revoked since would get back in.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        clients: crate::revocation::ClientVerifier,
        alpn: &[&[u8]],
    ) -> Result<Self, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients.for_rustls())
        .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
            clients,
        })
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
            crl: paths.crl.clone(),
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

    /// The CA's list of revoked certificates, when it publishes one.
    pub fn crl(&self) -> Option<&Path> {
        self.crl.as_deref()
    }

    /// Its certificate (PEM).
    pub(crate) fn certificate_pem(&self) -> &[u8] {
        &self.certificate_pem
    }

    /// Its private key (PEM).
    pub(crate) fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// Server side, for the TLS acceptor of `peer::incoming`: present this identity, require a
    /// client certificate from the CA that the CA's list does not revoke, speak HTTP/2.
    pub fn server_tls(&self) -> Result<ServerTls, TlsError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject as _;
        let pem = |what: &str| {
            let what = what.to_owned();
            move |error: rustls_pki_types::pem::Error| TlsError::Pem(format!("{what}: {error}"))
        };
        let clients =
            crate::revocation::ClientVerifier::new(self.ca_pem(), self.crl.as_deref(), false)?;
        let chain = CertificateDer::pem_slice_iter(&self.certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the service certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(pem("the service key"))?;
        ServerTls::new(chain, key, clients, &[b"h2"])
            .map_err(|error| TlsError::Pem(format!("the service certificate: {error}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(service_of_certificate(b"not a certificate"), None);
    }
}
