//! The wall clock as the deployment shares it: Unix milliseconds (measurements, probe
//! requests and load reports carry it between servers).

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
