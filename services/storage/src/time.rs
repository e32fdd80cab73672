//! Timestamps as stored: microseconds since the Unix epoch, in a `BIGINT`.

use time::OffsetDateTime;

/// Now, as microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    to_micros(OffsetDateTime::now_utc())
}

/// A timestamp as microseconds since the Unix epoch.
pub fn to_micros(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch as a timestamp.
pub fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A stored timestamp as RFC 3339, as APIs and events show it.
pub fn rfc3339(micros: i64) -> String {
    from_micros(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A duration as microseconds, saturating.
pub fn micros_of(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        let time =
            OffsetDateTime::from_unix_timestamp_nanos(1_732_780_800_123_456_000).expect("valid");
        assert_eq!(from_micros(to_micros(time)), time);
    }
}
