//! `hls-viewers`: simulated HLS players, a few thousand from one process.
//!
//! Each viewer behaves as hls.js does with a live stream: it loads the multivariant
//! playlist, picks the variant, starts three segments behind the live edge, fetches the
//! init segment and then every new segment in order, and reloads the media playlist
//! every target duration (half of it when nothing new came). Playback is simulated:
//! the clock starts when the first segment arrives, and whenever the clock catches up
//! with what is buffered the viewer is stalled until the next segment lands. A VOD
//! playlist (`#EXT-X-ENDLIST`) is played from its start to its end.
//!
//! The summary (JSON on stdout) is what tests and benchmarks read: segments, bytes,
//! errors, stalls and their total and longest time, the longest wait between two
//! segments, and segments skipped because the live window moved past them. SIGINT ends
//! every viewer at once and still prints the summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Mutex;

#[derive(Parser)]
struct Cli {
    /// Playlist URL; several are spread over viewers round-robin (e.g. one per edge).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// How long each viewer watches (a VOD viewer stops at the end).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Viewers join evenly over this time.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Live start position, in segments behind the live edge.
    #[arg(long, default_value_t = 3)]
    live_start: usize,
    /// Each viewer keeps its own connections, as real players do; by default viewers
    /// share one pool (fewer connections than viewers).
    #[arg(long)]
    own_connections: bool,
    /// A failed request is tried again this many times, 500 ms apart, before it counts
    /// as an error (hls.js retries segment and playlist loads the same way).
    #[arg(long, default_value_t = 0)]
    retries: u32,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Set on SIGINT: every viewer stops as if its time were up, and the summary is printed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn watching(deadline: Instant) -> bool {
    Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed)
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    viewers: usize,
    playlists: u64,
    segments: u64,
    bytes: u64,
    errors: u64,
    /// Requests that failed and then succeeded when tried again (`--retries`).
    retried: u64,
    /// Viewers that joined a live playlist and later saw it end (`#EXT-X-ENDLIST`).
    live_ended: u64,
    stalls: u64,
    stall_seconds: f64,
    max_stall_seconds: f64,
    /// Longest wall time between two consecutive segments arriving at one viewer.
    max_segment_gap_seconds: f64,
    skipped_segments: u64,
    /// Viewers that played a VOD playlist to its end.
    finished: u64,
    /// Viewers that never got a first segment.
    never_started: u64,
    /// Media seconds played, over all viewers.
    played_seconds: f64,
}

#[derive(Debug, Clone)]
struct Segment {
    sequence: u64,
    duration: f64,
    uri: String,
    map: Option<String>,
}

#[derive(Debug, Default)]
struct MediaPlaylist {
    target_duration: f64,
    ended: bool,
    segments: Vec<Segment>,
}

/// Resolves a playlist reference against the playlist's URL.
fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.to_owned();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    if reference.starts_with('/') {
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        return format!("{}{reference}", &base[..host_end]);
    }
    let dir_end = base.rfind('/').map_or(base.len(), |i| i + 1);
    format!("{}{reference}", &base[..dir_end])
}

fn parse_media(base: &str, text: &str) -> anyhow::Result<MediaPlaylist> {
    if !text.starts_with("#EXTM3U") {
        bail!("not a playlist");
    }
    let mut playlist = MediaPlaylist::default();
    let mut sequence = 0u64;
    let mut duration = None;
    let mut map = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            playlist.target_duration = v.parse().unwrap_or(2.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = v.parse().context("media sequence")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            map = v
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(|u| resolve(base, u));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = v.split(',').next().and_then(|d| d.parse().ok());
        } else if line == "#EXT-X-ENDLIST" {
            playlist.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            playlist.segments.push(Segment {
                sequence,
                duration: duration.take().unwrap_or(0.0),
                uri: resolve(base, line),
                map: map.clone(),
            });
            sequence += 1;
        }
    }
    Ok(playlist)
}

struct Viewer {
    client: HttpClient,
    retries: u32,
    errors: u64,
    retried: u64,
    playlists: u64,
    segments: u64,
    bytes: u64,
}

