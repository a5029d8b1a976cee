//! Single byte ranges (RFC 9110 14.1.2), which is what HLS players send.

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
    /// Malformed or multi-range: serve the whole object, as RFC 9110 allows.
    Ignored,
}

pub fn parse(header: &str, total: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Range::Ignored,
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return Range::Unsatisfiable,
            Ok(n) => (total.saturating_sub(n), total.saturating_sub(1)),
            Err(_) => return Range::Ignored,
        },
        (false, _) => {
            let Ok(start) = first.parse::<u64>() else {
                return Range::Ignored;
            };
            let end = if last.is_empty() {
                total.saturating_sub(1)
            } else {
                match last.parse::<u64>() {
                    Ok(end) if end >= start => end.min(total.saturating_sub(1)),
                    _ => return Range::Ignored,
                }
            };
            (start, end)
        }
    };
    if total == 0 || range.0 >= total {
        return Range::Unsatisfiable;
    }
    Range::Satisfiable {
        start: range.0,
        end: range.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse("bytes=0-99", 1000),
            Range::Satisfiable { start: 0, end: 99 }
        );
        assert_eq!(
            parse("bytes=900-", 1000),
            Range::Satisfiable {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse("bytes=-100", 1000),
            Range::Satisfiable {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse("bytes=990-5000", 1000),
            Range::Satisfiable {
                start: 990,
                end: 999
            }
        );
        assert_eq!(parse("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,5-6", 1000), Range::Ignored);
        assert_eq!(parse("items=0-1", 1000), Range::Ignored);
        assert_eq!(parse("bytes=9-3", 1000), Range::Ignored);
    }
}
