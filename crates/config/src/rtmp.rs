//! `[rtmp]`: the publishers' listeners (RTMP and RTMPS) and their limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::humantime_serde;
use crate::units::{ByteSize, Listen};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub listen: SocketAddr,
    /// RTMPS (RTMP over TLS, as OBS's `rtmps://`): `"host:port"` or `"off"`. Uses the
    /// playback listener's certificate (`http.tls_cert`/`tls_key`, or the generated one).
    pub tls_listen: Listen,
    pub max_connections: usize,
    /// Largest RTMP message accepted (a video frame is one message).
    pub max_message_size: ByteSize,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A publisher's socket is read at most this often: data arriving meanwhile is read
    /// at once, for fewer wake-ups per stream at the cost of at most this much latency.
    /// `"0s"` reads as soon as data arrives.
    #[serde(with = "humantime_serde")]
    pub read_interval: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 1935).into(),
            tls_listen: Listen::At(([0, 0, 0, 0], 1936).into()),
            max_connections: 1000,
            max_message_size: ByteSize(8 * 1024 * 1024),
            idle_timeout: Duration::from_secs(10),
            read_interval: Duration::from_millis(20),
        }
    }
}

impl RtmpConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.max_message_size.0 < 64 * 1024 || self.max_message_size.0 > 16 * 1024 * 1024 {
            return Err((
                "rtmp.max_message_size".into(),
                "must be between 64KiB and 16MiB".into(),
            ));
        }
        if self.read_interval > Duration::from_millis(100) {
            return Err((
                "rtmp.read_interval".into(),
                "must be at most 100ms (it adds up to that much latency)".into(),
            ));
        }
        if self.tls_listen.addr() == Some(self.listen) {
            return Err((
                "rtmp.tls_listen".into(),
                "must differ from rtmp.listen".into(),
            ));
        }
        Ok(())
    }
}
