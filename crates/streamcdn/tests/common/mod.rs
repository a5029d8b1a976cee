//! Shared harness for the end-to-end tests: the real `streamcdn` binary on free loopback
//! ports, real ffmpeg/ffprobe, and a raw HTTP/1.1 client (so malformed requests reach
//! the server exactly as written).
#![allow(dead_code)]

pub mod feed;
pub mod page;
pub mod redis_set;
// For the whole-deployment tests; the others do not use it.
#[allow(unused_imports)]
pub use redis_set::Sentinels;
pub mod sites;
pub mod tiers;
pub mod wan;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "test-stream-key-0001";
/// The admin token of every generated configuration; the HTTP helpers send it unless
/// the request names its own `Authorization` (an empty one: none at all).
pub const ADMIN_TOKEN: &str = "test-admin-token-000000000001";

/// The request's header lines: `headers`, plus the admin token unless they say
/// otherwise; an empty value is not sent.
fn header_lines(headers: &[(&str, &str)]) -> String {
    let mut lines = String::new();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        lines.push_str(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    }
    for (k, v) in headers.iter().filter(|(_, v)| !v.is_empty()) {
        lines.push_str(&format!("{k}: {v}\r\n"));
    }
    lines
}

/// A tool the tests need; a missing one fails the test with how to install it.
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is required: run scripts/test.sh, or `apt-get install ffmpeg` (ffmpeg, ffprobe)")
    })
}

