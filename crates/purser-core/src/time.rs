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

#[cfg(test)]
mod tests {
    use super::*;

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
