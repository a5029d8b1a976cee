//! `rtmp-load`: benchmark publisher. Replays a pre-encoded FLV file over RTMP in real
//! time, on many connections from one process (so the load generator costs little next
//! to the server under test), against streamcdn or nginx-rtmp alike.
//!
//! `publish`: N concurrent publishers for S seconds.
//! `delay`: one publisher; after the last frame of each segment is sent, polls the
//! segment's URL until it is served, and prints the delay distribution.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use streamcdn_media::rtmp::amf0::{self, Amf0Value};
use streamcdn_media::rtmp::chunk::{self, ChunkDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Publish {
        /// rtmp://host:port/app/stream?query; stream i publishes as `stream-i`.
        #[arg(long)]
        url: String,
        #[arg(long)]
        flv: String,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Spread the publishers' starts evenly over this many seconds, so their
        /// keyframes (and segment cuts) do not all fall on the same instant, as with
        /// independent encoders.
        #[arg(long, default_value_t = 0.0)]
        ramp_seconds: f64,
    },
    Delay {
        #[arg(long)]
        url: String,
        #[arg(long)]
        flv: String,
        #[arg(long, default_value_t = 40)]
        seconds: u64,
        /// Segment URL with `{n}` for the segment number (and `{rec}` for streamcdn's
        /// recording id, looked up at `--recordings-url`).
        #[arg(long)]
        segment_url: String,
        /// Number of the first segment the server writes.
        #[arg(long, default_value_t = 0)]
        first: u64,
        #[arg(long)]
        recordings_url: Option<String>,
        /// Pad `{n}` with zeros to this width.
        #[arg(long, default_value_t = 0)]
        width: usize,
    },
}

struct Tag {
    video: bool,
    timestamp: u32,
    keyframe: bool,
    data: Bytes,
}

fn read_flv(path: &str) -> anyhow::Result<(Vec<Tag>, u32)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    if bytes.len() < 13 || &bytes[..3] != b"FLV" {
        bail!("{path} is not an FLV file");
    }
    let mut pos = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= bytes.len() {
        let h = &bytes[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let Some(data) = bytes.get(pos + 11..pos + 11 + size) else {
            break;
        };
        if h[0] == 8 || h[0] == 9 {
            tags.push(Tag {
                video: h[0] == 9,
                timestamp,
                keyframe: h[0] == 9 && data.first().is_some_and(|b| b >> 4 == 1),
                data: Bytes::copy_from_slice(data),
            });
        }
        pos += 11 + size + 4;
    }
    let duration = tags.last().map_or(0, |t| t.timestamp) + 33;
    Ok((tags, duration))
}

struct Target {
    addr: String,
    app: String,
    name: String,
    tc_url: String,
}

fn parse_url(url: &str, index: Option<usize>) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("rtmp://")
        .context("URL must start with rtmp://")?;
    let (addr, path) = rest.split_once('/').context("URL needs /app/stream")?;
    let (app, name) = path.split_once('/').context("URL needs /app/stream")?;
    let name = match index {
        Some(i) => match name.split_once('?') {
            Some((stream, query)) => format!("{stream}-{i}?{query}"),
            None => format!("{name}-{i}"),
        },
        None => name.to_owned(),
    };
    Ok(Target {
        addr: addr.to_owned(),
        app: app.to_owned(),
        name,
        tc_url: format!("rtmp://{addr}/{app}"),
    })
}

fn command(values: &[Amf0Value], stream_id: u32, out: &mut Vec<u8>) {
    let mut payload = Vec::new();
    for v in values {
        amf0::encode(v, &mut payload);
    }
    let m = Message {
        type_id: 20,
        stream_id,
        timestamp: 0,
        payload: payload.into(),
    };
    chunk::encode(3, &m, 4096, out);
}