/// ffmpeg that can send HEVC over Enhanced RTMP (Debian's 5.1 cannot): the one in the
/// PyPI wheel imageio-ffmpeg.
pub fn enhanced_rtmp_ffmpeg() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "imageio-ffmpeg is required for HEVC over Enhanced RTMP: run scripts/test.sh or `pip install imageio-ffmpeg`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Waits up to 20 s for `child` to exit; `failure` is the panic message after that.
pub fn wait_exit(child: &mut Child, failure: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port free now, for a server a test starts. Taken at random below the kernel's
/// ephemeral range when there is room there: a port the kernel handed out (bind to port
/// 0) goes back to the pool the kernel also takes outgoing connections' ports from, and
/// some test's client could take it before the server binds it. Never the same port
/// twice in one test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Mutex::default);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 20000;
    if ephemeral_low > LOWEST + 4096 {
        // SplitMix64 over the process id, the time and a counter: test processes that
        // start together still draw different ports.
        let mut state = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        for _ in 0..1000 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let port = LOWEST + ((z ^ (z >> 31)) % u64::from(ephemeral_low - LOWEST)) as u16;
            let mut given = given.lock().unwrap();
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A port free for both TCP and UDP now (the router's DNS listens on both).
pub fn free_dual_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "streamcdn-e2e-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Node {
    child: Option<Child>,
    /// `up`, `ingest` or `edge`.
    role: &'static str,
    /// The loopback address every listener of this node binds.
    pub host: String,
    pub rtmp: u16,
    pub http: u16,
    /// Playback over TLS (HTTP/2 and HTTP/1.1).
    pub tls: u16,
    /// RTMPS (RTMP over TLS).
    pub rtmps: u16,
    /// SRT (UDP).
    pub srt: u16,
    /// WebRTC (UDP; WHIP's signalling is on the origin).
    pub webrtc: u16,
    pub origin: u16,
    pub admin: u16,
    /// The router's DNS (UDP and TCP) and HTTP redirect ports.
    pub dns: u16,
    pub router_http: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
}

impl Node {
    /// `up` with three providers, all keyed `KEY`: `demo` (fMP4, LL-HLS), `tsprov`
    /// (MPEG-TS) and `plain` (fMP4 without LL-HLS).
    pub fn up(name: &str, extra: &str) -> Node {
        Self::role(name, "up", extra)
    }

    /// One role (`up`, `ingest` or `edge`) with the same generated configuration;
    /// `extra` is TOML inserted before the providers.
    pub fn role(name: &str, role: &'static str, extra: &str) -> Node {
        Self::role_on(name, role, "127.0.0.1", free_port(), None, extra)
    }

    /// `role` on its own loopback address, with a given RTMP port and optionally a
    /// data directory shared with other nodes (an ingest cluster).
    pub fn role_on(
        name: &str,
        role: &'static str,
        host: &str,
        rtmp: u16,
        data_dir: Option<&Path>,
        extra: &str,
    ) -> Node {
        Self::role_with_node(name, role, host, rtmp, data_dir, "", extra)
    }

    /// [`Node::role_on`] with `node_extra` added to the `[node]` table.
    pub fn role_with_node(
        name: &str,
        role: &'static str,
        host: &str,
        rtmp: u16,
        data_dir: Option<&Path>,
        node_extra: &str,
        extra: &str,
    ) -> Node {
        let dir = temp_dir(name);
        let (http, tls, origin, admin) = (free_port(), free_port(), free_port(), free_port());
        let (rtmps, srt, webrtc) = (free_port(), free_dual_port(), free_dual_port());
        let (dns, router_http) = (free_dual_port(), free_port());
        // A test that sets up federation says where it listens.
        let federation = if extra.contains("[federation]") {
            String::new()
        } else {
            format!("[federation]\nlisten = \"{host}:{}\"\n", free_port())
        };
        let config = dir.join("streamcdn.toml");
        let data = data_dir.map_or_else(|| dir.join("data"), Path::to_owned);
        std::fs::write(
            &config,
            format!(
                r#"[node]
data_dir = "{data}"
shutdown_grace = "5s"
{node_extra}
[rtmp]
listen = "{host}:{rtmp}"
tls_listen = "{host}:{rtmps}"
[srt]
listen = "{host}:{srt}"
[webrtc]
listen = "{host}:{webrtc}"
inactivity_timeout = "4s"
[origin]
listen = "{host}:{origin}"
[http]
listen = "{host}:{http}"
tls_listen = "{host}:{tls}"
[admin]
listen = "{host}:{admin}"
[[admin.tokens]]
token = "{ADMIN_TOKEN}"
[router]
dns_listen = "{host}:{dns}"
http_listen = "{host}:{router_http}"
[edge.webrtc]
listen = "{host}:0"
{federation}{extra}
[[providers]]
name = "demo"
stream_key = "{KEY}"
[[providers]]
name = "tsprov"
stream_key = "{KEY}"
format = "ts"
[[providers]]
name = "plain"
stream_key = "{KEY}"
low_latency = false
"#,
                data = data.display()
            ),
        )
        .unwrap();
        let mut node = Node {
            child: None,
            role,
            host: host.to_owned(),
            rtmp,
            http,
            tls,
            rtmps,
            srt,
            webrtc,
            origin,
            admin,
            dns,
            router_http,
            dir: dir.clone(),
            config,
            log: dir.join("streamcdn.log"),
        };
        node.start();
        node
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamcdn"))
            .args([self.role, "--config"])
            .arg(&self.config)
            .env("STREAMCDN_LOG", "info,streamcdn_ingest=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn streamcdn");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_request_at(&self.host, self.admin, "GET", "/healthz", &[])
                .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("streamcdn did not become ready:\n{}", self.log_text());
    }

    /// Sends `signal` and waits for exit.
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node not running");
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        wait_exit(&mut child, &format!("streamcdn did not exit on {signal}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn publish_url(&self, provider: &str, stream: &str, key: &str) -> String {
        format!(
            "rtmp://{}:{}/{provider}/{stream}?key={key}",
            self.host, self.rtmp
        )
    }

    /// The SRT publish URL (caller mode, the access-control `streamid` with the key).
    pub fn srt_url(&self, provider: &str, stream: &str, key: &str) -> String {
        format!(
            "srt://{}:{}?streamid=#!::r={provider}/{stream},m=publish,s={key}",
            self.host, self.srt
        )
    }

    pub fn play_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.http)
    }

    /// The base URL of the node's playback listener (for `edge.parents`).
    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.host, self.http)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node not running").id()
    }

    pub fn recordings(&self, provider: &str, stream: &str) -> Vec<PathBuf> {
        let dir = self.dir.join("data/recordings").join(provider).join(stream);
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// The sum of every sample of a metric whose name and labels start with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        let text = http_request_at(&self.host, self.admin, "GET", "/metrics", &[])
            .expect("metrics")
            .text();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls the journal until the stream's newest recording is `state`.
    pub fn wait_recording_state(
        &self,
        provider: &str,
        stream: &str,
        state: &str,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(dir) = self.recordings(provider, stream).last() {
                if let Ok(text) = std::fs::read_to_string(dir.join("journal.json")) {
                    let journal: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if journal["state"] == state {
                        return journal;
                    }
                }
            }
            assert!(Instant::now() < deadline, "recording never reached {state}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "--- streamcdn log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// An ffmpeg publisher of generated 720p30 video (`codec`: "h264" or "hevc") and AAC.
pub fn publish(ffmpeg: &Path, url: &str, seconds: u32, codec: &str) -> Child {
    publish_with(ffmpeg, url, seconds, codec, &[])
}

/// `publish` with extra ffmpeg output options (placed before the codec options, so
/// later ones such as `-bf` override the defaults).
pub fn publish_with(ffmpeg: &Path, url: &str, seconds: u32, codec: &str, extra: &[&str]) -> Child {
    publish_as(ffmpeg, url, seconds, codec, extra, "flv")
}

/// The same generated H.264 and AAC as MPEG-TS: an SRT publisher in caller mode for an
/// `srt://` URL ([`Node::srt_url`]).
pub fn publish_ts(url: &str, seconds: u32) -> Child {
    publish_as(&tool("ffmpeg"), url, seconds, "h264", &[], "mpegts")
}

fn publish_as(
    ffmpeg: &Path,
    url: &str,
    seconds: u32,
    codec: &str,
    extra: &[&str],
    format: &str,
) -> Child {
    let video: &[&str] = match codec {
        "hevc" => &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=60:min-keyint=60:log-level=error",
        ],
        _ => &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
        ],
    };
    Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(video)
        .args(extra)
        .args([
            "-b:v", "3M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", format, url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

pub fn wait_output(child: Child) -> Output {
    child.wait_with_output().expect("wait for ffmpeg")
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub duration: f64,
    pub video_codec: String,
}

/// Decodes every frame of `input` with ffprobe and counts them.
pub fn decode(input: &str, extra: &[&str]) -> Decoded {
    decode_with(Command::new(tool("ffprobe")), input, extra)
}

/// [`decode`] with a given ffprobe command (e.g. run in a network namespace).
pub fn decode_with(mut ffprobe: Command, input: &str, extra: &[&str]) -> Decoded {
    let out = ffprobe
        .args(["-v", "error"])
        .args(extra)
        .args([
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames:format=duration",
            "-of",
            "json",
            input,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {input} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut decoded = Decoded::default();
    for s in json["streams"].as_array().into_iter().flatten() {
        let frames = s["nb_read_frames"]
            .as_str()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        match s["codec_type"].as_str() {
            Some("video") => {
                decoded.video_frames = frames;
                decoded.video_codec = s["codec_name"].as_str().unwrap_or_default().to_owned();
            }
            Some("audio") => decoded.audio_frames = frames,
            _ => {}
        }
    }
    decoded.duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    decoded
}

/// ffprobe accepts the file and finds a video and an audio stream in it.
pub fn assert_probe_ok(file: &Path) {
    let out = Command::new(tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe rejected {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("video") && text.contains("audio"),
        "{}: streams {text:?}",
        file.display()
    );
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One raw HTTP/1.1 request to 127.0.0.1 on a fresh connection; `path` is sent as
/// written.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_request_at("127.0.0.1", port, method, path, headers)
}

pub fn http_request_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A `Host` among `headers` replaces the default one.
    let host_given = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !host_given {
        request.push_str("Host: 127.0.0.1\r\n");
    }
    request.push_str(&header_lines(headers));
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if method == "HEAD" || status == 204 || status == 304 {
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    http_request(port, "GET", path, headers)
}

/// Parses `#EXTINF` durations and URIs of a media playlist.
pub fn playlist_segments(text: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut duration = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .and_then(|d| d.parse().ok());
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some(d) = duration.take() {
                out.push((d, line.to_owned()));
            }
        }
    }
    out
}

pub fn tag_value<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix(':'))
}

/// A `127.a.b` prefix of loopback addresses no other test of this run uses: each node
/// of a test binds `127.a.b.N`, all on the same ports when they must (HAProxy slots).
pub fn loopback_net() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    format!(
        "127.{}.{}",
        16 + (pid % 200),
        (pid / 200 % 16) * 16 + n % 16
    )
}

/// A real `redis-server` on a free port, for the registry; stopped on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new(tool_or("redis-server", "apt-get install redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        wait_listening("127.0.0.1", port, "redis-server");
        Redis { child, port }
    }

    /// The `[registry]` table that points a node at this server.
    pub fn registry_toml(&self, namespace: &str) -> String {
        format!(
            "[registry]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{}/\"\nnamespace = \"{namespace}\"\nlease = \"3s\"\n",
            self.port
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in TCP mode in front of RTMP servers, with health checks. `slots` are every
/// address a server may appear at: a slot nobody listens on is simply down until one
/// does, which is how a new server joins without a configuration change.
pub struct Haproxy {
    child: Child,
    pub host: String,
    pub port: u16,
    dir: PathBuf,
}

impl Haproxy {
    pub fn start(host: &str, port: u16, slots: &[String]) -> Haproxy {
        let dir = temp_dir("haproxy");
        let template = include_str!("../../../../deploy/haproxy.cfg");
        let servers: String = slots
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("    server ingest{} {addr} check\n", i + 1))
            .collect();
        // The stats socket tells when a health check has marked a server up.
        let stats = format!(
            "global\n    stats socket {}\n",
            dir.join("stats.sock").display()
        );
        let config = template
            .replace("0.0.0.0:1935", &format!("{host}:{port}"))
            .replacen("global\n", &stats, 1)
            .lines()
            .filter(|l| !l.trim_start().starts_with("server "))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
            + &servers;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(tool_or("haproxy", "apt-get install haproxy"))
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("spawn haproxy");
        wait_listening(host, port, "haproxy");
        Haproxy {
            child,
            host: host.to_owned(),
            port,
            dir,
        }
    }

    pub fn publish_url(&self, provider: &str, stream: &str) -> String {
        format!(
            "rtmp://{}:{}/{provider}/{stream}?key={KEY}",
            self.host, self.port
        )
    }

    /// Waits until HAProxy's health check has marked `server` (`ingest<N>`) up, so the
    /// next publisher may land on it.
    pub fn wait_up(&self, server: &str) {
        let up = || -> std::io::Result<bool> {
            let mut socket = std::os::unix::net::UnixStream::connect(self.dir.join("stats.sock"))?;
            socket.write_all(b"show stat\n")?;
            let mut text = String::new();
            socket.read_to_string(&mut text)?;
            Ok(text
                .lines()
                .any(|l| l.starts_with(&format!("ingest,{server},")) && l.contains(",UP,")))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !up().unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "HAProxy never marked {server} up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tool_or(name: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is required: run scripts/test.sh, or `{install}`"))
}

/// `tests/browser`: the node scripts that drive headless Chromium, and their packages.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser"))
}

/// node, Chromium and the `packages` of `tests/browser` a browser test needs; a missing
/// one fails the test with how to install it.
pub fn require_browser_tools(packages: &[&str]) {
    tool("node");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium is required: run scripts/test.sh or `apt-get install chromium`"
    );
    for package in packages {
        assert!(
            browser_dir().join("node_modules").join(package).is_dir(),
            "{package} is required: run scripts/test.sh or `npm install --no-package-lock --prefix tests/browser`"
        );
    }
}

