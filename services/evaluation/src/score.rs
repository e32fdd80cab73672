//! Exact index arithmetic: weights in hundredths of a percent, indices in hundredths.
//!
//! No floating point anywhere, so an index exactly on a predicate boundary (2.60, 4.20) lands on
//! the right side of it.

use std::fmt;
use std::str::FromStr;

/// A non-negative number with exactly two decimals, held as an integer count of hundredths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hundredths(pub i64);

impl Hundredths {
    /// `numerator / denominator` rounded half up to two decimals (both non-negative).
    pub fn ratio(numerator: i64, denominator: i64) -> Option<Self> {
        if denominator <= 0 || numerator < 0 {
            return None;
        }
        let scaled = numerator.checked_mul(100)?;
        Some(Self((2 * scaled + denominator) / (2 * denominator)))
    }

    /// The signed difference `self - other`, for year-on-year changes.
    pub fn minus(self, other: Self) -> i64 {
        self.0 - other.0
    }
}

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", magnitude / 100, magnitude % 100)
    }
}

/// Why a decimal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a number with at most two decimals, like 3.02")]
pub struct DecimalError(pub String);

impl FromStr for Hundredths {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || DecimalError(text.to_owned());
        let trimmed = text.trim();
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        if whole.is_empty()
            || fraction.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || whole.len() > 9
        {
            return Err(refuse());
        }
        let whole: i64 = whole.parse().map_err(|_| refuse())?;
        let fraction: i64 = match fraction.len() {
            0 => 0,
            1 => fraction.parse::<i64>().map_err(|_| refuse())? * 10,
            _ => fraction.parse().map_err(|_| refuse())?,
        };
        Ok(Self(whole * 100 + fraction))
    }
}

/// A signed change in hundredths, written with its sign (`+0.25`, `-1.10`, `0.00`).
pub fn signed(change: i64) -> String {
    let sign = match change.signum() {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    format!("{sign}{}", Hundredths(change.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_two_decimals() {
        assert_eq!("3.02".parse(), Ok(Hundredths(302)));
        assert_eq!("1.3".parse(), Ok(Hundredths(130)));
        assert_eq!("45".parse(), Ok(Hundredths(4500)));
        assert_eq!(Hundredths(302).to_string(), "3.02");
        assert_eq!(Hundredths(5).to_string(), "0.05");
        for bad in ["", ".5", "1.234", "-1", "1,5", "a.00"] {
            assert!(bad.parse::<Hundredths>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ratios_round_half_up() {
        assert_eq!(Hundredths::ratio(1, 3), Some(Hundredths(33)));
        assert_eq!(Hundredths::ratio(2, 3), Some(Hundredths(67)));
        assert_eq!(
            Hundredths::ratio(1, 8),
            Some(Hundredths(13)),
            "0.125 rounds up"
        );
        assert_eq!(Hundredths::ratio(1, 0), None);
        assert_eq!(signed(25), "+0.25");
        assert_eq!(signed(-110), "-1.10");
        assert_eq!(signed(0), "0.00");
    }
}
