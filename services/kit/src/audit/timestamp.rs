//! Trusted time for the processing log: RFC 3161 timestamp tokens from a time-stamping
//! authority (TSA) outside the deployment.
//!
//! The entries' own times are the services' clocks. A [`Tsa`] asks the configured authority
//! to stamp the SHA-256 of each block's signature ([`Tsa::stamp`]); the token it answers (a CMS
//! `SignedData` over a `TSTInfo`, signed by the TSA's certificate) is stored with the block.
//! [`TsaTrust::check`] verifies a token: that its imprint is the block's, that the signed
//! attributes carry the digest of its `TSTInfo`, that the signature is the TSA certificate's,
//! and that the certificate chains to the configured TSA CA with the `timeStamping` usage at
//! the stamped time. A court, or anyone with the TSA's certificate, can check the same token with
//! `openssl ts -verify`.

use std::time::Duration;

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5280, rfc5911, rfc5912};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{Int, OctetString};
use x509_cert::der::{Any, Decode as _, Encode as _};

use crate::outbound::{HttpTarget, HttpTargetSettings, OutboundRequest};

/// `id-ct-TSTInfo` (RFC 3161): the content a timestamp token signs.
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// `id-kp-timeStamping`, as webpki wants an extended key usage: the OID's value bytes.
const TIME_STAMPING_USAGE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// The most of a TSA's answer that is read.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Why a token could not be had or does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The TSA could not be reached, or answered something other than a granted token.
    #[error("the time-stamping authority: {0}")]
    Authority(String),
    /// The token is malformed, or does not prove what it should.
    #[error("the timestamp token: {0}")]
    Token(String),
}

fn token_problem(problem: impl std::fmt::Display) -> TimestampError {
    TimestampError::Token(problem.to_string())
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// When the TSA stamped it (its `genTime`).
    pub time: UnixTime,
    /// Seconds since the epoch, as [`Self::time`].
    pub seconds: u64,
}

/// A time-stamping authority, asked over HTTP (`application/timestamp-query`).
#[derive(Debug, Clone)]
pub struct Tsa {
    target: HttpTarget,
}

impl Tsa {
    /// The authority at `url` (http or https: its answers are signed, and a query holds only a
    /// hash), trusting `extra_roots_pem` besides the system's for https.
    pub fn new(url: &str, extra_roots_pem: Option<Vec<u8>>) -> Result<Self, TimestampError> {
        let target = HttpTarget::for_signed_answers(HttpTargetSettings {
            name: "tsa",
            url: url.to_owned(),
            bearer_token: None,
            extra_roots_pem,
            timeout: Duration::from_secs(10),
        })
        .map_err(|error| TimestampError::Authority(error.to_string()))?;
        Ok(Self { target })
    }

    /// The authority at `GOVBUS_AUDIT_TSA_URL`, if that is set (trusting the system's
    /// certificate authorities, plus those in the PEM file `GOVBUS_AUDIT_TSA_ROOTS`, for https).
    pub fn from_env() -> Result<Option<Self>, TimestampError> {
        let Some(url) = std::env::var("GOVBUS_AUDIT_TSA_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            return Ok(None);
        };
        let roots = match std::env::var_os("GOVBUS_AUDIT_TSA_ROOTS") {
            Some(path) => Some(std::fs::read(&path).map_err(|error| {
                TimestampError::Authority(format!(
                    "GOVBUS_AUDIT_TSA_ROOTS {}: {error}",
                    std::path::Path::new(&path).display()
                ))
            })?),
            None => None,
        };
        Self::new(&url, roots).map(Some)
    }

