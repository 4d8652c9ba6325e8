//! Go's `time.Time` JSON form: RFC 3339 with optional fractional seconds; the zero time
//! `0001-01-01T00:00:00Z` means "none".

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `Option<OffsetDateTime>` where `None` is Go's zero time.
pub mod zero_is_none {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&format(*t)),
            None => s.serialize_str(GO_ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let text = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => {
                let parsed =
                    OffsetDateTime::parse(t, &Rfc3339).map_err(serde::de::Error::custom)?;
                Ok(if parsed.year() <= 1 {
                    None
                } else {
                    Some(parsed)
                })
            }
        }
    }
}

/// A required time (always present on the wire).
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

/// An optional time that is omitted when absent (`*time.Time` with omitempty).
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        zero_is_none::deserialize(d)
    }
}

/// RFC 3339 in UTC with whole seconds, as Go prints times without sub-second parts.
pub fn format(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| GO_ZERO_TIME.to_owned())
}
