//! Datagrams in batches: one `recvmmsg` takes every query waiting on a socket (up to
//! [`BATCH`]) and one `sendmmsg` sends their answers, as gdnsd does. Hand-written over
//! `libc` because neither std nor tokio batch datagrams, and a `recv_from` plus a
//! `send_to` per query through tokio cost the router more CPU than answering it.
//!
//! Answers to the same sender (address and port) in one batch leave as one message with
//! UDP segmentation offload (`UDP_SEGMENT`): the kernel routes and builds them once and
//! cuts them into the same datagrams at the end, instead of once per datagram (sending
//! was most of the router's CPU per query). A sender that keeps its port, as a
//! forwarder, a load balancer or a benchmark does, gets several answers per batch; a
//! resolver that picks a new port per query gets one per message, as before. A kernel or
//! route that refuses segmentation gets single datagrams from then on.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Larger requests are cut here (and then answered FORMERR by the responder).
const MAX_REQUEST: usize = 4096;
/// A message with segmentation offload carries at most this many bytes (one UDP
/// datagram's worth; answers are far smaller).
const MAX_TRAIN_BYTES: usize = 65_000;
/// `UDP_SEGMENT` (Linux 4.18), spelled out: not every libc target defines it.
const UDP_SEGMENT: libc::c_int = 103;

// Which answers are still to be sent is a bit mask.
const _: () = assert!(BATCH <= u64::BITS as usize);

/// Buffers for one batch of requests and where they came from.
pub struct Batch {
    bufs: Box<[[u8; MAX_REQUEST]; BATCH]>,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    received: usize,
    /// Whether answers to one sender may still leave as one segmented message.
    segment: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            bufs: Box::new([[0; MAX_REQUEST]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: `sockaddr_storage` is plain data; all zeros is a valid (AF_UNSPEC) value.
            peers: [unsafe { std::mem::zeroed() }; BATCH],
            peer_lens: [0; BATCH],
            received: 0,
            segment: true,
        }
    }
}

/// The answers to one batch, end to end in one buffer (no allocation per answer).
#[derive(Default)]
pub struct Replies {
    bytes: Vec<u8>,
    /// Which request each answers, and where its bytes are.
    replies: Vec<Reply>,
}

#[derive(Clone, Copy)]
struct Reply {
    to: usize,
    start: usize,
    len: usize,
}

