//! The population register's rules, independent of storage and transport.
//!
//! Values are parsed by `govbus-civil` into types that cannot hold invalid data; the rules that
//! relate several fields (the NIK's date and sex agree with the stated ones) live in [`citizen`].

pub mod citizen;

pub use citizen::{NewCitizen, RegistrationInput, Warning};
pub use govbus_civil::{Kelurahan, KkNumber, Nik, PersonName, Regions, Sex};
