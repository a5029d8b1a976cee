//! Feeds for WebRTC viewers, whose browsers hear Opus while RTMP and SRT publishers send
//! AAC: per stream, one relay of the feed whose AAC is re-encoded to Opus (video and
//! Opus audio pass as they are), shared by every WebRTC viewer of the stream on this
//! tier and dropped with the last. The encoding is ffmpeg's (its AAC decoder and
//! libopus, spawned once per stream: a Rust AAC decoder exists, but no Opus encoder
//! does outside C bindings, and ffmpeg is already what operators install for
//! thumbnails and renditions). Its Ogg output is read by `media::ogg`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamcdn_feed::{FeedChannel, FeedSubscriber};
use streamcdn_media::codec::{AudioCodec, AudioConfig};
use streamcdn_media::feed::FeedMessage;
use streamcdn_media::input::{AudioFrame, MediaInput, TIMESCALE};
use streamcdn_media::ogg::{OggOpusReader, OpusEvent};
use streamcdn_urls::StreamName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::feed::FeedRelays;
use crate::source::FetchError;

/// How long an Opus feed nobody reads stays (a viewer reconnecting).
const LINGER: Duration = Duration::from_secs(2);
/// A jump in the AAC timestamps larger than this (a gap, a publisher's restart) starts
/// the encoder again from the new time, so the Opus timestamps never drift from it.
const MAX_DRIFT_TICKS: i64 = TIMESCALE as i64 / 5;
const OPUS_RATE: i64 = 48_000;
/// What libopus puts in its header at 48 kHz (its encoder's lookahead).
const LIBOPUS_PRE_SKIP: u16 = 312;

/// The Opus channels made of `aac`'s: mono stays mono, anything else becomes stereo
/// (what WebRTC plays).
fn opus_channels(aac: &AudioConfig) -> u8 {
    aac.channels.clamp(1, 2)
}

/// Every Opus-audio feed this tier serves, by stream.
pub(crate) struct OpusFeeds {
    channels: Mutex<HashMap<StreamName, Arc<FeedChannel>>>,
    relays: Arc<FeedRelays>,
    ffmpeg: String,
}

impl OpusFeeds {
    pub(crate) fn new(relays: Arc<FeedRelays>, ffmpeg: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            relays,
            ffmpeg: ffmpeg.into(),
        })
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Arc<FeedChannel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader of `stream`'s feed with Opus audio, from its latest keyframe on.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        stream: &StreamName,
    ) -> Result<FeedSubscriber, Arc<FetchError>> {
        if let Some(channel) = self.live_channel(stream) {
            return Ok(channel.subscribe());
        }
        let upstream = self.relays.subscribe(stream).await?;
        let mut channels = self.channels();
        if let Some(channel) = channels.get(stream).filter(|c| c.stopped().is_none()) {
            return Ok(channel.subscribe());
        }
        let channel = FeedChannel::new();
        channels.insert(stream.clone(), channel.clone());
        let subscriber = channel.subscribe();
        tokio::spawn(self.clone().run(stream.clone(), upstream, channel));
        Ok(subscriber)
    }

    fn live_channel(&self, stream: &StreamName) -> Option<Arc<FeedChannel>> {
        self.channels()
            .get(stream)
            .filter(|c| c.stopped().is_none())
            .cloned()
    }

    async fn run(
        self: Arc<Self>,
        stream: StreamName,
        mut upstream: FeedSubscriber,
        channel: Arc<FeedChannel>,
    ) {
        metrics::gauge!("streamcdn_edge_opus_feeds").increment(1.0);
        let mut aac: Option<AudioConfig> = None;
        let mut encoder: Option<AacToOpus> = None;
        let mut check = tokio::time::interval(LINGER / 4);
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::select! {
                item = upstream.next() => {
                    let Some(item) = item else { break };
                    match item.message() {
                        FeedMessage::Media(MediaInput::AudioConfig(config))
                            if matches!(config.codec, AudioCodec::Aac { .. }) =>
                        {
                            // Announced at once, before the encoder's first packet, so
                            // readers' tracks start with audio and video together.
                            channel.publish(&MediaInput::AudioConfig(AudioConfig::opus(
                                opus_channels(config),
                                LIBOPUS_PRE_SKIP,
                            )));
                            aac = Some(config.clone());
                            encoder = None;
                        }
                        FeedMessage::Media(MediaInput::AudioConfig(_)) => {
                            // Opus already: passes through.
                            aac = None;
                            encoder = None;
                            channel.send(item.clone());
                        }
                        FeedMessage::Media(MediaInput::Audio(frame)) => {
                            if let Some(config) = &aac {
                                self.encode(&stream, config, &mut encoder, frame).await;
                            } else {
                                channel.send(item.clone());
                            }
                        }
                        FeedMessage::End => {
                            channel.send(item.clone());
                            break;
                        }
                        FeedMessage::Media(_) => channel.send(item.clone()),
                    }
                }
                opus = next_output(&mut encoder) => match opus {
                    Some(input) => channel.publish(&input),
                    None => {
                        tracing::warn!(stream = %stream, "the Opus encoder stopped; starting it again with the next frame");
                        encoder = None;
                    }
                },
                _ = check.tick() => {
                    if channel.subscribers() > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= LINGER {
                        let mut channels = self.channels();
                        if channel.subscribers() == 0 {
                            leave(&mut channels, &stream, &channel);
                            break;
                        }
                    }
                }
            }
        }
        leave(&mut self.channels(), &stream, &channel);
        channel.cut();
        metrics::gauge!("streamcdn_edge_opus_feeds").decrement(1.0);
    }

    /// Hands one AAC frame to the stream's encoder, started (again) when there is none
    /// or the timestamps jumped.
    async fn encode(
        &self,
        stream: &StreamName,
        config: &AudioConfig,
        encoder: &mut Option<AacToOpus>,
        frame: &AudioFrame,
    ) {
        if encoder.as_ref().is_some_and(|e| e.drifted(frame.pts)) {
            *encoder = None;
        }
        if encoder.is_none() {
            match AacToOpus::start(&self.ffmpeg, config.clone(), frame.pts) {
                Ok(started) => *encoder = Some(started),
                Err(e) => {
                    metrics::counter!("streamcdn_edge_opus_encoder_failures_total").increment(1);
                    tracing::error!(stream = %stream, error = %e, ffmpeg = self.ffmpeg, "cannot start the Opus encoder (is ffmpeg installed?); WebRTC viewers get no audio");
                    return;
                }
            }
        }
        if let Some(running) = encoder {
            if running.push(frame).await.is_err() {
                *encoder = None;
            }
        }
    }
}