impl Replies {
    /// Adds the answer to request `to`, written by `write` at the end of the buffer it is
    /// given; nothing is sent for it if `write` returns false.
    pub fn add(&mut self, to: usize, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        let start = self.bytes.len();
        if write(&mut self.bytes) {
            let len = self.bytes.len() - start;
            self.replies.push(Reply { to, start, len });
        } else {
            self.bytes.truncate(start);
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.replies.clear();
    }
}

/// One message for `sendmmsg`: the answers `order[first..first + count]`, all to the
/// sender of request `peer`, cut into datagrams of `segment` bytes (the last may be
/// shorter) when there are several.
#[derive(Clone, Copy, Default)]
struct Train {
    peer: usize,
    first: usize,
    count: usize,
    segment: usize,
    bytes: usize,
    /// Takes more answers of `segment` bytes (a shorter one ends it).
    open: bool,
}

impl Batch {
    /// Waits (up to the socket's read timeout; not at all unless `wait`, failing with
    /// `WouldBlock` then) for at least one datagram, then takes whatever else is already
    /// queued without waiting; returns how many.
    pub fn recv(&mut self, socket: &UdpSocket, wait: bool) -> io::Result<usize> {
        self.received = 0;
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_REQUEST,
        });
        let mut hdrs: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            // SAFETY: `mmsghdr` is plain data (integers and pointers); zero is valid.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = std::ptr::from_mut(&mut self.peers[i]).cast();
            hdr.msg_hdr.msg_namelen = socklen_of::<libc::sockaddr_storage>();
            hdr.msg_hdr.msg_iov = std::ptr::from_mut(&mut iovs[i]);
            hdr.msg_hdr.msg_iovlen = 1;
            hdr
        });
        // SAFETY: every header points at its own iovec and address storage, and every
        // iovec at its own buffer of the stated length; all outlive the call, and the
        // kernel writes at most `BATCH` headers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                if wait {
                    libc::MSG_WAITFORONE
                } else {
                    libc::MSG_DONTWAIT
                },
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, hdr) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = usize::try_from(hdr.msg_len).map_or(MAX_REQUEST, |l| l.min(MAX_REQUEST));
            self.peer_lens[i] = hdr.msg_hdr.msg_namelen;
        }
        self.received = n;
        Ok(n)
    }

    /// The `i`th request received and its sender's address; `None` past the batch or for
    /// an address that is neither IPv4 nor IPv6.
    pub fn request(&self, i: usize) -> Option<(&[u8], IpAddr)> {
        if i >= self.received {
            return None;
        }
        Some((&self.bufs[i][..self.lens[i]], peer_ip(&self.peers[i])?))
    }

    /// Sends each answer to the sender of the request it answers (its index in this
    /// batch), then empties `replies`. An answer the kernel refuses is skipped; returns
    /// how many were.
    pub fn send(&mut self, socket: &UdpSocket, replies: &mut Replies) -> usize {
        let count = replies.replies.len().min(BATCH);
        let mut pending = (0..count)
            .filter(|r| replies.replies[*r].to < self.received)
            .fold(0u64, |mask, r| mask | 1 << r);
        let mut failed = 0;
        while pending != 0 {
            let (skipped, refused) = self.send_pending(socket, replies, &mut pending);
            failed += skipped;
            if let Some(error) = refused {
                tracing::info!(%error, "UDP segmentation refused: sending one datagram per message from now on");
                self.segment = false;
            }
        }
        replies.clear();
        failed
    }

    /// Sends the answers whose bits are set in `pending`, clearing each bit once its
    /// answer is sent or refused. Returns how many were refused, and stops early (with
    /// the error) when a segmented message is refused: those answers are still pending.
    fn send_pending(
        &self,
        socket: &UdpSocket,
        replies: &Replies,
        pending: &mut u64,
    ) -> (usize, Option<io::Error>) {
        let mut trains = [Train::default(); BATCH];
        let mut ntrains = 0;
        let mut train_of = [0usize; BATCH];
        for (r, reply) in replies.replies.iter().enumerate().take(BATCH) {
            if *pending & 1 << r == 0 {
                continue;
            }
            let joins = self
                .segment
                .then(|| {
                    trains[..ntrains].iter().position(|t| {
                        t.open
                            && reply.len <= t.segment
                            && t.bytes + reply.len <= MAX_TRAIN_BYTES
                            && self.same_peer(t.peer, reply.to)
                    })
                })
                .flatten();
            let t = joins.unwrap_or_else(|| {
                trains[ntrains] = Train {
                    peer: reply.to,
                    segment: reply.len,
                    open: reply.len > 0,
                    ..Train::default()
                };
                ntrains += 1;
                ntrains - 1
            });
            let train = &mut trains[t];
            train.count += 1;
            train.bytes += reply.len;
            train.open &= reply.len == train.segment;
            train_of[r] = t;
        }
        // Each train's answers side by side in `order` (and their iovecs likewise).
        let mut next = [0usize; BATCH];
        let mut first = 0;
        for (train, next) in trains.iter_mut().zip(&mut next).take(ntrains) {
            train.first = first;
            *next = first;
            first += train.count;
        }
        let mut order = [0usize; BATCH];
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for (r, reply) in replies.replies.iter().enumerate().take(BATCH) {
            if *pending & 1 << r == 0 {
                continue;
            }
            let at = &mut next[train_of[r]];
            order[*at] = r;
            let bytes = &replies.bytes[reply.start..reply.start + reply.len];
            iovs[*at] = libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            };
            *at += 1;
        }
        // Room for one `UDP_SEGMENT` control message per train, aligned for `cmsghdr`.
        let mut controls = [[0u64; 4]; BATCH];
        // SAFETY: as in `recv`.
        let mut hdrs: [libc::mmsghdr; BATCH] =
            std::array::from_fn(|_| unsafe { std::mem::zeroed() });
        for ((train, hdr), control) in trains
            .iter()
            .zip(&mut hdrs)
            .zip(&mut controls)
            .take(ntrains)
        {
            let hdr = &mut hdr.msg_hdr;
            // The kernel only reads the address.
            hdr.msg_name = std::ptr::from_ref(&self.peers[train.peer])
                .cast_mut()
                .cast();
            hdr.msg_namelen = self.peer_lens[train.peer];
            hdr.msg_iov = std::ptr::from_mut(&mut iovs[train.first]);
            hdr.msg_iovlen = train.count;
            if train.count > 1 {
                set_segment(hdr, control, train.segment);
            }
        }
        let (mut sent, mut failed) = (0, 0);
        let done = |train: &Train, pending: &mut u64| {
            for r in &order[train.first..train.first + train.count] {
                *pending &= !(1 << r);
            }
        };
        while sent < ntrains {
            // SAFETY: headers `sent..ntrains` point at live iovecs, addresses, control
            // messages and answer bytes (the kernel only reads them), and the count
            // passed stays in bounds.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (ntrains - sent) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => {
                    for train in &trains[sent..sent + n] {
                        done(train, pending);
                    }
                    sent += n;
                }
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let train = &trains[sent];
                    if train.count > 1 {
                        return (failed, Some(error));
                    }
                    // The first unsent datagram failed (an unreachable peer, say): skip it.
                    done(train, pending);
                    sent += 1;
                    failed += 1;
                }
            }
        }
        (failed, None)
    }

    /// Whether requests `a` and `b` came from the same address and port.
    fn same_peer(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.peers[a], &self.peers[b]);
        if x.ss_family != y.ss_family || self.peer_lens[a] != self.peer_lens[b] {
            return false;
        }
        match libc::c_int::from(x.ss_family) {
            libc::AF_INET => {
                // SAFETY: both hold a `sockaddr_in` (family AF_INET), see `peer_ip`.
                let (x, y) = unsafe { (as_v4(x), as_v4(y)) };
                x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr
            }
            libc::AF_INET6 => {
                // SAFETY: both hold a `sockaddr_in6` (family AF_INET6), see `peer_ip`.
                let (x, y) = unsafe { (as_v6(x), as_v6(y)) };
                x.sin6_port == y.sin6_port
                    && x.sin6_addr.s6_addr == y.sin6_addr.s6_addr
                    && x.sin6_scope_id == y.sin6_scope_id
            }
            _ => false,
        }
    }
}

