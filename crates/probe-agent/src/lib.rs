//! The edge's measuring agent: an edge measures its path to a viewer's address when a
//! router asks (`streamcdn_routing::probe` is the wire format), and records the kernel's
//! RTT of real viewer connections. The only crate of the deployment that opens raw
//! sockets (`unsafe` libc calls: ICMP ping sockets, `TCP_INFO`).
//!
//! - **Measurement**: [`probe`] times TCP connects (a SYN/ACK and a RST both take one
//!   round trip) and, where the kernel allows unprivileged ping sockets, ICMP echo.
//!   The async shells only collect per-attempt samples; [`aggregate`] (pure) turns them
//!   into a [`ProbeOutcome`] (median RTT, loss), which [`ProbeOutcome::report`] answers.
//! - **Budget**: [`ProbeBudget`], a token bucket over an explicit clock; the edge answers
//!   429 when it is empty.
//! - **Passive**: [`tcp_info_rtt`] reads the kernel's smoothed RTT of a viewer connection
//!   and [`PassiveRtts`] (pure, bounded) aggregates it per client prefix into reports.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use streamcdn_routing::decision::Millis;
use streamcdn_routing::prefix::ClientPrefix;
use streamcdn_routing::probe::{ProbeMethod, ProbeReport, ProbeRequest, MAX_ATTEMPTS};
use tokio::time::Instant;

/// Ports tried by [`probe`]: what a viewer's network most often answers on (or resets).
pub const DEFAULT_PORTS: &[u16] = &[443, 80];

// ---------------------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------------------

/// A token bucket over an explicit millisecond clock: `rate_per_sec` probes a second on
/// average, at most `burst` at once. Integer milli-tokens, so it is exact and
/// deterministic in tests. A clock that steps back refills nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeBudget {
    rate_per_sec: u32,
    burst: u32,
    milli_tokens: u64,
    last_ms: Option<u64>,
}

impl ProbeBudget {
    /// Starts full. `burst` below 1 is raised to 1.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = burst.max(1);
        Self {
            rate_per_sec,
            burst,
            milli_tokens: u64::from(burst) * 1000,
            last_ms: None,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        if let Some(last) = self.last_ms {
            if now_ms <= last {
                return;
            }
            // rate tokens/s = rate milli-tokens/ms.
            let add = (now_ms - last).saturating_mul(u64::from(self.rate_per_sec));
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(add)
                .min(u64::from(self.burst) * 1000);
        }
        self.last_ms = Some(now_ms);
    }

    /// Takes one probe's token; `false`: over budget (answer 429).
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whole probes available now.
    pub fn available(&mut self, now_ms: u64) -> u32 {
        self.refill(now_ms);
        u32::try_from(self.milli_tokens / 1000).unwrap_or(u32::MAX)
    }

    /// Milliseconds until the next probe is allowed (for `Retry-After`); `None` if the
    /// rate is 0 and the bucket is empty.
    pub fn retry_after_ms(&mut self, now_ms: u64) -> Option<u64> {
        self.refill(now_ms);
        let missing = 1000u64.saturating_sub(self.milli_tokens);
        if missing == 0 {
            return Some(0);
        }
        let rate = u64::from(self.rate_per_sec);
        (rate > 0).then(|| missing.div_ceil(rate))
    }
}

// ---------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------

/// The aggregate of one probe's attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    pub method: ProbeMethod,
    pub attempts: u8,
    pub replies: u8,
    /// Median RTT of the answered attempts.
    pub rtt: Option<Duration>,
    /// `1 - replies / attempts` (1 when there were no attempts).
    pub loss: f32,
}

impl ProbeOutcome {
    /// The report of this outcome, measured by `edge` for `request`.
    pub fn report(
        &self,
        edge: impl Into<String>,
        request: &ProbeRequest,
        measured_at_ms: u64,
    ) -> ProbeReport {
        ProbeReport {
            edge: edge.into(),
            prefix: request.prefix,
            target: request.target,
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1000.0),
            loss: self.loss,
            attempts: self.attempts,
            method: self.method,
            measured_at_ms,
        }
    }
}

/// Pure: per-attempt samples (`None` = timed out or no answer) → median and loss.
pub fn aggregate(samples: &[Option<Duration>], method: ProbeMethod) -> ProbeOutcome {
    let mut rtts: Vec<Duration> = samples.iter().flatten().copied().collect();
    rtts.sort_unstable();
    let attempts = u8::try_from(samples.len()).unwrap_or(u8::MAX);
    let replies = u8::try_from(rtts.len()).unwrap_or(u8::MAX);
    let loss = if samples.is_empty() {
        1.0
    } else {
        (samples.len() - rtts.len()) as f32 / samples.len() as f32
    };
    ProbeOutcome {
        method,
        attempts,
        replies,
        rtt: median(&rtts),
        loss,
    }
}