impl Viewer {
    async fn get(&mut self, url: &str) -> Option<Bytes> {
        let mut attempt = 0;
        loop {
            let outcome = self.try_get(url).await;
            match outcome {
                Ok(body) => {
                    self.bytes += body.len() as u64;
                    self.retried += u64::from(attempt > 0);
                    return Some(body);
                }
                Err(_) if attempt < self.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    if self.errors == 0 {
                        eprintln!("viewer error on {url}: {e:#}");
                    }
                    self.errors += 1;
                    return None;
                }
            }
        }
    }

    async fn try_get(&self, url: &str) -> anyhow::Result<Bytes> {
        async {
            let uri: hyper::Uri = url.parse()?;
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                self.client
                    .request(hyper::Request::get(uri).body(Empty::new())?),
            )
            .await??;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("{status}");
            }
            anyhow::Ok(body)
        }
        .await
    }

    async fn media_playlist(&mut self, url: &str) -> Option<MediaPlaylist> {
        let body = self.get(url).await?;
        self.playlists += 1;
        let text = String::from_utf8_lossy(&body);
        match parse_media(url, &text) {
            Ok(p) => Some(p),
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }
}

/// One viewer's session; adds its outcome to `summary`.
async fn watch(client: HttpClient, url: String, cli: Arc<Cli>, summary: Arc<Mutex<Summary>>) {
    let mut viewer = Viewer {
        client,
        retries: cli.retries,
        errors: 0,
        retried: 0,
        playlists: 0,
        segments: 0,
        bytes: 0,
    };
    let deadline = Instant::now() + cli.duration;
    // The multivariant playlist names the media playlist; a media playlist is used as is.
    let mut media_url = url.clone();
    while watching(deadline) {
        if let Some(body) = viewer.get(&url).await {
            viewer.playlists += 1;
            let text = String::from_utf8_lossy(&body);
            if text.contains("#EXT-X-STREAM-INF") {
                if let Some(uri) = text.lines().find(|l| !l.is_empty() && !l.starts_with('#')) {
                    media_url = resolve(&url, uri.trim());
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut next: Option<u64> = None;
    let mut current_map: Option<String> = None;
    let mut started: Option<Instant> = None;
    let mut buffered = 0.0f64;
    let mut stalled_since: Option<Instant> = None;
    let (mut stalls, mut stall_total, mut max_stall) = (0u64, 0.0f64, 0.0f64);
    let mut last_segment_at: Option<Instant> = None;
    let mut max_gap = 0.0f64;
    let mut skipped = 0u64;
    let mut finished = false;
    let mut joined_live = false;
    let mut live_ended = false;
    let playhead = |started: Option<Instant>, stall_total: f64| {
        started.map_or(0.0, |s| s.elapsed().as_secs_f64() - stall_total)
    };

    while watching(deadline) {
        let Some(playlist) = viewer.media_playlist(&media_url).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if next.is_none() {
            joined_live = !playlist.ended;
        }
        live_ended |= joined_live && playlist.ended;
        let from = *next.get_or_insert_with(|| {
            if playlist.ended {
                playlist.segments.first().map_or(0, |s| s.sequence)
            } else {
                let n = playlist.segments.len();
                playlist.segments[n.saturating_sub(cli.live_start)..]
                    .first()
                    .map_or(0, |s| s.sequence)
            }
        });
        if let Some(first) = playlist.segments.first() {
            if first.sequence > from {
                skipped += first.sequence - from;
                next = Some(first.sequence);
            }
        }
        let mut got_new = false;
        let wanted = next.unwrap_or(0);
        for segment in playlist.segments.iter().filter(|s| s.sequence >= wanted) {
            if !watching(deadline) {
                break;
            }
            if segment.map.is_some() && segment.map != current_map {
                let map = segment.map.clone().unwrap_or_default();
                if viewer.get(&map).await.is_none() {
                    break;
                }
                current_map = segment.map.clone();
            }
            if viewer.get(&segment.uri).await.is_none() {
                break;
            }
            let now = Instant::now();
            viewer.segments += 1;
            got_new = true;
            if let Some(last) = last_segment_at {
                max_gap = max_gap.max(now.duration_since(last).as_secs_f64());
            }
            last_segment_at = Some(now);
            if let Some(since) = stalled_since.take() {
                let stall = now.duration_since(since).as_secs_f64();
                stall_total += stall;
                max_stall = max_stall.max(stall);
            }
            started.get_or_insert(now);
            buffered += segment.duration;
            next = Some(segment.sequence + 1);
        }
        if stalled_since.is_none()
            && started.is_some()
            && playhead(started, stall_total) >= buffered
        {
            // The playhead reached the end of the buffer some time ago; count from then.
            let overrun = playhead(started, stall_total) - buffered;
            stalled_since = Some(Instant::now() - Duration::from_secs_f64(overrun.max(0.0)));
            stalls += 1;
        }
        if playlist.ended
            && playlist
                .segments
                .last()
                .is_none_or(|s| next > Some(s.sequence))
        {
            finished = true;
            break;
        }
        let target = if playlist.target_duration > 0.0 {
            playlist.target_duration
        } else {
            2.0
        };
        let wait = if got_new { target } else { target / 2.0 };
        tokio::time::sleep(
            Duration::from_secs_f64(wait).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    if let Some(since) = stalled_since {
        let stall = since.elapsed().as_secs_f64();
        stall_total += stall;
        max_stall = max_stall.max(stall);
    }

    let mut s = summary.lock().await;
    s.viewers += 1;
    s.playlists += viewer.playlists;
    s.segments += viewer.segments;
    s.bytes += viewer.bytes;
    s.errors += viewer.errors;
    s.retried += viewer.retried;
    s.live_ended += u64::from(live_ended);
    s.stalls += stalls;
    s.stall_seconds += stall_total;
    s.max_stall_seconds = s.max_stall_seconds.max(max_stall);
    s.max_segment_gap_seconds = s.max_segment_gap_seconds.max(max_gap);
    s.skipped_segments += skipped;
    s.finished += u64::from(finished);
    s.never_started += u64::from(started.is_none());
    s.played_seconds += buffered.min(playhead(started, stall_total).max(0.0));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Arc::new(Cli::parse());
    if cli.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    let new_client = || {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cli.viewers)
            .build(connector);
        client
    };
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
    let shared = new_client();
    let summary = Arc::new(Mutex::new(Summary::default()));
    let mut tasks = Vec::with_capacity(cli.viewers);
    let step = cli.ramp / cli.viewers as u32;
    for i in 0..cli.viewers {
        let url = cli.urls[i % cli.urls.len()].clone();
        let client = if cli.own_connections {
            new_client()
        } else {
            shared.clone()
        };
        tasks.push(tokio::spawn(watch(
            client,
            url,
            cli.clone(),
            summary.clone(),
        )));
        tokio::time::sleep(step).await;
    }
    for task in tasks {
        task.await.context("viewer task panicked")?;
    }
    let summary = summary.lock().await;
    println!("{}", serde_json::to_string_pretty(&*summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_against_the_playlist() {
        let base = "http://h:1/p/s/index.m3u8";
        assert_eq!(resolve(base, "live.m3u8"), "http://h:1/p/s/live.m3u8");
        assert_eq!(resolve(base, "/x/y.m4s"), "http://h:1/x/y.m4s");
        assert_eq!(resolve(base, "http://o/z"), "http://o/z");
    }

    #[test]
    fn media_playlists_parse() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"r/init.mp4\"\n#EXTINF:2.000,\nr/000007.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:1.500,\nr/000008.m4s\n#EXT-X-ENDLIST\n";
        let p = parse_media("http://h/p/s/live.m3u8", text).unwrap();
        assert!(p.ended);
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[1].sequence, 8);
        assert_eq!(
            p.segments[1].map.as_deref(),
            Some("http://h/p/s/r/init.mp4")
        );
        assert!(parse_media("x", "garbage").is_err());
    }
}
