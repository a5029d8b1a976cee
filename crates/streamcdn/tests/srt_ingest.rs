//! SRT publishing into `up` end to end, with Debian's ffmpeg (libsrt) in caller mode:
//! `up` prints the SRT publish URL beside the RTMP one; a publisher with the stream key
//! (and the provider's passphrase, where it has one) is admitted and its bytes counted;
//! a wrong key, a wrong passphrase and garbage datagrams are refused and counted, and
//! nothing is recorded for them.
//!
//! The transport itself (every byte through 2% loss and a 60 ms round trip, with
//! ffmpeg and srt-live-transmit) is tested in `crates/srt/tests/interop.rs`. Until the
//! MPEG-TS publisher lands, an admitted SRT stream is not published: see
//! `streamcdn_ingest::srt_server`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASSPHRASE: &str = "a-passphrase-for-srt";

fn ffmpeg_srt(url: &str, seconds: u32) -> Command {
    let mut ffmpeg = Command::new(tool("ffmpeg"));
    ffmpeg
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-f",
            "mpegts",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    ffmpeg
}

/// ffmpeg's stderr after a publish that must fail.
fn refused(url: &str) -> String {
    let out = ffmpeg_srt(url, 2).output().expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ffmpeg published to {url}");
    stderr
}

fn wait_metric(node: &Node, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric(name) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {} (wanted {at_least}):\n{}",
            node.metric(name),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn srt_publishers_are_admitted_or_refused_at_the_handshake_and_counted() {
    let secure = format!(
        "[[providers]]\nname = \"secure\"\nstream_key = \"{KEY}\"\nsrt_passphrase = \"{PASSPHRASE}\"\n"
    );
    let node = Node::up("srt-ingest", &secure);
    let srt = format!("srt://{}:{}", node.host, node.srt);
    let printed = format!(
        "srt://127.0.0.1:{}?streamid=#!::r=secure/mystream,m=publish,s={KEY}&passphrase={PASSPHRASE}'",
        node.srt
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log_text().contains(&printed) {
        assert!(
            Instant::now() < deadline,
            "up did not print the SRT publish URL:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The key, and for `secure` its passphrase: admitted, the bytes arrive.
    let mut publisher = ffmpeg_srt(
        &format!("{srt}?streamid=#!::r=demo/cam,m=publish,s={KEY}"),
        3,
    )
    .spawn()
    .expect("run ffmpeg");
    wait_metric(&node, "streamcdn_srt_publishers", 1.0);
    let out = publisher.wait().expect("ffmpeg");
    assert!(out.success());
    let encrypted = ffmpeg_srt(
        &format!("{srt}?streamid=secure/cam?key={KEY}&passphrase={PASSPHRASE}&pbkeylen=32"),
        2,
    )
    .output()
    .expect("run ffmpeg");
    assert!(
        encrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    wait_metric(&node, "streamcdn_srt_received_bytes_total", 100_000.0);

    // Refused at the handshake, with the reason libsrt prints.
    let wrong_key = refused(&format!(
        "{srt}?streamid=#!::r=demo/other,m=publish,s=wrong-key-123"
    ));
    assert!(wrong_key.contains("rejection reason"), "{wrong_key}");
    let wrong_passphrase = refused(&format!(
        "{srt}?streamid=secure/other?key={KEY}&passphrase=not-the-passphrase"
    ));
    assert!(
        wrong_passphrase.contains("Incorrect passphrase"),
        "{wrong_passphrase}"
    );
    let no_passphrase = refused(&format!("{srt}?streamid=secure/other?key={KEY}"));
    assert!(
        no_passphrase.contains("Password required or unexpected"),
        "{no_passphrase}"
    );
    assert_eq!(
        node.metric("streamcdn_srt_refused_total{reason=\"forbidden\"}"),
        1.0
    );
    assert_eq!(
        node.metric("streamcdn_srt_refused_total{reason=\"passphrase\"}"),
        1.0
    );
    assert_eq!(
        node.metric("streamcdn_srt_refused_total{reason=\"unsecure\"}"),
        1.0
    );

    // Garbage: datagrams too short to be SRT, counted and ignored.
    let socket = std::net::UdpSocket::bind((node.host.as_str(), 0)).unwrap();
    for len in 1..=15u8 {
        let datagram: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ len).collect();
        socket
            .send_to(&datagram, (node.host.as_str(), node.srt))
            .unwrap();
    }
    wait_metric(&node, "streamcdn_srt_garbage_packets_total", 15.0);

    for (provider, stream) in [("demo", "other"), ("secure", "other")] {
        assert!(
            node.recordings(provider, stream).is_empty(),
            "a refused publisher was recorded"
        );
    }
    // Still serving after all that.
    let again = ffmpeg_srt(&format!("{srt}?streamid=demo/cam2?key={KEY}"), 1)
        .output()
        .expect("run ffmpeg");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
