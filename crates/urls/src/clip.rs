//! The span of a clip (`<recording>/clip.mp4?...`): `start=<s>&end=<s>`, seconds from
//! the recording's start (decimal, to the millisecond), or `from=<RFC 3339>&to=<RFC
//! 3339>`, wall-clock times as the recording's `EXT-X-PROGRAM-DATE-TIME`s tell them.
//! Normalized to milliseconds, so equal spans share one cache entry whatever their
//! spelling (`start=1.50` and `start=1.5`; `+01:00` and `Z`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds up to about 31 700 years: far beyond any recording, and exact in an `f64`.
const MAX_MS: u64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClipSpan {
    /// Milliseconds from the recording's start.
    Offsets { start_ms: u64, end_ms: u64 },
    /// Milliseconds since the Unix epoch.
    WallClock { from_ms: u64, to_ms: u64 },
}

impl ClipSpan {
    /// The span in `query`; other parameters are ignored, the first occurrence of each
    /// counts. Missing, malformed, negative, or empty (start at or after end) spans are
    /// errors (saying what is wrong), as is a query mixing both forms.
    pub fn parse(query: &str) -> Result<Self, &'static str> {
        let mut found: [Option<&str>; 4] = [None; 4];
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "start" => 0,
                "end" => 1,
                "from" => 2,
                "to" => 3,
                _ => continue,
            };
            found[slot].get_or_insert(value);
        }
        let span = match found {
            [Some(start), Some(end), None, None] => Self::Offsets {
                start_ms: seconds(start).ok_or("start")?,
                end_ms: seconds(end).ok_or("end")?,
            },
            [None, None, Some(from), Some(to)] => Self::WallClock {
                from_ms: wall_clock(from).ok_or("from")?,
                to_ms: wall_clock(to).ok_or("to")?,
            },
            [None, None, None, None] => return Err("start and end (or from and to) required"),
            _ => return Err("give start and end, or from and to"),
        };
        if span.duration_ms() == 0 {
            return Err("start must come before end");
        }
        Ok(span)
    }

    /// How long the span asked for is.
    pub fn duration_ms(&self) -> u64 {
        match *self {
            Self::Offsets { start_ms, end_ms } => end_ms.saturating_sub(start_ms),
            Self::WallClock { from_ms, to_ms } => to_ms.saturating_sub(from_ms),
        }
    }

    /// The canonical query.
    pub fn query(&self) -> String {
        match *self {
            Self::Offsets { start_ms, end_ms } => {
                format!("start={}&end={}", decimal(start_ms), decimal(end_ms))
            }
            Self::WallClock { from_ms, to_ms } => {
                format!("from={}&to={}", rfc3339(from_ms), rfc3339(to_ms))
            }
        }
    }
}

/// Non-negative decimal seconds (`12`, `12.5`, `.5`), rounded to the millisecond.
fn seconds(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || whole.len() > 15 || fraction.len() > 9 {
        return None;
    }
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let ms = (value * 1000.0).round();
    (ms.is_finite() && ms >= 0.0 && ms <= MAX_MS as f64).then_some(ms as u64)
}

fn decimal(ms: u64) -> String {
    match ms % 1000 {
        0 => format!("{}", ms / 1000),
        frac => format!("{}.{:03}", ms / 1000, frac)
            .trim_end_matches('0')
            .to_owned(),
    }
}

/// An RFC 3339 time at or after the Unix epoch, to the millisecond (truncated).
/// Percent-encoded (`%3A`, `%2B`, as browsers' `URLSearchParams` send them) or not; a
/// raw `+` is the offset's sign, not a space.
fn wall_clock(text: &str) -> Option<u64> {
    let decoded = percent_decoded(text)?;
    let t = OffsetDateTime::parse(&decoded, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn percent_decoded(text: &str) -> Option<String> {
    if text.len() > 64 {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (a playlist's
/// `EXT-X-PROGRAM-DATE-TIME`), if it is one at or after the epoch.
pub fn unix_ms(text: &str) -> Option<u64> {
    wall_clock(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_normalize() {
        let span = ClipSpan::parse("start=1.50&end=10&x=y").unwrap();
        assert_eq!(
            span,
            ClipSpan::Offsets {
                start_ms: 1500,
                end_ms: 10_000
            }
        );
        assert_eq!(span.query(), "start=1.5&end=10");
        assert_eq!(span.duration_ms(), 8500);
        assert_eq!(
            ClipSpan::parse("start=.001&end=0.02").unwrap().query(),
            "start=0.001&end=0.02"
        );
        let span =
            ClipSpan::parse("from=2026-12-08T02:00:00%2B01:00&to=2026-12-08T01%3A00%3A30.25Z");
        assert_eq!(
            span,
            ClipSpan::parse("from=2026-12-08T02:00:00+01:00&to=2026-12-08T01:00:30.25Z")
        );
        let span = ClipSpan::parse("from=2026-12-08T01:00:00Z&to=2026-12-08T01:00:30.25Z").unwrap();
        assert_eq!(
            ClipSpan::parse("from=2026-12-08T02:00:00%2B01:00&to=2026-12-08T01%3A00%3A30.25Z"),
            Ok(span)
        );
        assert_eq!(span.duration_ms(), 30_250);
        assert_eq!(
            span.query(),
            "from=2026-12-08T01:00:00.000Z&to=2026-12-08T01:00:30.250Z"
        );
        assert_eq!(ClipSpan::parse(&span.query()), Ok(span));
    }

    #[test]
    fn bad_spans_are_refused() {
        for query in [
            "",
            "start=1",
            "end=2",
            "start=2&end=2",
            "start=3&end=2",
            "start=-1&end=2",
            "start=NaN&end=2",
            "start=inf&end=2",
            "start=1e3&end=2000",
            "start=&end=2",
            "start=.&end=2",
            "start=1&end=2&from=2026-12-08T01:00:00Z&to=2026-12-08T01:00:01Z",
            "from=yesterday&to=2026-12-08T01:00:01Z",
            "from=1969-12-31T23:59:59Z&to=2026-12-08T01:00:01Z",
        ] {
            assert!(ClipSpan::parse(query).is_err(), "{query}");
        }
    }
}
