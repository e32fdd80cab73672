//! The population register's rules, independent of storage and transport.
//!
//! Values are parsed once, at the edge, into types that cannot hold invalid data
//! ([`Nik::parse`], [`KkNumber::parse`], [`PersonName::parse`], …); the rules that relate
//! several fields (the NIK's date and sex agree with the stated ones) live in [`citizen`].

pub mod citizen;
pub mod kk;
pub mod nik;
pub mod person;
pub mod regions;

pub use citizen::{Kelurahan, NewCitizen, RegistrationInput, Warning};
pub use kk::KkNumber;
pub use nik::Nik;
pub use person::PersonName;
pub use regions::Regions;

/// Sex as recorded in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// Laki-laki.
    Male,
    /// Perempuan.
    Female,
}

impl Sex {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "male" => Some(Self::Male),
            "female" => Some(Self::Female),
            _ => None,
        }
    }
}
