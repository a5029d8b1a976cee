//! The wall clock, as the deployment shares it: time since the Unix epoch (probe
//! requests, signed tokens, leases, measurements and load reports carry it between
//! servers). Only shells read it; pure code takes `now` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole seconds since the Unix epoch (0 for a clock set before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_seconds_agree() {
        let (ms, secs) = (now_ms(), now_secs());
        assert!(secs > 1_600_000_000);
        assert!(ms / 1000 >= secs && ms / 1000 <= secs + 1);
    }
}
