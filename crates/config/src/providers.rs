//! `[[providers]]`: the tenants — their names, publishing keys, playback keys, formats
//! and HTTP callbacks (`[providers.hooks]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::Invalid;
use crate::hls::SegmentFormat;
use crate::humantime_serde;

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// First path segment of publish and play URLs.
    pub name: String,
    /// Publishers present it as `?key=<stream_key>`.
    pub stream_key: String,
    /// Overrides `hls.format` for this provider's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SegmentFormat>,
    /// Low-Latency HLS for the provider's fMP4 streams (parts, blocking reload, preload
    /// hints in the live playlist). MPEG-TS streams are always plain HLS.
    #[serde(default = "enabled")]
    pub low_latency: bool,
    /// How long after a stream ends its recording moves to on-demand storage
    /// (`archive.default_after` when unset). A publisher reconnecting within it
    /// continues the same recording. The provider may change it through the API.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub archive_after: Option<Duration>,
    /// Rewind: how far back the live playlist (`live.m3u8`) reaches into the recording,
    /// so viewers can seek back that far while the live edge stays low-latency (e.g.
    /// `"2h"`). Unset or `"0s"`: the usual short live window. The provider may change
    /// it through the API.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub dvr_window: Option<Duration>,
    /// How long a stream interrupted by the drain of its ingest server (a restart, an
    /// upgrade) stays live, without `EXT-X-ENDLIST`, for its publisher to come back
    /// through another server of the cluster; then it ends as if the publisher had
    /// stopped. Default 30s.
    #[serde(
        default = "default_reconnect_window",
        skip_serializing_if = "is_default_reconnect_window",
        with = "humantime_serde"
    )]
    pub reconnect_window: Duration,
    /// Signed playback URLs (`/t/<token>/<provider>/...`): with keys, every playback
    /// request for this provider needs a token signed with one of them (the first signs
    /// new URLs; a second stays valid while rotating). None: playback is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playback_keys: Vec<String>,
    /// Keys that open one stream each (stream name → key), besides `stream_key`, which
    /// opens every stream of the provider. Changed at runtime through the providers' API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_keys: BTreeMap<String, String>,
    /// SRT publishers of this provider must encrypt (AES, any key length) with this
    /// passphrase (10-79 characters; libsrt's `passphrase`). None: no encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<String>,
    /// HTTP callbacks on the provider's publishes and recordings (`[providers.hooks]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksConfig>,
}

fn enabled() -> bool {
    true
}

/// The default `reconnect_window`: OBS retries after 2 s, doubling; 30 s covers its
/// first four tries.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);

fn default_reconnect_window() -> Duration {
    DEFAULT_RECONNECT_WINDOW
}

fn is_default_reconnect_window(window: &Duration) -> bool {
    *window == DEFAULT_RECONNECT_WINDOW
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            stream_key: String::new(),
            format: None,
            low_latency: true,
            archive_after: None,
            dvr_window: None,
            reconnect_window: DEFAULT_RECONNECT_WINDOW,
            playback_keys: Vec::new(),
            stream_keys: BTreeMap::new(),
            srt_passphrase: None,
            hooks: None,
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: configurations end up in logs and panics.
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("low_latency", &self.low_latency)
            .field("archive_after", &self.archive_after)
            .field("dvr_window", &self.dvr_window)
            .field("reconnect_window", &self.reconnect_window)
            .field("playback_keys", &self.playback_keys.len())
            .field("stream_keys", &self.stream_keys.keys().collect::<Vec<_>>())
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// A provider's HTTP callbacks: a JSON `POST` to each URL set. `on_publish` decides
/// whether a publisher may go live; the others are notifications, retried with backoff.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Asked before a publisher goes live: a 2xx allows it (unless its JSON body says
    /// `"allow": false`), anything else refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_publish: Option<String>,
    /// A publisher has gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_unpublish: Option<String>,
    /// A publisher's recording is ended and durable on the ingest's storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_recording_ended: Option<String>,
    /// A recording is archived and verified in on-demand storage (once per recording).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_archived: Option<String>,
    /// How long one call may take (connecting, answering, the body).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts of a notification that failed (with backoff); `on_publish` is
    /// asked once.
    pub retries: u32,
    /// `on_publish` not answering within `timeout` (or unreachable) refuses the
    /// publisher (`true`) or lets it go live (`false`).
    pub deny_on_timeout: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_publish: None,
            on_unpublish: None,
            on_recording_ended: None,
            on_archived: None,
            timeout: Duration::from_secs(2),
            retries: 2,
            deny_on_timeout: true,
        }
    }
}

