//! Wall-clock text as recordings carry it: RFC 3339 times and sortable recording ids.

use std::time::SystemTime;

/// RFC 3339 UTC with milliseconds, as EXT-X-PROGRAM-DATE-TIME wants.
pub fn format_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// Sortable, URL- and file-safe recording ids: `20261121T120000Z-1a2b`.
pub fn new_recording_id(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let stamp = t
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    format!("{stamp}-{:04x}", rand::random::<u16>())
}

/// How long before `now` an RFC 3339 time (a journal's `ended_at`) was, in seconds.
pub fn seconds_between(text: &str, now: SystemTime) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((time::OffsetDateTime::from(now) - t).as_seconds_f64())
}

/// How long ago an RFC 3339 time was, in seconds.
pub fn seconds_since(text: &str) -> Option<f64> {
    seconds_between(text, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_round_trip_and_ids_sort_by_start() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let text = format_time(t0);
        assert_eq!(text, "2026-11-18T11:06:40.123Z");
        let later = t0 + Duration::from_secs(90);
        assert_eq!(seconds_between(&text, later), Some(90.0));
        assert_eq!(seconds_between("not a time", later), None);
        let (a, b) = (new_recording_id(t0), new_recording_id(later));
        assert!(a < b, "{a} sorts before {b}");
        assert!(streamcdn_urls::is_valid_name(&a));
    }
}
