//! A live stream's low-latency feed inside one process: the ingest publishes each
//! codec configuration and access unit into the stream's [`FeedChannel`] as the
//! publisher sends it; a cache tier relays its parent's feed into a channel of its own.
//! Every reader — a lower tier's HTTP request, a WebRTC viewer — subscribes to the
//! channel, so however many there are, the stream is received once per process.
//!
//! A subscriber joins at the latest keyframe: the channel keeps the current
//! configurations and the access units since the last keyframe (bounded). Queues are
//! bounded too: a subscriber that falls more than [`QUEUE_ITEMS`] behind skips to the
//! next keyframe, with the configurations sent again, instead of growing a queue.
//! Each message is framed once ([`streamcdn_media::feed::encode`]) and the same bytes
//! go to every HTTP reader.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::Stream;
use streamcdn_media::feed::{self, FeedMessage};
use streamcdn_media::input::MediaInput;
use tokio::sync::broadcast::{self, error::RecvError};

/// How far a subscriber may fall behind before it skips to the next keyframe: about ten
/// seconds of 30 fps video with its audio.
pub const QUEUE_ITEMS: usize = 1024;
/// The most the kept group of pictures may hold; a longer one is dropped, and joiners
/// wait for the next keyframe.
const MAX_GOP_BYTES: usize = 32 * 1024 * 1024;

/// One message with its framed bytes, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct FeedItem(Arc<(FeedMessage, Bytes)>);

impl FeedItem {
    pub fn new(message: FeedMessage) -> Self {
        let wire = feed::encode(&message);
        Self(Arc::new((message, wire)))
    }

    pub fn message(&self) -> &FeedMessage {
        &self.0 .0
    }

    /// The framed bytes, as a feed response carries them.
    pub fn wire(&self) -> &Bytes {
        &self.0 .1
    }

    fn is_keyframe(&self) -> bool {
        matches!(self.message(), FeedMessage::Media(MediaInput::Video(f)) if f.keyframe)
    }
}

/// How a feed stopped: ended by its publisher, or cut (the publisher went away, or the
/// upstream connection broke) and possibly continued elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Ended,
    Cut,
}

#[derive(Debug, Default)]
struct Kept {
    video_config: Option<FeedItem>,
    audio_config: Option<FeedItem>,
    /// From the latest keyframe on (or every audio frame of a stream without video
    /// since the last configuration, bounded the same way).
    gop: Vec<FeedItem>,
    gop_bytes: usize,
    stopped: Option<Stopped>,
}

impl Kept {
    fn configs(&self) -> impl Iterator<Item = FeedItem> + '_ {
        self.video_config.iter().chain(&self.audio_config).cloned()
    }

    fn keep(&mut self, item: &FeedItem) {
        match item.message() {
            FeedMessage::Media(MediaInput::VideoConfig(_)) => {
                self.video_config = Some(item.clone());
                self.clear_gop();
                return;
            }
            FeedMessage::Media(MediaInput::AudioConfig(_)) => {
                self.audio_config = Some(item.clone());
                return;
            }
            FeedMessage::End => {
                self.stopped = Some(Stopped::Ended);
                return;
            }
            FeedMessage::Media(MediaInput::Video(frame)) if frame.keyframe => self.clear_gop(),
            FeedMessage::Media(MediaInput::Video(_) | MediaInput::Audio(_)) => {
                let has_video = self.video_config.is_some();
                if has_video && self.gop.is_empty() {
                    // Nothing decodable before the first keyframe.
                    return;
                }
            }
        }
        self.gop_bytes += item.wire().len();
        self.gop.push(item.clone());
        if self.gop_bytes > MAX_GOP_BYTES {
            self.clear_gop();
        }
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
    }
}

/// The fan-out of one stream's feed in this process.
#[derive(Debug)]
pub struct FeedChannel {
    kept: Mutex<Kept>,
    /// `None` tells subscribers the feed stopped (see [`Kept::stopped`]).
    sender: broadcast::Sender<Option<FeedItem>>,
}

impl Default for FeedChannel {
    fn default() -> Self {
        Self {
            kept: Mutex::new(Kept::default()),
            sender: broadcast::channel(QUEUE_ITEMS).0,
        }
    }
}

