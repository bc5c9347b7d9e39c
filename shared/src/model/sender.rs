//! A sender profile's rules, pure: when it may send ([`SendingWindow`]), how much a day
//! ([`DailyCap`], with an optional warm-up ramp), and which day a cap counter counts
//! ([`cap_day`]: the sender's local date).
//!
//! Local times that do not exist (a daylight-saving gap) are read with the UTC offset in
//! force before the gap, as RFC 5545 §3.3.5 does (so 02:00 on a spring-forward night is
//! the moment the clocks jump); local times that happen twice (the fall-back hour) mean
//! the first of the two.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono::{Offset, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A day of the week, as the API spells it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    pub fn of(weekday: Weekday) -> Day {
        Day::ALL[weekday.num_days_from_monday() as usize]
    }
}

/// Whose clock the window is read on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowZone {
    /// The sender's time zone.
    #[default]
    Sender,
    /// The recipient's time zone when known, else the sender's.
    Recipient,
}

/// A sending window as the API takes and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WindowSpec {
    /// Days the window opens on (a window crossing midnight belongs to the day it opens).
    #[schema(min_items = 1, max_items = 7)]
    pub days: Vec<Day>,
    /// Local hour the window opens (0–23).
    #[schema(minimum = 0, maximum = 23)]
    pub start_hour: u8,
    /// Local hour the window closes (1–24; 24 is midnight). Smaller than `start_hour`
    /// means the window crosses midnight.
    #[schema(minimum = 1, maximum = 24)]
    pub end_hour: u8,
    /// `sender` (default) or `recipient` (the sender's zone when the recipient has none).
    #[serde(default)]
    pub time_zone: WindowZone,
}

/// One thing wrong with a window or cap: the field (relative to the object) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub reason: String,
}

fn rule_error(field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError {
        field,
        reason: reason.into(),
    }
}

/// A parsed sending window: at least one open day, hours that make an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingWindow {
    days: BTreeSet<Day>,
    start_hour: u32,
    end_hour: u32,
    zone: WindowZone,
    sender_tz: Tz,
}

impl SendingWindow {
    /// Parses a window for a sender in `sender_tz`. A window with no day open, or one
    /// that opens and closes at the same hour, is rejected here (at save), so the engine
    /// never meets a window that never opens.
    pub fn parse(spec: &WindowSpec, sender_tz: Tz) -> Result<Self, Vec<RuleError>> {
        let mut errors = vec![];
        if spec.days.is_empty() {
            errors.push(rule_error(
                "days",
                "must name at least one day: a window that never opens would hold mail forever",
            ));
        }
        if spec.start_hour > 23 {
            errors.push(rule_error("start_hour", "must be 0 to 23"));
        }
        if !(1..=24).contains(&spec.end_hour) {
            errors.push(rule_error("end_hour", "must be 1 to 24"));
        } else if spec.end_hour == spec.start_hour {
            errors.push(rule_error(
                "end_hour",
                "must differ from start_hour (for all day, use 0 to 24)",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            days: spec.days.iter().copied().collect(),
            start_hour: spec.start_hour.into(),
            end_hour: spec.end_hour.into(),
            zone: spec.time_zone,
            sender_tz,
        })
    }

    /// The spec this window was parsed from (days sorted, deduplicated).
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            days: self.days.iter().copied().collect(),
            start_hour: self.start_hour as u8,
            end_hour: self.end_hour as u8,
            time_zone: self.zone,
        }
    }

    /// The zone the window is read in for a recipient.
    pub fn zone_for(&self, recipient_tz: Option<Tz>) -> Tz {
        match (self.zone, recipient_tz) {
            (WindowZone::Recipient, Some(tz)) => tz,
            _ => self.sender_tz,
        }
    }

    /// The window that opens on local day `day`, as UTC instants `[open, close)`.
    fn interval_on(&self, day: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let open = local_instant(tz, at_hour(day, self.start_hour));
        let close_day = if self.end_hour <= self.start_hour {
            day.succ_opt().unwrap_or(day)
        } else {
            day
        };
        let close = local_instant(tz, at_hour(close_day, self.end_hour));
        (open, close)
    }

    /// Whether mail may go out at `now` to a recipient in `recipient_tz`.
    pub fn is_open(&self, now: DateTime<Utc>, recipient_tz: Option<Tz>) -> bool {
        self.next_opening(now, recipient_tz) == now
    }

    /// `now` when the window is open, else the next instant it opens.
    pub fn next_opening(&self, now: DateTime<Utc>, recipient_tz: Option<Tz>) -> DateTime<Utc> {
        let tz = self.zone_for(recipient_tz);
        let today = now.with_timezone(&tz).date_naive();
        // Yesterday's window may still be open (it crosses midnight); one open day
        // guarantees an opening within the next eight days.
        let mut day = today.pred_opt().unwrap_or(today);
        for _ in 0..10 {
            if self.days.contains(&Day::of(day.weekday())) {
                let (open, close) = self.interval_on(day, tz);
                if open <= now && now < close {
                    return now;
                }
                if open > now {
                    return open;
                }
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        now
    }
}

fn at_hour(day: NaiveDate, hour: u32) -> NaiveDateTime {
    // Hour 24 is the next day's midnight.
    day.and_hms_opt(0, 0, 0).unwrap_or_default() + Duration::hours(hour.into())
}

/// The instant a local wall-clock time names in `tz`: the first of two in an overlap; in
/// a gap, the local time read with the offset before the gap (RFC 5545 §3.3.5).
pub fn local_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            let before = tz
                .offset_from_utc_datetime(&(local - Duration::days(1)))
                .fix();
            Utc.from_utc_datetime(&(local - Duration::seconds(before.local_minus_utc().into())))
        }
    }
}

