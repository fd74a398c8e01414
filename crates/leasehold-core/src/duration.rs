//! Durations as component files write them.
//!
//! daprd decodes duration metadata with Go's `time.ParseDuration` (`"1h30m"`,
//! `"500ms"`, `"1.5s"`), and a plain integer as milliseconds. Both forms are
//! accepted here so that a component file written for daprd means the same.

use std::time::Duration;

/// Parse a Go duration string such as `"300ms"`, `"1.5h"` or `"2h45m"`.
///
/// Negative durations are refused: no leasehold setting has a use for them.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim_start_matches('+');
    if s.starts_with('-') {
        return Err(format!("duration {input:?} is negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("duration is empty".to_owned());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {input:?} is missing a unit (ns, us, ms, s, m, h)"))?;
        if number_len == 0 {
            return Err(format!(
                "duration {input:?} is not a number followed by a unit"
            ));
        }
        let value: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("duration {input:?} has a bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            unit => {
                return Err(format!(
                    "duration {input:?} has an unknown unit {unit:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("duration {input:?} is too large"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parse a duration as daprd's component metadata does: a plain integer is
/// milliseconds, anything else a Go duration string.
pub fn parse_metadata_duration(input: &str) -> Result<Duration, String> {
    if let Ok(ms) = input.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    parse_go_duration(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals_say_why() {
        assert!(
            parse_go_duration("5")
                .unwrap_err()
                .contains("missing a unit")
        );
        assert!(
            parse_go_duration("5d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_go_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn metadata_integers_are_milliseconds() {
        assert_eq!(
            parse_metadata_duration("1500"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_metadata_duration("2s"), Ok(Duration::from_secs(2)));
    }
}
