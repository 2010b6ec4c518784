//! Time windows: edges, midnight, DST, chaining, serde.

use chrono::{TimeDelta, Weekday::*};
use chrono_tz::{America::New_York, Europe::Berlin, UTC};

use super::*;

#[test]
fn office_hours_edges() {
    // 2026-05-18 is a Monday.
    let s = schedule(
        Berlin,
        vec![window(&[Mon, Tue, Wed, Thu, Fri], "09:00", "17:00")],
    );
    let end = local(Berlin, "2026-05-18 17:00:00");
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-18 09:00:00")),
        Some(end),
        "start is inclusive"
    );
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-18 16:59:59")),
        Some(end)
    );
    assert_eq!(s.window_end(end), None, "end is exclusive");
    assert_eq!(s.window_end(local(Berlin, "2026-05-18 08:59:59")), None);
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-23 12:00:00")),
        None,
        "Saturday"
    );
    // Berlin is UTC+2 in May: 09:00 local is 07:00 UTC.
    assert_eq!(
        local(Berlin, "2026-05-18 09:00:00"),
        utc("2026-05-18T07:00:00Z")
    );
}

#[test]
fn window_crossing_midnight_belongs_to_its_start_day() {
    // Fridays 22:00 until Saturday 06:00; 2026-05-22 is a Friday.
    let s = schedule(Berlin, vec![window(&[Fri], "22:00", "06:00")]);
    let end = local(Berlin, "2026-05-23 06:00:00");
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-22 22:00:00")),
        Some(end)
    );
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-22 23:59:59")),
        Some(end)
    );
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-23 00:00:00")),
        Some(end)
    );
    assert_eq!(
        s.window_end(local(Berlin, "2026-05-23 05:59:59")),
        Some(end)
    );
    assert_eq!(s.window_end(end), None);
    assert_eq!(s.window_end(local(Berlin, "2026-05-22 21:59:59")), None);
    // Saturday night is not in it, nor Friday early morning.
    assert_eq!(s.window_end(local(Berlin, "2026-05-23 23:00:00")), None);
    assert_eq!(s.window_end(local(Berlin, "2026-05-22 03:00:00")), None);
}

#[test]
fn equal_start_and_end_is_a_whole_day() {
    let s = schedule(UTC, vec![window(&[Wed], "00:00", "00:00")]);
    // 2026-05-20 is a Wednesday.
    assert_eq!(
        s.window_end(utc("2026-05-20T00:00:00Z")),
        Some(utc("2026-05-21T00:00:00Z"))
    );
    assert_eq!(
        s.window_end(utc("2026-05-20T23:59:59Z")),
        Some(utc("2026-05-21T00:00:00Z"))
    );
    assert_eq!(s.window_end(utc("2026-05-21T00:00:00Z")), None);
}

#[test]
fn spring_forward_in_berlin() {
    // 2026-03-29 (Sunday): clocks jump from 02:00 CET to 03:00 CEST, that
    // is at 01:00 UTC; 02:00–02:59 local does not exist.
    let s = schedule(Berlin, vec![window(&[Sun], "02:30", "04:00")]);
    assert_eq!(
        s.window_end(utc("2026-03-29T00:59:59Z")),
        None,
        "01:59:59 CET"
    );
    // The skipped 02:30 starts the window when the clocks jump.
    let end = utc("2026-03-29T02:00:00Z"); // 04:00 CEST
    assert_eq!(s.window_end(utc("2026-03-29T01:00:00Z")), Some(end));
    assert_eq!(s.window_end(utc("2026-03-29T01:59:59Z")), Some(end));
    assert_eq!(s.window_end(end), None);

    // 01:00–05:00 local lasts only three real hours that day.
    let s = schedule(Berlin, vec![window(&[Sun], "01:00", "05:00")]);
    let start = utc("2026-03-29T00:00:00Z"); // 01:00 CET
    let end = s.window_end(start).unwrap();
    assert_eq!(end - start, TimeDelta::hours(3));

    // A whole-day window on that Sunday lasts 23 hours.
    let s = schedule(Berlin, vec![window(&[Sun], "00:00", "00:00")]);
    let start = utc("2026-03-28T23:00:00Z"); // 00:00 CET
    assert_eq!(s.window_end(start).unwrap() - start, TimeDelta::hours(23));
    assert_eq!(s.window_end(start - TimeDelta::seconds(1)), None);
}