/// Median of sorted durations (mean of the middle two for an even count).
fn median(sorted: &[Duration]) -> Option<Duration> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Pure: which of the two measurements a probe reports. ICMP when it lost no more than
/// TCP (it times the network alone, not a TCP stack), else TCP: ICMP is often filtered
/// or rate-limited, and the loss would be charged to the path.
pub fn choose(icmp: Option<ProbeOutcome>, tcp: ProbeOutcome) -> ProbeOutcome {
    match icmp {
        Some(i) if i.rtt.is_some() && (i.loss <= tcp.loss || tcp.rtt.is_none()) => i,
        _ => tcp,
    }
}

/// Measures the path to `target`: TCP connects to [`DEFAULT_PORTS`] and, at the same
/// time, ICMP echo if this process may open a ping socket (`net.ipv4.ping_group_range`);
/// reports the one [`choose`] picks, with its method. Takes at most about
/// `attempts × timeout`. `attempts` is clamped to 1..=[`MAX_ATTEMPTS`].
pub async fn probe(target: IpAddr, attempts: u8, timeout: Duration) -> ProbeOutcome {
    let target = target.to_canonical();
    let (tcp, icmp) = tokio::join!(
        probe_ports(target, DEFAULT_PORTS, attempts, timeout),
        probe_icmp(target, attempts, timeout)
    );
    choose(icmp.ok(), tcp)
}

/// TCP-only probe against `ports`. Each attempt sends a SYN to every port at once; the
/// first SYN/ACK or RST is the attempt's RTT, no answer within `timeout` (or only errors
/// such as host unreachable, which come from a router, not the target) is a loss.
/// Completed connections are closed with a RST (zero linger): no TIME_WAIT on the edge,
/// no idle connection on the viewer's side.
pub async fn probe_ports(
    target: IpAddr,
    ports: &[u16],
    attempts: u8,
    timeout: Duration,
) -> ProbeOutcome {
    let target = target.to_canonical();
    let attempts = attempts.clamp(1, MAX_ATTEMPTS);
    let mut samples = Vec::with_capacity(usize::from(attempts));
    for _ in 0..attempts {
        samples.push(tcp_attempt(target, ports, timeout).await);
    }
    aggregate(&samples, ProbeMethod::Tcp)
}

async fn tcp_attempt(target: IpAddr, ports: &[u16], timeout: Duration) -> Option<Duration> {
    let mut pending: FuturesUnordered<_> = ports
        .iter()
        .map(|&port| connect_once(SocketAddr::new(target, port)))
        .collect();
    let first = async {
        while let Some(sample) = pending.next().await {
            if sample.is_some() {
                return sample;
            }
        }
        None
    };
    tokio::time::timeout(timeout, first).await.ok().flatten()
}

async fn connect_once(addr: SocketAddr) -> Option<Duration> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .ok()?;
    let start = Instant::now();
    match socket.connect(addr).await {
        Ok(stream) => {
            let rtt = start.elapsed();
            let _ = stream.set_zero_linger();
            Some(rtt)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(start.elapsed()),
        Err(_) => None,
    }
}

/// Whether this process may open an unprivileged ICMP socket for `family_of`'s family.
/// On a kernel whose `net.ipv4.ping_group_range` excludes our group (e.g. "1 0", the
/// default) this is `false` and [`probe`] measures by TCP alone.
pub fn icmp_permitted(family_of: IpAddr) -> bool {
    icmp_socket(family_of.to_canonical()).is_ok()
}

/// ICMP-only probe. `Err` when no ping socket can be opened (`PermissionDenied` when
/// `ping_group_range` excludes us): the caller falls back to TCP.
pub async fn probe_icmp(
    target: IpAddr,
    attempts: u8,
    timeout: Duration,
) -> io::Result<ProbeOutcome> {
    let target = target.to_canonical();
    let socket = tokio::net::UdpSocket::from_std(icmp_socket(target)?)?;
    socket.connect(SocketAddr::new(target, 0)).await?;
    let (request_type, reply_type) = match target {
        IpAddr::V4(_) => (8u8, 0u8),
        IpAddr::V6(_) => (128u8, 129u8),
    };
    // The kernel fills in the identifier (the socket's) and the checksum; the token tells
    // our replies from anything else that arrives.
    let token: [u8; 8] = rand::random();
    let attempts = attempts.clamp(1, MAX_ATTEMPTS);
    let mut samples = Vec::with_capacity(usize::from(attempts));
    for seq in 1..=u16::from(attempts) {
        let mut packet = [0u8; 16];
        packet[0] = request_type;
        packet[6..8].copy_from_slice(&seq.to_be_bytes());
        packet[8..].copy_from_slice(&token);
        samples.push(icmp_attempt(&socket, &packet, reply_type, timeout).await);
    }
    Ok(aggregate(&samples, ProbeMethod::Icmp))
}

