//! Checking an X.509-style signature (a CRL's, a timestamp token's) with a certificate's key:
//! which webpki algorithms an algorithm identifier may mean.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};

/// The algorithms `signature` (with `digest`, for identifiers that name only the key type, as
/// CMS signers may) may mean; for ECDSA the curve is the key's, so each curve is offered.
/// `None`: not supported.
pub(crate) fn algorithms(
    signature: ObjectIdentifier,
    digest: Option<ObjectIdentifier>,
) -> Option<Vec<&'static dyn SignatureVerificationAlgorithm>> {
    use webpki::ring as algorithm;
    let ecdsa_sha256 = || vec![algorithm::ECDSA_P256_SHA256, algorithm::ECDSA_P384_SHA256];
    let ecdsa_sha384 = || vec![algorithm::ECDSA_P384_SHA384, algorithm::ECDSA_P256_SHA384];
    Some(match (signature, digest) {
        (rfc5912::ECDSA_WITH_SHA_256, _) => ecdsa_sha256(),
        (rfc5912::ECDSA_WITH_SHA_384, _) => ecdsa_sha384(),
        (rfc5912::ID_EC_PUBLIC_KEY, Some(rfc5912::ID_SHA_256)) => ecdsa_sha256(),
        (rfc5912::ID_EC_PUBLIC_KEY, Some(rfc5912::ID_SHA_384)) => ecdsa_sha384(),
        (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, _)
        | (rfc5912::RSA_ENCRYPTION, Some(rfc5912::ID_SHA_256)) => {
            vec![algorithm::RSA_PKCS1_2048_8192_SHA256]
        }
        (rfc5912::SHA_384_WITH_RSA_ENCRYPTION, _)
        | (rfc5912::RSA_ENCRYPTION, Some(rfc5912::ID_SHA_384)) => {
            vec![algorithm::RSA_PKCS1_2048_8192_SHA384]
        }
        (rfc5912::SHA_512_WITH_RSA_ENCRYPTION, _)
        | (rfc5912::RSA_ENCRYPTION, Some(rfc5912::ID_SHA_512)) => {
            vec![algorithm::RSA_PKCS1_2048_8192_SHA512]
        }
        _ => return None,
    })
}

/// Whether `signature` over `message` is `certificate`'s key's, under one of `algorithms`.
pub(crate) fn signed_by(
    certificate: &CertificateDer<'_>,
    algorithms: &[&'static dyn SignatureVerificationAlgorithm],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else {
        return false;
    };
    algorithms.iter().any(|algorithm| {
        certificate
            .verify_signature(*algorithm, message, signature)
            .is_ok()
    })
}
