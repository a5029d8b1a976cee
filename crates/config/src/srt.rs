//! `[srt]`: the SRT publishers' listener (UDP; MPEG-TS over SRT from OBS, ffmpeg,
//! hardware encoders). A provider's `srt_passphrase` turns on encryption for its streams.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::humantime_serde;
use crate::units::Listen;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// UDP `"host:port"` or `"off"`.
    pub listen: Listen,
    /// Receive latency: how long SRT may spend recovering lost packets before giving a
    /// packet up (the larger of this and the publisher's `latency` is used). About
    /// four round trips to the farthest publisher.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    pub max_connections: usize,
}

/// Shortest and longest passphrase SRT accepts (libsrt's `SRTO_PASSPHRASE`).
pub const SRT_PASSPHRASE_LEN: std::ops::RangeInclusive<usize> = 10..=79;

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: Listen::At(([0, 0, 0, 0], 8890).into()),
            latency: Duration::from_millis(200),
            max_connections: 1000,
        }
    }
}

impl SrtConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.latency < Duration::from_millis(20) || self.latency > Duration::from_secs(10) {
            return Err((
                "srt.latency".into(),
                "must be between 20ms and 10s (SRT gives up a lost packet after it)".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err((
                "srt.max_connections".into(),
                "must be at least 1 (turn SRT off with listen = \"off\")".into(),
            ));
        }
        Ok(())
    }
}