async fn icmp_attempt(
    socket: &tokio::net::UdpSocket,
    packet: &[u8; 16],
    reply_type: u8,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let deadline = start + timeout;
    socket.send(packet).await.ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            // Timed out, or an ICMP error (unreachable) queued on the socket.
            _ => return None,
        };
        let reply = &buf[..n];
        // Late replies to earlier attempts carry another sequence number: skip them.
        if reply.len() >= 16
            && reply[0] == reply_type
            && reply[6..8] == packet[6..8]
            && reply[8..16] == packet[8..16]
        {
            return Some(start.elapsed());
        }
    }
}

#[cfg(target_os = "linux")]
fn icmp_socket(target: IpAddr) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: a plain syscall without pointers.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and nothing else owns. A ping socket is
    // a datagram socket: send/recv/connect behave as on a UDP one.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(std::net::UdpSocket::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn icmp_socket(_target: IpAddr) -> io::Result<std::net::UdpSocket> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "unprivileged ICMP sockets are implemented for Linux only",
    ))
}

// ---------------------------------------------------------------------------------------
// Passive RTT
// ---------------------------------------------------------------------------------------

/// The kernel's smoothed RTT of a connected TCP socket (`TCP_INFO.tcpi_rtt`, µs). `None`
/// when unavailable or before the kernel has an RTT sample. Best read once a response
/// has gone out: by then the estimate covers more than the handshake.
#[cfg(target_os = "linux")]
pub fn tcp_info_rtt<S: std::os::fd::AsFd>(stream: &S) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_fd().as_raw_fd();
    // SAFETY: tcp_info is plain integers, for which all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: `info` is writable for `len` bytes and `len` is a valid in/out length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + std::mem::size_of::<u32>();
    if rc != 0 || usize::try_from(len).ok()? < needed || info.tcpi_rtt == 0 {
        return None;
    }
    Some(Duration::from_micros(u64::from(info.tcpi_rtt)))
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_info_rtt<S>(_stream: &S) -> Option<Duration> {
    None
}

#[derive(Debug, Clone, Default)]
struct PassiveSamples {
    /// (rtt µs, at ms), oldest first.
    samples: VecDeque<(u32, Millis)>,
}

/// Kernel RTTs of real viewer connections per client prefix, until the edge drains them
/// into reports. Bounded: at most `max_prefixes` prefixes (samples for further prefixes
/// are dropped until the next drain, counted in [`PassiveRtts::dropped`]) and the newest
/// `samples_per_prefix` samples each.
#[derive(Debug, Clone)]
pub struct PassiveRtts {
    prefixes: HashMap<ClientPrefix, PassiveSamples>,
    max_prefixes: usize,
    samples_per_prefix: usize,
    max_age: Duration,
    dropped: u64,
}

impl Default for PassiveRtts {
    fn default() -> Self {
        Self::new(4096, 32, Duration::from_secs(60))
    }
}

impl PassiveRtts {
    /// Samples older than `max_age` when drained are not reported. Limits below 1 are
    /// raised to 1.
    pub fn new(max_prefixes: usize, samples_per_prefix: usize, max_age: Duration) -> Self {
        Self {
            prefixes: HashMap::new(),
            max_prefixes: max_prefixes.max(1),
            samples_per_prefix: samples_per_prefix.max(1),
            max_age,
            dropped: 0,
        }
    }

    /// Prefixes holding samples.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Samples refused because the prefix table was full, since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keeps one connection's RTT; `false` if dropped for lack of room.
    pub fn record(&mut self, prefix: ClientPrefix, rtt: Duration, now_ms: Millis) -> bool {
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= self.max_prefixes {
            self.dropped += 1;
            return false;
        }
        let rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let entry = self.prefixes.entry(prefix).or_default();
        entry.samples.push_back((rtt_us, now_ms));
        while entry.samples.len() > self.samples_per_prefix {
            entry.samples.pop_front();
        }
        true
    }

