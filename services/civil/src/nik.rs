//! The Nomor Induk Kependudukan (NIK): 16 digits, `PP RR KK DDMMYY SSSS`.
//!
//! - `PP` province, `RR` regency or city, `KK` kecamatan where the NIK was issued;
//! - `DDMMYY` the date of birth, with 40 added to the day for women;
//! - `SSSS` a serial number, 0001 to 9999.

use std::fmt;

use time::{Date, Month};

use crate::Sex;
use crate::regions::Regions;

/// Why a NIK was refused. Messages never repeat the NIK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NikError {
    /// Not 16 characters.
    #[error("must be 16 digits, got {0} characters")]
    WrongLength(usize),
    /// Something other than 0–9.
    #[error("must contain digits only")]
    NotDigits,
    /// The province digits name no province.
    #[error("digits 1–2 name no province")]
    UnknownProvince,
    /// The regency digits name no regency or city of that province.
    #[error("digits 3–4 name no regency or city of that province")]
    UnknownRegency,
    /// DDMMYY is not a date (after removing 40 from the day for women).
    #[error("digits 7–12 are not a real date of birth (DDMMYY, day + 40 for women)")]
    InvalidBirthDate,
    /// Serial 0000.
    #[error("the serial number (digits 13–16) cannot be 0000")]
    ZeroSerial,
}

/// A structurally valid NIK whose province and regency exist.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nik(String);

impl Nik {
    /// Checks a NIK: 16 digits, a known province and regency, a real birth date, serial not 0000.
    ///
    /// An unknown kecamatan is not an error (codes were split and renumbered after many NIKs
    /// were issued); see [`kecamatan_known`](Self::kecamatan_known).
    pub fn parse(text: &str) -> Result<Self, NikError> {
        let text = text.trim();
        if text.chars().count() != 16 {
            return Err(NikError::WrongLength(text.chars().count()));
        }
        if !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(NikError::NotDigits);
        }
        let nik = Self(text.to_owned());
        let regions = Regions::shipped();
        if !regions.contains(&nik.province_code()) {
            return Err(NikError::UnknownProvince);
        }
        if !regions.contains(&nik.regency_code()) {
            return Err(NikError::UnknownRegency);
        }
        let (day, month, year) = nik.encoded_birth();
        let real_in_some_century = [1900, 2000]
            .into_iter()
            .any(|century| date(century + i32::from(year), month, day).is_some());
        if !real_in_some_century {
            return Err(NikError::InvalidBirthDate);
        }
        if &nik.0[12..] == "0000" {
            return Err(NikError::ZeroSerial);
        }
        Ok(nik)
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `PP`.
    pub fn province_code(&self) -> String {
        self.0[0..2].to_owned()
    }

    /// `PP.RR`.
    pub fn regency_code(&self) -> String {
        format!("{}.{}", &self.0[0..2], &self.0[2..4])
    }

    /// `PP.RR.KK`.
    pub fn kecamatan_code(&self) -> String {
        format!("{}.{}.{}", &self.0[0..2], &self.0[2..4], &self.0[4..6])
    }

    /// Whether the kecamatan digits name a current kecamatan.
    pub fn kecamatan_known(&self) -> bool {
        Regions::shipped().contains(&self.kecamatan_code())
    }

    /// The sex the NIK encodes (day of birth above 40: female).
    pub fn encoded_sex(&self) -> Sex {
        if self.raw_day() > 40 {
            Sex::Female
        } else {
            Sex::Male
        }
    }

    /// Whether `birth_date` is the date the NIK encodes.
    pub fn encodes_birth_date(&self, birth_date: Date) -> bool {
        let (day, month, year) = self.encoded_birth();
        birth_date.day() == day
            && u8::from(birth_date.month()) == month
            && birth_date.year().rem_euclid(100) == i32::from(year)
    }

    fn raw_day(&self) -> u8 {
        self.0[6..8].parse().unwrap_or(0)
    }

    /// (day without the +40, month, two-digit year).
    fn encoded_birth(&self) -> (u8, u8, u8) {
        let raw_day = self.raw_day();
        let day = if raw_day > 40 { raw_day - 40 } else { raw_day };
        let month = self.0[8..10].parse().unwrap_or(0);
        let year = self.0[10..12].parse().unwrap_or(0);
        (day, month, year)
    }
}

fn date(year: i32, month: u8, day: u8) -> Option<Date> {
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

/// Personal data: only the issuing region is shown.
impl fmt::Debug for Nik {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nik({}**********)", &self.0[0..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kota Malang (35.73), Klojen (02), born 17 August 1990, serial 0001.
    const MAN: &str = "3573021708900001";
    // The same, a woman: day 17 + 40 = 57.
    const WOMAN: &str = "3573025708900002";

    #[test]
    fn reads_region_sex_and_birth_date() {
        let man = Nik::parse(MAN).expect("valid");
        assert_eq!(man.regency_code(), "35.73");
        assert_eq!(man.kecamatan_code(), "35.73.02");
        assert!(man.kecamatan_known());
        assert_eq!(man.encoded_sex(), Sex::Male);
        let born = date(1990, 8, 17).expect("date");
        assert!(man.encodes_birth_date(born));
        let woman = Nik::parse(WOMAN).expect("valid");
        assert_eq!(woman.encoded_sex(), Sex::Female);
        assert!(woman.encodes_birth_date(born));
        assert!(!woman.encodes_birth_date(date(2090, 8, 18).expect("date")));
    }

    #[test]
    fn refuses_malformed_niks() {
        assert_eq!(
            Nik::parse("357302170890001"),
            Err(NikError::WrongLength(15))
        );
        assert_eq!(Nik::parse("35730217089000a1"), Err(NikError::NotDigits));
        assert_eq!(Nik::parse("357302170890000١"), Err(NikError::NotDigits));
        assert_eq!(
            Nik::parse("9973021708900001"),
            Err(NikError::UnknownProvince)
        );
        assert_eq!(
            Nik::parse("3598021708900001"),
            Err(NikError::UnknownRegency)
        );
        assert_eq!(
            Nik::parse("3573023202900001"),
            Err(NikError::InvalidBirthDate)
        );
        assert_eq!(
            Nik::parse("3573027202900001"),
            Err(NikError::InvalidBirthDate)
        );
        assert_eq!(
            Nik::parse("3573021713900001"),
            Err(NikError::InvalidBirthDate)
        );
        assert_eq!(
            Nik::parse("3573020008900001"),
            Err(NikError::InvalidBirthDate)
        );
        assert_eq!(Nik::parse("3573021708900000"), Err(NikError::ZeroSerial));
    }

    #[test]
    fn a_leap_day_is_real_in_one_century() {
        // 29 February 2000 exists (1900's does not, which is fine: one century suffices).
        assert!(Nik::parse("3573022902000001").is_ok());
        // 29 February 2001 and 1901 do not.
        assert_eq!(
            Nik::parse("3573022902010001"),
            Err(NikError::InvalidBirthDate)
        );
    }

    #[test]
    fn an_unknown_kecamatan_is_accepted() {
        let nik = Nik::parse("3573991708900001").expect("accepted");
        assert!(!nik.kecamatan_known());
    }

    #[test]
    fn debug_hides_the_birth_date_and_serial() {
        let nik = Nik::parse(MAN).expect("valid");
        assert_eq!(format!("{nik:?}"), "Nik(357302**********)");
    }
}
