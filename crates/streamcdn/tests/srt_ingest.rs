//! SRT publishing into `up` end to end, with Debian's ffmpeg (libsrt) in caller mode:
//! `up` prints the SRT publish URL beside the RTMP one; a publisher with the stream key
//! (and the provider's passphrase, where it has one) is admitted and its bytes counted;
//! a wrong key, a wrong passphrase and garbage datagrams are refused and counted, and
//! nothing is recorded for them.
//!
//! Through a relay dropping 2% of datagrams each way with a 60 ms round trip, an SRT
//! publisher's stream plays live and its recording decodes to every published frame.
//! Through the WAN emulator (60 ms round trip, 2% loss), `srt-live-transmit` relays a TS
//! file to the router's ingest name, resolved through the router, and the recording
//! decodes to every frame of the file.
//!
//! The transport alone (every byte, with ffmpeg and srt-live-transmit) is tested in
//! `crates/srt/tests/interop.rs`.

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

/// A delay line: datagrams leave through `send` in arrival order once due.
fn delay_line(
    send: impl Fn(&[u8]) + Send + 'static,
) -> std::sync::mpsc::Sender<(Instant, Vec<u8>)> {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (due, datagram) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            send(&datagram);
        }
    });
    tx
}

/// A UDP relay to `target` on its own port that drops `loss` of the datagrams each way
/// (xorshift seeded with `seed`, printed) and delays each way by `one_way`; one client.
fn lossy_relay(target: std::net::SocketAddr, loss: f64, one_way: Duration, seed: u64) -> u16 {
    use std::net::UdpSocket;
    use std::sync::{Arc, Mutex};
    eprintln!("relay: loss {loss}, one way {one_way:?}, seed {seed}");
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    back.connect(target).unwrap();
    let port = front.local_addr().unwrap().port();
    let rng = Arc::new(Mutex::new(seed | 1));
    let keep = move || {
        let mut x = rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x % 1_000_000) as f64 >= loss * 1_000_000.0
    };
    let client = Arc::new(Mutex::new(None));
    let to_server = {
        let back = back.clone();
        delay_line(move |d| drop(back.send(d)))
    };
    let to_client = {
        let (front, client) = (front.clone(), client.clone());
        delay_line(move |d| {
            if let Some(to) = *client.lock().unwrap() {
                let _ = front.send_to(d, to);
            }
        })
    };
    {
        let (keep, client) = (keep.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                *client.lock().unwrap() = Some(from);
                if keep()
                    && to_server
                        .send((Instant::now() + one_way, buf[..n].to_vec()))
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = back.recv(&mut buf) {
            if keep()
                && to_client
                    .send((Instant::now() + one_way, buf[..n].to_vec()))
                    .is_err()
            {
                return;
            }
        }
    });
    port
}

