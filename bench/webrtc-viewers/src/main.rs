//! Hundreds of WebRTC viewers in one process, each a WHEP client (RFC 9725's playback
//! counterpart): a str0m peer with its own UDP socket offers to receive video and audio,
//! POSTs the offer to the edge's WHEP URL, and counts what arrives for `--seconds`.
//! Prints one JSON summary: viewers connected, frames per viewer, time to the first
//! frame, and every break in the video — a clean skip resumes at a keyframe, anything
//! else is a broken picture. A viewer that stops reading (`--stall-after`) tests the
//! edge's bound on queues. Used by the WebRTC tests and `bench/webrtc.sh`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

#[derive(Parser)]
struct Args {
    /// The WHEP URL (`http://<edge>/<provider>/<stream>/whep`).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    viewers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Viewers join over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    ramp_ms: u64,
    /// The address viewers' sockets bind to (the edge's candidates must reach it).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Stop reading media after this many seconds (a viewer that cannot keep up).
    #[arg(long)]
    stall_after: Option<u64>,
}

#[derive(Default, Serialize)]
struct Viewer {
    connected: bool,
    error: Option<String>,
    video_frames: u64,
    keyframes: u64,
    audio_frames: u64,
    bytes: u64,
    /// Video frames that did not follow the one before (lost packets, a skip).
    breaks: u64,
    /// Breaks not resumed at a keyframe: a picture the decoder cannot show right.
    broken_pictures: u64,
    /// From the POST to the first video frame.
    first_frame_ms: Option<u64>,
    /// The longest time between two video frames after the first.
    longest_gap_ms: u64,
}

#[derive(Serialize)]
struct Summary {
    viewers: usize,
    connected: usize,
    errors: Vec<String>,
    video_frames_min: u64,
    video_frames_median: u64,
    audio_frames_min: u64,
    breaks: u64,
    broken_pictures: u64,
    first_frame_ms_median: u64,
    first_frame_ms_max: u64,
    longest_gap_ms_max: u64,
    bytes: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    let args = Arc::new(args);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut tasks = Vec::new();
    for i in 0..args.viewers {
        let (args, client) = (args.clone(), client.clone());
        let delay = Duration::from_millis(args.ramp_ms * i as u64 / args.viewers.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut viewer = Viewer::default();
            if let Err(e) = watch(&args, &client, &mut viewer).await {
                viewer.error = Some(format!("{e:#}"));
            }
            viewer
        }));
    }
    let mut viewers = Vec::new();
    for task in tasks {
        viewers.push(task.await?);
    }
    println!("{}", serde_json::to_string(&summarize(&viewers))?);
    Ok(())
}

fn summarize(viewers: &[Viewer]) -> Summary {
    let median = |mut values: Vec<u64>| -> u64 {
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    };
    let connected: Vec<&Viewer> = viewers.iter().filter(|v| v.connected).collect();
    let first_frames: Vec<u64> = connected.iter().filter_map(|v| v.first_frame_ms).collect();
    Summary {
        viewers: viewers.len(),
        connected: connected.len(),
        errors: viewers.iter().filter_map(|v| v.error.clone()).collect(),
        video_frames_min: viewers.iter().map(|v| v.video_frames).min().unwrap_or(0),
        video_frames_median: median(viewers.iter().map(|v| v.video_frames).collect()),
        audio_frames_min: viewers.iter().map(|v| v.audio_frames).min().unwrap_or(0),
        breaks: viewers.iter().map(|v| v.breaks).sum(),
        broken_pictures: viewers.iter().map(|v| v.broken_pictures).sum(),
        first_frame_ms_median: median(first_frames.clone()),
        first_frame_ms_max: first_frames.iter().copied().max().unwrap_or(0),
        longest_gap_ms_max: viewers.iter().map(|v| v.longest_gap_ms).max().unwrap_or(0),
        bytes: viewers.iter().map(|v| v.bytes).sum(),
    }
}

/// One viewer: offer, answer, then media until the time is up.
async fn watch(
    args: &Args,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    viewer: &mut Viewer,
) -> Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0)).await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?)
        .ok_or_else(|| anyhow!("local candidate refused"))?;
    let mut change = rtc.sdp_api();
    let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let audio = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or_else(|| anyhow!("no offer"))?;

    let asked = Instant::now();
    let request = hyper::Request::post(&args.url)
        .header("content-type", "application/sdp")
        .body(Full::new(Bytes::from(offer.to_sdp_string())))?;
    let response = client.request(request).await.context("WHEP POST")?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != 201 {
        bail!(
            "WHEP POST answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(&body)?)?;
    rtc.sdp_api().accept_answer(pending, answer)?;

    let until = asked + Duration::from_secs(args.seconds);
    let stall_at = args.stall_after.map(|s| asked + Duration::from_secs(s));
    let mut buffer = vec![0u8; 2048];
    let mut last_video: Option<Instant> = None;
    loop {
        let wake = match rtc.poll_output()? {
            Output::Transmit(t) => {
                socket.send_to(&t.contents, t.destination).await?;
                continue;
            }
            Output::Event(event) => {
                on_event(event, video, audio, viewer, asked, &mut last_video)?;
                continue;
            }
            Output::Timeout(at) => at,
        };
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        if stall_at.is_some_and(|s| now >= s) {
            // Stops reading: the edge's queues for this viewer must not grow.
            tokio::time::sleep_until(until.into()).await;
            return Ok(());
        }
        let wake = wake.min(until);
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (n, source) = received?;
                let contents = buffer[..n].try_into()?;
                rtc.handle_input(Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source, destination: local, contents },
                ))?;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                rtc.handle_input(Input::Timeout(Instant::now()))?;
            }
        }
    }
}

fn on_event(
    event: Event,
    video: Mid,
    audio: Mid,
    viewer: &mut Viewer,
    asked: Instant,
    last_video: &mut Option<Instant>,
) -> Result<()> {
    match event {
        Event::Connected => viewer.connected = true,
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            bail!("ICE disconnected")
        }
        Event::MediaData(data) if data.mid == video => {
            let now = Instant::now();
            viewer.bytes += data.data.len() as u64;
            let keyframe = data.is_keyframe();
            if viewer.video_frames > 0 && !data.contiguous {
                viewer.breaks += 1;
                if !keyframe {
                    viewer.broken_pictures += 1;
                }
            }
            viewer.video_frames += 1;
            viewer.keyframes += u64::from(keyframe);
            viewer
                .first_frame_ms
                .get_or_insert(asked.elapsed().as_millis() as u64);
            if let Some(last) = last_video.replace(now) {
                viewer.longest_gap_ms = viewer.longest_gap_ms.max((now - last).as_millis() as u64);
            }
        }
        Event::MediaData(data) if data.mid == audio => {
            viewer.bytes += data.data.len() as u64;
            viewer.audio_frames += 1;
        }
        _ => {}
    }
    Ok(())
}
