//! Durations as people write them in config files and on the command line: `90s`, `30m`,
//! `1h30m`, `90d`, `2w`, `0` (Go's `time.ParseDuration` units plus days, weeks and years,
//! which headscale accepts for key expirations).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

/// A duration that reads and writes the human form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        parse(text).map(HumanDuration)
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| err("bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 7.0 * 86_400.0,
            "y" => 365.0 * 86_400.0,
            "" => return Err(err("missing unit (s, m, h, d, …)")),
            _ => return Err(err("unknown unit (use ns, us, ms, s, m, h, d, w or y)")),
        };
        rest = &rest[unit_len..];
        let term = Duration::try_from_secs_f64(number * seconds_per_unit)
            .map_err(|_| err("out of range"))?;
        total = total.checked_add(term).ok_or_else(|| err("out of range"))?;
    }
    Ok(total)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.is_zero() {
            return f.write_str("0");
        }
        if self.0.subsec_nanos() != 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
            Raw::Seconds(0) => Ok(HumanDuration(Duration::ZERO)),
            Raw::Seconds(n) => Err(serde::de::Error::custom(format!(
                "duration {n} needs a unit, e.g. \"{n}s\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_day_units() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(
            parse("10").unwrap_err().reason,
            "missing unit (s, m, h, d, …)"
        );
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
        assert!(parse("h").is_err());
    }

    #[test]
    fn huge_durations_are_refused_not_a_panic() {
        assert_eq!(
            parse("1e400s").unwrap_err().reason,
            "unknown unit (use ns, us, ms, s, m, h, d, w or y)"
        );
        let max = format!("{}s", u64::MAX);
        assert_eq!(
            parse(&format!("{max}{max}")).unwrap_err().reason,
            "out of range"
        );
        assert_eq!(
            parse("99999999999999999999999y").unwrap_err().reason,
            "out of range"
        );
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(HumanDuration(Duration::from_secs(7200)).to_string(), "2h");
        assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(
            HumanDuration(Duration::from_secs(172_800)).to_string(),
            "2d"
        );
    }
}