fn leave(
    channels: &mut HashMap<StreamName, Arc<FeedChannel>>,
    stream: &StreamName,
    channel: &Arc<FeedChannel>,
) {
    if channels.get(stream).is_some_and(|c| Arc::ptr_eq(c, channel)) {
        channels.remove(stream);
    }
}

async fn next_output(encoder: &mut Option<AacToOpus>) -> Option<MediaInput> {
    match encoder {
        Some(encoder) => encoder.output.recv().await,
        None => std::future::pending().await,
    }
}

/// One ffmpeg re-encoding a stream's AAC (as ADTS on its stdin) to Ogg Opus (its
/// stdout), with the Opus packets put back on the stream's timeline: the first packet
/// at the first AAC frame's time, each next one after the samples before it.
struct AacToOpus {
    _child: Child,
    stdin: ChildStdin,
    output: mpsc::Receiver<MediaInput>,
    config: AudioConfig,
    started_at: i64,
    samples_in: u64,
}

impl AacToOpus {
    fn start(ffmpeg: &str, config: AudioConfig, started_at: i64) -> std::io::Result<Self> {
        let mut child = Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error"])
            .args(["-fflags", "+nobuffer", "-probesize", "32", "-analyzeduration", "0"])
            .args(["-f", "aac", "-i", "pipe:0", "-vn"])
            .args(["-c:a", "libopus", "-b:a", "96k", "-ar", "48000"])
            .args(["-ac", &opus_channels(&config).to_string()])
            .args(["-application", "lowdelay", "-frame_duration", "20"])
            // One Ogg page per packet: the default holds a second of audio per page.
            .args(["-f", "opus", "-page_duration", "20000", "-flush_packets", "1", "pipe:1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("ffmpeg without pipes"));
        };
        let (sender, output) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut reader = OggOpusReader::default();
            let mut buffer = vec![0u8; 16 * 1024];
            let (mut samples_out, mut pre_skip) = (0i64, 0i64);
            loop {
                let read = match stdout.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let Ok(events) = reader.push(&buffer[..read]) else {
                    return;
                };
                for event in events {
                    let input = match event {
                        // Announced already (see `opus_channels`); its pre-skip times
                        // the packets.
                        OpusEvent::Head { pre_skip: skip, .. } => {
                            pre_skip = i64::from(skip);
                            continue;
                        }
                        OpusEvent::Packet(data) => {
                            let samples = streamcdn_media::codec::opus_packet_samples(&data)
                                .map_or(960, i64::from);
                            // Decoded, the stream starts `pre_skip` samples in: the
                            // first packet begins that much before the first AAC frame.
                            let at = samples_out - pre_skip;
                            samples_out += samples;
                            MediaInput::Audio(AudioFrame {
                                pts: started_at + at * i64::from(TIMESCALE) / OPUS_RATE,
                                data,
                            })
                        }
                    };
                    if sender.send(input).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            _child: child,
            stdin,
            output,
            config,
            started_at,
            samples_in: 0,
        })
    }

    /// Whether `pts` is too far from where the frames so far put the next one.
    fn drifted(&self, pts: i64) -> bool {
        let rate = i64::from(self.config.sample_rate.max(1));
        let expected = self.started_at
            + i64::try_from(self.samples_in).unwrap_or(i64::MAX / 2) * i64::from(TIMESCALE) / rate;
        (pts - expected).abs() > MAX_DRIFT_TICKS
    }

    async fn push(&mut self, frame: &AudioFrame) -> std::io::Result<()> {
        let header = self
            .config
            .adts_header(frame.data.len())
            .ok_or_else(|| std::io::Error::other("AAC frame ADTS cannot carry"))?;
        self.stdin.write_all(&header).await?;
        self.stdin.write_all(&frame.data).await?;
        self.samples_in += u64::from(self.config.fixed_frame_samples().unwrap_or(1024));
        Ok(())
    }
}
