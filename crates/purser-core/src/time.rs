//! UTC calendar arithmetic on millisecond timestamps, without a clock or a time-zone database.
//! Civil-date conversion follows Howard Hinnant's `days_from_civil` / `civil_from_days`.

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
pub const WEEK_MS: u64 = 7 * DAY_MS;

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1..=12, `day` 1..=31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn day_ms(days: i64) -> u64 {
    // Timestamps are u64 milliseconds after the epoch, so every day we compute is >= 0.
    (days.max(0) as u64) * DAY_MS
}

/// Calendar periods with UTC boundaries. Weeks start on Monday (ISO 8601).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// Start of the period that contains `at_ms`.
    pub fn start(self, at_ms: u64) -> u64 {
        match self {
            Period::Hour => at_ms - at_ms % HOUR_MS,
            Period::Day => at_ms - at_ms % DAY_MS,
            Period::Week => {
                // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
                let days = (at_ms / DAY_MS) as i64;
                let monday = days - (days + 3).rem_euclid(7);
                day_ms(monday)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days((at_ms / DAY_MS) as i64);
                day_ms(days_from_civil(y, m, 1))
            }
            Period::Year => {
                let (y, _, _) = civil_from_days((at_ms / DAY_MS) as i64);
                day_ms(days_from_civil(y, 1, 1))
            }
        }
    }

    /// Start of the next period after the one that contains `at_ms` (exclusive end).
    pub fn end(self, at_ms: u64) -> u64 {
        match self {
            Period::Hour => self.start(at_ms) + HOUR_MS,
            Period::Day => self.start(at_ms) + DAY_MS,
            Period::Week => self.start(at_ms) + WEEK_MS,
            Period::Month => {
                let (y, m, _) = civil_from_days((at_ms / DAY_MS) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                day_ms(days_from_civil(ny, nm, 1))
            }
            Period::Year => {
                let (y, _, _) = civil_from_days((at_ms / DAY_MS) as i64);
                day_ms(days_from_civil(y + 1, 1, 1))
            }
        }
    }
}

