//! Times and lengths of time as netwatch writes them for people and programs: RFC 3339 UTC
//! instants and short TTLs (`1h30m`). The ground floor: it uses nothing of netwatch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `at` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T02:50:01.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `d` as `45s`, `10m`, `1h30m` or `2d`: whole seconds.
pub fn ttl_text(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, min, 0) => format!("{min}m"),
        (0, 0, min, sec) => format!("{min}m{sec}s"),
        (0, h, 0, 0) => format!("{h}h"),
        (0, h, min, _) => format!("{h}h{min}m"),
        (days, 0, 0, 0) => format!("{days}d"),
        (days, h, _, _) => format!("{days}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03.456Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_314_601);
        assert_eq!(rfc3339(later), "2026-11-22T02:30:01.000Z");
    }

    #[test]
    fn ttl_text_is_short() {
        for (secs, text) in [
            (45, "45s"),
            (600, "10m"),
            (90, "1m30s"),
            (3600, "1h"),
            (5400, "1h30m"),
            (86_400, "1d"),
            (90_000, "1d1h"),
        ] {
            assert_eq!(ttl_text(Duration::from_secs(secs)), text);
        }
    }
}