    /// A token over the SHA-256 of `data`, checked to answer this very query (its imprint and
    /// nonce); its signature is checked by [`TsaTrust::check`].
    pub async fn stamp(&self, data: &[u8]) -> Result<Vec<u8>, TimestampError> {
        let authority = |problem: String| TimestampError::Authority(problem);
        let nonce = nonce()?;
        let query = x509_tsp::TimeStampReq {
            version: x509_tsp::TspVersion::V1,
            message_imprint: x509_tsp::MessageImprint {
                hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
                    oid: rfc5912::ID_SHA_256,
                    parameters: None,
                },
                hashed_message: OctetString::new(Sha256::digest(data).to_vec())
                    .map_err(|error| authority(error.to_string()))?,
            },
            req_policy: None,
            nonce: Some(Int::new(&nonce).map_err(|error| authority(error.to_string()))?),
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .map_err(|error| authority(error.to_string()))?;
        let answer = self
            .target
            .send(OutboundRequest {
                method: http::Method::POST,
                path_and_query: String::new(),
                headers: vec![
                    (
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/timestamp-query"),
                    ),
                    (
                        http::header::ACCEPT,
                        http::HeaderValue::from_static("application/timestamp-reply"),
                    ),
                ],
                body: query.into(),
                max_answer_bytes: MAX_REPLY_BYTES,
            })
            .await
            .map_err(|error| authority(error.to_string()))?;
        if !answer.status.is_success() {
            return Err(authority(format!("answered {}", answer.status)));
        }
        let reply = x509_tsp::TimeStampResp::from_der(&answer.body)
            .map_err(|error| authority(format!("not a timestamp reply: {error}")))?;
        if !matches!(
            reply.status.status,
            cmpv2::status::PkiStatus::Accepted | cmpv2::status::PkiStatus::GrantedWithMods
        ) {
            return Err(authority(format!(
                "refused the query ({:?})",
                reply.status.status
            )));
        }
        let token = reply
            .time_stamp_token
            .ok_or_else(|| authority("granted, but sent no token".to_owned()))?
            .to_der()
            .map_err(|error| authority(error.to_string()))?;
        let parsed = Token::parse(&token)?;
        parsed.check_imprint(data)?;
        if parsed.info.nonce.as_ref().map(Int::as_bytes) != Some(nonce.as_slice()) {
            return Err(token_problem(
                "it answers another query (its nonce differs)",
            ));
        }
        Ok(token)
    }
}

/// Eight random bytes, the top bit clear and the next set: a positive INTEGER in its minimal
/// encoding, as DER wants it.
fn nonce() -> Result<[u8; 8], TimestampError> {
    let mut nonce = [0_u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut nonce)
        .map_err(|_| TimestampError::Authority("no random numbers for the nonce".to_owned()))?;
    nonce[0] = (nonce[0] & 0x7f) | 0x40;
    Ok(nonce)
}

/// The TSA certificates a verifier trusts.
#[derive(Debug, Clone)]
pub struct TsaTrust {
    anchors: Vec<TrustAnchor<'static>>,
}

impl TsaTrust {
    /// The CA certificates (or the TSA's own) in a PEM file's contents.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TimestampError> {
        let mut anchors = Vec::new();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(token_problem)?;
            anchors.push(
                webpki::anchor_from_trusted_cert(&certificate)
                    .map_err(|error| token_problem(format!("a TSA certificate: {error:?}")))?
                    .to_owned(),
            );
        }
        if anchors.is_empty() {
            return Err(token_problem("no TSA certificate to trust"));
        }
        Ok(Self { anchors })
    }

    /// Checks that `token` stamps the SHA-256 of `data` and is signed by a TSA this trusts.
    pub fn check(&self, token: &[u8], data: &[u8]) -> Result<Stamp, TimestampError> {
        let token = Token::parse(token)?;
        token.check_imprint(data)?;
        let seconds = token.info.gen_time.to_unix_duration().as_secs();
        let time = UnixTime::since_unix_epoch(Duration::from_secs(seconds));
        token.check_signature(&self.anchors, time)?;
        Ok(Stamp { time, seconds })
    }
}

/// A token taken apart.
struct Token {
    signed: cms::signed_data::SignedData,
    info: x509_tsp::TstInfo,
    info_der: Vec<u8>,
}