#[test]
fn fall_back_in_berlin() {
    // 2026-10-25 (Sunday): 03:00 CEST becomes 02:00 CET at 01:00 UTC; the
    // hour 02:00–02:59 local happens twice. A repeated time means its first
    // occurrence.
    let s = schedule(Berlin, vec![window(&[Sun], "02:30", "03:30")]);
    let start = utc("2026-10-25T00:30:00Z"); // first 02:30 (CEST)
    let end = utc("2026-10-25T02:30:00Z"); // 03:30 CET
    assert_eq!(s.window_end(start - TimeDelta::seconds(1)), None);
    assert_eq!(s.window_end(start), Some(end));
    assert_eq!(
        s.window_end(utc("2026-10-25T01:45:00Z")),
        Some(end),
        "second 02:45"
    );
    assert_eq!(s.window_end(end), None);
    // A whole-day window on that Sunday lasts 25 hours.
    let s = schedule(Berlin, vec![window(&[Sun], "00:00", "00:00")]);
    let start = utc("2026-10-24T22:00:00Z"); // 00:00 CEST
    assert_eq!(s.window_end(start).unwrap() - start, TimeDelta::hours(25));
}

#[test]
fn same_wall_clock_differs_by_zone() {
    let ny = schedule(New_York, vec![window(&[Mon], "09:00", "10:00")]);
    let berlin = schedule(Berlin, vec![window(&[Mon], "09:00", "10:00")]);
    let t = utc("2026-05-18T13:30:00Z"); // 09:30 in New York, 15:30 in Berlin
    assert_eq!(ny.window_end(t), Some(utc("2026-05-18T14:00:00Z")));
    assert_eq!(berlin.window_end(t), None);
}

#[test]
fn touching_windows_chain_into_one_expiry() {
    let s = schedule(
        UTC,
        vec![
            window(&[Mon], "22:00", "00:00"),
            window(&[Tue], "00:00", "06:00"),
            window(&[Tue], "05:00", "07:30"),
            window(&[Tue], "08:00", "09:00"),
        ],
    );
    // Monday 2026-05-18 23:00 runs through to Tuesday 07:30, not 09:00
    // (there is a gap at 07:30–08:00).
    assert_eq!(
        s.window_end(utc("2026-05-18T23:00:00Z")),
        Some(utc("2026-05-19T07:30:00Z"))
    );
}

#[test]
fn always_on_schedule_still_expires() {
    let s = schedule(
        UTC,
        vec![window(
            &[Mon, Tue, Wed, Thu, Fri, Sat, Sun],
            "00:00",
            "00:00",
        )],
    );
    let now = utc("2026-05-18T12:00:00Z");
    let end = s.window_end(now).unwrap();
    assert!(end > now + TimeDelta::days(7), "{end}");
    assert!(end < now + TimeDelta::days(30), "{end}");
}

#[test]
fn empty_schedule_never_matches() {
    let s = schedule(UTC, vec![]);
    assert_eq!(s.window_end(utc("2026-05-18T12:00:00Z")), None);
    let s = schedule(UTC, vec![window(&[], "00:00", "00:00")]);
    assert_eq!(s.window_end(utc("2026-05-18T12:00:00Z")), None);
}

#[test]
fn schedule_serde() {
    let json = r#"{"timezone":"Europe/Berlin","windows":[{"days":["mon","FRI"],"start":"09:00","end":"17:30"}]}"#;
    let s: Schedule = serde_json::from_str(json).unwrap();
    assert_eq!(s.timezone, Berlin);
    assert!(s.windows[0].days.contains(Mon) && s.windows[0].days.contains(Fri));
    assert!(!s.windows[0].days.contains(Tue));
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"timezone":"Europe/Berlin","windows":[{"days":["mon","fri"],"start":"09:00","end":"17:30"}]}"#
    );
    for bad in [
        r#"{"timezone":"Mars/Olympus","windows":[]}"#,
        r#"{"timezone":"UTC","windows":[{"days":["funday"],"start":"09:00","end":"10:00"}]}"#,
        r#"{"timezone":"UTC","windows":[{"days":["mon"],"start":"25:00","end":"10:00"}]}"#,
    ] {
        assert!(serde_json::from_str::<Schedule>(bad).is_err(), "{bad}");
    }
}
