//! The SRT listener against libsrt's clients (Debian's ffmpeg, built with libsrt, and
//! `srt-live-transmit` from `srt-tools`), through a lossy, delayed path: a UDP relay in
//! this test drops packets at random (seed printed; set `SRT_RELAY_SEED` to replay)
//! and delays each direction by half the round trip. What the listener yields must be
//! exactly the bytes the client sent, in order; refused callers get an SRT rejection
//! the client reports, and nothing is published.
//!
//! The sent bytes are known because ffmpeg's `tee` muxer writes the same MPEG-TS to a
//! file and to SRT, and `srt-live-transmit` reads what `tee(1)` saved.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamcdn_srt::{
    Admission, Gate, Publication, PublishRequest, Refusal, SrtServer, SrtSettings,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const KEY: &str = "right-key-123";
const PASSPHRASE: &str = "a-passphrase-for-srt";
/// 2% loss each way and a 60 ms round trip.
const LOSS: f64 = 0.02;
const RTT: Duration = Duration::from_millis(60);
/// The most srt-live-transmit reads from its input at once (its SRT payload size).
const SLT_READ: usize = 1316;

/// Admits `demo/<any>` with [`KEY`]; the provider's passphrase is the test's.
struct TestGate {
    passphrase: Option<String>,
}

impl Gate for TestGate {
    type Ticket = ();

    async fn confirm(&self, _: &PublishRequest, _: SocketAddr) -> Result<(), Refusal> {
        Ok(())
    }

    async fn admit(&self, r: &PublishRequest, _: SocketAddr) -> Result<Admission, Refusal> {
        match (r.provider.as_str(), r.key.as_deref()) {
            ("demo", Some(KEY)) => Ok(Admission {
                passphrase: self.passphrase.clone(),
            }),
            ("demo", None) => Err(Refusal::Unauthorized),
            ("demo", Some(_)) => Err(Refusal::Forbidden),
            _ => Err(Refusal::NotFound),
        }
    }
}

/// A running listener and what it yielded.
struct Listener {
    addr: SocketAddr,
    publications: mpsc::Receiver<Publication>,
    _shutdown: watch::Sender<bool>,
}

async fn listen(passphrase: Option<&str>) -> Listener {
    let settings = SrtSettings {
        latency: Duration::from_millis(300),
        max_connections: 10,
    };
    let server = SrtServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind SRT");
    let addr = server.local_addr();
    let (tx, publications) = mpsc::channel(4);
    let (shutdown, stop) = watch::channel(false);
    let gate = Arc::new(TestGate {
        passphrase: passphrase.map(Into::into),
    });
    tokio::spawn(server.serve(gate, settings, tx, stop));
    Listener {
        addr,
        publications,
        _shutdown: shutdown,
    }
}

/// Counts of what the relay did, for the test's message.
#[derive(Default)]
struct RelayStats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A UDP relay in front of `target` that drops `loss` of the datagrams each way and
/// delays each way by half of `rtt`; one client at a time. Returns its port.
async fn relay(target: SocketAddr, loss: f64, rtt: Duration) -> (u16, Arc<RelayStats>) {
    let seed = std::env::var("SRT_RELAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("relay to {target}: loss {loss}, rtt {rtt:?}, SRT_RELAY_SEED={seed}");
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let port = front.local_addr().unwrap().port();
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let stats = Arc::new(RelayStats::default());
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let one_way = rtt / 2;

    // Each direction: a reader deciding drop or keep, and a delay line that sends in
    // arrival order once each datagram's time has come.
    let (to_server, mut server_line) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (to_client, mut client_line) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let keep = {
        let (rng, stats) = (rng.clone(), stats.clone());
        move || {
            let dropped = rng.lock().unwrap().random_bool(loss);
            let counter = if dropped {
                &stats.dropped
            } else {
                &stats.forwarded
            };
            counter.fetch_add(1, Ordering::Relaxed);
            !dropped
        }
    };
    {
        let (front, client, keep) = (front.clone(), client.clone(), keep.clone());
        tokio::spawn(async move {
            let mut buf = vec![0; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if keep() {
                    let _ = to_server.send((Instant::now() + one_way, buf[..n].to_vec()));
                }
            }
        });
    }
    {
        let back = back.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 2048];
            while let Ok(n) = back.recv(&mut buf).await {
                if keep() {
                    let _ = to_client.send((Instant::now() + one_way, buf[..n].to_vec()));
                }
            }
        });
    }
    tokio::spawn(async move {
        while let Some((due, datagram)) = server_line.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = back.send(&datagram).await;
        }
    });
    tokio::spawn(async move {
        while let Some((due, datagram)) = client_line.recv().await {
            tokio::time::sleep_until(due).await;
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&datagram, to).await;
            }
        }
    });
    (port, stats)
}

fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is required: run scripts/test.sh, or `apt-get install {package}`")
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamcdn-srt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ffmpeg encoding `seconds` of a test picture in real time to MPEG-TS.
fn ffmpeg(seconds: u32) -> Command {
    let mut ffmpeg = Command::new(tool("ffmpeg", "ffmpeg"));
    ffmpeg.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
    ]);
    ffmpeg.arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"));
    ffmpeg.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-b:v",
        "1M",
    ]);
    ffmpeg
}

/// [`ffmpeg`] sending to `srt` (an srt:// URL), and saving the same bytes to `sent`
/// (the tee muxer; it carries on if SRT fails, so this is for publishers admitted).
fn ffmpeg_tee(sent: &Path, srt: &str, seconds: u32) -> Command {
    let mut ffmpeg = ffmpeg(seconds);
    ffmpeg.args(["-map", "0", "-f", "tee"]);
    ffmpeg.arg(format!("[f=mpegts]{}|[f=mpegts]{srt}", sent.display()));
    ffmpeg
}

/// Runs `command` to its end (killed after a minute); its output.
async fn run(command: Command) -> Output {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn client");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client ran for over a minute")
        .expect("client output")
}

/// Every byte of the first publication, once its caller has left.
async fn received(listener: &mut Listener) -> (Publication, Vec<u8>) {
    let mut publication =
        tokio::time::timeout(Duration::from_secs(30), listener.publications.recv())
            .await
            .expect("no publisher was admitted within 30 s")
            .expect("listener stopped");
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), publication.chunks.recv())
        .await
        .expect("the publication did not end within 30 s of its last bytes")
    {
        bytes.extend_from_slice(&chunk);
    }
    (publication, bytes)
}