pub fn wait_listening(host: &str, port: u16, what: &str) {
    let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The viewer load generator (`bench/hls-viewers`), built with the workspace.
pub fn hls_viewers(urls: &[String], viewers: usize, seconds: u32) -> Child {
    hls_viewers_with(urls, viewers, seconds, &[])
}

/// [`hls_viewers`] with more of its options (`--retries 3`); SIGINT ends it early with
/// its summary.
pub fn hls_viewers_with(urls: &[String], viewers: usize, seconds: u32, extra: &[&str]) -> Child {
    let exe = Path::new(env!("CARGO_BIN_EXE_streamcdn")).with_file_name("hls-viewers");
    assert!(
        exe.is_file(),
        "{} is missing: build it with `cargo build -p hls-viewers` (cargo nextest run --workspace does)",
        exe.display()
    );
    let mut command = Command::new(exe);
    for url in urls {
        command.args(["--url", url]);
    }
    command
        .args(["--viewers", &viewers.to_string()])
        .args(["--duration", &format!("{seconds}s")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hls-viewers")
}

/// The JSON summary a finished `hls_viewers` printed.
pub fn viewers_summary(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hls-viewers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hls-viewers printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A real S3-compatible server (`s3s-fs`) on a free port with one bucket,
/// `recordings`; stopped on drop. Objects are files under `root/recordings/`.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = temp_dir("s3");
        std::fs::create_dir_all(root.join("recordings")).unwrap();
        let mut server = S3Server {
            child: None,
            port: free_port(),
            root,
        };
        server.restart();
        server
    }

    pub fn restart(&mut self) {
        let installed = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
            .filter(|p| p.is_file());
        let exe = installed.unwrap_or_else(|| {
            tool_or(
                "s3s-fs",
                "cargo install s3s-fs --version 0.14.1 --features binary",
            )
        });
        let child = Command::new(exe)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                "streamcdn",
                "--secret-key",
                "streamcdn-secret",
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        self.child = Some(child);
        wait_listening("127.0.0.1", self.port, "s3s-fs");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `[archive]` tables that point a node at this server.
    pub fn archive_toml(&self, default_after: &str) -> String {
        format!(
            "[archive]\nstore = \"s3\"\ndefault_after = \"{default_after}\"\n[archive.s3]\nbucket = \"recordings\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{}\"\npath_style = true\naccess_key_id = \"streamcdn\"\nsecret_access_key = \"streamcdn-secret\"\n",
            self.port
        )
    }

    /// The stored object, read from the server's directory.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join("recordings").join(key)).ok()
    }

    /// Every object key under `prefix` (files below the bucket directory).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = self.root.join("recordings");
        let mut keys = Vec::new();
        walk(&base.join(prefix), &base, &mut keys);
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SHA-256 of `bytes` as lowercase hex, computed by `sha256sum` (coreutils).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A raw HTTP/1.1 request with a body, to 127.0.0.1.
pub fn http_request_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    http_request_body_at("127.0.0.1", port, method, path, headers, body)
}

/// [`http_request_body`] to a node on its own loopback address.
pub fn http_request_body_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let length = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &length));
    let ip: std::net::IpAddr = host.parse().map_err(std::io::Error::other)?;
    let addr = SocketAddr::new(ip, port);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    request.push_str(&header_lines(&all));
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {head:?}")))?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    })
}

