//! A site's time zone, for its calendar: an IANA zone (`Europe/Berlin`, daylight saving
//! followed) or a fixed UTC offset (`+08:00`). Days, months, year to date and the trailing
//! 12 months of `/calendar`, `/energy` and `/history` are the site's local ones.

use chrono::{
    DateTime, Datelike, Days, FixedOffset, LocalResult, Months, NaiveDate, NaiveDateTime, Offset,
    TimeZone,
};

/// Where a site keeps its calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteZone {
    /// A fixed offset east of UTC (`utc_offset`): no daylight saving.
    Fixed(FixedOffset),
    /// An IANA zone (`time_zone`), from the tz database built into dcwatt.
    Iana(chrono_tz::Tz),
}

impl Default for SiteZone {
    fn default() -> Self {
        SiteZone::Fixed(chrono::Utc.fix())
    }
}

impl SiteZone {
    /// A fixed offset in seconds east of UTC, or `None` outside ±24 h.
    pub fn fixed(offset_s: i32) -> Option<Self> {
        FixedOffset::east_opt(offset_s).map(SiteZone::Fixed)
    }

    /// An IANA zone by its name (`Europe/Berlin`, `Asia/Shanghai`, `UTC`), exactly as the tz
    /// database spells it.
    pub fn iana(name: &str) -> Option<Self> {
        name.parse::<chrono_tz::Tz>().ok().map(SiteZone::Iana)
    }

    /// The zone's name: the IANA name, or the offset as `+08:00`.
    pub fn name(&self) -> String {
        match self {
            SiteZone::Iana(tz) => tz.name().to_owned(),
            SiteZone::Fixed(o) => offset_text(o.local_minus_utc()),
        }
    }

    /// The offset from UTC in force at `ms`, seconds east.
    pub fn offset_s_at(&self, ms: i64) -> i32 {
        match self {
            SiteZone::Fixed(o) => o.local_minus_utc(),
            SiteZone::Iana(tz) => tz
                .timestamp_millis_opt(ms)
                .single()
                .map_or(0, |t| t.offset().fix().local_minus_utc()),
        }
    }

    /// The local date and time at `ms`.
    pub fn local(&self, ms: i64) -> Option<NaiveDateTime> {
        let utc = DateTime::from_timestamp_millis(ms)?.naive_utc();
        Some(utc + chrono::Duration::seconds(i64::from(self.offset_s_at(ms))))
    }

