//! Working days of Indonesia's government: Monday to Friday, except the national holidays (hari
//! libur nasional) and joint leave days (cuti bersama) the joint decree of the ministers of
//! religious affairs, manpower and administrative reform sets each year. A working day ends at
//! 24:00 WIB. Service deadlines (complaints, licences) are counted in such days.
//!
//! The decrees are shipped as data, one file per year (`data/holidays/<year>.csv`, with the
//! decree as its source). For a year without its file, only weekends are known: a deadline that
//! counts days of such a year is marked provisional, to be counted again once the year's decree
//! is added.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use time::{Date, Duration, OffsetDateTime, Time, UtcOffset, Weekday};

/// Western Indonesian Time (WIB), in which a working day ends at midnight.
pub const WIB: UtcOffset = match UtcOffset::from_hms(7, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// The shipped decrees, by year.
const SHIPPED: &[(i32, &str)] = &[
    (2025, include_str!("../data/holidays/2025.csv")),
    (2026, include_str!("../data/holidays/2026.csv")),
    (2027, include_str!("../data/holidays/2027.csv")),
];

/// A day off the calendar lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOff {
    /// The date.
    pub date: Date,
    /// A national holiday or a joint leave day.
    pub kind: DayOffKind,
    /// Its name, as the decree gives it.
    pub name: String,
}

/// What kind of day off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayOffKind {
    /// Hari libur nasional.
    NationalHoliday,
    /// Cuti bersama.
    JointLeave,
}

/// A shipped year that cannot be read (a programming error, caught by the crate's tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the holidays of {year}, line {line}: {problem}")]
pub struct CalendarError {
    year: i32,
    line: usize,
    problem: String,
}

/// One year's decree.
#[derive(Debug, Clone)]
struct Year {
    source: String,
    days_off: Vec<DayOff>,
}

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct WorkingCalendar {
    years: BTreeMap<i32, Year>,
    closed: BTreeSet<Date>,
}

/// How long something may take: government working days, or clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Working days: due at 24:00 WIB of the last one, counted from the next day
    /// ([`WorkingCalendar::deadline`]).
    WorkingDays(u32),
    /// Clock time, for rules given in hours (and for tests).
    Exactly(std::time::Duration),
}

impl Period {
    /// When something that started at `from` falls due.
    pub fn due(self, from: OffsetDateTime, calendar: &WorkingCalendar) -> Deadline {
        match self {
            Self::WorkingDays(days) => calendar.deadline(from, days),
            Self::Exactly(duration) => Deadline {
                at: from.saturating_add(Duration::try_from(duration).unwrap_or(Duration::MAX)),
                provisional: false,
            },
        }
    }

    /// Its working days, if it is counted in them.
    pub fn working_days(self) -> Option<u32> {
        match self {
            Self::WorkingDays(days) => Some(days),
            Self::Exactly(_) => None,
        }
    }
}

/// When a deadline in working days falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The end of its last working day: 24:00 WIB.
    pub at: OffsetDateTime,
    /// Whether it counted days of a year whose decree is not shipped (weekends only): to be
    /// counted again when that year's days off are added.
    pub provisional: bool,
}

static SHIPPED_CALENDAR: LazyLock<Result<WorkingCalendar, CalendarError>> = LazyLock::new(|| {
    let mut calendar = WorkingCalendar::default();
    for (year, text) in SHIPPED {
        calendar.add_year(*year, text)?;
    }
    Ok(calendar)
});

impl WorkingCalendar {
    /// The calendar of the shipped decrees.
    pub fn shipped() -> Result<&'static Self, CalendarError> {
        SHIPPED_CALENDAR.as_ref().map_err(Clone::clone)
    }

    /// Adds `year`'s decree, in the shipped files' format: a `# source:` line, then
    /// `date,kind,name` lines (`kind` is `libur` or `cuti`).
    pub fn add_year(&mut self, year: i32, text: &str) -> Result<(), CalendarError> {
        let problem = |line: usize, problem: String| CalendarError {
            year,
            line,
            problem,
        };
        let mut source = None;
        let mut days_off = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(named) = comment.trim().strip_prefix("source:") {
                    source = Some(named.trim().to_owned());
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let mut fields = line.splitn(3, ',');
            let (Some(date), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(problem(number, "write date,kind,name".to_owned()));
            };
            let date = Date::parse(
                date,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|error| problem(number, format!("date {date:?}: {error}")))?;
            if date.year() != year {
                return Err(problem(number, format!("{date} is not in {year}")));
            }
            let kind = match kind {
                "libur" => DayOffKind::NationalHoliday,
                "cuti" => DayOffKind::JointLeave,
                other => {
                    return Err(problem(
                        number,
                        format!("kind {other:?}: write libur or cuti"),
                    ));
                }
            };
            if days_off.iter().any(|day: &DayOff| day.date == date) {
                return Err(problem(number, format!("{date} is listed twice")));
            }
            days_off.push(DayOff {
                date,
                kind,
                name: name.trim().to_owned(),
            });
        }
        let source = source.ok_or_else(|| problem(1, "no `# source:` line".to_owned()))?;
        self.closed.extend(days_off.iter().map(|day| day.date));
        self.years.insert(year, Year { source, days_off });
        Ok(())
    }

    /// The decree behind `year`'s days off, if it is shipped.
    pub fn source(&self, year: i32) -> Option<&str> {
        self.years.get(&year).map(|year| year.source.as_str())
    }

    /// `year`'s days off, if its decree is shipped.
    pub fn days_off(&self, year: i32) -> Option<&[DayOff]> {
        self.years.get(&year).map(|year| year.days_off.as_slice())
    }

    /// Whether `year`'s days off are known.
    pub fn knows(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// Whether `date` is a working day (as far as known: a year without its decree has
    /// weekends only).
    pub fn is_working_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.closed.contains(&date)
    }

    /// The end of the `days`-th working day after the day (in WIB) of `from`: a matter received
    /// at any time on a day has its first working day the next one. Zero days: the end of that
    /// day itself.
    pub fn deadline(&self, from: OffsetDateTime, days: u32) -> Deadline {
        let mut date = from.to_offset(WIB).date();
        let mut provisional = false;
        let mut counted = 0;
        while counted < days {
            let Some(next) = date.next_day() else {
                break;
            };
            date = next;
            if !self.knows(date.year()) {
                provisional = true;
            }
            if self.is_working_day(date) {
                counted += 1;
            }
        }
        Deadline {
            at: end_of(date),
            provisional,
        }
    }
}