/// The addresses (IPv4) the router at `host:port` answers its ingest name with, best
/// first (`dig +short`).
pub fn ingest_answer(host: &str, port: u16) -> Vec<String> {
    let out = Command::new(tool_or("dig", "apt-get install bind9-dnsutils"))
        .args([&format!("@{host}"), "-p", &port.to_string()])
        .args([
            "+time=1",
            "+tries=1",
            "+short",
            "ingest.streamcdn.test",
            "A",
        ])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// Bytes ffmpeg can read from a pipe (a JPEG, an MP4, an init segment and a media
/// segment) decoded to one gray 64x36 picture: their first frame. Pictures compare by
/// [`mean_abs_diff`].
pub fn gray_picture(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool("ffmpeg"))
        .args(["-v", "error", "-nostdin", "-i", "pipe:0"])
        .args(["-frames:v", "1", "-vf", "scale=64:36", "-pix_fmt", "gray"])
        .args(["-f", "rawvideo", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(
        out.status.success() && out.stdout.len() == 64 * 36,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The mean absolute difference of two gray pictures' pixels (0-255).
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len().max(1) as f64
}

/// Segment `index` of a recording's media `playlist` (served under `rec_path` on `port`)
/// with its init segment before it: a file ffmpeg decodes from the segment's keyframe.
pub fn segment_with_init(port: u16, rec_path: &str, playlist: &str, index: usize) -> Vec<u8> {
    let map = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .expect("an EXT-X-MAP");
    let uri = &playlist_segments(playlist)[index].1;
    let get = |file: &str| {
        let r = http_get(port, &format!("{rec_path}/{file}"), &[]).unwrap();
        assert_eq!(r.status, 200, "{file}");
        r.body
    };
    [get(&map), get(uri)].concat()
}

/// How many segments the journal of the stream's newest recording lists.
pub fn segments_recorded(node: &Node, provider: &str, stream: &str) -> usize {
    node.recordings(provider, stream)
        .last()
        .and_then(|dir| std::fs::read_to_string(dir.join("journal.json")).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["segments"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Polls `done` every 100 ms until it holds; fails the test naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