impl FeedChannel {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One input of the stream, as the publisher's front end produced it.
    pub fn publish(&self, input: &MediaInput) {
        self.send(FeedItem::new(FeedMessage::Media(input.clone())));
    }

    /// A message as it came from upstream (a relaying tier).
    pub fn send(&self, item: FeedItem) {
        let mut kept = self.kept();
        if kept.stopped.is_some() {
            return;
        }
        kept.keep(&item);
        let end = matches!(item.message(), FeedMessage::End);
        // No subscriber is not an error: nobody watches right now.
        let _ = self.sender.send(Some(item));
        if end {
            let _ = self.sender.send(None);
        }
    }

    /// The stream ended: subscribers receive the end and stop.
    pub fn end(&self) {
        self.send(FeedItem::new(FeedMessage::End));
    }

    /// The feed stops without an end (the publisher went away and may continue on
    /// another server): subscribers stop, and relays reconnect.
    pub fn cut(&self) {
        let mut kept = self.kept();
        if kept.stopped.is_none() {
            kept.stopped = Some(Stopped::Cut);
            let _ = self.sender.send(None);
        }
    }

    pub fn stopped(&self) -> Option<Stopped> {
        self.kept().stopped
    }

    /// How many subscribers read the feed now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// A reader from the latest keyframe on.
    pub fn subscribe(self: &Arc<Self>) -> FeedSubscriber {
        let kept = self.kept();
        let mut pending: VecDeque<FeedItem> = kept.configs().collect();
        pending.extend(kept.gop.iter().cloned());
        // Subscribed under the lock: nothing sent after the snapshot is missed, nothing
        // in it comes twice.
        let receiver = self.sender.subscribe();
        let stopped = kept.stopped.is_some();
        drop(kept);
        FeedSubscriber {
            channel: self.clone(),
            pending,
            receiver,
            waiting_for_keyframe: false,
            done: stopped,
            skipped: 0,
        }
    }
}

/// One reader of a [`FeedChannel`].
#[derive(Debug)]
pub struct FeedSubscriber {
    channel: Arc<FeedChannel>,
    pending: VecDeque<FeedItem>,
    receiver: broadcast::Receiver<Option<FeedItem>>,
    waiting_for_keyframe: bool,
    done: bool,
    skipped: u64,
}