impl HooksConfig {
    /// Every URL set, with its key below `[providers.hooks]`.
    pub fn urls(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("on_publish", &self.on_publish),
            ("on_unpublish", &self.on_unpublish),
            ("on_recording_ended", &self.on_recording_ended),
            ("on_archived", &self.on_archived),
        ]
        .into_iter()
        .filter_map(|(key, url)| Some((key, url.as_deref()?)))
    }
}

/// Every `[[providers]]` table, in order; names must differ.
pub(crate) fn validate(providers: &[ProviderConfig]) -> Result<(), Invalid> {
    for (i, p) in providers.iter().enumerate() {
        if !streamcdn_urls::is_valid_name(&p.name) {
            return Err((
                format!("providers[{i}].name"),
                format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", p.name),
            ));
        }
        if p.playback_keys.len() > 2
            || p.playback_keys
                .iter()
                .any(|k| k.len() < 16 || k.len() > 256)
        {
            return Err((
                format!("providers[{i}].playback_keys"),
                "one or two keys (two while rotating), each 16-256 characters".into(),
            ));
        }
        if providers[..i].iter().any(|q| q.name == p.name) {
            return Err((
                format!("providers[{i}].name"),
                format!("provider {:?} is defined twice", p.name),
            ));
        }
        if p.stream_key.len() < 8 || p.stream_key.contains(['&', '?', '/', ' ']) {
            return Err((
                format!("providers[{i}].stream_key"),
                "must be at least 8 characters, without & ? / or spaces".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&p.reconnect_window)
        {
            return Err((
                format!("providers[{i}].reconnect_window"),
                "must be between 1s and 24h".into(),
            ));
        }
        validate_stream_keys(i, p)?;
        if let Some(passphrase) = &p.srt_passphrase {
            if !crate::srt::SRT_PASSPHRASE_LEN.contains(&passphrase.len()) {
                return Err((
                    format!("providers[{i}].srt_passphrase"),
                    format!(
                        "must be 10-79 characters (SRT's passphrase), not {}",
                        passphrase.len()
                    ),
                ));
            }
        }
        if let Some(hooks) = &p.hooks {
            validate_hooks(i, hooks)?;
        }
    }
    Ok(())
}

/// What is wrong with a stream key (a provider's or a stream's), if anything.
pub fn stream_key_problem(key: &str) -> Option<&'static str> {
    (key.len() < 8
        || key.len() > 256
        || !key.bytes().all(|b| b.is_ascii_graphic())
        || key.contains(['&', '?', '/']))
    .then_some("must be 8-256 printable characters, without & ? / or spaces")
}

/// `[providers.stream_keys]`: stream names, and keys a publisher can send.
fn validate_stream_keys(i: usize, p: &ProviderConfig) -> Result<(), Invalid> {
    for (stream, key) in &p.stream_keys {
        let at = if streamcdn_urls::is_valid_name(stream) {
            format!("providers[{i}].stream_keys.{stream}")
        } else {
            format!("providers[{i}].stream_keys.{stream:?}")
        };
        if !streamcdn_urls::is_valid_name(stream) {
            return Err((
                at,
                format!("{stream:?} is not a stream name (1-64 characters of A-Z a-z 0-9 - _)"),
            ));
        }
        if let Some(problem) = stream_key_problem(key) {
            return Err((at, problem.into()));
        }
        if key == &p.stream_key {
            return Err((
                at,
                "is the provider's stream_key (which opens every stream): give the stream a key of its own"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// What is wrong with a hook's URL, if anything: hooks are plain-HTTP `POST`s.
pub fn hook_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("is not an http:// URL (hooks are called over plain HTTP)");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Some("names no host (http://host:port/path)");
    }
    if url.len() > 2048 || url.contains('#') || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("is not a plain URL (printable ASCII, no spaces or #, at most 2048 bytes)");
    }
    None
}

/// `[providers.hooks]`.
fn validate_hooks(i: usize, hooks: &HooksConfig) -> Result<(), Invalid> {
    let at = |key: &str| format!("providers[{i}].hooks.{key}");
    if hooks.urls().next().is_none() {
        return Err((
            format!("providers[{i}].hooks"),
            "sets no hook: on_publish, on_unpublish, on_recording_ended or on_archived".into(),
        ));
    }
    for (key, url) in hooks.urls() {
        if let Some(problem) = hook_url_problem(url) {
            return Err((at(key), format!("{url:?} {problem}")));
        }
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(30)).contains(&hooks.timeout) {
        return Err((at("timeout"), "must be between 100ms and 30s".into()));
    }
    if hooks.retries > 10 {
        return Err((at("retries"), "must be at most 10".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::tests::parse;

    #[test]
    fn provider_keys_never_show_in_debug_output() {
        let text = "[[providers]]\nname = \"a\"\nstream_key = \"secret-key-0000001\"\nplayback_keys = [\"playback-secret-00001\"]\n";
        let shown = format!("{:?}", parse(text).unwrap().providers[0]);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("\"a\""), "{shown}");
    }

    #[test]
    fn stream_keys_and_hooks_are_checked_at_start() {
        let base = "[[providers]]\nname = \"p\"\nstream_key = \"provider-key-1\"\n";
        let text = format!(
            "{base}stream_keys = {{ cam = \"cam-key-0001\" }}\n[providers.hooks]\n\
             on_publish = \"http://127.0.0.1:9000/publish\"\ntimeout = \"500ms\"\ndeny_on_timeout = false\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.providers[0].stream_keys["cam"], "cam-key-0001");
        let hooks = c.providers[0].hooks.as_ref().unwrap();
        assert_eq!(
            (hooks.timeout, hooks.retries, hooks.deny_on_timeout),
            (Duration::from_millis(500), 2, false)
        );
        assert_eq!(
            hooks.urls().collect::<Vec<_>>(),
            [("on_publish", "http://127.0.0.1:9000/publish")]
        );
        // Defaults: 2 s, two retries, and a publish hook that does not answer refuses.
        let c = parse(&format!(
            "{base}[providers.hooks]\non_archived = \"http://h/a\"\n"
        ))
        .unwrap();
        let hooks = c.providers[0].hooks.as_ref().unwrap();
        assert!(hooks.deny_on_timeout && hooks.timeout == Duration::from_secs(2));
        assert!(c.providers[0].stream_keys.is_empty());

        let error = |text: String| {
            let e = parse(&text).unwrap_err();
            (e.line, e.key.clone().unwrap_or_default(), e.to_string())
        };
        let (line, key, text) = error(format!(
            "{base}stream_keys = {{ \"a b\" = \"cam-key-0001\" }}\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (4, "providers[0].stream_keys.\"a b\""),
            "{text}"
        );
        assert!(text.contains("not a stream name"), "{text}");
        let (line, key, text) = error(format!(
            "{base}\n[providers.stream_keys]\ncam = \"short\"\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (6, "providers[0].stream_keys.cam"),
            "{text}"
        );
        assert!(text.contains("8-256"), "{text}");
        let (line, _, text) = error(format!(
            "{base}stream_keys = {{ cam = \"provider-key-1\" }}\n"
        ));
        assert!(line == 4 && text.contains("of its own"), "{text}");
        let (line, key, text) = error(format!(
            "{base}[providers.hooks]\non_publish = \"https://auth.example/p\"\n"
        ));
        assert_eq!(
            (line, &key[..]),
            (5, "providers[0].hooks.on_publish"),
            "{text}"
        );
        assert!(text.contains("http://"), "{text}");
        let (line, key, _) = error(format!(
            "{base}[providers.hooks]\non_unpublish = \"http://h/u\"\n\ntimeout = \"1h\"\n"
        ));
        assert_eq!((line, &key[..]), (7, "providers[0].hooks.timeout"));
        let (line, key, _) = error(format!(
            "{base}hooks = {{ on_unpublish = \"http://h/u\", retries = 11 }}\n"
        ));
        assert_eq!((line, &key[..]), (4, "providers[0].hooks.retries"));
        let (line, key, text) = error(format!("{base}\n[providers.hooks]\ntimeout = \"1s\"\n"));
        assert_eq!((line, &key[..]), (5, "providers[0].hooks"), "{text}");
        assert!(text.contains("sets no hook"), "{text}");
        let (line, _, text) = error(format!(
            "{base}[providers.hooks]\non_connect = \"http://h/c\"\n"
        ));
        assert!(line == 5 && text.contains("on_connect"), "{text}");
        // The second provider's table is the one named.
        let (line, key, _) = error(format!(
            "{base}[providers.hooks]\non_publish = \"http://h/p\"\n\n\
             [[providers]]\nname = \"q\"\nstream_key = \"provider-key-2\"\n\
             [providers.hooks]\non_publish = \"ftp://h/p\"\n"
        ));
        assert_eq!((line, &key[..]), (11, "providers[1].hooks.on_publish"));
    }
}
