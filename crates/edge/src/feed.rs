//! Low-latency feeds through the tiers: one upstream connection per stream however many
//! readers this tier has (lower tiers' feed requests, WebRTC viewers), relayed into a
//! [`FeedChannel`] that fans it out in memory and keeps the latest keyframe for
//! joiners. The relay follows the stream: when its upstream breaks (the ingest was
//! drained or died) it asks where the stream is now and reconnects within
//! [`RESUME_WINDOW`], its readers waiting meanwhile; it stops once its last reader has
//! left for [`LINGER`], or the stream ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use streamcdn_feed::{FeedChannel, FeedItem, FeedSubscriber};
use streamcdn_media::feed::{FeedDecoder, FeedMessage};
use streamcdn_urls::StreamName;
use tokio::sync::watch;

use crate::source::{FeedBody, FetchError, Source};

/// How long a broken feed is retried before its readers are let go: as long as a
/// publisher usually takes to reconnect to another server.
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);
/// How long a relay nobody reads stays connected (a viewer reloading its page).
const LINGER: Duration = Duration::from_secs(2);
/// How long a reader waits for the first upstream connection (registry lookup
/// included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
enum Connection {
    Connecting,
    Streaming,
    /// The first connection failed: readers get the reason.
    Failed(Arc<FetchError>),
}

struct Relay {
    channel: Arc<FeedChannel>,
    connection: watch::Receiver<Connection>,
}

/// Every feed this tier relays, by stream.
pub(crate) struct FeedRelays {
    relays: Mutex<HashMap<StreamName, Relay>>,
    source: Arc<dyn Source>,
}

impl FeedRelays {
    pub(crate) fn new(source: Arc<dyn Source>) -> Arc<Self> {
        Arc::new(Self {
            relays: Mutex::new(HashMap::new()),
            source,
        })
    }

    fn relays(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Relay>> {
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader of `stream`'s feed from its latest keyframe on, once the upstream
    /// answered; the upstream's refusal (`404`: not live) otherwise.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        stream: &StreamName,
    ) -> Result<FeedSubscriber, Arc<FetchError>> {
        let (subscriber, mut connection) = {
            let mut relays = self.relays();
            let relay = relays.entry(stream.clone()).or_insert_with(|| {
                let channel = FeedChannel::new();
                let (state, connection) = watch::channel(Connection::Connecting);
                let task = RelayTask {
                    relays: self.clone(),
                    stream: stream.clone(),
                    channel: channel.clone(),
                    state,
                };
                tokio::spawn(task.run());
                Relay {
                    channel,
                    connection,
                }
            });
            (relay.channel.subscribe(), relay.connection.clone())
        };
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connection.wait_for(|c| !matches!(c, Connection::Connecting)),
        )
        .await;
        match connected {
            Ok(Ok(state)) => match &*state {
                Connection::Failed(e) => Err(e.clone()),
                _ => Ok(subscriber),
            },
            Ok(Err(_)) => Err(Arc::new(FetchError::Unreachable("feed relay stopped".into()))),
            Err(_) => Err(Arc::new(FetchError::Timeout)),
        }
    }

    /// How many streams this tier relays now.
    pub(crate) fn len(&self) -> usize {
        self.relays().len()
    }
}

struct RelayTask {
    relays: Arc<FeedRelays>,
    stream: StreamName,
    channel: Arc<FeedChannel>,
    state: watch::Sender<Connection>,
}

enum Pulled {
    Ended,
    /// Nobody reads any more.
    Abandoned,
    Broken(String),
}

impl RelayTask {
    async fn run(self) {
        metrics::gauge!("streamcdn_feed_relays").increment(1.0);
        let mut streamed = false;
        let mut broken_since: Option<Instant> = None;
        let mut retry_in = RETRY_MIN;
        loop {
            let retry = broken_since.is_some();
            match self.relays.source.open_feed(&self.stream, retry).await {
                Ok(body) => {
                    metrics::counter!("streamcdn_feed_upstream_connects_total", "outcome" => "ok")
                        .increment(1);
                    streamed = true;
                    retry_in = RETRY_MIN;
                    self.state.send_replace(Connection::Streaming);
                    match self.pull(body).await {
                        Pulled::Ended => {
                            self.channel.end();
                            break;
                        }
                        Pulled::Abandoned => break,
                        Pulled::Broken(why) => {
                            tracing::info!(stream = %self.stream, why, "feed upstream broke; finding where the stream is now");
                            broken_since = Some(Instant::now());
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("streamcdn_feed_upstream_connects_total", "outcome" => "failed")
                        .increment(1);
                    if !streamed {
                        self.state.send_replace(Connection::Failed(Arc::new(e)));
                        break;
                    }
                    let since = *broken_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RESUME_WINDOW || self.abandoned() {
                        tracing::info!(stream = %self.stream, error = %e, "feed not resumed; its readers are let go");
                        break;
                    }
                }
            }
            tokio::time::sleep(retry_in).await;
            retry_in = (retry_in * 2).min(RETRY_MAX);
        }
        // Gone from the table first, so no reader joins a channel that is about to stop.
        self.leave(&mut self.relays.relays());
        self.channel.cut();
        metrics::gauge!("streamcdn_feed_relays").decrement(1.0);
    }

    /// Nobody reads, checked under the table's lock (readers subscribe under it), and
    /// the relay leaves the table at once if so.
    fn abandoned(&self) -> bool {
        let mut relays = self.relays.relays();
        let idle = self.channel.subscribers() == 0;
        if idle {
            self.leave(&mut relays);
        }
        idle
    }

    /// Removes this relay from the table, unless a newer one for the stream took its
    /// place.
    fn leave(&self, relays: &mut HashMap<StreamName, Relay>) {
        if relays
            .get(&self.stream)
            .is_some_and(|r| Arc::ptr_eq(&r.channel, &self.channel))
        {
            relays.remove(&self.stream);
        }
    }

    async fn pull(&self, mut body: FeedBody) -> Pulled {
        let mut decoder = FeedDecoder::default();
        let mut idle_since: Option<Instant> = None;
        let mut check = tokio::time::interval(LINGER / 4);
        loop {
            tokio::select! {
                chunk = body.next() => {
                    let chunk = match chunk {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => return Pulled::Broken(e),
                        None => return Pulled::Broken("upstream closed the feed".into()),
                    };
                    let messages = match decoder.push(&chunk) {
                        Ok(messages) => messages,
                        Err(e) => return Pulled::Broken(e.to_string()),
                    };
                    for message in messages {
                        if message == FeedMessage::End {
                            return Pulled::Ended;
                        }
                        self.channel.send(FeedItem::new(message));
                    }
                }
                _ = check.tick() => {
                    if self.channel.subscribers() > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= LINGER
                        && self.abandoned()
                    {
                        return Pulled::Abandoned;
                    }
                }
            }
        }
    }
}