    /// One report per prefix with fresh samples (median RTT, loss 0, `attempts` = samples,
    /// `measured_at_ms` = newest sample), sorted by prefix; empties the table.
    pub fn drain_reports(&mut self, edge: &str, now_ms: Millis) -> Vec<ProbeReport> {
        let max_age = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut reports: Vec<ProbeReport> = self
            .prefixes
            .drain()
            .filter_map(|(prefix, entry)| {
                let fresh: Vec<(u32, Millis)> = entry
                    .samples
                    .into_iter()
                    .filter(|&(_, at)| now_ms.saturating_sub(at) <= max_age)
                    .collect();
                let newest = fresh.iter().map(|&(_, at)| at).max()?;
                let mut rtts: Vec<Duration> = fresh
                    .iter()
                    .map(|&(us, _)| Duration::from_micros(u64::from(us)))
                    .collect();
                rtts.sort_unstable();
                Some(ProbeReport {
                    edge: edge.to_owned(),
                    prefix,
                    target: prefix.addr(),
                    rtt_ms: median(&rtts).map(|d| d.as_secs_f64() * 1000.0),
                    loss: 0.0,
                    attempts: u8::try_from(rtts.len()).unwrap_or(u8::MAX),
                    method: ProbeMethod::Passive,
                    measured_at_ms: newest,
                })
            })
            .collect();
        reports.sort_by_key(|r| r.prefix);
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcdn_routing::decision::Source;

    const NOW: u64 = 1_700_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn outcome_reports_what_was_measured_for_the_request() {
        let request = ProbeRequest {
            target: ip("192.0.2.10"),
            prefix: ClientPrefix::of(ip("192.0.2.10")),
            attempts: 3,
            issued_at_ms: NOW,
            nonce: 42,
            edge: "edge-1".into(),
        };
        let outcome = aggregate(&[Some(Duration::from_millis(10)), None], ProbeMethod::Tcp);
        let report = outcome.report("edge-1", &request, NOW + 50);
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "edge": "edge-1", "prefix": "192.0.2.0/24", "target": "192.0.2.10",
                "rtt_ms": 10.0, "loss": 0.5, "attempts": 2, "method": "tcp",
                "measured_at_ms": NOW + 50
            })
        );
        assert!(report.answers(&request));
        let lost = aggregate(&[None, None], ProbeMethod::Tcp).report("edge-1", &request, NOW);
        assert_eq!(lost.rtt_ms, None);
    }

    #[test]
    fn budget_refills_deterministically() {
        let mut b = ProbeBudget::new(10, 3);
        assert_eq!(b.available(NOW), 3);
        assert!(b.try_take(NOW));
        assert!(b.try_take(NOW));
        assert!(b.try_take(NOW));
        assert!(!b.try_take(NOW));
        assert_eq!(b.retry_after_ms(NOW), Some(100));
        assert!(!b.try_take(NOW + 99));
        assert_eq!(b.retry_after_ms(NOW + 99), Some(1));
        assert!(b.try_take(NOW + 100));
        assert!(!b.try_take(NOW + 100));
        // A long pause refills only up to the burst.
        assert_eq!(b.available(NOW + 60_000), 3);
        // A clock stepping back refills nothing and takes nothing away.
        assert!(b.try_take(NOW + 60_000));
        assert_eq!(b.available(NOW), 2);
        let mut none = ProbeBudget::new(0, 1);
        assert!(none.try_take(NOW));
        assert!(!none.try_take(NOW + 1_000_000));
        assert_eq!(none.retry_after_ms(NOW), None);
        assert_eq!(ProbeBudget::new(5, 0).available(NOW), 1);
    }

    #[test]
    fn aggregate_takes_median_and_loss() {
        let ms = |v| Some(Duration::from_millis(v));
        let o = aggregate(&[ms(30), ms(10), None, ms(20)], ProbeMethod::Tcp);
        assert_eq!(o.rtt, Some(Duration::from_millis(20)));
        assert_eq!((o.attempts, o.replies, o.loss), (4, 3, 0.25));
        let o = aggregate(&[ms(10), ms(40)], ProbeMethod::Tcp);
        assert_eq!(o.rtt, Some(Duration::from_millis(25)));
        assert_eq!(o.loss, 0.0);
        // The timeout path: every attempt timed out.
        let o = aggregate(&[None, None, None], ProbeMethod::Tcp);
        assert_eq!((o.rtt, o.loss, o.replies, o.attempts), (None, 1.0, 0, 3));
        let o = aggregate(&[], ProbeMethod::Icmp);
        assert_eq!((o.rtt, o.loss), (None, 1.0));
    }

    #[test]
    fn choose_prefers_icmp_unless_it_lost_more() {
        let ms = |v| Some(Duration::from_millis(v));
        let tcp = aggregate(&[ms(12), ms(11)], ProbeMethod::Tcp);
        let icmp = aggregate(&[ms(10), ms(10)], ProbeMethod::Icmp);
        assert_eq!(choose(Some(icmp), tcp).method, ProbeMethod::Icmp);
        assert_eq!(choose(None, tcp).method, ProbeMethod::Tcp);
        let lossy = aggregate(&[ms(10), None], ProbeMethod::Icmp);
        assert_eq!(choose(Some(lossy), tcp).method, ProbeMethod::Tcp);
        let silent = aggregate(&[None, None], ProbeMethod::Icmp);
        assert_eq!(choose(Some(silent), tcp).method, ProbeMethod::Tcp);
        let tcp_silent = aggregate(&[None, None], ProbeMethod::Tcp);
        assert_eq!(choose(Some(lossy), tcp_silent).method, ProbeMethod::Icmp);
    }

    #[tokio::test]
    async fn probe_ports_on_loopback_closed_and_listening() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        // A port that was just free: connecting is refused (RST), which is an answer.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = ip("127.0.0.1");
        for ports in [&[open][..], &[closed][..], &[closed, open][..]] {
            let o = probe_ports(target, ports, 3, Duration::from_secs(2)).await;
            assert_eq!(o.method, ProbeMethod::Tcp);
            assert_eq!((o.attempts, o.replies, o.loss), (3, 3, 0.0), "{ports:?}");
            let rtt = o.rtt.unwrap();
            assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        }
        // No ports: nothing can answer.
        let o = probe_ports(target, &[], 2, Duration::from_millis(50)).await;
        assert_eq!((o.rtt, o.loss), (None, 1.0));
        drop(listener);
    }

    async fn probe_loopback(target: IpAddr) {
        let permitted = icmp_permitted(target);
        match probe_icmp(target, 1, Duration::from_secs(1)).await {
            Ok(o) => assert!(permitted && o.method == ProbeMethod::Icmp && o.loss == 0.0),
            Err(e) => assert!(!permitted, "{e}"),
        }
        let o = probe(target, 2, Duration::from_secs(2)).await;
        assert!(o.rtt.is_some(), "{o:?}");
        assert_eq!(o.loss, 0.0);
        let expected = if permitted {
            ProbeMethod::Icmp
        } else {
            ProbeMethod::Tcp
        };
        assert_eq!(o.method, expected, "{target}");
    }

    /// On this kernel's default `ping_group_range` ("1 0") this covers the TCP fallback;
    /// run inside a namespace that permits ping sockets it covers ICMP (and ICMPv6).
    #[tokio::test]
    async fn probe_uses_icmp_when_permitted_else_tcp() {
        probe_loopback(ip("127.0.0.1")).await;
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            probe_loopback(ip("::1")).await;
        }
    }

    #[tokio::test]
    async fn tcp_info_rtt_on_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        let rtt = tcp_info_rtt(&client).unwrap();
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_secs(1),
            "{rtt:?}"
        );
        assert!(tcp_info_rtt(&server).is_some());
    }

    #[test]
    fn passive_rtts_aggregate_per_prefix_bounded() {
        let a = ClientPrefix::of(ip("192.0.2.1"));
        let b = ClientPrefix::of(ip("198.51.100.1"));
        let c = ClientPrefix::of(ip("203.0.113.1"));
        let mut p = PassiveRtts::new(2, 3, Duration::from_secs(60));
        for (rtt, at) in [(50, NOW), (10, NOW + 1), (20, NOW + 2), (30, NOW + 3)] {
            assert!(p.record(a, Duration::from_millis(rtt), at));
        }
        assert!(p.record(b, Duration::from_millis(7), NOW - 61_000));
        assert!(!p.record(c, Duration::from_millis(1), NOW));
        assert_eq!((p.len(), p.dropped()), (2, 1));

        let reports = p.drain_reports("edge-1", NOW + 10);
        assert!(p.is_empty());
        // b's only sample is too old by the drain; a keeps its newest three (10, 20, 30).
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.prefix, a);
        assert_eq!(r.target, ip("192.0.2.0"));
        assert_eq!(r.rtt_ms, Some(20.0));
        assert_eq!(
            (r.loss, r.attempts, r.method),
            (0.0, 3, ProbeMethod::Passive)
        );
        assert_eq!(r.measured_at_ms, NOW + 3);
        let m = r.to_measurement().unwrap();
        assert_eq!(m.source, Source::Passive);
        assert_eq!(
            serde_json::to_value(r).unwrap()["method"],
            serde_json::json!("passive")
        );
        // Room again after the drain.
        assert!(p.record(c, Duration::from_millis(1), NOW));
    }
}
