//! Pictures of streams: `/<p>/<s>/thumbnail.jpg` (the live stream's latest keyframe)
//! and `/<p>/<s>/<rec>/poster.jpg` (a recording's first keyframe), as JPEG.
//!
//! A keyframe is decoded by the ffmpeg CLI, spawned with the init segment and the
//! keyframe's fragment on its stdin (`-frames:v 1 -f image2 -c:v mjpeg pipe:1`), within
//! [`TIMEOUT`] and at most [`CONCURRENT`] at a time. Why a child process rather than a
//! decoding library: decoding H.264/HEVC needs libavcodec (or an equivalent C decoder)
//! either way, and linking it (the `ffmpeg-next` bindings) would make every build need
//! FFmpeg's development headers and tie a decoder crash to the ingest serving live
//! streams; a child process costs ~20 ms of start-up a picture, crashes alone, is killed
//! on a timeout, and ffmpeg is already what publishes in every test. One picture per
//! keyframe: each is made once and kept ([`Pictures`]), so N viewers (or edges) asking
//! for a stream's thumbnail within its freshness spawn one ffmpeg.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};

/// Longest an ffmpeg decode may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// ffmpeg processes at once, per server.
pub const CONCURRENT: usize = 2;
/// How long a live thumbnail is served (`max-age`, so edges cache it as long) before a
/// newer keyframe is looked for.
pub const THUMBNAIL_FRESH: Duration = Duration::from_secs(2);
/// Pictures kept in memory, newest first (live thumbnails and posters together).
const KEPT: usize = 256;

#[derive(Debug, Clone, Error)]
pub enum PictureError {
    #[error("ffmpeg is needed for pictures and could not be run ({0}); install it (apt-get install ffmpeg) or set STREAMCDN_FFMPEG")]
    NoFfmpeg(String),
    #[error("ffmpeg took longer than {0:?}")]
    Timeout(Duration),
    #[error("ffmpeg could not decode the keyframe: {0}")]
    Decode(String),
    #[error("too many pictures being made; try again")]
    Busy,
}

/// What to decode: the container's bytes, an init segment first for fMP4.
pub struct Keyframe {
    pub mpegts: bool,
    pub bytes: Vec<Bytes>,
}

/// A picture, once made (or why not).
type Made = OnceCell<Result<Bytes, PictureError>>;

/// One picture per key (a keyframe's identity), made once however many ask at once.
pub struct Pictures {
    ffmpeg: PathBuf,
    permits: Semaphore,
    made: Mutex<Vec<(String, Arc<Made>)>>,
}

impl Default for Pictures {
    fn default() -> Self {
        Self::new(
            std::env::var_os("STREAMCDN_FFMPEG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("ffmpeg")),
        )
    }
}

impl Pictures {
    pub fn new(ffmpeg: PathBuf) -> Self {
        Self {
            ffmpeg,
            permits: Semaphore::new(CONCURRENT),
            made: Mutex::new(Vec::new()),
        }
    }

    /// The picture of the keyframe `key` names, made from what `keyframe` gives (only
    /// called if no picture of `key` exists or is being made).
    pub async fn get<F, Fut>(&self, key: &str, keyframe: F) -> Result<Bytes, PictureError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Keyframe>>,
    {
        let cell = {
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            match made.iter().find(|(k, _)| k == key) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    made.insert(0, (key.to_owned(), cell.clone()));
                    made.truncate(KEPT);
                    cell
                }
            }
        };
        let result = cell
            .get_or_init(|| async {
                let Some(keyframe) = keyframe().await else {
                    return Err(PictureError::Decode("no keyframe".into()));
                };
                let permit = tokio::time::timeout(TIMEOUT, self.permits.acquire())
                    .await
                    .map_err(|_| PictureError::Busy)?
                    .map_err(|_| PictureError::Busy)?;
                let ffmpeg = self.ffmpeg.clone();
                let made = tokio::task::spawn_blocking(move || decode(&ffmpeg, keyframe))
                    .await
                    .unwrap_or_else(|e| Err(PictureError::Decode(e.to_string())));
                drop(permit);
                metrics::counter!("streamcdn_pictures_made_total", "result" => if made.is_ok() { "ok" } else { "error" })
                    .increment(1);
                made
            })
            .await
            .clone();
        if result.is_err() {
            // Failures are not kept: the next request tries again.
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            made.retain(|(k, c)| k != key || !Arc::ptr_eq(c, &cell));
        }
        result
    }
}

/// Runs ffmpeg over `keyframe` (blocking): the first video frame as JPEG.
fn decode(ffmpeg: &std::path::Path, keyframe: Keyframe) -> Result<Bytes, PictureError> {
    let format = if keyframe.mpegts { "mpegts" } else { "mp4" };
    let mut child = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-nostdin",
            "-f",
            format,
            "-i",
            "pipe:0",
        ])
        .args([
            "-frames:v",
            "1",
            "-an",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "-q:v",
            "3",
        ])
        .arg("pipe:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PictureError::NoFfmpeg(e.to_string()))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(PictureError::Decode("no pipes".into()));
    };
    // Input, output and errors each on a thread of their own, so none blocks another;
    // this thread waits for the output within the timeout.
    let writer = std::thread::spawn(move || {
        for piece in &keyframe.bytes {
            if stdin.write_all(piece).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out).map(|_| out);
        let _ = sender.send(read);
    });
    let output = receiver.recv_timeout(TIMEOUT);
    if output.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let _ = writer.join();
    let errors = errors.join().unwrap_or_default();
    match (output, status) {
        (Ok(Ok(jpeg)), Ok(status)) if status.success() && jpeg.starts_with(&[0xff, 0xd8]) => {
            Ok(Bytes::from(jpeg))
        }
        (Err(_), _) => Err(PictureError::Timeout(TIMEOUT)),
        _ => Err(PictureError::Decode(errors.trim().to_owned())),
    }
}

/// The key of a picture: the keyframe's recording, segment and part (a newer keyframe
/// is a new key).
pub fn thumbnail_key(recording: &str, segment: u64, part: u32) -> String {
    format!("{recording}/{segment}.{part}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_ffmpeg_is_an_error_that_says_how_to_install_it() {
        let pictures = Pictures::new(PathBuf::from("/nonexistent/ffmpeg"));
        let error = pictures
            .get("k", || async {
                Some(Keyframe {
                    mpegts: false,
                    bytes: vec![Bytes::from_static(b"not mp4")],
                })
            })
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("apt-get install ffmpeg"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn one_picture_per_key_however_many_ask() {
        let pictures = Pictures::new(PathBuf::from("/nonexistent/ffmpeg"));
        let asked = std::sync::atomic::AtomicUsize::new(0);
        // The keyframe takes a moment to read: the second request comes meanwhile.
        let ask = || async {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        };
        let (a, b) = tokio::join!(pictures.get("k", ask), pictures.get("k", ask));
        assert!(a.is_err() && b.is_err());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
