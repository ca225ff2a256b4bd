//! Durations as people write them (`500ms`, `1s`, `2m`, `1h`, or seconds): the one parser
//! and the one bound that the command line and the configuration file (through serde, as
//! `#[serde(with = "crate::duration")]`) both take. The ground floor: it uses nothing of
//! netwatch.

use std::time::{Duration, TryFromFloatSecsError};

use serde::{Deserialize, Deserializer, de::Error as _};

/// Why a text is not a duration netwatch takes. Each message quotes the text (trimmed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number where the text starts.
    #[error("{0:?} is not a duration such as 500ms, 1s or 2m")]
    NotADuration(String),
    /// A unit other than `ms`, `s`, `m` (or `min`) and `h`.
    #[error("unknown unit {unit:?} in {text:?}: use ms, s, m or h")]
    UnknownUnit {
        /// The unit given.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// A number of seconds no [`Duration`] holds.
    #[error("{text:?}: {source}")]
    OutOfRange {
        /// The whole text.
        text: String,
        /// Why.
        source: TryFromFloatSecsError,
    },
    /// Shorter than 10ms.
    #[error("{0:?} is too short: at least 10ms")]
    TooShort(String),
    /// Longer than [`MAX_DURATION`].
    #[error("{0:?} is too long: at most 87600h (ten years)")]
    TooLong(String),
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::NotADuration(text.to_owned()))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            });
        }
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|source| DurationError::OutOfRange {
            text: text.to_owned(),
            source,
        })?;
    if duration < Duration::from_millis(10) {
        return Err(DurationError::TooShort(text.to_owned()));
    }
    if duration > MAX_DURATION {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    Ok(duration)
}

/// The longest duration netwatch takes anywhere: ten years. Beyond it a value is a typo (or a
/// probe), and timers that far away overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Deserializes one duration written as text or as a number of seconds (serde's `with`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Seconds(f64),
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) => parse_duration(&text).map_err(D::Error::custom),
        Raw::Seconds(seconds) => Duration::try_from_secs_f64(seconds)
            .map_err(|err| D::Error::custom(err.to_string()))
            .and_then(|duration| {
                if duration > MAX_DURATION {
                    Err(D::Error::custom(format!(
                        "{seconds} s is too long: at most 87600h (ten years)"
                    )))
                } else {
                    Ok(duration)
                }
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("fast").is_err());
        assert_eq!(
            parse_duration(" 1d ").unwrap_err().to_string(),
            "unknown unit \"d\" in \"1d\": use ms, s, m or h"
        );
        assert_eq!(
            parse_duration("1ms").unwrap_err().to_string(),
            "\"1ms\" is too short: at least 10ms"
        );
    }
}