/// The threads serving one socket. One leads: it waits on the socket and answers every
/// batch. The others help only while it falls behind (a full batch means more are
/// queued): they wait here, not on the socket, and go back once the queue is drained.
/// Several threads waiting on one socket are all woken by a burst and all but one find
/// nothing and sleep again; and one thread at moderate load takes bigger batches, so
/// fewer system calls and sleeps per query.
#[derive(Default)]
pub struct Crew {
    led: AtomicBool,
    helpers: Mutex<Helpers>,
    called: Condvar,
}

#[derive(Default)]
struct Helpers {
    waiting: usize,
    /// Calls not yet taken by a waiting helper.
    calls: usize,
}

impl Crew {
    /// Whether the thread asking leads (the first to ask does).
    pub fn lead(&self) -> bool {
        !self.led.swap(true, Ordering::AcqRel)
    }

    /// Wakes one waiting helper, if any is waiting and not already called.
    pub fn call(&self) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        if helpers.waiting > helpers.calls {
            helpers.calls += 1;
            self.called.notify_one();
        }
    }

    /// A helper waits up to `timeout` to be called; returns whether it was.
    pub fn wait_for_call(&self, timeout: Duration) -> bool {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        helpers.waiting += 1;
        let (mut helpers, _) = self
            .called
            .wait_timeout_while(helpers, timeout, |h| h.calls == 0)
            .unwrap_or_else(|e| e.into_inner());
        helpers.waiting -= 1;
        let called = helpers.calls > 0;
        if called {
            helpers.calls -= 1;
        }
        called
    }
}

