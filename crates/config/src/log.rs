//! `[log]`: how the process writes its log lines (to standard output).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when written to a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for
    /// log collectors.
    Json,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}
