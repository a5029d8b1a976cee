//! `[hls]`: how live streams are cut into segments and parts, and listed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::humantime_serde;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// CMAF fragmented MP4 (`init.mp4` + `.m4s`).
    #[default]
    Fmp4,
    /// MPEG-2 transport stream (`.ts`).
    Ts,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Segments are cut on the first keyframe at or near this duration.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// Segments in the live playlist's sliding window.
    pub live_window: usize,
    pub format: SegmentFormat,
    /// The part target of Low-Latency HLS: segments are muxed and written in parts of at
    /// most this long, and fMP4 streams list them (`EXT-X-PART`). 334ms holds ten frames
    /// at 30 fps exactly.
    #[serde(with = "humantime_serde")]
    pub part_duration: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_secs(2),
            live_window: 6,
            format: SegmentFormat::Fmp4,
            part_duration: Duration::from_millis(334),
        }
    }
}

impl HlsConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(Duration::from_millis(500)..=Duration::from_secs(30)).contains(&self.segment_duration)
        {
            return Err((
                "hls.segment_duration".into(),
                "must be between 500ms and 30s".into(),
            ));
        }
        if !(3..=100).contains(&self.live_window) {
            return Err(("hls.live_window".into(), "must be between 3 and 100".into()));
        }
        if self.part_duration < Duration::from_millis(100)
            || self.part_duration * 2 > self.segment_duration
        {
            return Err((
                "hls.part_duration".into(),
                "must be at least 100ms and at most half of hls.segment_duration".into(),
            ));
        }
        Ok(())
    }
}