/// 24:00 WIB at the end of `date`.
fn end_of(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_offset(WIB) + Duration::DAY
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn calendar() -> &'static WorkingCalendar {
        WorkingCalendar::shipped().expect("the shipped decrees read")
    }

    #[test]
    fn every_shipped_year_has_its_decrees_days() {
        // The decrees' own totals: 2025, 17 national holidays and 10 joint leave days, one more
        // added by the amendment of 7 August 2025; 2026, 17 and 8; 2027, 18 and 8 (Isra Mikraj
        // falls twice in 2027: 1448 and 1449 Hijriah).
        for (year, holidays, leave) in [(2025, 17, 11), (2026, 17, 8), (2027, 18, 8)] {
            let days = calendar().days_off(year).expect("shipped");
            let count = |kind| days.iter().filter(|day| day.kind == kind).count();
            assert_eq!(count(DayOffKind::NationalHoliday), holidays, "{year}");
            assert_eq!(count(DayOffKind::JointLeave), leave, "{year}");
            assert!(
                calendar()
                    .source(year)
                    .is_some_and(|source| source.contains("Keputusan Bersama")),
                "{year}"
            );
        }
        assert!(!calendar().knows(2028));
    }

    #[test]
    fn days_off_and_weekends_are_not_counted() {
        // Filed on Thursday 27 March 2025: Nyepi's joint leave, the weekend, Idulfitri and its
        // joint leave until 7 April; 8 and 9 April are the two working days.
        let deadline = calendar().deadline(datetime!(2025-03-27 10:00 +7), 2);
        assert_eq!(deadline.at, datetime!(2025-04-10 00:00 +7));
        assert!(!deadline.provisional);
        // Friday to the end of Monday.
        let deadline = calendar().deadline(datetime!(2026-01-09 16:00 +7), 1);
        assert_eq!(deadline.at, datetime!(2026-01-13 00:00 +7));
        assert!(calendar().is_working_day(date!(2026 - 01 - 12)));
        assert!(!calendar().is_working_day(date!(2026 - 03 - 20)));
    }

    #[test]
    fn the_day_is_the_day_in_wib() {
        // 23:30 UTC on Sunday 11 January 2026 is Monday 06:30 WIB: Tuesday is the first day.
        let deadline = calendar().deadline(datetime!(2026-01-11 23:30 UTC), 1);
        assert_eq!(deadline.at, datetime!(2026-01-14 00:00 +7));
    }

    #[test]
    fn counting_into_a_year_without_its_decree_is_provisional() {
        // 23 December 2027: Christmas leave and Christmas, the weekend, then 27–31 December.
        let within = calendar().deadline(datetime!(2027-12-23 09:00 +7), 3);
        assert_eq!(within.at, datetime!(2027-12-30 00:00 +7));
        assert!(!within.provisional);
        let beyond = calendar().deadline(datetime!(2027-12-23 09:00 +7), 6);
        assert_eq!(beyond.at, datetime!(2028-01-04 00:00 +7));
        assert!(
            beyond.provisional,
            "1 to 3 January 2028 are counted without their decree"
        );
    }

    #[test]
    fn a_malformed_year_is_refused_with_its_line() {
        let mut calendar = WorkingCalendar::default();
        let error = calendar
            .add_year(
                2030,
                "# source: test\n2030-01-01,libur,ok\n2031-01-01,libur,wrong year\n",
            )
            .expect_err("refused");
        assert!(error.to_string().contains("line 3"), "{error}");
        let error = calendar
            .add_year(2030, "2030-01-01,libur,no source\n")
            .expect_err("refused");
        assert!(error.to_string().contains("source"), "{error}");
        let error = calendar
            .add_year(2030, "# source: t\n2030-01-01,holiday,x\n")
            .expect_err("refused");
        assert!(error.to_string().contains("libur or cuti"), "{error}");
    }
}
