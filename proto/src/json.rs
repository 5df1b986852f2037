//! How the messages served as JSON write what serde cannot derive: timestamps as RFC 3339 text
//! to the millisecond, as every other answer of the API writes them.

use prost_types::Timestamp;
use serde::Serializer;

/// Writes an optional timestamp as RFC 3339 text, or null.
pub fn timestamp<S: Serializer>(
    timestamp: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match timestamp {
        Some(timestamp) => serializer.collect_str(&Timestamp {
            seconds: timestamp.seconds,
            nanos: timestamp.nanos - timestamp.nanos % 1_000_000,
        }),
        None => serializer.serialize_none(),
    }
}
