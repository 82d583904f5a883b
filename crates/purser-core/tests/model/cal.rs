//! The reference model's own calendar arithmetic (UTC, proleptic Gregorian, ISO weeks).
//! Deliberately independent of `purser_core::time`.

use purser_core::Period;

pub const SECOND: u64 = 1_000;
pub const MINUTE: u64 = 60 * SECOND;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

pub fn ms_of_day(days: i64) -> u64 {
    u64::try_from(days).unwrap_or_else(|_| panic!("day {days} is before 1970")) * DAY
}

/// Start of the UTC period that contains `t`.
pub fn start(p: Period, t: u64) -> u64 {
    let day = (t / DAY) as i64;
    match p {
        Period::Hour => t - t % HOUR,
        Period::Day => t - t % DAY,
        Period::Week => {
            // 1970-01-01 was a Thursday; Monday is weekday 0.
            let weekday = (day + 3).rem_euclid(7);
            ms_of_day(day - weekday)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            ms_of_day(days_from_civil(y, m, 1))
        }
        Period::Year => {
            let (y, _, _) = civil_from_days(day);
            ms_of_day(days_from_civil(y, 1, 1))
        }
    }
}

/// End (exclusive) of the UTC period that contains `t`: the start of the next one.
pub fn end(p: Period, t: u64) -> u64 {
    let s = start(p, t);
    match p {
        Period::Hour => s + HOUR,
        Period::Day => s + DAY,
        Period::Week => s + 7 * DAY,
        Period::Month => {
            let (y, m, _) = civil_from_days((s / DAY) as i64);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            ms_of_day(days_from_civil(y, m, 1))
        }
        Period::Year => {
            let (y, _, _) = civil_from_days((s / DAY) as i64);
            ms_of_day(days_from_civil(y + 1, 1, 1))
        }
    }
}

pub fn at(y: i64, m: u32, d: u32, h: u64) -> u64 {
    ms_of_day(days_from_civil(y, m, d)) + h * HOUR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_sanity() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 29) + 1),
            (2024, 3, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2023, 2, 28) + 1),
            (2023, 3, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2100, 2, 28) + 1),
            (2100, 3, 1)
        );
        // 2024-01-01 was a Monday; 2024-01-07 a Sunday.
        let mon = at(2024, 1, 1, 0);
        assert_eq!(start(Period::Week, at(2024, 1, 7, 23)), mon);
        assert_eq!(end(Period::Week, mon), at(2024, 1, 8, 0));
        assert_eq!(start(Period::Month, at(2024, 2, 29, 5)), at(2024, 2, 1, 0));
        assert_eq!(end(Period::Month, at(2024, 2, 29, 5)), at(2024, 3, 1, 0));
        assert_eq!(end(Period::Month, at(2023, 12, 31, 23)), at(2024, 1, 1, 0));
        assert_eq!(end(Period::Year, at(2023, 12, 31, 23)), at(2024, 1, 1, 0));
        assert_eq!(start(Period::Day, at(2024, 3, 3, 7) + 5), at(2024, 3, 3, 0));
        assert_eq!(end(Period::Hour, at(2024, 3, 3, 7) + 5), at(2024, 3, 3, 8));
        for d in -1000..40_000i64 {
            assert_eq!(
                {
                    let (y, m, dd) = civil_from_days(d);
                    days_from_civil(y, m, dd)
                },
                d
            );
        }
    }
}
