//! Which session an incoming datagram belongs to, on a socket every session shares.
//!
//! A session's first datagrams are STUN binding requests whose USERNAME names the
//! session's ICE ufrag; only its `Rtc` accepts them (`Rtc::accepts`). Once one has
//! accepted a datagram from a remote address, every later datagram from there (DTLS,
//! SRTP, SRTCP, consent checks) goes straight to it through a map, without asking each
//! session. Pure: the server holds one [`Demux`] and the sessions.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// What a datagram is, by its first byte (RFC 7983's demultiplexing ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    /// RTP or RTCP (SRTP, SRTCP).
    Rtp,
    /// Anything else: dropped unread.
    Other,
}

pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Other,
    }
}

/// A datagram as str0m reads it (STUN parsed, the rest classified); `None`: nothing a
/// session could take (dropped and counted).
pub fn parse(datagram: &[u8]) -> Option<str0m::net::DatagramRecv<'_>> {
    if classify(datagram) == DatagramKind::Other {
        return None;
    }
    str0m::net::DatagramRecv::try_from(datagram).ok()
}

/// Remote addresses to sessions.
#[derive(Debug)]
pub struct Demux<K> {
    by_addr: HashMap<SocketAddr, K>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_addr: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// The session a datagram from `source` goes to: the one known for that address,
    /// else the first of `sessions` that `accepts` it (then remembered for `source`).
    /// `None`: nobody's (dropped).
    pub fn route(
        &mut self,
        source: SocketAddr,
        sessions: impl IntoIterator<Item = K>,
        mut accepts: impl FnMut(K) -> bool,
    ) -> Option<K> {
        if let Some(key) = self.by_addr.get(&source) {
            return Some(*key);
        }
        let key = sessions.into_iter().find(|k| accepts(*k))?;
        self.by_addr.insert(source, key);
        Some(key)
    }

    /// Forgets every address of an ended session.
    pub fn forget(&mut self, key: K) {
        self.by_addr.retain(|_, k| *k != key);
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Which of the server's candidates a datagram from `source` was addressed to, as the
/// ICE agent needs to know. The socket is bound once (often to a wildcard address) and
/// cannot tell; the candidate of the source's address family is taken, a loopback one
/// for a loopback source. The binding response leaves from the address the request
/// reached, so the client's check succeeds for the pair it tried whichever is named.
pub fn local_destination(candidates: &[SocketAddr], source: SocketAddr) -> Option<SocketAddr> {
    let same_family = || {
        candidates
            .iter()
            .filter(|c| c.is_ipv4() == source.is_ipv4())
    };
    same_family()
        .find(|c| c.ip().is_loopback() == source.ip().is_loopback())
        .or_else(|| same_family().next())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[0, 1, 0, 0]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254, 253]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(classify(&[200]), DatagramKind::Other);
        assert_eq!(classify(&[]), DatagramKind::Other);
    }

    #[test]
    fn routes_by_address_once_a_session_accepted() {
        let mut demux = Demux::default();
        let mut asked = 0;
        let a = addr("192.0.2.1:5000");
        let routed = demux.route(a, [1, 2, 3], |k| {
            asked += 1;
            k == 2
        });
        assert_eq!((routed, asked), (Some(2), 2));
        let routed = demux.route(a, [1, 2, 3], |_| panic!("known addresses skip the scan"));
        assert_eq!(routed, Some(2));
        assert_eq!(demux.route(addr("192.0.2.9:1"), [1, 2, 3], |_| false), None);
        demux.forget(2);
        assert!(demux.is_empty());
    }

    #[test]
    fn destination_is_a_candidate_of_the_source_family() {
        let candidates = [
            addr("127.0.0.1:8189"),
            addr("203.0.113.5:8189"),
            addr("[2001:db8::1]:8189"),
        ];
        assert_eq!(
            local_destination(&candidates, addr("127.0.0.1:40000")),
            Some(candidates[0])
        );
        assert_eq!(
            local_destination(&candidates, addr("198.51.100.7:40000")),
            Some(candidates[1])
        );
        assert_eq!(
            local_destination(&candidates, addr("[2001:db8::9]:40000")),
            Some(candidates[2])
        );
        assert_eq!(local_destination(&candidates[..1], addr("[::1]:1")), None);
    }
}
