//! Datagrams in batches: one `recvmmsg` takes every query waiting on a socket (up to
//! [`BATCH`]) and one `sendmmsg` sends their answers, as gdnsd does. Hand-written over
//! `libc` because neither std nor tokio batch datagrams, and a `recv_from` plus a
//! `send_to` per query through tokio cost the router more CPU than answering it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Larger requests are cut here (and then answered FORMERR by the responder).
const MAX_REQUEST: usize = 4096;

/// Buffers for one batch of requests and where they came from.
pub struct Batch {
    bufs: Box<[[u8; MAX_REQUEST]; BATCH]>,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    received: usize,
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
        }
    }
}

impl Batch {
    /// Waits (up to the socket's read timeout) for at least one datagram, then takes
    /// whatever else is already queued without waiting; returns how many.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
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
                libc::MSG_WAITFORONE,
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

    /// Sends each response to the sender of the request it answers (its index in this
    /// batch). A response the kernel refuses is skipped; returns how many were.
    pub fn send(&mut self, socket: &UdpSocket, responses: &[(usize, Vec<u8>)]) -> usize {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        // SAFETY: as in `recv`.
        let mut hdrs: [libc::mmsghdr; BATCH] =
            std::array::from_fn(|_| unsafe { std::mem::zeroed() });
        let mut count = 0;
        for (to, response) in responses.iter().take(BATCH) {
            if *to >= self.received {
                continue;
            }
            iovs[count].iov_base = response.as_ptr().cast_mut().cast();
            iovs[count].iov_len = response.len();
            let hdr = &mut hdrs[count].msg_hdr;
            hdr.msg_name = std::ptr::from_mut(&mut self.peers[*to]).cast();
            hdr.msg_namelen = self.peer_lens[*to];
            hdr.msg_iov = std::ptr::from_mut(&mut iovs[count]);
            hdr.msg_iovlen = 1;
            count += 1;
        }
        let (mut sent, mut failed) = (0, 0);
        while sent < count {
            // SAFETY: headers `sent..count` point at live iovecs, addresses and response
            // bytes (the kernel only reads them), and the count passed stays in bounds.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => sent += n,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                // The first unsent datagram failed (an unreachable peer, say): skip it.
                _ => {
                    sent += 1;
                    failed += 1;
                }
            }
        }
        failed
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn peer_ip(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a `sockaddr_in` here (family AF_INET), and
            // `sockaddr_storage` is large and aligned enough for any address type.
            let v4 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a `sockaddr_in6` (family AF_INET6).
            let v6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_answers_each_sender() -> io::Result<()> {
        let server = UdpSocket::bind("127.0.0.1:0")?;
        server.set_read_timeout(Some(Duration::from_secs(5)))?;
        let clients = [
            UdpSocket::bind("127.0.0.1:0")?,
            UdpSocket::bind("127.0.0.1:0")?,
        ];
        for (i, client) in clients.iter().enumerate() {
            client.set_read_timeout(Some(Duration::from_secs(5)))?;
            client.send_to(&[b'a' + i as u8; 3], server.local_addr()?)?;
        }
        let mut batch = Batch::default();
        let mut got = Vec::new();
        while got.len() < clients.len() {
            let n = batch.recv(&server)?;
            for i in 0..n {
                let (request, ip) = batch.request(i).ok_or(io::ErrorKind::InvalidData)?;
                assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
                got.push((i, request.iter().map(|b| b.to_ascii_uppercase()).collect()));
            }
            assert_eq!(batch.request(n), None);
            assert_eq!(batch.send(&server, &got[got.len() - n..]), 0);
        }
        let mut buf = [0; 16];
        for (i, client) in clients.iter().enumerate() {
            let n = client.recv(&mut buf)?;
            assert_eq!(&buf[..n], &[b'A' + i as u8; 3]);
        }
        Ok(())
    }
}