/// The crew of each socket served, by the socket's identity: clones of one socket share
/// a crew; separate sockets (SO_REUSEPORT, or other addresses) have one each, so a
/// thread never waits for calls while its own socket goes unread.
#[derive(Default)]
pub struct Crews(Mutex<HashMap<(u64, u64), Arc<Crew>>>);

impl Crews {
    /// The crew of `socket`'s thread, and whether that thread leads it.
    pub fn join(&self, socket: &UdpSocket) -> io::Result<(Arc<Crew>, bool)> {
        // SAFETY: `stat` is plain data; all zeros is valid, and fstat overwrites it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a `stat` to write.
        if unsafe { libc::fstat(socket.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let crew = Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((stat.st_dev, stat.st_ino))
                .or_default(),
        );
        let leads = crew.lead();
        Ok((crew, leads))
    }
}

/// Asks the kernel to cut `hdr`'s payload into datagrams of `segment` bytes.
fn set_segment(hdr: &mut libc::msghdr, control: &mut [u64; 4], segment: usize) {
    let segment = u16::try_from(segment).unwrap_or(u16::MAX);
    // SAFETY: `CMSG_SPACE(2)` (24 bytes on 64-bit Linux) fits in `control` (32 bytes,
    // aligned for `cmsghdr`), so `CMSG_FIRSTHDR` is non-null and the header and its two
    // data bytes are inside the buffer; the data may be unaligned, hence the unaligned
    // write.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as libc::c_uint) as usize;
        debug_assert!(space <= std::mem::size_of_val(control));
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as libc::c_uint) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// # Safety
/// `storage` must hold a `sockaddr_in` (family AF_INET).
unsafe fn as_v4(storage: &libc::sockaddr_storage) -> &libc::sockaddr_in {
    // SAFETY: `sockaddr_storage` is large and aligned enough for any address type, and
    // the caller vouches for the family.
    unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() }
}

/// # Safety
/// `storage` must hold a `sockaddr_in6` (family AF_INET6).
unsafe fn as_v6(storage: &libc::sockaddr_storage) -> &libc::sockaddr_in6 {
    // SAFETY: as in `as_v4`.
    unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() }
}

