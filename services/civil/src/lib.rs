//! Indonesian civil-registration values, each parsed once into a type that cannot hold an
//! invalid value: [`Nik::parse`], [`KkNumber::parse`], [`PersonName::parse`],
//! [`Kelurahan::parse`], [`past_date`].
//!
//! The types that hold personal data (NIK, KK number, names) print only their issuing region or
//! nothing in `Debug`, so they cannot leak into logs by accident; error messages never repeat the
//! value.
//!
//! # Layout
//!
//! - [`agencies`]: the instance's agencies (perangkat daerah), shipped with the crate.
//! - [`nik`]: the Nomor Induk Kependudukan.
//! - [`kk`]: the family card number.
//! - [`regions`]: Kemendagri region codes, shipped with the crate (MIT, see `data/README.md`).
//! - [`person`]: names, free-text lines and calendar dates.
//! - [`calendar`]: government working days (national holidays and cuti bersama by year's
//!   decree, shipped with the crate) and deadlines counted in them.

pub mod agencies;
pub mod calendar;
pub mod kk;
pub mod nik;
pub mod person;
pub mod regions;

pub use calendar::{Deadline, WorkingCalendar};
pub use kk::{KkError, KkNumber};
pub use nik::{Nik, NikError};
pub use person::{DateError, PersonName, TextError, format_date, past_date, text_line};
pub use regions::Regions;

/// Sex as recorded in the population register.
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

/// A kelurahan of the city: its code is in the shipped region list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kelurahan(String);

impl Kelurahan {
    /// Checks the code names a known kelurahan (`NN.NN.NN.NNNN`).
    pub fn parse(code: &str) -> Result<Self, KelurahanError> {
        let code = code.trim();
        if code.is_empty() {
            return Err(KelurahanError::Empty);
        }
        let shaped = code.len() == 13
            && code.char_indices().all(|(i, c)| {
                if matches!(i, 2 | 5 | 8) {
                    c == '.'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !shaped {
            return Err(KelurahanError::Malformed);
        }
        if !Regions::shipped().contains(code) {
            return Err(KelurahanError::Unknown);
        }
        Ok(Self(code.to_owned()))
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.0
    }
}

/// Why a kelurahan code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KelurahanError {
    /// Missing.
    #[error("is required")]
    Empty,
    /// Not `NN.NN.NN.NNNN`.
    #[error("must be a kelurahan code NN.NN.NN.NNNN")]
    Malformed,
    /// Not one of the city's.
    #[error("names no kelurahan of this city")]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kelurahan_codes_are_checked() {
        assert_eq!(
            Kelurahan::parse("35.73.02.1001").map(|k| k.code().to_owned()),
            Ok("35.73.02.1001".to_owned())
        );
        assert_eq!(Kelurahan::parse(""), Err(KelurahanError::Empty));
        assert_eq!(
            Kelurahan::parse("35.73.02.100"),
            Err(KelurahanError::Malformed)
        );
        assert_eq!(
            Kelurahan::parse("35.73.09.9999"),
            Err(KelurahanError::Unknown)
        );
    }
}
