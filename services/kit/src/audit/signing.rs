//! Signing blocks with a service's certificate key, and checking them against the CA.

use std::sync::Arc;
use std::time::Duration;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::AuditError;
use super::entry::Block;

/// The schemes a block may be signed with, in order of preference.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// A writer's signing identity: the key and certificate it serves TLS with.
#[derive(Clone)]
pub struct BlockSigner {
    writer: String,
    key: Arc<dyn SigningKey>,
    certificate_pem: String,
}

impl std::fmt::Debug for BlockSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSigner")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl BlockSigner {
    /// The signer of the service `tls` identifies, with its certificate's key.
    pub fn of_service(tls: &crate::tls::ServiceTls) -> Result<Self, AuditError> {
        Self::from_pem(tls.name(), tls.certificate_pem(), tls.key_pem())
    }

    /// The signer of `writer` from its certificate and private key (PEM). The certificate must
    /// name `writer` (see [`crate::tls::service_of_certificate`]).
    pub fn from_pem(
        writer: &str,
        certificate_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, AuditError> {
        let certificate = CertificateDer::from_pem_slice(certificate_pem)
            .map_err(|error| AuditError::Invalid(format!("{writer}'s certificate: {error}")))?;
        let named = crate::tls::service_of_certificate(&certificate);
        if named.as_deref() != Some(writer) {
            return Err(AuditError::Invalid(format!(
                "the certificate names {named:?}, not {writer:?}"
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| AuditError::Invalid(format!("{writer}'s private key: {error}")))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|error| AuditError::Invalid(format!("{writer}'s private key: {error}")))?;
        if key.choose_scheme(SCHEMES).is_none() {
            return Err(AuditError::Invalid(format!(
                "{writer}'s key cannot sign with any of {SCHEMES:?}"
            )));
        }
        let certificate_pem = pem_rfc7468::encode_string(
            "CERTIFICATE",
            pem_rfc7468::LineEnding::LF,
            certificate.as_ref(),
        )
        .map_err(|error| AuditError::Invalid(format!("{writer}'s certificate: {error}")))?;
        Ok(Self {
            writer: writer.to_owned(),
            key,
            certificate_pem,
        })
    }

    /// The service that signs.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Signs `block` in place (its certificate, scheme and signature).
    pub fn sign(&self, block: &mut Block) -> Result<(), AuditError> {
        let signer = self
            .key
            .choose_scheme(SCHEMES)
            .ok_or_else(|| AuditError::Invalid("no usable signature scheme".to_owned()))?;
        block.certificate.clone_from(&self.certificate_pem);
        block.signature_scheme = scheme_name(signer.scheme());
        let signature = signer
            .sign(&block.signed_bytes())
            .map_err(|error| AuditError::Invalid(format!("signing a block: {error}")))?;
        block.signature = hex::encode(signature);
        Ok(())
    }
}

fn scheme_name(scheme: SignatureScheme) -> String {
    format!("{scheme:?}")
}

/// The CA certificates a block's certificate must chain to, and the time-stamping authority
/// whose tokens are believed (none: tokens are reported as not checked).
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    roots: Vec<CertificateDer<'static>>,
    tsa: Option<super::TsaTrust>,
}

impl TrustAnchors {
    /// The CA certificates in a PEM file's contents.
    pub fn from_pem(pem: &[u8]) -> Result<Self, AuditError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AuditError::Invalid(format!("CA certificates: {error}")))?;
        if roots.is_empty() {
            return Err(AuditError::Invalid("no CA certificate".to_owned()));
        }
        Ok(Self { roots, tsa: None })
    }

    /// Believes the tokens of the time-stamping authority `tsa` trusts.
    #[must_use]
    pub fn with_tsa(mut self, tsa: super::TsaTrust) -> Self {
        self.tsa = Some(tsa);
        self
    }

    /// The time-stamping authority believed, if one is.
    pub fn tsa(&self) -> Option<&super::TsaTrust> {
        self.tsa.as_ref()
    }

    /// Checks that `block` is signed by the key of a certificate this CA issued to
    /// `block.writer` for client use, valid when its last entry was written.
    pub fn check(&self, block: &Block) -> Result<(), SignatureProblem> {
        self.check_certificate(block)
            .map_err(SignatureProblem::Untrusted)?
            .map_err(SignatureProblem::Mismatch)
    }

    /// `Err`: the certificate is not to be trusted; `Ok(Err)`: it is, but the signature does not
    /// match.
    fn check_certificate(&self, block: &Block) -> Result<Result<(), String>, String> {
        let certificate = CertificateDer::from_pem_slice(block.certificate.as_bytes())
            .map_err(|error| format!("certificate unreadable: {error}"))?;
        let named = crate::tls::service_of_certificate(&certificate);
        if named.as_deref() != Some(block.writer.as_str()) {
            return Err(format!(
                "signed with a certificate of {named:?}, not of {:?}",
                block.writer
            ));
        }
        let anchors = self
            .roots
            .iter()
            .map(|root| webpki::anchor_from_trusted_cert(root))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("CA certificate unusable: {error}"))?;
        let end_entity = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|error| format!("certificate unreadable: {error}"))?;
        let signed_at = block
            .entries
            .last()
            .and_then(|entry| {
                time::OffsetDateTime::parse(
                    &entry.at,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            })
            .ok_or_else(|| "no entry with a readable time".to_owned())?;
        let seconds = u64::try_from(signed_at.unix_timestamp()).unwrap_or(0);
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|error| format!("certificate not issued by the deployment's CA: {error}"))?;
        let Ok(signature) = hex::decode(&block.signature) else {
            return Ok(Err("the signature is not hexadecimal".to_owned()));
        };
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| scheme_name(*scheme) == block.signature_scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or_else(|| format!("unknown signature scheme {:?}", block.signature_scheme))?;
        let message = block.signed_bytes();
        if algorithms.iter().any(|algorithm| {
            end_entity
                .verify_signature(*algorithm, &message, &signature)
                .is_ok()
        }) {
            Ok(Ok(()))
        } else {
            Ok(Err(
                "the block's signature does not match its entries".to_owned()
            ))
        }
    }
}

/// Why a block's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// The certificate is not the writer's from the deployment's CA.
    Untrusted(String),
    /// The certificate is, but the block is not what it signed.
    Mismatch(String),
}