impl Token {
    fn parse(token: &[u8]) -> Result<Self, TimestampError> {
        let content = cms::content_info::ContentInfo::from_der(token).map_err(token_problem)?;
        if content.content_type != rfc5911::ID_SIGNED_DATA {
            return Err(token_problem("not CMS SignedData"));
        }
        let signed: cms::signed_data::SignedData =
            content.content.decode_as().map_err(token_problem)?;
        if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
            return Err(token_problem("it signs something other than a TSTInfo"));
        }
        let info_der = signed
            .encap_content_info
            .econtent
            .as_ref()
            .ok_or_else(|| token_problem("it holds no TSTInfo"))?
            .decode_as::<OctetString>()
            .map_err(token_problem)?
            .into_bytes();
        let info = x509_tsp::TstInfo::from_der(&info_der).map_err(token_problem)?;
        Ok(Self {
            signed,
            info,
            info_der,
        })
    }

    fn check_imprint(&self, data: &[u8]) -> Result<(), TimestampError> {
        let imprint = &self.info.message_imprint;
        let expected = digest(imprint.hash_algorithm.oid, data)?;
        if imprint.hashed_message.as_bytes() != expected.as_slice() {
            return Err(token_problem("it stamps other data (its imprint differs)"));
        }
        Ok(())
    }

    fn check_signature(
        &self,
        anchors: &[TrustAnchor<'static>],
        time: UnixTime,
    ) -> Result<(), TimestampError> {
        let signer = self
            .signed
            .signer_infos
            .0
            .iter()
            .next()
            .ok_or_else(|| token_problem("it has no signer"))?;
        let attributes = signer
            .signed_attrs
            .as_ref()
            .ok_or_else(|| token_problem("its signer signed no attributes"))?;
        let attribute = |oid: ObjectIdentifier| -> Result<&Any, TimestampError> {
            attributes
                .iter()
                .find(|attribute| attribute.oid == oid)
                .and_then(|attribute| attribute.values.iter().next())
                .ok_or_else(|| token_problem(format!("its signed attributes lack {oid}")))
        };
        let content_type: ObjectIdentifier = attribute(rfc5911::ID_CONTENT_TYPE)?
            .decode_as()
            .map_err(token_problem)?;
        if content_type != ID_CT_TST_INFO {
            return Err(token_problem("its signed content type is not TSTInfo"));
        }
        let message_digest: OctetString = attribute(rfc5911::ID_MESSAGE_DIGEST)?
            .decode_as()
            .map_err(token_problem)?;
        if message_digest.as_bytes() != digest(signer.digest_alg.oid, &self.info_der)?.as_slice() {
            return Err(token_problem(
                "its TSTInfo was altered (the signed digest differs)",
            ));
        }
        // What the signature covers: the signed attributes as a DER SET OF.
        let signed_bytes = attributes.to_der().map_err(token_problem)?;
        let mut chain = Vec::new();
        let mut leaf = None;
        for choice in self.signed.certificates.iter().flat_map(|set| set.0.iter()) {
            let cms::cert::CertificateChoices::Certificate(certificate) = choice else {
                continue;
            };
            let der = certificate.to_der().map_err(token_problem)?;
            if leaf.is_none() && identifies(&signer.sid, certificate) {
                leaf = Some(CertificateDer::from(der));
            } else {
                chain.push(CertificateDer::from(der));
            }
        }
        let leaf = leaf.ok_or_else(|| {
            token_problem("it carries no certificate of its signer (asked for with certReq)")
        })?;
        let certificate = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|error| token_problem(format!("its signer's certificate: {error:?}")))?;
        certificate
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                anchors,
                &chain,
                time,
                webpki::KeyUsage::required(TIME_STAMPING_USAGE),
                None,
                None,
            )
            .map_err(|error| {
                token_problem(format!(
                    "its signer is not a TSA this deployment trusts: {error:?}"
                ))
            })?;
        let algorithms = crate::signatures::algorithms(
            signer.signature_algorithm.oid,
            Some(signer.digest_alg.oid),
        )
        .ok_or_else(|| {
            token_problem(format!(
                "the signature {} with digest {} is not supported",
                signer.signature_algorithm.oid, signer.digest_alg.oid
            ))
        })?;
        if crate::signatures::signed_by(
            &leaf,
            &algorithms,
            &signed_bytes,
            signer.signature.as_bytes(),
        ) {
            Ok(())
        } else {
            Err(token_problem(
                "its signature does not match its signer's key",
            ))
        }
    }
}

/// Whether `certificate` is the one `sid` names.
fn identifies(
    sid: &cms::signed_data::SignerIdentifier,
    certificate: &x509_cert::Certificate,
) -> bool {
    match sid {
        cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(named) => {
            certificate.tbs_certificate.issuer == named.issuer
                && certificate.tbs_certificate.serial_number == named.serial_number
        }
        cms::signed_data::SignerIdentifier::SubjectKeyIdentifier(key) => certificate
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|extension| extension.extn_id == rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .filter_map(|extension| {
                x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(
                    extension.extn_value.as_bytes(),
                )
                .ok()
            })
            .any(|identifier| identifier.0 == key.0),
    }
}

fn digest(algorithm: ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, TimestampError> {
    match algorithm {
        rfc5912::ID_SHA_256 => Ok(Sha256::digest(data).to_vec()),
        rfc5912::ID_SHA_384 => Ok(Sha384::digest(data).to_vec()),
        rfc5912::ID_SHA_512 => Ok(Sha512::digest(data).to_vec()),
        other => Err(token_problem(format!(
            "the digest {other} is not supported"
        ))),
    }
}
