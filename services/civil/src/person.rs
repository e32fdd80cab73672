//! A person's name, place of birth, and calendar dates as the register writes them.

use std::fmt;

use time::{Date, Month, OffsetDateTime};

/// Why a name or place was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty after trimming.
    #[error("is required")]
    Empty,
    /// Longer than allowed.
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// A character names do not contain.
    #[error("may contain only letters, spaces and . , ' -")]
    InvalidCharacter,
}

/// A person's full name as written in the register: letters, spaces and `. , ' -`, single
/// spaces, at most 100 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Checks and normalises the spacing of a name.
    pub fn parse(text: &str) -> Result<Self, TextError> {
        let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalised.is_empty() {
            return Err(TextError::Empty);
        }
        if normalised.chars().count() > 100 {
            return Err(TextError::TooLong(100));
        }
        if !normalised
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, ' ' | '.' | ',' | '\'' | '-'))
        {
            return Err(TextError::InvalidCharacter);
        }
        Ok(Self(normalised))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is the same name, ignoring case and spacing.
    pub fn matches(&self, other: &str) -> bool {
        let other = other.split_whitespace().collect::<Vec<_>>().join(" ");
        self.0.to_lowercase() == other.to_lowercase()
    }
}

/// Personal data.
impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(..)")
    }
}

/// A free-text line (place of birth, street): trimmed, 1 to `max` characters, no control
/// characters.
pub fn text_line(text: &str, max: usize) -> Result<String, TextError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(TextError::InvalidCharacter);
    }
    Ok(trimmed.to_owned())
}

/// Why a date was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Missing.
    #[error("is required (YYYY-MM-DD)")]
    Empty,
    /// Not `YYYY-MM-DD` or not a real date.
    #[error("must be a real date written YYYY-MM-DD")]
    Malformed,
    /// After today.
    #[error("cannot be in the future")]
    InFuture,
    /// Before 1900.
    #[error("cannot be before 1900-01-01")]
    TooEarly,
}

/// Reads a past date written `YYYY-MM-DD`, from 1900 to today.
pub fn past_date(text: &str) -> Result<Date, DateError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DateError::Empty);
    }
    let mut parts = text.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DateError::Malformed);
    };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err(DateError::Malformed);
    }
    let number = |part: &str| part.parse::<u16>().map_err(|_| DateError::Malformed);
    let month = Month::try_from(u8::try_from(number(month)?).map_err(|_| DateError::Malformed)?)
        .map_err(|_| DateError::Malformed)?;
    let date = Date::from_calendar_date(
        i32::from(number(year)?),
        month,
        u8::try_from(number(day)?).map_err(|_| DateError::Malformed)?,
    )
    .map_err(|_| DateError::Malformed)?;
    if date.year() < 1900 {
        return Err(DateError::TooEarly);
    }
    if date > OffsetDateTime::now_utc().date() {
        return Err(DateError::InFuture);
    }
    Ok(date)
}

/// A date written `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_checked() {
        let name = PersonName::parse("  Siti   Nur'aini, S.Kom ").expect("valid");
        assert_eq!(name.as_str(), "Siti Nur'aini, S.Kom");
        assert!(name.matches("siti nur'aini,  s.kom"));
        assert!(!name.matches("Siti Aminah"));
        assert_eq!(PersonName::parse("   "), Err(TextError::Empty));
        assert_eq!(
            PersonName::parse("Budi123"),
            Err(TextError::InvalidCharacter)
        );
        assert_eq!(
            PersonName::parse(&"a".repeat(101)),
            Err(TextError::TooLong(100))
        );
        assert_eq!(format!("{name:?}"), "PersonName(..)");
    }

    #[test]
    fn dates_are_real_and_past() {
        assert_eq!(
            format_date(past_date("1990-08-17").expect("valid")),
            "1990-08-17"
        );
        assert_eq!(past_date(""), Err(DateError::Empty));
        assert_eq!(past_date("17-08-1990"), Err(DateError::Malformed));
        assert_eq!(past_date("1990-02-30"), Err(DateError::Malformed));
        assert_eq!(past_date("1990-8-17"), Err(DateError::Malformed));
        assert_eq!(past_date("1899-12-31"), Err(DateError::TooEarly));
        assert_eq!(past_date("2999-01-01"), Err(DateError::InFuture));
    }
}