/// The one time grammar of every interface (CLI flags, HTTP query parameters): milliseconds
/// since the Unix epoch, a UTC date `YYYY-MM-DD` (its midnight), or RFC 3339
/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`. Fractions finer than a millisecond are truncated;
/// times before 1970 are refused.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("time {text:?} is out of range"));
    }
    let ms = date_ms(text.as_bytes()).ok_or_else(|| {
        format!(
            "bad time {text:?}: milliseconds since the epoch, YYYY-MM-DD or RFC 3339 \
             (like 2026-05-01T00:00:00Z)"
        )
    })?;
    u64::try_from(ms).map_err(|_| format!("time {text:?} is before 1970"))
}

/// ms since the epoch (negative before 1970) of a date or an RFC 3339 time; `None` when the
/// text is neither.
fn date_ms(b: &[u8]) -> Option<i64> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(b, 0..4)?, digits(b, 5..7)?, digits(b, 8..10)?);
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let (in_day_ms, offset_min) = if b.len() == 10 {
        (0, 0)
    } else {
        clock_time(b)?
    };
    Some(days * DAY_MS as i64 + in_day_ms - offset_min * MINUTE_MS as i64)
}

/// The `THH:MM:SS[.fff](Z|±HH:MM)` part of an RFC 3339 time (from byte 10): ms into the day
/// and the offset in minutes.
fn clock_time(b: &[u8]) -> Option<(i64, i64)> {
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(b, 11..13)?, digits(b, 14..16)?, digits(b, 17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let count = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        for (k, d) in b[i + 1..i + 1 + count.min(3)].iter().enumerate() {
            millis += i64::from(d - b'0') * 10i64.pow(2 - k as u32);
        }
        i += 1 + count;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (digits(b, i + 1..i + 3)?, digits(b, i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = i64::from(h * 60 + m);
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let seconds = i64::from(hour * 3600 + minute * 60 + second);
    Some((seconds * 1000 + millis, offset_min))
}

/// The decimal number in `b[range]`, all of whose bytes must be digits.
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    let part = b.get(range)?;
    if !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(part).ok()?.parse().ok()
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 0,
    }
}

/// ms since the epoch as RFC 3339 in UTC, with milliseconds only when there are some: the
/// form [`parse_time`] reads back.
pub fn format_time(ms: u64) -> String {
    let (year, month, day) = civil_from_days((ms / DAY_MS) as i64);
    let in_day = ms % DAY_MS;
    let (h, m, s, milli) = (
        in_day / HOUR_MS,
        in_day % HOUR_MS / MINUTE_MS,
        in_day % MINUTE_MS / SECOND_MS,
        in_day % SECOND_MS,
    );
    if milli == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_grammar() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-11-25"), Ok(1_795_564_800_000));
        assert_eq!(parse_time("2024-02-29T12:30:00Z"), Ok(1_709_209_800_000));
        assert_eq!(parse_time("2024-02-29 12:30:00.5z"), Ok(1_709_209_800_500));
        assert_eq!(
            parse_time("2024-02-29T14:30:00.123456+02:00"),
            Ok(1_709_209_800_123)
        );
        assert_eq!(
            parse_time("2024-02-29T10:30:00-02:00"),
            Ok(1_709_209_800_000)
        );
        assert_eq!(
            parse_time("2026-04-30T19:00:00.123456-05:00"),
            Ok(1_777_593_600_123)
        );
        assert_eq!(format_time(1_777_593_600_123), "2026-05-01T00:00:00.123Z");
        assert_eq!(format_time(1_709_209_800_000), "2024-02-29T12:30:00Z");
        for bad in [
            "",
            "2026-13-01",
            "2023-02-29",
            "2026-04-31",
            "yesterday",
            "2026-05-01T",
            "2026-05-01T24:00:00Z",
            "2026-05-01T00:00:00",
            "2026-05-01T00:00:00.Z",
            "2026-05-01T00:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "99999999999999999999999",
            "2026-05-01T00:00:00Zjunk",
            "2026-05-01T00:00:00+24:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
        for ms in [0, 1_709_209_800_000, 1_709_209_800_123, 253_402_300_799_999] {
            assert_eq!(parse_time(&format_time(ms)), Ok(ms));
        }
    }

    fn ms(y: i64, m: u32, d: u32) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY_MS
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in -1000..(400 * 366) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn month_ends_and_leap_years() {
        assert_eq!(Period::Month.end(ms(2024, 2, 10)), ms(2024, 3, 1));
        assert_eq!(
            ms(2024, 3, 1) - ms(2024, 2, 1),
            29 * DAY_MS,
            "2024 is a leap year"
        );
        assert_eq!(ms(2023, 3, 1) - ms(2023, 2, 1), 28 * DAY_MS);
        assert_eq!(
            ms(2100, 3, 1) - ms(2100, 2, 1),
            28 * DAY_MS,
            "2100 is not a leap year"
        );
        assert_eq!(
            ms(2000, 3, 1) - ms(2000, 2, 1),
            29 * DAY_MS,
            "2000 is a leap year"
        );
        assert_eq!(
            Period::Month.end(ms(2024, 12, 31) + DAY_MS - 1),
            ms(2025, 1, 1)
        );
        assert_eq!(Period::Month.start(ms(2025, 1, 1)), ms(2025, 1, 1));
        assert_eq!(Period::Month.start(ms(2025, 1, 1) - 1), ms(2024, 12, 1));
        assert_eq!(Period::Year.end(ms(2024, 6, 1)), ms(2025, 1, 1));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-23 is a Monday.
        let monday = ms(2026, 11, 23);
        assert_eq!(Period::Week.start(monday + 3 * DAY_MS + 5), monday);
        assert_eq!(Period::Week.start(monday - 1), monday - WEEK_MS);
        assert_eq!(Period::Week.end(monday), monday + WEEK_MS);
        // 1970-01-01 (Thursday) belongs to the week that started on Monday 1969-12-29,
        // which clamps to the epoch.
        assert_eq!(Period::Week.start(0), 0);
    }

    #[test]
    fn hour_and_day_edges() {
        let t = ms(2026, 5, 17) + 13 * HOUR_MS + 59 * MINUTE_MS;
        assert_eq!(Period::Hour.start(t), ms(2026, 5, 17) + 13 * HOUR_MS);
        assert_eq!(Period::Hour.end(t), ms(2026, 5, 17) + 14 * HOUR_MS);
        assert_eq!(Period::Day.end(t), ms(2026, 5, 18));
        assert_eq!(Period::Day.start(ms(2026, 5, 18)), ms(2026, 5, 18));
    }
}