#[test]
fn srt_through_loss_plays_live_and_is_recorded_whole() {
    const SECONDS: u64 = 8;
    let node = Node::up("srt-recorded", "");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let target = format!("{}:{}", node.host, node.srt).parse().unwrap();
    let port = lossy_relay(target, 0.02, Duration::from_millis(30), seed);
    let publisher = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &SECONDS.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-keyint_min", "60"])
        .args(["-sc_threshold", "0", "-b:v", "1M", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
        .arg(format!(
            "srt://127.0.0.1:{port}?streamid=#!::r=demo/cam,m=publish,s={KEY}&latency=400000&linger=5"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, "/demo/cam/live.m3u8", &[]).map_or(true, |r| r.status != 200) {
        assert!(
            Instant::now() < deadline,
            "never live:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let live_url = node.play_url("/demo/cam/index.m3u8");
    let live_player = std::thread::spawn(move || decode(&live_url, &["-live_start_index", "0"]));
    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    node.wait_recording_state("demo", "cam", "ended");
    let live = live_player.join().unwrap();
    assert!(live.video_frames > 0 && live.audio_frames > 0, "{live:?}");
    let recorded = decode(&node.play_url("/demo/cam/index.m3u8"), &[]);
    assert_eq!(recorded.video_frames, 30 * SECONDS, "{recorded:?}");
    assert!(
        node.metric("streamcdn_srt_retransmitted_packets_total") > 0.0,
        "nothing was lost and recovered"
    );
}

/// A pipeline started in its own process group, ended (SIGTERM to the group) when
/// dropped, even when the test fails: killing the shell alone would leave it running.
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Through the WAN emulator (60 ms round trip, 2% loss each way between the encoder's
/// site and the ingest's), `srt-live-transmit` relays a TS file to the one publishing
/// address, the router's ingest name, which the encoder's site resolves through the
/// router; the recording decodes to every frame of the file.
#[test]
fn srt_live_transmit_through_the_wan_to_the_ingest_name_is_recorded_whole() {
    use common::sites::{wait_until, Sites};
    const CORE: &str = "127.74.0.1";
    const ROUTER: &str = "127.74.0.2";
    const ENCODER: &str = "127.74.1.1";
    let transmit = tool_or("srt-live-transmit", "apt-get install srt-tools");
    let mut sites = Sites::start(
        "srt-wan",
        &[
            ("core", &[CORE]),
            ("router", &[ROUTER]),
            ("encoder", &[ENCODER]),
        ],
        &[("encoder", "core", 60)],
        ROUTER,
        ("core", CORE),
    );
    sites
        .wan
        .set(serde_json::json!({"from": "encoder", "to": "core", "loss": 0.02}));
    sites.spawn(
        "router",
        "router",
        ROUTER,
        &format!("[router]\ndns_listen = \"{ROUTER}:53\"\nhttp_listen = \"{ROUTER}:8082\"\n"),
    );
    sites.spawn("core", "ingest", CORE, "");
    wait_until(Duration::from_secs(20), "the ingest name", || {
        let answer = sites.dig("encoder", ROUTER, "ingest.streamcdn.test");
        if answer == CORE {
            Ok(())
        } else {
            Err(answer)
        }
    });

    // The file: 8 s of 360p30 with AAC.
    let dir = temp_dir("srt-wan-file");
    let file = dir.join("source.ts");
    let made = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
        ])
        .args([
            "-b:v", "1M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
        ])
        .args(["-f", "mpegts"])
        .arg(&file)
        .output()
        .expect("run ffmpeg");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // Null packets after the stream: srt-live-transmit holds its last read back until
    // its input ends, so they, not the stream's end, are what it keeps.
    let mut padding = Vec::new();
    for _ in 0..64 {
        let mut null = [0xffu8; 188];
        null[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
        padding.extend_from_slice(&null);
    }
    let padding_file = dir.join("padding.ts");
    std::fs::write(&padding_file, &padding).unwrap();
    let (sent_file, sent_all) = (dir.join("sent.ts"), dir.join("sent.done"));

    // Paced by ffmpeg (-re, copied; tee keeps what it sent), relayed by
    // srt-live-transmit, which resolves the ingest name through the router. A second
    // of latency: with 400 ms (four round trips), one run in five on a machine shared
    // with builds ended about 25 packets short (not diagnosed then; the error now
    // prints SRT's loss, retransmission and drop counts).
    let script = format!(
        "({ffmpeg} -hide_banner -loglevel error -nostdin -re -i {file} -c copy -f mpegts pipe:1 | \
         tee {sent} && touch {done} && cat {padding}) | \
         {transmit} -q file://con 'srt://ingest.streamcdn.test:8890?streamid=demo/wan?key={KEY}&latency=1000'",
        ffmpeg = tool("ffmpeg").display(),
        file = file.display(),
        sent = sent_file.display(),
        done = sent_all.display(),
        padding = padding_file.display(),
        transmit = transmit.display(),
    );
    let relay = {
        use std::os::unix::process::CommandExt;
        let mut relay = sites.wan.exec("encoder", "sh");
        relay
            .args(["-c", &script])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ProcessGroup(relay.spawn().expect("spawn the relay's pipeline"))
    };
    let admin = format!("{CORE}:8081");
    wait_until(Duration::from_secs(40), "every byte sent", || {
        let got = sites.metric(
            "core",
            &admin,
            "streamcdn_ingest_bytes_in_total",
            &["protocol=\"srt\""],
        );
        let size = std::fs::metadata(&sent_file).map_or(u64::MAX, |m| m.len());
        if sent_all.exists() && got >= size as f64 {
            Ok(())
        } else {
            let srt = |name: &str| sites.metric("core", &admin, name, &[]);
            Err(format!(
                "{got} of {size} bytes; SRT: {} lost, {} retransmitted, {} dropped, {} received",
                srt("streamcdn_srt_lost_packets_total"),
                srt("streamcdn_srt_retransmitted_packets_total"),
                srt("streamcdn_srt_dropped_packets_total"),
                srt("streamcdn_srt_received_bytes_total"),
            ))
        }
    });
    let sent = decode(&sent_file.to_string_lossy(), &[]);
    let retransmitted = sites.metric(
        "core",
        &admin,
        "streamcdn_srt_retransmitted_packets_total",
        &[],
    );
    // srt-live-transmit does not exit at the end of its input: stopped once all arrived.
    drop(relay);
    let playlist = format!("http://{CORE}:8088/demo/wan/index.m3u8");
    wait_until(Duration::from_secs(30), "the recording to end", || {
        let body = sites.curl("core", &[&playlist.replace("index.m3u8", "live.m3u8")]);
        if body.contains("#EXT-X-ENDLIST") {
            Ok(())
        } else {
            Err(body)
        }
    });
    let recorded = decode_with(
        sites.wan.exec("core", &tool("ffprobe").to_string_lossy()),
        &playlist,
        &[],
    );
    eprintln!("sent {sent:?}; recorded {recorded:?}; {retransmitted} packets retransmitted");
    assert_eq!(recorded.video_frames, sent.video_frames, "{recorded:?}");
    assert!(
        recorded.audio_frames + 2 >= sent.audio_frames,
        "audio: {recorded:?} of {sent:?}"
    );
    assert!(
        retransmitted > 0.0,
        "2% loss, yet nothing was retransmitted"
    );
}