impl FeedSubscriber {
    /// The next message; `None` once the feed stopped (see [`FeedChannel::stopped`]).
    pub async fn next(&mut self) -> Option<FeedItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.receiver.recv().await {
                Ok(Some(item)) => {
                    if self.waiting_for_keyframe {
                        if !item.is_keyframe() {
                            self.skipped += 1;
                            continue;
                        }
                        // The configurations may have been among what was skipped.
                        self.waiting_for_keyframe = false;
                        self.pending.extend(self.channel.kept().configs());
                    }
                    self.pending.push_back(item);
                }
                Ok(None) | Err(RecvError::Closed) => self.done = true,
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("streamcdn_feed_subscriber_skips_total").increment(1);
                    self.skipped += missed;
                    // A stream without video has no keyframes to wait for: audio goes on.
                    self.waiting_for_keyframe = self.channel.kept().video_config.is_some();
                }
            }
        }
    }

    /// Messages this subscriber skipped because it fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The feed as an HTTP response body: [`feed::MAGIC`], then each message's frame.
    pub fn into_body(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        let magic = futures::stream::once(async { Ok(Bytes::from_static(feed::MAGIC)) });
        let messages = futures::stream::unfold(self, |mut subscriber| async move {
            let item = subscriber.next().await?;
            Some((Ok(item.wire().clone()), subscriber))
        });
        futures::StreamExt::chain(magic, messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streamcdn_media::codec::AudioConfig;
    use streamcdn_media::input::{AudioFrame, VideoFrame};

    fn video(dts: i64, keyframe: bool) -> MediaInput {
        MediaInput::Video(VideoFrame {
            dts,
            composition_offset: 0,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    fn audio(pts: i64) -> MediaInput {
        MediaInput::Audio(AudioFrame {
            pts,
            data: Bytes::from_static(&[1]),
        })
    }

    fn audio_config() -> MediaInput {
        MediaInput::AudioConfig(AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap())
    }

    fn video_config_item() -> FeedItem {
        // 640x360 High-profile SPS and PPS.
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let config = streamcdn_media::codec::VideoConfig::from_parameter_sets(
            streamcdn_media::codec::VideoCodec::H264,
            &[Bytes::from_static(sps), Bytes::from_static(pps)],
        )
        .unwrap();
        FeedItem::new(FeedMessage::Media(MediaInput::VideoConfig(config)))
    }

    fn dts_of(item: &FeedItem) -> Option<i64> {
        match item.message() {
            FeedMessage::Media(MediaInput::Video(f)) => Some(f.dts),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_joiner_starts_at_the_latest_keyframe_with_the_configurations() {
        let channel = FeedChannel::new();
        channel.send(video_config_item());
        channel.publish(&audio_config());
        channel.publish(&video(0, true));
        channel.publish(&video(3000, false));
        channel.publish(&video(6000, true));
        channel.publish(&audio(6100));
        channel.publish(&video(9000, false));

        let mut joiner = channel.subscribe();
        let mut kinds = Vec::new();
        for _ in 0..5 {
            let item = joiner.next().await.unwrap();
            kinds.push(match item.message() {
                FeedMessage::Media(MediaInput::VideoConfig(_)) => "video config".to_owned(),
                FeedMessage::Media(MediaInput::AudioConfig(_)) => "audio config".to_owned(),
                FeedMessage::Media(MediaInput::Video(f)) => format!("video {}", f.dts),
                FeedMessage::Media(MediaInput::Audio(f)) => format!("audio {}", f.pts),
                FeedMessage::End => "end".to_owned(),
            });
        }
        assert_eq!(
            kinds,
            ["video config", "audio config", "video 6000", "audio 6100", "video 9000"]
        );

        channel.publish(&video(12000, false));
        assert_eq!(dts_of(&joiner.next().await.unwrap()), Some(12000));
        channel.end();
        assert!(matches!(joiner.next().await.unwrap().message(), FeedMessage::End));
        assert!(joiner.next().await.is_none());
        assert_eq!(channel.stopped(), Some(Stopped::Ended));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_skips_to_the_next_keyframe() {
        let channel = FeedChannel::new();
        channel.send(video_config_item());
        channel.publish(&video(0, true));
        let mut slow = channel.subscribe();
        assert!(slow.next().await.is_some(), "the configuration");
        // Far more than the queue holds, a keyframe every 30 frames.
        for n in 1..(QUEUE_ITEMS as i64 + 100) {
            channel.publish(&video(n * 3000, n % 30 == 0));
        }
        let mut after_skip = Vec::new();
        while let Ok(Some(item)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), slow.next()).await
        {
            after_skip.push(item);
        }
        assert!(slow.skipped() > 0, "it fell behind");
        // Whatever is read after the skip starts with the configuration and a keyframe,
        // and the frames that follow are consecutive.
        let resumed = after_skip
            .iter()
            .position(|i| matches!(i.message(), FeedMessage::Media(MediaInput::VideoConfig(_))))
            .expect("configurations sent again after the skip");
        let frames: Vec<i64> = after_skip[resumed + 1..].iter().filter_map(dts_of).collect();
        assert!(after_skip[resumed + 1].is_keyframe(), "resumes at a keyframe");
        assert!(frames.windows(2).all(|w| w[1] - w[0] == 3000), "no holes after it");
        assert_eq!(*frames.last().unwrap(), (QUEUE_ITEMS as i64 + 99) * 3000);
    }

    #[tokio::test]
    async fn a_cut_feed_stops_its_readers_without_an_end() {
        let channel = FeedChannel::new();
        channel.publish(&audio_config());
        channel.publish(&audio(0));
        let mut reader = channel.subscribe();
        assert!(reader.next().await.is_some());
        assert!(reader.next().await.is_some(), "audio without video is kept too");
        channel.cut();
        assert!(reader.next().await.is_none());
        assert_eq!(channel.stopped(), Some(Stopped::Cut));
        assert_eq!(channel.subscribers(), 1);
        drop(reader);
        assert_eq!(channel.subscribers(), 0);
    }
}
