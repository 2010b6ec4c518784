//! Policy conditions: sign-in method, client source address and weekly
//! time windows in a time zone.
//!
//! Time-window semantics:
//! - a window runs on each listed weekday from `start` to `end`, wall-clock
//!   time in the schedule's zone, start inclusive, end exclusive;
//! - `end <= start` means the window crosses midnight and ends on the next
//!   day (`22:00–06:00`); `start == end` is a whole day;
//! - a wall-clock time skipped by a DST change (02:30 on Europe/Berlin's
//!   spring-forward day) means the instant the clocks jump; one that occurs
//!   twice (autumn) means its first occurrence;
//! - windows that touch or overlap chain together: access granted inside
//!   Monday 22:00–24:00 followed by Tuesday 00:00–06:00 lasts until
//!   Tuesday 06:00.

use std::{collections::BTreeSet, net::IpAddr};

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the actor's session was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    Password,
    Oidc,
    ServiceToken,
}

/// Extra requirements of a policy; an empty list/`None` requires nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    /// The client's public (remote) address must lie in one of these.
    #[serde(default)]
    pub source_cidrs: Vec<IpNet>,
    /// The session must have been established by one of these.
    #[serde(default)]
    pub sign_in_methods: BTreeSet<SignInMethod>,
    /// Access only inside these time windows.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

impl Conditions {
    pub fn sign_in_allowed(&self, method: SignInMethod) -> bool {
        self.sign_in_methods.is_empty() || self.sign_in_methods.contains(&method)
    }

    pub fn source_allowed(&self, ip: IpAddr) -> bool {
        // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.source_cidrs.is_empty() || self.source_cidrs.iter().any(|n| n.contains(&ip))
    }
}

/// Weekly windows in one IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub timezone: Tz,
    pub windows: Vec<TimeWindow>,
}

/// One weekly window; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub days: Weekdays,
    #[serde(with = "hhmm")]
    pub start: NaiveTime,
    #[serde(with = "hhmm")]
    pub end: NaiveTime,
}

/// A set of weekdays; on the wire a list like `["mon","tue"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const ALL: Self = Self(0x7f);

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn with(self, day: Weekday) -> Self {
        Self(self.0 | (1 << day.num_days_from_monday()))
    }

    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        (0..7u8)
            .filter(move |i| self.0 & (1 << i) != 0)
            .filter_map(|i| Weekday::try_from(i).ok())
    }
}

impl FromIterator<Weekday> for Weekdays {
    fn from_iter<I: IntoIterator<Item = Weekday>>(iter: I) -> Self {
        iter.into_iter().fold(Self::default(), Self::with)
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Serialize for Weekdays {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.iter()
                .map(|d| DAY_NAMES[d.num_days_from_monday() as usize]),
        )
    }
}

impl<'de> Deserialize<'de> for Weekdays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        names
            .iter()
            .map(|n| {
                DAY_NAMES
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(n))
                    .and_then(|i| Weekday::try_from(i as u8).ok())
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("`{n}` is not a weekday (mon..sun)"))
                    })
            })
            .collect()
    }
}

/// How many touching windows are chained into one expiry; bounds the work
/// for schedules that cover every hour of the week.
const MAX_CHAINED_WINDOWS: usize = 16;

impl Schedule {
    /// If `now` is inside a window, when access ends (chaining windows that
    /// touch); `None` when outside every window.
    pub fn window_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut end = self.end_of_windows_containing(now)?;
        for _ in 0..MAX_CHAINED_WINDOWS {
            match self.end_of_windows_containing(end) {
                Some(next) if next > end => end = next,
                _ => break,
            }
        }
        Some(end)
    }

    /// The latest end among window instances containing `t`.
    fn end_of_windows_containing(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = t.with_timezone(&self.timezone).date_naive();
        // A window containing `t` started today or, crossing midnight,
        // yesterday.
        let days = [today.pred_opt(), Some(today)];
        let mut best: Option<DateTime<Utc>> = None;
        for window in &self.windows {
            for day in days.iter().flatten() {
                if let Some((start, end)) = window.instance(self.timezone, *day)
                    && start <= t
                    && t < end
                {
                    best = best.max(Some(end));
                }
            }
        }
        best
    }
}

impl TimeWindow {
    /// The instants this window covers when it starts on `day`, if it runs
    /// on that weekday.
    fn instance(&self, tz: Tz, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(day.weekday()) {
            return None;
        }
        let end_day = if self.end <= self.start {
            day.succ_opt()?
        } else {
            day
        };
        let start = local_to_utc(tz, day.and_time(self.start))?;
        let end = local_to_utc(tz, end_day.and_time(self.end))?;
        (start < end).then_some((start, end))
    }
}

/// Wall-clock time in `tz` to an instant: a skipped time maps to the end
/// of the gap, a repeated time to its first occurrence.
fn local_to_utc(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Gaps are on minute boundaries and rarely more than an hour; the
    // longest on record (Samoa, 2011) skipped a whole day.
    for minutes in 0..=(26 * 60) {
        let probe = local.checked_add_signed(TimeDelta::minutes(minutes))?;
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
            LocalResult::None => {}
        }
    }
    None
}

/// `"HH:MM"` on the wire (seconds accepted when reading).
mod hhmm {
    use super::*;

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format("%H:%M"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NaiveTime::parse_from_str(&s, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(&s, "%H:%M:%S"))
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a time like 09:30")))
    }
}
