//! The recorder: a few threads that write every live stream's recording (init
//! segments, parts appended to their segment's file, each complete segment made durable
//! and listed in the journal).
//!
//! Each stream stays on one thread, so its files are written in order. Threads, not a
//! blocking-pool task per write: at 100 streams of three parts a second, each handoff
//! (waking a pool thread, then the stream's task again) cost more than the write it
//! carried, and the pool grew to dozens of threads, each with a stack and an allocator
//! arena. The threads mostly wait on storage (`fdatasync`), so a few serve many streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use streamcdn_recording::{JournalWriter, SegmentEntry};

use crate::hub::LiveStream;

/// What one stream asks its recorder thread to do, in order.
pub(crate) enum WriteJob {
    Init {
        file: String,
        bytes: Bytes,
    },
    Part {
        file: String,
        segment: u64,
        index: u32,
        bytes: Bytes,
    },
    /// The segment's parts are all sent: make it durable and list it.
    Segment(SegmentEntry),
    /// The recording ended: write the journal so, then say so on `done`.
    End {
        ended_at: String,
        done: oneshot::Sender<()>,
    },
    /// The publisher left a server being drained: the journal says interrupted (still
    /// live), then `done`.
    Interrupt {
        at: String,
        done: oneshot::Sender<()>,
    },
}

enum Message {
    Open {
        id: u64,
        writer: Box<JournalWriter>,
        stream: Arc<LiveStream>,
    },
    Job {
        id: u64,
        job: WriteJob,
    },
}

/// Jobs queued per thread before publishers wait: ~20 s of parts and segments with 100
/// streams on two threads (~175 jobs a second each); a channel allocates its slots as
/// they fill, not up front.
const QUEUE_PER_THREAD: usize = 4096;

/// The recorder threads; cloned handles share them. The threads end when the last
/// handle and every stream's [`StreamRecorder`] are gone.
#[derive(Clone)]
pub struct Recorder {
    threads: Arc<[mpsc::Sender<Message>]>,
    next_id: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts `threads` recorder threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let senders = (0..threads.max(1))
            .map(|n| {
                let (tx, rx) = mpsc::channel(QUEUE_PER_THREAD);
                std::thread::Builder::new()
                    .name(format!("recorder-{n}"))
                    .spawn(move || run(rx))?;
                Ok(tx)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            threads: senders.into(),
            next_id: Arc::default(),
        })
    }

    /// Hands a stream's journal to one of the threads.
    pub(crate) async fn open(
        &self,
        writer: JournalWriter,
        stream: Arc<LiveStream>,
    ) -> StreamRecorder {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lane = self.threads[(id % self.threads.len() as u64) as usize].clone();
        let open = Message::Open {
            id,
            writer: Box::new(writer),
            stream,
        };
        if lane.send(open).await.is_err() {
            tracing::error!("recorder thread gone; the stream is served but not recorded");
        }
        StreamRecorder { id, lane }
    }
}

/// One stream's way to its recorder thread.
pub(crate) struct StreamRecorder {
    id: u64,
    lane: mpsc::Sender<Message>,
}

impl StreamRecorder {
    /// Queues `job`, waiting while the thread is a queue behind (storage slower than
    /// the streams). False if the thread is gone.
    pub(crate) async fn send(&self, job: WriteJob) -> bool {
        let id = self.id;
        self.lane.send(Message::Job { id, job }).await.is_ok()
    }

    /// [`Self::send`] without waiting, for a publisher dropped mid-stream.
    pub(crate) fn try_send(&self, job: WriteJob) -> bool {
        let id = self.id;
        self.lane.try_send(Message::Job { id, job }).is_ok()
    }
}

/// While jobs keep coming, a thread takes what queued up once per tick instead of
/// being woken for each; an idle thread sleeps until the next job.
const TICK: Duration = Duration::from_millis(10);

fn run(mut messages: mpsc::Receiver<Message>) {
    let mut streams: HashMap<u64, (Box<JournalWriter>, Arc<LiveStream>)> = HashMap::new();
    let mut busy = false;
    loop {
        let message = match messages.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if busy => {
                busy = false;
                std::thread::sleep(TICK);
                continue;
            }
            Err(TryRecvError::Empty) => match messages.blocking_recv() {
                Some(message) => message,
                None => break,
            },
        };
        busy = true;
        match message {
            Message::Open { id, writer, stream } => {
                streams.insert(id, (writer, stream));
            }
            Message::Job { id, job } => {
                let ended = matches!(job, WriteJob::End { .. } | WriteJob::Interrupt { .. });
                if let Some((writer, stream)) = streams.get_mut(&id) {
                    write(writer, stream, job);
                }
                if ended {
                    streams.remove(&id);
                }
            }
        }
    }
}

fn write(writer: &mut JournalWriter, stream: &Arc<LiveStream>, job: WriteJob) {
    let header = writer.header();
    if header.codecs.is_empty() || header.frame_rate.is_none() {
        let (codecs, resolution, fps) =
            stream.with_recording(|r| (r.codecs.clone(), r.resolution, r.frame_rate));
        header.codecs = codecs;
        header.resolution = resolution;
        header.frame_rate = fps;
    }
    let result = match job {
        WriteJob::Init { file, bytes } => writer
            .add_init(&file, &bytes)
            .map(|()| stream.release_object(&file)),
        WriteJob::Part {
            file,
            segment,
            index,
            bytes,
        } => writer
            .append_part(&file, &bytes)
            .map(|()| stream.part_written(segment, index)),
        WriteJob::Segment(entry) => {
            let size = entry.bytes;
            writer.add_written_segment(entry).map(|()| {
                metrics::counter!("streamcdn_ingest_segments_recorded_total").increment(1);
                metrics::counter!("streamcdn_ingest_recorded_bytes_total").increment(size);
            })
        }
        WriteJob::End { ended_at, done } => {
            let result = writer.end(ended_at);
            // Written as far as storage allowed: the stream is served from there now.
            stream.retire();
            let _ = done.send(());
            result
        }
        WriteJob::Interrupt { at, done } => {
            let result = writer.interrupt(at);
            stream.retire();
            let _ = done.send(());
            result
        }
    };
    if let Err(e) = result {
        metrics::counter!("streamcdn_ingest_record_errors_total").increment(1);
        tracing::error!(dir = %writer.dir().display(), error = %e, "recording write failed");
    }
}