/// The day a sender's daily counter counts `now` in: the sender's local date.
pub fn cap_day(now: DateTime<Utc>, sender_tz: Tz) -> NaiveDate {
    now.with_timezone(&sender_tz).date_naive()
}

/// A warm-up ramp as the API takes and shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WarmUpSpec {
    /// The sender's local date the ramp starts (day 0 allows `initial_cap`).
    pub start_date: NaiveDate,
    /// Messages allowed on the first day (at least 1).
    #[schema(minimum = 1)]
    pub initial_cap: u64,
    /// Growth per day (more than 1, at most 10): day n allows `initial_cap × factor^n`.
    #[schema(minimum = 1.0, maximum = 10.0)]
    pub daily_factor: f64,
}

/// Most messages a sender may send on one of its local days.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyCap {
    limit: u64,
    warm_up: Option<WarmUpSpec>,
}

impl DailyCap {
    /// Largest cap accepted (a million a day per sender; more is "no cap").
    pub const MAX: u64 = 100_000_000;

    pub fn parse(limit: u64, warm_up: Option<&WarmUpSpec>) -> Result<Self, Vec<RuleError>> {
        let mut errors = vec![];
        if limit == 0 || limit > Self::MAX {
            errors.push(rule_error(
                "daily_cap",
                format!("must be 1 to {} (leave it out for no cap)", Self::MAX),
            ));
        }
        if let Some(w) = warm_up {
            if w.initial_cap == 0 {
                errors.push(rule_error("warm_up/initial_cap", "must be at least 1"));
            } else if w.initial_cap > limit {
                errors.push(rule_error(
                    "warm_up/initial_cap",
                    "must not exceed daily_cap (the ramp grows up to it)",
                ));
            }
            if !(w.daily_factor.is_finite() && w.daily_factor > 1.0 && w.daily_factor <= 10.0) {
                errors.push(rule_error(
                    "warm_up/daily_factor",
                    "must be more than 1 and at most 10",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            limit,
            warm_up: warm_up.cloned(),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The cap on the sender's local `day`: during a warm-up `initial × factor^n` (n =
    /// days since the ramp started; before it starts, the initial cap), never above the
    /// daily cap.
    pub fn cap_on(&self, day: NaiveDate) -> u64 {
        let Some(w) = &self.warm_up else {
            return self.limit;
        };
        let n = (day - w.start_date).num_days().max(0);
        let grown = w.initial_cap as f64 * w.daily_factor.powi(n.min(i32::MAX as i64) as i32);
        if grown.is_finite() && grown < self.limit as f64 {
            (grown.floor() as u64).max(w.initial_cap)
        } else {
            self.limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(days: &[Day], start: u8, end: u8, zone: WindowZone, tz: Tz) -> SendingWindow {
        SendingWindow::parse(
            &WindowSpec {
                days: days.to_vec(),
                start_hour: start,
                end_hour: end,
                time_zone: zone,
            },
            tz,
        )
        .unwrap()
    }

    const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

    #[test]
    fn inside_the_window_is_now() {
        let w = window(
            &WEEKDAYS,
            9,
            17,
            WindowZone::Sender,
            chrono_tz::Europe::Madrid,
        );
        // Wednesday 2026-11-25 10:00 UTC = 11:00 in Madrid.
        let now = utc("2026-11-25T10:00:00Z");
        assert_eq!(w.next_opening(now, None), now);
        assert!(w.is_open(now, None));
    }

    #[test]
    fn after_hours_waits_for_the_next_open_day() {
        let w = window(
            &WEEKDAYS,
            9,
            17,
            WindowZone::Sender,
            chrono_tz::Europe::Madrid,
        );
        // Friday 2026-11-27 18:00 Madrid → Monday 09:00 Madrid (08:00 UTC).
        assert_eq!(
            w.next_opening(utc("2026-11-27T17:00:00Z"), None),
            utc("2026-11-30T08:00:00Z")
        );
        // Before opening on a weekday: the same day.
        assert_eq!(
            w.next_opening(utc("2026-11-25T05:00:00Z"), None),
            utc("2026-11-25T08:00:00Z")
        );
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_opens() {
        // Friday 22:00 → Saturday 02:00 (UTC).
        let w = window(&[Day::Fri], 22, 2, WindowZone::Sender, chrono_tz::UTC);
        let sat_1am = utc("2026-11-28T01:00:00Z");
        assert!(w.is_open(sat_1am, None));
        let sat_3am = utc("2026-11-28T03:00:00Z");
        assert_eq!(w.next_opening(sat_3am, None), utc("2026-12-04T22:00:00Z"));
        // Friday 01:00 is not open: Thursday's window is not a window.
        assert_eq!(
            w.next_opening(utc("2026-11-27T01:00:00Z"), None),
            utc("2026-11-27T22:00:00Z")
        );
    }

    #[test]
    fn recipient_zone_falls_back_to_the_senders() {
        let w = window(
            &Day::ALL,
            9,
            17,
            WindowZone::Recipient,
            chrono_tz::Europe::Madrid,
        );
        let now = utc("2026-11-25T10:00:00Z"); // 11:00 Madrid, 05:00 New York
        assert_eq!(w.next_opening(now, None), now);
        assert_eq!(
            w.next_opening(now, Some(chrono_tz::America::New_York)),
            utc("2026-11-25T14:00:00Z")
        );
        // The sender's mode ignores the recipient's zone.
        let s = window(
            &Day::ALL,
            9,
            17,
            WindowZone::Sender,
            chrono_tz::Europe::Madrid,
        );
        assert_eq!(s.next_opening(now, Some(chrono_tz::America::New_York)), now);
    }

    #[test]
    fn an_opening_in_a_dst_gap_is_the_moment_clocks_jump() {
        // Europe/Berlin springs forward 2026-03-29 02:00 → 03:00 (01:00 UTC).
        let w = window(
            &[Day::Sun],
            2,
            4,
            WindowZone::Sender,
            chrono_tz::Europe::Berlin,
        );
        assert_eq!(
            w.next_opening(utc("2026-03-28T23:00:00Z"), None),
            utc("2026-03-29T01:00:00Z")
        );
        // The window then lasts one real hour: 03:00–04:00 CEST.
        assert!(w.is_open(utc("2026-03-29T01:30:00Z"), None));
        assert!(!w.is_open(utc("2026-03-29T02:00:00Z"), None));
    }

    #[test]
    fn an_opening_in_a_dst_overlap_is_the_first_occurrence() {
        // America/New_York falls back 2026-11-01 02:00 EDT → 01:00 EST; 01:00 happens twice.
        let w = window(
            &[Day::Sun],
            1,
            3,
            WindowZone::Sender,
            chrono_tz::America::New_York,
        );
        assert_eq!(
            w.next_opening(utc("2026-11-01T00:00:00Z"), None),
            utc("2026-11-01T05:00:00Z") // 01:00 EDT
        );
        // Open through both 01:00s until 03:00 EST (08:00 UTC).
        assert!(w.is_open(utc("2026-11-01T06:30:00Z"), None));
        assert!(w.is_open(utc("2026-11-01T07:59:00Z"), None));
        assert!(!w.is_open(utc("2026-11-01T08:00:00Z"), None));
    }

    #[test]
    fn closed_windows_are_rejected_at_save() {
        let spec = |days: Vec<Day>, s, e| WindowSpec {
            days,
            start_hour: s,
            end_hour: e,
            time_zone: WindowZone::Sender,
        };
        let fields = |r: Result<SendingWindow, Vec<RuleError>>| {
            r.unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(SendingWindow::parse(&spec(vec![], 9, 17), chrono_tz::UTC)),
            ["days"]
        );
        assert_eq!(
            fields(SendingWindow::parse(
                &spec(vec![Day::Mon], 9, 9),
                chrono_tz::UTC
            )),
            ["end_hour"]
        );
        assert_eq!(
            fields(SendingWindow::parse(
                &spec(vec![Day::Mon], 24, 0),
                chrono_tz::UTC
            )),
            ["start_hour", "end_hour"]
        );
        assert!(SendingWindow::parse(&spec(vec![Day::Mon], 0, 24), chrono_tz::UTC).is_ok());
    }

    #[test]
    fn warm_up_grows_by_the_factor_up_to_the_cap() {
        let start = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let cap = DailyCap::parse(
            1000,
            Some(&WarmUpSpec {
                start_date: start,
                initial_cap: 50,
                daily_factor: 2.0,
            }),
        )
        .unwrap();
        let day = |n: i64| start + Duration::days(n);
        assert_eq!(cap.cap_on(day(-3)), 50);
        assert_eq!(cap.cap_on(day(0)), 50);
        assert_eq!(cap.cap_on(day(1)), 100);
        assert_eq!(cap.cap_on(day(4)), 800);
        assert_eq!(cap.cap_on(day(5)), 1000);
        assert_eq!(cap.cap_on(day(100_000)), 1000);
        assert_eq!(DailyCap::parse(7, None).unwrap().cap_on(day(0)), 7);
    }

    #[test]
    fn bad_caps_name_their_field() {
        let w = |initial, factor| WarmUpSpec {
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            initial_cap: initial,
            daily_factor: factor,
        };
        let fields = |r: Result<DailyCap, Vec<RuleError>>| {
            r.unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(DailyCap::parse(0, None)), ["daily_cap"]);
        assert_eq!(
            fields(DailyCap::parse(10, Some(&w(20, 1.5)))),
            ["warm_up/initial_cap"]
        );
        assert_eq!(
            fields(DailyCap::parse(10, Some(&w(1, 1.0)))),
            ["warm_up/daily_factor"]
        );
        assert_eq!(
            fields(DailyCap::parse(10, Some(&w(1, f64::NAN)))),
            ["warm_up/daily_factor"]
        );
    }

    #[test]
    fn the_cap_day_is_the_senders_local_date() {
        let now = utc("2026-11-25T23:30:00Z");
        assert_eq!(
            cap_day(now, chrono_tz::UTC),
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
        );
        assert_eq!(
            cap_day(now, chrono_tz::Europe::Madrid),
            NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
        );
    }

    fn any_tz() -> impl Strategy<Value = Tz> {
        (0..chrono_tz::TZ_VARIANTS.len()).prop_map(|i| chrono_tz::TZ_VARIANTS[i])
    }

    fn any_window() -> impl Strategy<Value = (WindowSpec, Tz)> {
        (
            proptest::collection::btree_set(0usize..7, 1..=7),
            0u8..24,
            1u8..=24,
            any::<bool>(),
            any_tz(),
        )
            .prop_filter("start differs from end", |(_, s, e, _, _)| s != e)
            .prop_map(|(days, s, e, recipient, tz)| {
                (
                    WindowSpec {
                        days: days.into_iter().map(|i| Day::ALL[i]).collect(),
                        start_hour: s,
                        end_hour: e,
                        time_zone: if recipient {
                            WindowZone::Recipient
                        } else {
                            WindowZone::Sender
                        },
                    },
                    tz,
                )
            })
    }

    proptest! {
        #[test]
        fn the_next_opening_is_open_not_before_now_and_the_first(
            (spec, tz) in any_window(),
            recipient in proptest::option::of(any_tz()),
            secs in 1_700_000_000i64..1_900_000_000i64,
        ) {
            let w = SendingWindow::parse(&spec, tz).unwrap();
            let now = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let next = w.next_opening(now, recipient);
            prop_assert!(next >= now);
            prop_assert!(next - now <= Duration::days(8));
            // The opening is itself open (idempotent).
            prop_assert_eq!(w.next_opening(next, recipient), next);
            // Nothing in between is open (checked every 10 minutes).
            let mut t = now + Duration::minutes(10);
            while t < next {
                prop_assert!(!w.is_open(t, recipient), "open at {t} before {next}");
                t += Duration::minutes(10);
            }
        }

        #[test]
        fn the_cap_never_exceeds_the_limit_and_never_shrinks(
            limit in 1u64..1_000_000,
            initial in 1u64..1000,
            factor in 1.01f64..10.0,
            n in 0i64..400,
        ) {
            let initial = initial.min(limit);
            let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            let cap = DailyCap::parse(limit, Some(&WarmUpSpec { start_date: start, initial_cap: initial, daily_factor: factor })).unwrap();
            let a = cap.cap_on(start + Duration::days(n));
            let b = cap.cap_on(start + Duration::days(n + 1));
            prop_assert!(a <= limit && b <= limit);
            prop_assert!(a >= initial);
            prop_assert!(b >= a);
        }
    }
}