fn peer_ip(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a `sockaddr_in` here (family AF_INET).
            let v4 = unsafe { as_v4(storage) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a `sockaddr_in6` (family AF_INET6).
            let v6 = unsafe { as_v6(storage) };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(socket)
    }

    /// Receives until `count` requests are in (loopback delivers at once, so normally in
    /// one call), answers request `i` with `answer(i, request)` and sends the batch.
    fn answer_all(
        server: &UdpSocket,
        batch: &mut Batch,
        count: usize,
        answer: impl Fn(usize, &[u8]) -> Vec<u8>,
    ) -> io::Result<usize> {
        let mut replies = Replies::default();
        let mut answered = 0;
        let mut failed = 0;
        while answered < count {
            let n = batch.recv(server, true)?;
            for i in 0..n {
                let (request, ip) = batch.request(i).ok_or(io::ErrorKind::InvalidData)?;
                assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
                let bytes = answer(answered + i, request);
                replies.add(i, |out| {
                    out.extend_from_slice(&bytes);
                    true
                });
            }
            assert_eq!(batch.request(n), None);
            answered += n;
            failed += batch.send(server, &mut replies);
        }
        Ok(failed)
    }

    fn receive(client: &UdpSocket, count: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = [0; 2048];
        let mut got = Vec::new();
        for _ in 0..count {
            let n = client.recv(&mut buf)?;
            got.push(buf[..n].to_vec());
        }
        Ok(got)
    }

    #[test]
    fn a_batch_answers_each_sender() -> io::Result<()> {
        let server = socket()?;
        let clients = [socket()?, socket()?];
        for (i, client) in clients.iter().enumerate() {
            client.send_to(&[b'a' + i as u8; 3], server.local_addr()?)?;
        }
        let mut batch = Batch::default();
        let failed = answer_all(&server, &mut batch, clients.len(), |_, request| {
            request.to_ascii_uppercase()
        })?;
        assert_eq!(failed, 0);
        for (i, client) in clients.iter().enumerate() {
            assert_eq!(receive(client, 1)?, [vec![b'A' + i as u8; 3]]);
        }
        Ok(())
    }

    /// Answers of `lens` bytes (the `i`th made of byte `i`) to five requests from one
    /// client, all in one batch.
    fn five_answers_to_one_client(server: &UdpSocket, batch: &mut Batch) -> io::Result<()> {
        const LENS: [usize; 5] = [10, 10, 7, 10, 12];
        let client = socket()?;
        for i in 0..LENS.len() {
            client.send_to(&[i as u8], server.local_addr()?)?;
        }
        let failed = answer_all(server, batch, LENS.len(), |_, request| {
            vec![request[0]; LENS[usize::from(request[0])]]
        })?;
        assert_eq!(failed, 0);
        let mut got = receive(&client, LENS.len())?;
        got.sort();
        let want: Vec<Vec<u8>> = (0..LENS.len()).map(|i| vec![i as u8; LENS[i]]).collect();
        assert_eq!(got, want, "each answer arrives as its own datagram, whole");
        client.set_read_timeout(Some(Duration::from_millis(50)))?;
        assert!(client.recv(&mut [0; 64]).is_err(), "nothing more arrives");
        Ok(())
    }

    #[test]
    fn answers_to_one_sender_arrive_as_their_own_datagrams() -> io::Result<()> {
        let server = socket()?;
        let mut batch = Batch::default();
        five_answers_to_one_client(&server, &mut batch)?;
        assert!(batch.segment, "loopback takes segmented messages");
        Ok(())
    }

    #[test]
    fn a_refused_segmentation_falls_back_to_single_datagrams() -> io::Result<()> {
        let server = socket()?;
        // Without UDP checksums the kernel refuses segmentation offload (EINVAL).
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the stated size.
        let set = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&on).cast(),
                socklen_of::<libc::c_int>(),
            )
        };
        assert_eq!(set, 0, "{}", io::Error::last_os_error());
        let mut batch = Batch::default();
        five_answers_to_one_client(&server, &mut batch)?;
        assert!(!batch.segment);
        five_answers_to_one_client(&server, &mut batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod crew_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn clones_of_a_socket_share_a_crew_and_other_sockets_have_their_own() -> io::Result<()> {
        let crews = Crews::default();
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let (crew, leads) = crews.join(&socket)?;
        let (clone_crew, clone_leads) = crews.join(&socket.try_clone()?)?;
        assert!(leads && !clone_leads);
        assert!(Arc::ptr_eq(&crew, &clone_crew));
        let (_, other_leads) = crews.join(&UdpSocket::bind("127.0.0.1:0")?)?;
        assert!(other_leads);
        Ok(())
    }

    #[test]
    fn one_leads_and_a_helper_works_only_when_called() {
        let crew = Arc::new(Crew::default());
        assert!(crew.lead());
        assert!(!crew.lead());
        // A call with nobody waiting is not kept for later.
        crew.call();
        assert!(!crew.wait_for_call(Duration::from_millis(20)));

        let helper = {
            let crew = Arc::clone(&crew);
            std::thread::spawn(move || crew.wait_for_call(Duration::from_secs(10)))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while crew.helpers.lock().unwrap().waiting == 0 {
            assert!(Instant::now() < deadline, "the helper never waited");
            std::thread::yield_now();
        }
        crew.call();
        assert!(helper.join().unwrap(), "the waiting helper was called");
        assert_eq!(crew.helpers.lock().unwrap().calls, 0);
    }
}