/// Reads messages until one whose payload mentions `needle`.
async fn wait_for(
    read: &mut OwnedReadHalf,
    decoder: &mut ChunkDecoder,
    buf: &mut BytesMut,
    needle: &str,
) -> anyhow::Result<Message> {
    loop {
        while let Some(m) = decoder.decode(buf)? {
            if m.type_id == 1 && m.payload.len() >= 4 {
                decoder.set_chunk_size(u32::from_be_bytes([
                    m.payload[0],
                    m.payload[1],
                    m.payload[2],
                    m.payload[3],
                ]))?;
            }
            if m.payload
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                return Ok(m);
            }
        }
        let mut tmp = [0u8; 16384];
        let n = read.read(&mut tmp).await?;
        if n == 0 {
            bail!("server closed the connection waiting for {needle}");
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn connect(target: &Target) -> anyhow::Result<(OwnedWriteHalf, tokio::task::JoinHandle<()>)> {
    let stream = TcpStream::connect(&target.addr).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 8]);
    c0c1.extend((0..1528).map(|i| (i * 7) as u8));
    write.write_all(&c0c1).await?;
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    read.read_exact(&mut s0s1s2).await?;
    write.write_all(&s0s1s2[1..1537]).await?;

    let mut out = Vec::new();
    let m = Message {
        type_id: 1,
        stream_id: 0,
        timestamp: 0,
        payload: Bytes::from(4096u32.to_be_bytes().to_vec()),
    };
    chunk::encode(2, &m, 128, &mut out);
    let s = |v: &str| Amf0Value::String(v.into());
    command(
        &[
            s("connect"),
            Amf0Value::Number(1.0),
            amf0::object(&[
                ("app", s(&target.app)),
                ("type", s("nonprivate")),
                ("tcUrl", s(&target.tc_url)),
            ]),
        ],
        0,
        &mut out,
    );
    write.write_all(&out).await?;
    let (mut decoder, mut buf) = (ChunkDecoder::new(16 << 20), BytesMut::new());
    wait_for(
        &mut read,
        &mut decoder,
        &mut buf,
        "NetConnection.Connect.Success",
    )
    .await?;
    let mut out = Vec::new();
    command(
        &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        0,
        &mut out,
    );
    write.write_all(&out).await?;
    wait_for(&mut read, &mut decoder, &mut buf, "_result").await?;
    let mut out = Vec::new();
    command(
        &[
            s("publish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            s(&target.name),
            s("live"),
        ],
        1,
        &mut out,
    );
    write.write_all(&out).await?;
    wait_for(&mut read, &mut decoder, &mut buf, "NetStream.Publish.Start").await?;
    // Drain whatever the server sends from now on (acknowledgements).
    let drain = tokio::spawn(async move {
        let mut tmp = vec![0u8; 4096];
        while matches!(read.read(&mut tmp).await, Ok(n) if n > 0) {}
    });
    Ok((write, drain))
}

/// Sends the file's tags at their timestamps, looping, for `seconds`; calls `on_tag`
/// after each tag is written with (tag, absolute timestamp).
async fn replay(
    write: &mut OwnedWriteHalf,
    tags: &[Tag],
    loop_ms: u32,
    seconds: u64,
    mut on_tag: impl FnMut(&Tag, u32, Instant),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(1 << 20);
    for round in 0u32.. {
        for (i, tag) in tags.iter().enumerate() {
            let is_config = tag.data.get(1) == Some(&0);
            if round > 0 && i < 4 && is_config {
                continue;
            }
            let ts = round * loop_ms + tag.timestamp;
            if u64::from(ts) >= seconds * 1000 {
                return Ok(());
            }
            let due = start + Duration::from_millis(u64::from(ts));
            tokio::time::sleep_until(due.into()).await;
            out.clear();
            let m = Message {
                type_id: if tag.video { 9 } else { 8 },
                stream_id: 1,
                timestamp: ts,
                payload: tag.data.clone(),
            };
            chunk::encode(if tag.video { 6 } else { 4 }, &m, 4096, &mut out);
            write.write_all(&out).await?;
            on_tag(tag, ts, Instant::now());
        }
    }
    Ok(())
}

async fn http_status(url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(host).await?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).await?;
    let status = std::str::from_utf8(response.get(9..12).unwrap_or_default())?.parse()?;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(Vec::new(), |p| response[p + 4..].to_vec());
    Ok((status, body))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Publish {
            url,
            flv,
            streams,
            seconds,
            ramp_seconds,
        } => {
            let (tags, loop_ms) = read_flv(&flv)?;
            let tags = std::sync::Arc::new(tags);
            let mut tasks = tokio::task::JoinSet::new();
            let stagger = Duration::from_secs_f64(ramp_seconds.max(0.0) / streams.max(1) as f64);
            for i in 0..streams {
                let target = parse_url(&url, Some(i))?;
                let tags = tags.clone();
                let delay = stagger * i as u32;
                tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let (mut write, drain) = connect(&target).await?;
                    replay(&mut write, &tags, loop_ms, seconds, |_, _, _| {}).await?;
                    drop(write);
                    drain.abort();
                    anyhow::Ok(())
                });
            }
            let mut failed = 0;
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r? {
                    eprintln!("publisher failed: {e:#}");
                    failed += 1;
                }
            }
            println!("{streams} publishers done, {failed} failed");
            if failed > 0 {
                bail!("{failed} publishers failed");
            }
        }
        Cmd::Delay {
            url,
            flv,
            seconds,
            segment_url,
            first,
            recordings_url,
            width,
        } => {
            let (tags, loop_ms) = read_flv(&flv)?;
            let target = parse_url(&url, None)?;
            let (mut write, _drain) = connect(&target).await?;
            // Segment k is complete when the keyframe opening segment k+1 arrives; its
            // last frame is the video frame sent just before that keyframe.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
            let publisher = tokio::spawn(async move {
                let mut last_video_sent = None;
                let mut keyframes = 0u64;
                let mut last_cut_ts = 0u32;
                replay(&mut write, &tags, loop_ms, seconds, |tag, ts, now| {
                    if !tag.video || tag.data.get(1) == Some(&0) {
                        return;
                    }
                    if tag.keyframe {
                        keyframes += 1;
                        if keyframes > 1 && ts - last_cut_ts >= 1800 {
                            if let Some(sent) = last_video_sent {
                                let _ = tx.send((keyframes, sent));
                            }
                        }
                        if keyframes == 1 || ts - last_cut_ts >= 1800 {
                            last_cut_ts = ts;
                        }
                    }
                    last_video_sent = Some(now);
                })
                .await
            });
            let mut recording = None;
            let mut delays = Vec::new();
            let mut segment = first;
            while let Some((_, sent)) = rx.recv().await {
                if recording.is_none() {
                    if let Some(url) = &recordings_url {
                        let (_, body) = http_status(url).await?;
                        let text = String::from_utf8_lossy(&body);
                        recording = text
                            .rsplit("\"recording_id\":\"")
                            .next()
                            .and_then(|s| s.split('"').next())
                            .map(str::to_owned);
                    }
                }
                let n = format!("{segment:0width$}");
                let url = segment_url
                    .replace("{n}", &n)
                    .replace("{rec}", recording.as_deref().unwrap_or(""));
                let deadline = sent + Duration::from_secs(5);
                loop {
                    if http_status(&url).await.is_ok_and(|(s, _)| s == 200) {
                        delays.push(sent.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    if Instant::now() > deadline {
                        eprintln!("segment {n} not served within 5 s ({url})");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                segment += 1;
            }
            publisher.await??;
            // The first segment waits for the recording id lookup; leave it out.
            let mut delays: Vec<f64> = delays.into_iter().skip(1).collect();
            if delays.is_empty() {
                bail!("no segment was observed");
            }
            delays.sort_by(f64::total_cmp);
            let pct = |p: f64| delays[((delays.len() - 1) as f64 * p).round() as usize];
            println!(
                "segments={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
                delays.len(),
                pct(0.5),
                pct(0.9),
                pct(0.99),
                delays[delays.len() - 1]
            );
        }
    }
    Ok(())
}
