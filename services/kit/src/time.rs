//! Time conversions between storage (Unix milliseconds), protobuf timestamps and RFC 3339 text.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;

/// Returns the current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Converts Unix milliseconds to a protobuf timestamp.
pub fn timestamp_from_millis(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Converts a protobuf timestamp to Unix milliseconds.
pub fn millis_from_timestamp(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

/// Formats a protobuf timestamp as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(timestamp: &Timestamp) -> String {
    DateTime::<Utc>::from_timestamp(timestamp.seconds, timestamp.nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_become_rfc3339() {
        let ts = timestamp_from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(&ts), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn negative_millis_stay_exact() {
        let ts = timestamp_from_millis(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
    }
}
