//! Playback over HTTPS: the same answers as plain HTTP over HTTP/2 and HTTP/1.1 (curl),
//! ffprobe decoding a live stream through it, the generated certificate `up` prints
//! being the one served, a certificate replaced on disk being served to new connections
//! within seconds, and a key that does not match its certificate refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECONDS: u32 = 10;
const FPS: u64 = 30;

/// `curl` over TLS without verification: the body and the HTTP version spoken.
fn curl(node: &Node, version_flag: &str, path: &str) -> (Vec<u8>, String) {
    let body = node.dir.join("curl-body");
    let out = Command::new(tool_or("curl", "apt-get install curl"))
        .args([
            "-sS",
            "-k",
            "--fail",
            version_flag,
            "-w",
            "%{http_version}",
            "-o",
        ])
        .arg(&body)
        .arg(format!("https://{}:{}{path}", node.host, node.tls))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {version_flag} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&body).unwrap();
    (bytes, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The SHA-256 fingerprint of the certificate a new TLS connection is shown, as
/// `openssl s_client` sees it (`AB:CD:...`).
fn served_fingerprint(host: &str, port: u16) -> String {
    let openssl = tool_or("openssl", "apt-get install openssl");
    let shown = Command::new(&openssl)
        .args([
            "s_client",
            "-connect",
            &format!("{host}:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    pem_fingerprint(&openssl, &shown.stdout)
}

/// The fingerprint of the first certificate in `pem` (a file's text or s_client's output).
fn pem_fingerprint(openssl: &Path, pem: &[u8]) -> String {
    let mut child = Command::new(openssl)
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), pem).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, f)| f.to_owned())
        .unwrap_or_else(|| panic!("no certificate: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A new self-signed pair for 127.0.0.1 (`<name>.crt`, `<name>.key`) and its fingerprint.
fn openssl_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let openssl = tool_or("openssl", "apt-get install openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fingerprint = pem_fingerprint(&openssl, &std::fs::read(&cert).unwrap());
    (cert, key, fingerprint)
}

/// Adds `lines` to the node's `[http]` table.
fn set_http(node: &Node, lines: &str) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    let tls_listen = format!("tls_listen = \"{}:{}\"\n", node.host, node.tls);
    assert!(text.contains(&tls_listen), "{text}");
    std::fs::write(
        &node.config,
        text.replace(&tls_listen, &format!("{tls_listen}{lines}\n")),
    )
    .unwrap();
}

#[test]
fn https_playback_over_http2_and_http1_with_the_generated_certificate() {
    let mut node = Node::up("tls-playback", "");
    let ffmpeg = tool("ffmpeg");
    let publisher = publish(
        &ffmpeg,
        &node.publish_url("demo", "secure", KEY),
        SECONDS,
        "h264",
    );
    let base = "/demo/secure";
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.http, &format!("{base}/live.m3u8"), &[])
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the stream never went live");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A player from the first segment to the end, over HTTPS.
    let https_url = format!("https://{}:{}{base}/index.m3u8", node.host, node.tls);
    let live_player = std::thread::spawn(move || {
        decode(&https_url, &["-tls_verify", "0", "-live_start_index", "0"])
    });

    // The same answers over HTTP/2 and HTTP/1.1 as over plain HTTP: the multivariant
    // playlist (compared between two plain fetches that agree, as a live playlist may
    // change) and a segment.
    let playlist = format!("{base}/index.m3u8");
    for version in ["2", "1.1"] {
        let flag = format!("--http{version}");
        let mut tries = 0;
        loop {
            let before = http_get(node.http, &playlist, &[]).unwrap();
            let (body, spoken) = curl(&node, &flag, &playlist);
            let after = http_get(node.http, &playlist, &[]).unwrap();
            assert_eq!(spoken, version);
            assert_eq!(before.status, 200);
            if before.body == after.body {
                assert_eq!(String::from_utf8_lossy(&body), before.text());
                break;
            }
            tries += 1;
            assert!(tries < 5, "the playlist kept changing");
        }
    }
    let live = http_get(node.http, &format!("{base}/live.m3u8"), &[])
        .unwrap()
        .text();
    let segment = format!("{base}/{}", playlist_segments(&live)[0].1);
    let plain_segment = http_get(node.http, &segment, &[]).unwrap();
    assert_eq!(plain_segment.status, 200);
    let (h2_segment, h2) = curl(&node, "--http2", &segment);
    assert_eq!(h2, "2");
    assert!(
        h2_segment == plain_segment.body,
        "{segment} differs over HTTP/2"
    );
    // The request head limit holds over HTTP/2 too.
    let big = format!("x-padding: {}", "a".repeat(20 * 1024));
    let refused = Command::new(tool_or("curl", "apt-get install curl"))
        .args([
            "-s",
            "-k",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args([
            "-H",
            &big,
            &format!("https://{}:{}{playlist}", node.host, node.tls),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "2 431");
    // The edge's own pages are there too.
    let (page, _) = curl(&node, "--http2", &format!("{base}/"));
    assert!(String::from_utf8_lossy(&page).contains("<video"));

    // The certificate up printed is the one served, and it names the loopback address.
    let log = node.log_text();
    let printed = log
        .lines()
        .skip_while(|l| !l.contains("SHA-256:"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("up printed no fingerprint:\n{log}"))
        .to_owned();
    let printed_url = format!(
        "https://{}:{}/demo/mystream/index.m3u8",
        node.host, node.tls
    );
    assert!(log.contains(&printed_url), "{log}");
    assert_eq!(served_fingerprint(&node.host, node.tls), printed);
    let cert = node.dir.join("data/tls/cert.pem");
    let sans = Command::new(tool_or("openssl", "apt-get install openssl"))
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&sans.stdout);
    assert!(
        sans.contains("IP Address:127.0.0.1") && sans.contains("DNS:localhost"),
        "{sans}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.dir.join("data/tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let published = wait_output(publisher);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let journal = node.wait_recording_state("demo", "secure", "ended");
    let segments = journal["segments"].as_array().unwrap().len() as u64;
    let decoded = live_player.join().unwrap();
    let frames = FPS * u64::from(SECONDS);
    eprintln!("decoded over HTTPS: {decoded:?}, published {frames} video frames");
    assert!(
        decoded.video_frames.abs_diff(frames) <= segments,
        "decoded {decoded:?} over HTTPS, published {frames} frames"
    );
    assert!(decoded.audio_frames > 0, "{decoded:?}");

    // The generated pair is kept across restarts, and TLS connections drain on shutdown.
    assert!(node.stop_with("TERM").success());
    node.start();
    assert_eq!(served_fingerprint(&node.host, node.tls), printed);
}

#[test]
fn configured_certificate_is_checked_at_start_and_reloaded_when_replaced() {
    let mut node = Node::up("tls-reload", "");
    assert!(node.stop_with("TERM").success());
    let dir = node.dir.clone();
    let (a_cert, a_key, a_fingerprint) = openssl_pair(&dir, "a");
    let (b_cert, b_key, b_fingerprint) = openssl_pair(&dir, "b");

    // A key that is not the certificate's: refused at start, naming the setting.
    set_http(
        &node,
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            a_cert.display(),
            b_key.display()
        ),
    );
    let mut refused = Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .args(["up", "--config"])
        .arg(&node.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut refused, "up started with a mismatched key");
    let mut stderr = String::new();
    std::io::Read::read_to_string(refused.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "`http.tls_key`: {} is not the private key of the certificate in {}",
            b_key.display(),
            a_cert.display()
        )),
        "{stderr}"
    );

    // The files the configuration names, first holding pair a.
    let (cert, key) = (dir.join("served.crt"), dir.join("served.key"));
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        text.replace(&a_cert.display().to_string(), &cert.display().to_string())
            .replace(&b_key.display().to_string(), &key.display().to_string()),
    )
    .unwrap();
    node.start();
    assert_eq!(served_fingerprint(&node.host, node.tls), a_fingerprint);

    // Replaced by pair b (certificate first, as a renewal might): new connections get it.
    let replaced = Instant::now();
    std::fs::copy(&b_cert, &cert).unwrap();
    std::fs::copy(&b_key, &key).unwrap();
    loop {
        let served = served_fingerprint(&node.host, node.tls);
        if served == b_fingerprint {
            break;
        }
        assert_eq!(served, a_fingerprint);
        assert!(
            replaced.elapsed() < Duration::from_secs(10),
            "the replaced certificate was not served:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "new certificate served {:?} after the files were replaced",
        replaced.elapsed()
    );
    let (_, h2) = curl(&node, "--http2", "/demo/anything/");
    assert_eq!(h2, "2");

    // A broken replacement (a's certificate with b's key) is refused; b stays served.
    std::fs::copy(&a_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log_text().contains("keeping the previous one") {
        assert!(Instant::now() < deadline, "the broken pair was not noticed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served_fingerprint(&node.host, node.tls), b_fingerprint);
    assert!(node.is_running());
}

/// RTMPS (OBS's `rtmps://`): ffmpeg publishes over TLS to the RTMPS listener, shown the
/// playback listener's certificate, and the stream is recorded and plays like one sent
/// over plain RTMP; a plain RTMP client on the TLS port gets nowhere and is counted.
#[test]
fn rtmps_publishes_like_rtmp_with_the_same_certificate() {
    let node = Node::up("rtmps", "");
    assert_eq!(
        served_fingerprint(&node.host, node.rtmps),
        served_fingerprint(&node.host, node.tls),
        "one certificate for HTTPS and RTMPS"
    );
    let ffmpeg = tool("ffmpeg");
    let url = format!(
        "rtmps://{}:{}/demo/overtls?key={KEY}",
        node.host, node.rtmps
    );
    let published = wait_output(publish(&ffmpeg, &url, 4, "h264"));
    assert!(
        published.status.success(),
        "ffmpeg over rtmps: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    node.wait_recording_state("demo", "overtls", "ended");
    let decoded = decode(&node.play_url("/demo/overtls/index.m3u8"), &[]);
    assert!(
        decoded.video_frames.abs_diff(4 * FPS) <= 2 * FPS,
        "published 4 s over RTMPS, decoded {decoded:?}"
    );
    assert!(decoded.audio_frames > 0, "{decoded:?}");

    let plain = format!("rtmp://{}:{}/demo/plain?key={KEY}", node.host, node.rtmps);
    let refused = wait_output(publish(&ffmpeg, &plain, 2, "h264"));
    assert!(!refused.status.success(), "plain RTMP on the RTMPS port");
    assert!(node.recordings("demo", "plain").is_empty());
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.metric("streamcdn_rtmp_handshake_failures_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed handshake was not counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
