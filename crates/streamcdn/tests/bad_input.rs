//! Hostile and broken input, each while another stream is live: the server refuses it
//! clearly, stays up, and the live stream's recording comes out whole.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use streamcdn_media::rtmp::amf0::{self, Amf0Value};
use streamcdn_media::rtmp::chunk::{self, Message};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// True when the server closes the connection (EOF or reset) within the read timeout.
fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

fn handshake(port: u16) -> TcpStream {
    let mut s = connect(port);
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).unwrap();
    assert_eq!(s0s1s2[0], 3);
    s.write_all(&s0s1s2[1..1537]).unwrap();
    s
}

fn command(values: &[Amf0Value]) -> Vec<u8> {
    let mut payload = Vec::new();
    for v in values {
        amf0::encode(v, &mut payload);
    }
    let mut out = Vec::new();
    let message = Message {
        type_id: 20,
        stream_id: 0,
        timestamp: 0,
        payload: Bytes::from(payload),
    };
    chunk::encode(3, &message, 128, &mut out);
    out
}

/// Pseudo-random bytes from a fixed seed, so a failure reproduces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_healthy(node: &Node) {
    let r = http_get(node.admin, "/healthz", &[]).expect("server must still answer");
    assert_eq!(r.status, 200);
}

#[test]
fn hostile_input_leaves_a_live_stream_unharmed() {
    let node = Node::up("bad-input", "");
    let ffmpeg = tool("ffmpeg");
    let seconds = 24;
    let main = publish(
        &ffmpeg,
        &node.publish_url("demo", "main", KEY),
        seconds,
        "h264",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, "/demo/main/live.m3u8", &[])
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "main stream never went live");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Random bytes instead of a handshake.
    let mut s = connect(node.rtmp);
    s.write_all(&noise(4096, 1)).unwrap();
    assert!(
        closed_by_server(s),
        "garbage on the RTMP port must close the connection"
    );
    // A valid handshake followed by garbage chunks.
    let mut s = handshake(node.rtmp);
    let _ = s.write_all(&noise(65536, 2));
    assert!(
        closed_by_server(s),
        "garbage chunks must close the connection"
    );
    // A truncated handshake: the server keeps waiting, then the client goes away.
    let mut s = connect(node.rtmp);
    s.write_all(&[3u8; 700]).unwrap();
    drop(s);
    // An absurd chunk size.
    let mut s = handshake(node.rtmp);
    let mut set_chunk_size = Vec::new();
    let m = Message {
        type_id: 1,
        stream_id: 0,
        timestamp: 0,
        payload: Bytes::from(0x7FFF_FFFFu32.to_be_bytes().to_vec()),
    };
    chunk::encode(2, &m, 128, &mut set_chunk_size);
    s.write_all(&set_chunk_size).unwrap();
    assert!(
        closed_by_server(s),
        "an absurd chunk size must close the connection"
    );
    // A message larger than any limit (16 MiB - 1 declared).
    let mut s = handshake(node.rtmp);
    s.write_all(&[0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0])
        .unwrap();
    let _ = s.write_all(&[0u8; 128]);
    assert!(
        closed_by_server(s),
        "an oversize message must close the connection"
    );
    // An unknown command is answered with _error and the connection stays usable.
    let mut s = handshake(node.rtmp);
    let str_ = |v: &str| Amf0Value::String(v.into());
    s.write_all(&command(&[
        str_("connect"),
        Amf0Value::Number(1.0),
        amf0::object(&[("app", str_("demo"))]),
    ]))
    .unwrap();
    s.write_all(&command(&[
        str_("launchMissiles"),
        Amf0Value::Number(5.0),
        Amf0Value::Null,
    ]))
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("NetConnection.Call.Failed") {
        let n = s
            .read(&mut buf)
            .expect("server must answer the unknown command");
        assert!(n > 0, "server closed the connection on an unknown command");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("NetConnection.Connect.Success"));
    drop(s);
    assert_healthy(&node);

    // A wrong key and a missing key are refused and nothing is recorded.
    for url in [
        node.publish_url("demo", "intruder", "not-the-key"),
        format!("rtmp://127.0.0.1:{}/demo/intruder", node.rtmp),
    ] {
        let refused = wait_output(publish(&ffmpeg, &url, 3, "h264"));
        assert!(
            !refused.status.success(),
            "a publish with a bad key must fail"
        );
    }
    assert!(
        node.recordings("demo", "intruder").is_empty(),
        "a refused publisher must record nothing"
    );
    assert!(node.log_text().contains("publish refused"));
    assert_eq!(
        node.metric("streamcdn_rtmp_publish_refused_total{reason=\"wrong_key\"}"),
        1.0
    );
    assert_eq!(
        node.metric("streamcdn_rtmp_publish_refused_total{reason=\"missing_key\"}"),
        1.0
    );

    // A second publisher on the live stream is refused.
    let duplicate = wait_output(publish(
        &ffmpeg,
        &node.publish_url("demo", "main", KEY),
        3,
        "h264",
    ));
    assert!(
        !duplicate.status.success(),
        "a duplicate publisher must be refused"
    );
    assert_eq!(
        node.metric("streamcdn_rtmp_publish_refused_total{reason=\"already_live\"}"),
        1.0
    );

    // Traversal and oversize requests on HTTP.
    for port in [node.http, node.origin] {
        for path in [
            "/demo/../../etc/passwd",
            "/demo/main/..%2f..%2fetc/passwd",
            "/../data/demo-provider.toml",
            "/demo/main/x/..",
            "/demo/main/live.m3u8/../../../x",
        ] {
            let r = http_get(port, path, &[]).unwrap();
            assert!(
                matches!(r.status, 400 | 404),
                "{path} on {port}: {}",
                r.status
            );
            assert!(!r.text().contains("root:"), "{path} leaked a file");
        }
        let big = "x".repeat(64 * 1024);
        if port == node.http {
            let r = http_get(port, "/demo/main/live.m3u8", &[("X-Big", &big)]).unwrap();
            assert_eq!(r.status, 431, "oversize headers");
        }
    }
    let r = http_request(
        node.http,
        "POST",
        "/demo/main/live.m3u8",
        &[("Content-Length", "0")],
    )
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(
        http_get(node.http, "/nobody/nothing/index.m3u8", &[])
            .unwrap()
            .status,
        404
    );
    assert_healthy(&node);

    // The live stream came through all of it whole.
    let published = wait_output(main);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let journal = node.wait_recording_state("demo", "main", "ended");
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    let decoded = decode(&node.play_url("/demo/main/index.m3u8"), &[]);
    assert!(
        decoded.video_frames.abs_diff(30 * seconds as u64) <= segments,
        "{decoded:?}"
    );
    assert!(decoded.audio_frames > 0);
}

#[test]
fn check_config_reports_line_and_key() {
    let dir = temp_dir("check-config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[rtmp]\nlisten = \"0.0.0.0:1935\"\n\n[hls]\nlive_window = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:") && err.contains("`hls.live_window`"),
        "{err}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/streamcdn.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