    /// The instant a local date and time names: the earlier one where the clocks go back
    /// (it happens twice), the first instant after the gap where they go forward (it does
    /// not happen at all).
    pub fn instant(&self, local: NaiveDateTime) -> Option<i64> {
        // The longest forward jump in the tz database is a day (Samoa, 2011).
        for minutes in (0..=24 * 60).step_by(15) {
            let t = local + chrono::Duration::minutes(minutes);
            let found = match self {
                SiteZone::Fixed(o) => pick(o.from_local_datetime(&t)),
                SiteZone::Iana(tz) => pick(tz.from_local_datetime(&t)),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Local midnight starting `date`.
    pub fn midnight(&self, date: NaiveDate) -> Option<i64> {
        self.instant(date.and_hms_opt(0, 0, 0)?)
    }
}

fn pick<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<i64> {
    match r {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
        LocalResult::None => None,
    }
}

/// `+08:00`, `-05:30`.
pub fn offset_text(offset_s: i32) -> String {
    let sign = if offset_s < 0 { '-' } else { '+' };
    let abs = offset_s.unsigned_abs();
    format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
}

/// Starts of the calendar periods at `now_ms` in `zone`: local midnight today, the first
/// of this month, the first of this year, and the same local time 12 months ago.
pub fn calendar_starts(now_ms: i64, zone: &SiteZone) -> Option<[(&'static str, i64); 4]> {
    let local = zone.local(now_ms)?;
    let today = local.date();
    let month = today.with_day(1)?;
    let year = NaiveDate::from_ymd_opt(today.year(), 1, 1)?;
    let a_year_ago = local.checked_sub_months(Months::new(12))?;
    Some([
        ("today", zone.midnight(today)?),
        ("month", zone.midnight(month)?),
        ("year_to_date", zone.midnight(year)?),
        ("trailing_12_months", zone.instant(a_year_ago)?),
    ])
}

/// Local midnight of the next 1 January in `zone`: the end of the year `now_ms` is in.
pub fn year_end(now_ms: i64, zone: &SiteZone) -> Option<i64> {
    let year = zone.local(now_ms)?.date().year();
    zone.midnight(NaiveDate::from_ymd_opt(year + 1, 1, 1)?)
}

/// Parses a local date or date and time in the site's zone: `2026-03-29`,
/// `2026-03-29T12:00`, `2026-03-29T12:00:00`. Times with their own offset are not local
/// (see the API's time parser).
pub fn parse_local(s: &str, zone: &SiteZone) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return zone.midnight(d);
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .and_then(|t| zone.instant(t))
}

/// A period `[from, to)` given as two local dates or times in `zone` (as
/// [`parse_local`] takes them), `from` before `to`.
///
/// # Errors
/// Either is not a local date or time, or `from` is not before `to`; in words.
pub fn parse_local_period(from: &str, to: &str, zone: &SiteZone) -> Result<(i64, i64), String> {
    match (parse_local(from, zone), parse_local(to, zone)) {
        (Some(a), Some(b)) if a < b => Ok((a, b)),
        (Some(_), Some(_)) => Err(format!("from {from:?} is not before to {to:?}")),
        _ => Err(format!(
            "from {from:?} and to {to:?} must be local dates or times (2026-01-01, 2026-01-01T00:00)"
        )),
    }
}

/// The boundaries of steps of `days` whole local days over `[from_ms, to_ms)`: each step's
/// start, from local midnight of the day `from_ms` falls in, and last the end of the last
/// step (at or after `to_ms`). A day is 23 or 25 hours where the clocks change. Computed
/// once per query; a time's step is then a binary search ([`step_of`]).
pub fn local_day_starts(zone: &SiteZone, from_ms: i64, to_ms: i64, days: u64) -> Vec<i64> {
    let Some(mut day) = zone.local(from_ms).map(|l| l.date()) else {
        return Vec::new();
    };
    let mut bounds = Vec::new();
    while let Some(start) = zone.midnight(day) {
        bounds.push(start);
        match day.checked_add_days(Days::new(days.max(1))) {
            Some(next) if start < to_ms => day = next,
            _ => break,
        }
    }
    bounds
}

/// Of ascending step boundaries, the start of the step that `ms` falls in (the first step
/// for a time before them all) and the start of the one after it.
pub fn step_of(bounds: &[i64], ms: i64) -> Option<(i64, Option<i64>)> {
    let after = bounds.partition_point(|s| *s <= ms);
    let start = bounds.get(after.saturating_sub(1)).copied()?;
    Some((start, bounds.get(after.max(1)).copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp_millis()
    }

    fn berlin() -> SiteZone {
        SiteZone::iana("Europe/Berlin").expect("zone")
    }

    #[test]
    fn names_and_offsets() {
        assert_eq!(berlin().name(), "Europe/Berlin");
        assert_eq!(SiteZone::fixed(8 * 3600).expect("fixed").name(), "+08:00");
        assert_eq!(
            SiteZone::fixed(-(5 * 3600 + 1800)).expect("f").name(),
            "-05:30"
        );
        assert!(SiteZone::iana("Europe/Atlantis").is_none());
        assert!(
            SiteZone::iana("europe/berlin").is_none(),
            "spelled as the tz database does"
        );
        // CET in winter, CEST in summer.
        assert_eq!(berlin().offset_s_at(utc("2026-01-15T12:00:00Z")), 3600);
        assert_eq!(berlin().offset_s_at(utc("2026-07-15T12:00:00Z")), 7200);
    }

    /// Berlin's clocks go forward at 02:00 on 29 March 2026 and back at 03:00 on 25 October
    /// 2026: those days are 23 and 25 hours long, and March is one hour short.
    #[test]
    fn days_and_months_across_both_transitions() {
        let z = berlin();
        let day = |d: &str| z.midnight(NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("d"));
        let len = |a: &str, b: &str| day(b).expect("b") - day(a).expect("a");
        assert_eq!(day("2026-03-29"), Some(utc("2026-03-28T23:00:00Z")));
        assert_eq!(day("2026-03-30"), Some(utc("2026-03-29T22:00:00Z")));
        assert_eq!(len("2026-03-29", "2026-03-30"), 23 * H, "spring forward");
        assert_eq!(len("2026-10-25", "2026-10-26"), 25 * H, "fall back");
        assert_eq!(len("2026-03-28", "2026-03-29"), 24 * H);
        // A month that spans a transition: March 2026 has 31 days less one hour.
        assert_eq!(len("2026-03-01", "2026-04-01"), (31 * 24 - 1) * H);
        assert_eq!(len("2026-10-01", "2026-11-01"), (31 * 24 + 1) * H);
        // The hour that does not exist starts where it would have; the hour that happens
        // twice is the first one.
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").expect("t");
        assert_eq!(
            z.instant(t("2026-03-29T02:30")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            z.instant(t("2026-10-25T02:30")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn calendar_periods_follow_the_zone() {
        let z = berlin();
        // 10:00 local on 15 April 2026 (CEST).
        let now = utc("2026-04-15T08:00:00Z");
        let starts = calendar_starts(now, &z).expect("starts");
        assert_eq!(starts[0], ("today", utc("2026-04-14T22:00:00Z")));
        assert_eq!(starts[1], ("month", utc("2026-03-31T22:00:00Z")));
        assert_eq!(
            starts[2],
            ("year_to_date", utc("2025-12-31T23:00:00Z")),
            "1 January is winter time"
        );
        assert_eq!(
            starts[3],
            ("trailing_12_months", utc("2025-04-15T08:00:00Z"))
        );
        // With a fixed offset of +01:00 the month would start an hour late all summer.
        let fixed = calendar_starts(now, &SiteZone::fixed(3600).expect("f")).expect("s");
        assert_eq!(fixed[1].1 - starts[1].1, H);
        // Shanghai: no daylight saving, the same as +08:00.
        let sh = SiteZone::iana("Asia/Shanghai").expect("zone");
        let plus8 = SiteZone::fixed(8 * 3600).expect("f");
        assert_eq!(calendar_starts(now, &sh), calendar_starts(now, &plus8));
    }

    #[test]
    fn local_dates_and_day_steps() {
        let z = berlin();
        assert_eq!(
            parse_local("2026-10-25", &z),
            Some(utc("2026-10-24T22:00:00Z"))
        );
        assert_eq!(
            parse_local("2026-10-25T12:00", &z),
            Some(utc("2026-10-25T11:00:00Z"))
        );
        assert_eq!(parse_local("2026-10-25T12:00:00+02:00", &z), None);
        assert_eq!(parse_local("yesterday", &z), None);
        // Daily steps from 24 to 27 October: 24 h, 25 h, 24 h.
        let from = utc("2026-10-23T22:00:00Z");
        let starts = local_day_starts(&z, from + 5 * H, utc("2026-10-26T23:00:00Z"), 1);
        assert_eq!(starts[0], from, "from local midnight of the first day");
        let lens: Vec<i64> = starts.windows(2).map(|w| (w[1] - w[0]) / H).collect();
        assert_eq!(lens, vec![24, 25, 24]);
        // Any instant of the long day belongs to it.
        let late = utc("2026-10-25T22:59:59Z");
        assert_eq!(step_of(&starts, late), Some((starts[1], Some(starts[2]))));
        assert_eq!(
            step_of(&starts, late + 1000),
            Some((starts[2], Some(starts[3])))
        );
        // Steps of two days.
        let two = local_day_starts(&z, from, utc("2026-10-27T23:00:00Z"), 2);
        assert_eq!(two, vec![from, starts[2], utc("2026-10-27T23:00:00Z")]);
    }
}