fn assert_same_bytes(sent: &[u8], got: &[u8], stats: &RelayStats) {
    let (forwarded, dropped) = (
        stats.forwarded.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
    eprintln!(
        "sent {} bytes, received {}; relay forwarded {forwarded} datagrams, dropped {dropped}",
        sent.len(),
        got.len()
    );
    assert!(
        sent.len() > 100_000,
        "ffmpeg sent only {} bytes",
        sent.len()
    );
    assert!(
        dropped > 0,
        "the relay dropped nothing: the test proves nothing"
    );
    let first_difference = sent.iter().zip(got).position(|(a, b)| a != b);
    assert_eq!(
        (got.len(), first_difference),
        (sent.len(), None),
        "the bytes received differ from those sent"
    );
}

async fn publish_through_loss_with_ffmpeg(passphrase: Option<&str>, options: &str) {
    let mut listener = listen(passphrase).await;
    let (port, stats) = relay(listener.addr, LOSS, RTT).await;
    let dir = temp_dir(&format!("ffmpeg-{port}"));
    let sent = dir.join("sent.ts");
    let url = format!(
        "srt://127.0.0.1:{port}?streamid=#!::r=demo/cam,m=publish,s={KEY}&latency=300000&linger=5{options}"
    );
    let ffmpeg = run(ffmpeg_tee(&sent, &url, 6));
    let (ffmpeg, (publication, got)) = tokio::join!(ffmpeg, received(&mut listener));
    assert!(
        ffmpeg.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&ffmpeg.stderr)
    );
    assert_eq!(
        (publication.provider.as_str(), publication.stream.as_str()),
        ("demo", "cam")
    );
    assert_same_bytes(&std::fs::read(&sent).unwrap(), &got, &stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_through_loss_and_every_byte_arrives_in_order() {
    publish_through_loss_with_ffmpeg(None, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_with_aes_256_through_loss() {
    publish_through_loss_with_ffmpeg(
        Some(PASSPHRASE),
        &format!("&passphrase={PASSPHRASE}&pbkeylen=32"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_live_transmit_relays_a_stream_with_aes_128_through_loss() {
    let mut listener = listen(Some(PASSPHRASE)).await;
    let (port, stats) = relay(listener.addr, LOSS, RTT).await;
    let dir = temp_dir(&format!("slt-{port}"));
    let (sent, sent_all) = (dir.join("sent.ts"), dir.join("sent.done"));
    // ffmpeg paces the stream; tee(1) keeps what was sent and says when it all was.
    // srt-live-transmit (1.5) does not exit at the end of its input: it is stopped
    // once every byte arrived.
    let script = format!(
        "{ffmpeg} -hide_banner -loglevel error -re -f lavfi -i testsrc=size=320x240:rate=25:duration=6 \
         -c:v libx264 -preset ultrafast -g 25 -b:v 1M -f mpegts pipe:1 | (tee {sent} && touch {sent_all}) | \
         {transmit} -q file://con 'srt://127.0.0.1:{port}?streamid=demo/cam?key={KEY}&passphrase={PASSPHRASE}&pbkeylen=16&latency=300'",
        ffmpeg = tool("ffmpeg", "ffmpeg").display(),
        sent = sent.display(),
        sent_all = sent_all.display(),
        transmit = tool("srt-live-transmit", "srt-tools").display(),
    );
    let mut shell = tokio::process::Command::new("sh");
    shell
        .args(["-c", &script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let client = shell.spawn().expect("spawn sh");
    let group = ProcessGroup(client.id().expect("the shell's pid"));
    let mut publication =
        tokio::time::timeout(Duration::from_secs(30), listener.publications.recv())
            .await
            .expect("srt-live-transmit was not admitted within 30 s")
            .expect("listener stopped");
    assert_eq!(publication.stream, "cam");
    // srt-live-transmit 1.5 never sends its last read before the end of its input
    // (libsrt to libsrt alike): the bytes are complete once within one read of the end.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut got = Vec::new();
    let complete = |got: &[u8]| {
        sent_all.exists()
            && got.len() + SLT_READ >= std::fs::metadata(&sent).map_or(0, |m| m.len() as usize)
    };
    while !complete(&got) {
        assert!(
            Instant::now() < deadline,
            "only {} bytes of {:?} arrived in 40 s (all sent: {})",
            got.len(),
            std::fs::metadata(&sent).map(|m| m.len()),
            sent_all.exists()
        );
        if let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_millis(200), publication.chunks.recv()).await
        {
            got.extend_from_slice(&chunk);
        }
    }
    drop(group);
    let out = client.wait_with_output().await.expect("the shell's output");
    eprintln!(
        "srt-live-transmit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = std::fs::read(&sent).unwrap();
    assert_same_bytes(&sent[..got.len().min(sent.len())], &got, &stats);
}

/// A process group started by the test, ended (SIGTERM) when dropped, even when the
/// test fails: killing the shell alone would leave its pipeline running.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}

/// ffmpeg's attempt to publish with `query` after the address; its stderr.
async fn refused_ffmpeg(listener: &Listener, query: &str) -> String {
    let mut command = ffmpeg(2);
    command.args(["-f", "mpegts", &format!("srt://{}?{query}", listener.addr)]);
    let ffmpeg = run(command).await;
    let stderr = String::from_utf8_lossy(&ffmpeg.stderr).into_owned();
    assert!(
        !ffmpeg.status.success(),
        "ffmpeg published with {query}: {stderr}"
    );
    stderr
}

/// What libsrt 1.5 (ffmpeg) prints for the refusals: the codes of the access-control
/// range (1400s) all read "Application-defined rejection reason".
const REFUSED_BY_US: &str = "Application-defined rejection reason";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_passphrases_and_modes_are_refused_at_the_handshake() {
    let mut listener = listen(Some(PASSPHRASE)).await;
    let good = format!("passphrase={PASSPHRASE}");
    let cases = [
        (
            format!("streamid=#!::r=demo/cam,m=publish,s=wrong-key-000&{good}"),
            REFUSED_BY_US,
        ),
        (
            format!("streamid=#!::r=demo/cam,m=publish&{good}"),
            REFUSED_BY_US,
        ),
        (
            format!("streamid=#!::r=nobody/cam,m=publish,s={KEY}&{good}"),
            REFUSED_BY_US,
        ),
        (
            format!("streamid=#!::r=demo/cam,m=request,s={KEY}&{good}"),
            REFUSED_BY_US,
        ),
        (format!("streamid=demo&{good}"), REFUSED_BY_US),
        (good.clone(), REFUSED_BY_US),
        (
            format!("streamid=demo/cam?key={KEY}&passphrase=not-the-passphrase"),
            "Incorrect passphrase",
        ),
        (
            format!("streamid=demo/cam?key={KEY}&passphrase=not-the-passphrase&pbkeylen=32"),
            "Incorrect passphrase",
        ),
        (
            format!("streamid=demo/cam?key={KEY}"),
            "Password required or unexpected",
        ),
    ];
    for (query, printed) in &cases {
        let stderr = refused_ffmpeg(&listener, query).await;
        assert!(
            stderr.contains(printed),
            "{query}: ffmpeg did not print {printed:?}: {stderr}"
        );
    }
    // Encrypting to a provider without a passphrase (srt-protocol alone would panic).
    let clear = listen(None).await;
    let query = format!("streamid=demo/cam?key={KEY}&passphrase={PASSPHRASE}");
    let stderr = refused_ffmpeg(&clear, &query).await;
    assert!(
        stderr.contains("Password required or unexpected"),
        "{stderr}"
    );
    assert!(
        listener.publications.try_recv().is_err(),
        "a refused caller was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_is_ignored() {
    let mut listener = listen(None).await;
    let garbage = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut datagrams: VecDeque<Vec<u8>> = VecDeque::new();
    for len in [0usize, 1, 3, 15, 16, 17, 64, 200, 1316, 1500] {
        let mut d = vec![0u8; len];
        rng.fill(&mut d[..]);
        datagrams.push_back(d.clone());
        // A control packet's header (first bit set), then noise: a mangled handshake.
        if len >= 16 {
            d[0] |= 0x80;
            d[1] = 0;
            datagrams.push_back(d);
        }
    }
    for d in &datagrams {
        garbage.send_to(d, listener.addr).await.unwrap();
    }
    // Still serving: a publisher gets through afterwards.
    let dir = temp_dir(&format!("garbage-{}", listener.addr.port()));
    let sent = dir.join("sent.ts");
    let url = format!(
        "srt://{}?streamid=demo/cam?key={KEY}&linger=5",
        listener.addr
    );
    let (ffmpeg, (_, got)) = tokio::join!(run(ffmpeg_tee(&sent, &url, 2)), received(&mut listener));
    assert!(
        ffmpeg.status.success(),
        "{}",
        String::from_utf8_lossy(&ffmpeg.stderr)
    );
    assert_eq!(got, std::fs::read(&sent).unwrap());
}
