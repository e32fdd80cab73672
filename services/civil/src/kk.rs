//! The family card (Kartu Keluarga) number: 16 digits, `PP RR KK DDMMYY SSSS` with the card's
//! issue date in the middle.

use std::fmt;

use crate::regions::Regions;

/// Why a KK number was refused. Messages never repeat the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KkError {
    /// Not 16 digits.
    #[error("must be 16 digits")]
    Malformed,
    /// The first four digits name no regency or city.
    #[error("digits 1–4 name no province and regency or city")]
    UnknownRegion,
    /// Digits 7–12 are not a day and month.
    #[error("digits 7–12 are not an issue date (DDMMYY)")]
    InvalidIssueDate,
    /// Serial 0000.
    #[error("the serial number (digits 13–16) cannot be 0000")]
    ZeroSerial,
}

/// A valid KK number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KkNumber(String);

impl KkNumber {
    /// Checks 16 digits, a known province and regency, an issue day and month, a serial.
    pub fn parse(text: &str) -> Result<Self, KkError> {
        let text = text.trim();
        if text.len() != 16 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(KkError::Malformed);
        }
        if !Regions::shipped().contains(&format!("{}.{}", &text[0..2], &text[2..4])) {
            return Err(KkError::UnknownRegion);
        }
        let day: u8 = text[6..8].parse().unwrap_or(0);
        let month: u8 = text[8..10].parse().unwrap_or(0);
        if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
            return Err(KkError::InvalidIssueDate);
        }
        if &text[12..] == "0000" {
            return Err(KkError::ZeroSerial);
        }
        Ok(Self(text.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Personal data: only the issuing region is shown.
impl fmt::Debug for KkNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KkNumber({}**********)", &self.0[0..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(KkNumber::parse("3573020101200001").is_ok());
        assert_eq!(KkNumber::parse("357302010120001"), Err(KkError::Malformed));
        assert_eq!(
            KkNumber::parse("9973020101200001"),
            Err(KkError::UnknownRegion)
        );
        assert_eq!(
            KkNumber::parse("3573023201200001"),
            Err(KkError::InvalidIssueDate)
        );
        assert_eq!(
            KkNumber::parse("3573020101200000"),
            Err(KkError::ZeroSerial)
        );
        assert_eq!(
            format!("{:?}", KkNumber::parse("3573020101200001").expect("valid")),
            "KkNumber(357302**********)"
        );
    }
}
