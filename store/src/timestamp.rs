//! Points in time, kept as microseconds since the Unix epoch and shown as RFC 3339 UTC.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A UTC instant with microsecond precision. Displayed as Django REST framework renders them
/// (`2026-11-22T10:00:00.123456Z`); stored as the number of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Microseconds since the epoch; the unit indexes are ordered by.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// From microseconds since the epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    fn from_datetime(dt: OffsetDateTime) -> Self {
        let nanos = dt.unix_timestamp_nanos();
        Self((nanos / 1_000) as i64)
    }

    /// Big-endian bytes that sort like the instants (all instants we store are after 1970).
    pub fn sort_key(self) -> [u8; 8] {
        (self.0.max(0) as u64).to_be_bytes()
    }

    /// Parses what a client may send in a filter: RFC 3339, `YYYY-MM-DD HH:MM[:SS[.ffffff]]`
    /// (taken as UTC), or a bare date (midnight UTC), as Django's DateTimeField accepts.
    pub fn parse_lenient(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self::from_datetime(dt));
        }
        let formats: [&[time::format_description::FormatItem<'static>]; 4] = [
            time::macros::format_description!(
                "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second].[subsecond]"
            ),
            time::macros::format_description!(
                "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second]"
            ),
            time::macros::format_description!("[year]-[month]-[day][first [T][ ]][hour]:[minute]"),
            time::macros::format_description!("[year]-[month]-[day]"),
        ];
        for (i, format) in formats.iter().enumerate() {
            if i == 3 {
                if let Ok(date) = time::Date::parse(s, format) {
                    return Some(Self::from_datetime(
                        date.midnight().assume_offset(UtcOffset::UTC),
                    ));
                }
            } else if let Ok(dt) = PrimitiveDateTime::parse(s, format) {
                return Some(Self::from_datetime(dt.assume_offset(UtcOffset::UTC)));
            }
        }
        None
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_django_rest_framework_and_parses_back() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse_lenient(&t.to_string()), Some(t));
    }

    #[test]
    fn accepts_the_date_forms_django_filters_accept() {
        let midnight = Timestamp::parse_lenient("2023-11-14").map(|t| t.to_string());
        assert_eq!(midnight.as_deref(), Some("2023-11-14T00:00:00.000000Z"));
        let spaced = Timestamp::parse_lenient("2023-11-14 22:13:20").map(|t| t.to_string());
        assert_eq!(spaced.as_deref(), Some("2023-11-14T22:13:20.000000Z"));
        assert_eq!(Timestamp::parse_lenient("yesterday"), None);
    }
}
