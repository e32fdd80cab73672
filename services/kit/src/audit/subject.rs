//! The data subject of an entry: a person, as a keyed hash.
//!
//! An entry never holds a NIK or a citizen reference. It holds HMAC-SHA-256 of it under the
//! deployment's subject key, which every service shares and operators' tools read. Without the
//! key the hash cannot be tested against guessed NIKs (a NIK's structure makes an unkeyed hash
//! easy to reverse); with it, the history of one person can be found.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::AuditError;

/// Length of a subject key in bytes.
pub const SUBJECT_KEY_BYTES: usize = 32;

/// The environment variable naming the subject-key file of a service run on its own.
pub const SUBJECT_KEY_ENV: &str = "GOVBUS_AUDIT_SUBJECT_KEY";

/// A person an entry is about, as the caller knows them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DataSubject<'a> {
    /// By NIK (a call that carries one).
    Nik(&'a str),
    /// By the pseudonymous citizen reference identity gave out (events carry these).
    Citizen(&'a str),
}

impl std::fmt::Debug for DataSubject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Personal data: never printed.
        match self {
            Self::Nik(_) => f.write_str("Nik(..)"),
            Self::Citizen(_) => f.write_str("Citizen(..)"),
        }
    }
}

/// The deployment's secret for hashing data subjects.
#[derive(Clone)]
pub struct SubjectKey(Arc<[u8; SUBJECT_KEY_BYTES]>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// A key of the given bytes.
    pub fn new(bytes: [u8; SUBJECT_KEY_BYTES]) -> Self {
        Self(Arc::new(bytes))
    }

    /// A new random key.
    pub fn generate() -> Result<Self, AuditError> {
        let mut bytes = [0_u8; SUBJECT_KEY_BYTES];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| AuditError::Invalid("no secure random numbers".to_owned()))?;
        Ok(Self::new(bytes))
    }

    /// Reads a key file: 64 hexadecimal digits.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::File {
            path: path.to_owned(),
            source,
        })?;
        let mut bytes = [0_u8; SUBJECT_KEY_BYTES];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
            AuditError::Invalid(format!(
                "{}: not a subject key ({} hexadecimal digits)",
                path.display(),
                SUBJECT_KEY_BYTES * 2
            ))
        })?;
        Ok(Self::new(bytes))
    }

    /// The key in the file named by `GOVBUS_AUDIT_SUBJECT_KEY`, if that is set.
    pub fn from_env() -> Result<Option<Self>, AuditError> {
        match std::env::var_os(SUBJECT_KEY_ENV) {
            Some(path) => Self::from_file(Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the key in `path`, or makes one there (readable by the owner only) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        if path.exists() {
            return Self::from_file(path);
        }
        let key = Self::generate()?;
        let file_error = |source| AuditError::File {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(file_error)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(file_error)?;
        writeln!(file, "{}", hex::encode(key.0.as_slice())).map_err(file_error)?;
        Ok(key)
    }

    /// The keyed hash of `subject` (64 hexadecimal digits).
    pub fn digest(&self, subject: DataSubject<'_>) -> String {
        hex::encode(self.digest_bytes(subject))
    }

    /// The keyed hash of `subject`, as bytes.
    pub fn digest_bytes(&self, subject: DataSubject<'_>) -> [u8; 32] {
        let (kind, value) = match subject {
            DataSubject::Nik(nik) => ("nik", nik.trim()),
            DataSubject::Citizen(reference) => ("citizen", reference.trim()),
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"govbus.subject.v1\n");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_the_key_and_the_kind_of_reference() {
        let key = SubjectKey::new([7; SUBJECT_KEY_BYTES]);
        let other = SubjectKey::new([8; SUBJECT_KEY_BYTES]);
        let nik = DataSubject::Nik("3573010101900001");
        assert_eq!(
            key.digest(nik),
            key.digest(DataSubject::Nik(" 3573010101900001 "))
        );
        assert_ne!(key.digest(nik), other.digest(nik));
        assert_ne!(
            key.digest(nik),
            key.digest(DataSubject::Citizen("3573010101900001"))
        );
        assert_eq!(key.digest(nik).len(), 64);
        assert!(!key.digest(nik).contains("3573010101900001"));
        assert_eq!(format!("{nik:?}"), "Nik(..)");
    }

    #[test]
    fn a_created_key_file_is_read_back_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit/subject.key");
        let created = SubjectKey::load_or_create(&path).expect("created");
        let read = SubjectKey::load_or_create(&path).expect("read");
        let nik = DataSubject::Nik("3573010101900001");
        assert_eq!(created.digest(nik), read.digest(nik));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
        }
        std::fs::write(&path, "not hex").expect("write");
        assert!(SubjectKey::from_file(&path).is_err());
    }
}
