pub mod app;
pub mod aws;
pub mod conformance;
pub mod delivery;
pub mod faults;
pub mod imports;

/// The next Wednesday, 10:00 UTC (within the coming 7 days): a fixed weekday and hour for
/// tests about sending windows and days, kept near the real time because both stores hide
/// items whose TTL (an epoch second, compared with the real clock, as DynamoDB does) has
/// passed: a date fixed in the source makes such tests fail once it is a week old.
pub fn next_wednesday_10_utc() -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, Duration, TimeZone, Utc, Weekday};
    let today = Utc::now().date_naive();
    let ahead = (7 + Weekday::Wed.num_days_from_monday() as i64
        - today.weekday().num_days_from_monday() as i64)
        % 7;
    let day = today + Duration::days(if ahead == 0 { 7 } else { ahead });
    Utc.from_utc_datetime(&day.and_hms_opt(10, 0, 0).expect("10:00 exists"))
}
