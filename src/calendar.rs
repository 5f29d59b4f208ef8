//! UTC calendar arithmetic on Unix-ms timestamps: days ↔ civil dates (proleptic
//! Gregorian, H. Hinnant's algorithms), UTC days, ISO 8601 weeks and where periods end.
//!
//! Pure integer math, no time zone but UTC and no clock: handlers derive day and week
//! keys from an event's own `ts`, so a redelivered event always lands in the same period.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01, proleptic Gregorian (inverse of
/// [`civil_from_days`], H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (UTC) of a Unix-ms timestamp.
pub fn utc_day(ts_ms: i64) -> String {
    let days = ts_ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO weekday of a day number: Monday = 1 … Sunday = 7 (1970-01-01 was a Thursday).
pub fn iso_weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7) + 1
}

/// ISO 8601 (week-year, week) of a Unix-ms timestamp (UTC). Weeks start on Monday; week 1
/// is the week holding the year's first Thursday, so 2021-01-03 is in 2020's week 53 and
/// 2019-12-30 is in 2020's week 1.
pub fn iso_year_week(ts_ms: i64) -> (i64, u32) {
    let days = ts_ms.div_euclid(DAY_MS);
    // The Thursday of the same ISO week decides the week-year.
    let thursday = days + 4 - iso_weekday(days);
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

/// ISO week of a Unix-ms timestamp (UTC), `YYYY-Www`, e.g. `2026-W47`.
pub fn iso_week(ts_ms: i64) -> String {
    let (year, week) = iso_year_week(ts_ms);
    format!("{year:04}-W{week:02}")
}

/// Unix ms at which the ISO week holding `ts_ms` ends (the next Monday, 00:00 UTC).
pub fn week_end_ms(ts_ms: i64) -> i64 {
    let days = ts_ms.div_euclid(DAY_MS);
    let monday = days - (iso_weekday(days) - 1);
    (monday + 7) * DAY_MS
}

/// Unix ms at which the UTC day holding `ts_ms` ends (the next midnight UTC).
pub fn day_end_ms(ts_ms: i64) -> i64 {
    (ts_ms.div_euclid(DAY_MS) + 1) * DAY_MS
}

/// Unix ms of a UTC date at `hour`:00 (tests write dates this way).
#[cfg(test)]
pub(crate) fn at(y: i64, m: u32, d: u32, hour: i64) -> i64 {
    days_from_civil(y, m, d) * DAY_MS + hour * 3_600_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_763_683_200_000), "2025-11-21");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(-1), "1969-12-31");
    }

    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for d in -800_000..800_000i64 {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        assert_eq!(at(2026, 11, 21, 12), 1_795_262_400_000);
    }

    #[test]
    fn iso_weeks_at_year_boundaries() {
        let cases = [
            ((2026, 11, 21), "2026-W47"),
            ((2026, 1, 1), "2026-W01"),
            ((2025, 12, 29), "2026-W01"),
            ((2026, 12, 28), "2026-W53"),
            ((2026, 12, 31), "2026-W53"),
            ((2027, 1, 1), "2026-W53"),
            ((2027, 1, 3), "2026-W53"),
            ((2027, 1, 4), "2027-W01"),
            ((2020, 12, 31), "2020-W53"),
            ((2021, 1, 3), "2020-W53"),
            ((2021, 1, 4), "2021-W01"),
            ((2019, 12, 30), "2020-W01"),
            ((2008, 12, 29), "2009-W01"),
            ((2010, 1, 3), "2009-W53"),
            ((1970, 1, 1), "1970-W01"),
        ];
        for ((y, m, d), want) in cases {
            assert_eq!(iso_week(at(y, m, d, 0)), want, "{y}-{m}-{d} 00:00");
            assert_eq!(
                iso_week(at(y, m, d, 0) + DAY_MS - 1),
                want,
                "{y}-{m}-{d} 23:59"
            );
        }
        // Sunday 23:59:59.999 vs Monday 00:00.
        assert_eq!(iso_week(at(2021, 1, 4, 0) - 1), "2020-W53");
        assert_eq!(iso_week(-1), "1970-W01"); // 1969-12-31 is a Wednesday of 1970-W01
    }

    #[test]
    fn iso_weeks_advance_only_on_mondays_and_wrap_at_52_or_53() {
        let mut prev = iso_year_week(at(1990, 1, 1, 0));
        assert_eq!(prev, (1990, 1));
        let mut weeks53 = 0;
        for d in days_from_civil(1990, 1, 2)..days_from_civil(2101, 1, 1) {
            let cur = iso_year_week(d * DAY_MS);
            if iso_weekday(d) == 1 {
                if prev.0 == cur.0 {
                    assert_eq!(cur.1, prev.1 + 1, "day {d}");
                } else {
                    assert_eq!((cur.0, cur.1), (prev.0 + 1, 1), "day {d}");
                    assert!(prev.1 == 52 || prev.1 == 53);
                    weeks53 += usize::from(prev.1 == 53);
                }
            } else {
                assert_eq!(cur, prev, "day {d}");
            }
            prev = cur;
        }
        // 71 of every 400 ISO years have 53 weeks; 1990..=2100 has 20 of them.
        assert_eq!(weeks53, 20);
    }

    #[test]
    fn period_ends() {
        let sat_noon = at(2026, 11, 21, 12);
        assert_eq!(day_end_ms(sat_noon), at(2026, 11, 22, 0));
        assert_eq!(week_end_ms(sat_noon), at(2026, 11, 23, 0));
        // Monday 00:00 belongs to the new week.
        assert_eq!(week_end_ms(at(2026, 11, 23, 0)), at(2026, 11, 30, 0));
    }
}
