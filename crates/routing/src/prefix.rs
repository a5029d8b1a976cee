//! Client prefixes and CIDR blocks.
//!
//! The router decides per client *network*, not per address: viewers behind one /24
//! (IPv4) or /48 (IPv6) share their path to our edges, so measurements and choices are
//! kept per such prefix. It is also the granularity resolvers send in EDNS Client Subnet
//! (RFC 7871) and cache answers at. [`StaticMap`] is the operator's optional
//! CIDR → site table, the fallback until measurements exist.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Client prefix length for IPv4: the usual unit of ECS and of resolver caches.
pub const V4_CLIENT_LEN: u8 = 24;
/// Client prefix length for IPv6 (a site's allocation).
pub const V6_CLIENT_LEN: u8 = 48;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length /{len} is longer than an {family} address (/{max})")]
    LengthOutOfRange {
        len: u8,
        max: u8,
        family: &'static str,
    },
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    #[error("{0:?} is not a prefix length")]
    BadLength(String),
    #[error("{text:?} has address bits set beyond its length (the block would be {masked})")]
    HostBitsSet { text: String, masked: Cidr },
    #[error("{0} appears twice in the static map")]
    Duplicate(Cidr),
    #[error("{0} has an empty site name in the static map")]
    EmptySite(Cidr),
}

fn full_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn client_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => V4_CLIENT_LEN,
        IpAddr::V6(_) => V6_CLIENT_LEN,
    }
}

/// Keeps the first `len` bits (clamped to the family's width).
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let len = u32::from(len.min(32));
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let len = u32::from(len.min(128));
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// The last address of the block `ip/len`.
fn last(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let len = u32::from(len.min(32));
            let host = if len == 0 {
                u32::MAX
            } else {
                !(u32::MAX << (32 - len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let len = u32::from(len.min(128));
            let host = if len == 0 {
                u128::MAX
            } else {
                !(u128::MAX << (128 - len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}

/// Splits `addr[/len]`; a missing length is `None`.
fn split(text: &str) -> Result<(IpAddr, Option<u8>), PrefixError> {
    let text = text.trim();
    let (a, l) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = a
        .parse::<IpAddr>()
        .map_err(|_| PrefixError::BadAddress(a.to_owned()))?;
    let len = match l {
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => Some(
            l.parse::<u8>()
                .map_err(|_| PrefixError::BadLength(l.to_owned()))?,
        ),
        Some(l) => return Err(PrefixError::BadLength(l.to_owned())),
        None => None,
    };
    Ok((addr, len))
}

/// A block of addresses of any length, as the static map lists them. Always masked, and
/// IPv4-mapped IPv6 blocks (`::ffff:0:0/96` and longer) are held as IPv4 so that one
/// client matches one way however its address arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The block of `len` bits around `addr` (host bits are cleared).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = full_len(addr);
        if len > max {
            return Err(PrefixError::LengthOutOfRange {
                len,
                max,
                family: family(addr),
            });
        }
        let (addr, len) = match addr {
            IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), len - 96),
                None => (addr, len),
            },
            _ => (addr, len),
        };
        Ok(Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// The first address of the block.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[allow(clippy::len_without_is_empty)] // a bit count, not a collection size
    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        mask(ip.to_canonical(), self.len) == self.addr
    }

    /// Whether every address of `other` is in this block.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Strict, because it reads operator configuration: `10.1.2.0/16` is refused (a typo of
/// `/24`, or of `10.1.0.0`?) rather than silently widened. A bare address is a host.
impl FromStr for Cidr {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split(s)?;
        let len = len.unwrap_or_else(|| full_len(addr));
        let cidr = Cidr::new(addr, len)?;
        if mask(addr, len) != addr {
            return Err(PrefixError::HostBitsSet {
                text: s.trim().to_owned(),
                masked: cidr,
            });
        }
        Ok(cidr)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The network a viewer is in, the key of measurements and decisions: at most /24 for
/// IPv4 and /48 for IPv6 (shorter when a resolver's ECS says less), masked, IPv4-mapped
/// addresses as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientPrefix(Cidr);

impl ClientPrefix {
    /// The prefix of a client address seen directly (a resolver or an HTTP client).
    pub fn of(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        let len = client_len(ip);
        Self(Cidr {
            addr: mask(ip, len),
            len,
        })
    }

    /// The prefix from an EDNS Client Subnet option: we never key finer than /24 or /48
    /// (finer keys would multiply state without better paths), and a length longer than
    /// the address is malformed. An IPv4-mapped address is taken as IPv4 with 96 fewer
    /// bits. Source length 0 (the client opted out) gives the /0 prefix; the caller may
    /// prefer the resolver's own address then.
    pub fn from_ecs(addr: IpAddr, source_len: u8) -> Result<Self, PrefixError> {
        let max = full_len(addr);
        if source_len > max {
            return Err(PrefixError::LengthOutOfRange {
                len: source_len,
                max,
                family: family(addr),
            });
        }
        let canonical = addr.to_canonical();
        let len = if canonical.is_ipv4() && addr.is_ipv6() {
            source_len.saturating_sub(96)
        } else {
            source_len
        };
        let len = len.min(client_len(canonical));
        Ok(Self(Cidr {
            addr: mask(canonical, len),
            len,
        }))
    }

    pub fn addr(&self) -> IpAddr {
        self.0.addr
    }

    /// The prefix length in bits (the ECS scope of a decision made at this prefix).
    #[allow(clippy::len_without_is_empty)] // a bit count, not a collection size
    pub fn len(&self) -> u8 {
        self.0.len
    }

    pub fn cidr(&self) -> Cidr {
        self.0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl fmt::Display for ClientPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Lenient, because it reads what clients and operators ask about (`?ip=`): a bare
/// address is its client prefix, `addr/len` is read like ECS (masked, at most /24 or /48).
impl FromStr for ClientPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match split(s)? {
            (addr, None) => Ok(Self::of(addr)),
            (addr, Some(len)) => Self::from_ecs(addr, len),
        }
    }
}

impl Serialize for ClientPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the static map says about a client prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapMatch<'a> {
    /// The longest entry containing the whole client prefix.
    pub cidr: Cidr,
    pub site: &'a str,
    /// The widest block around the client, within `cidr`, that no more specific entry
    /// overlaps: the ECS scope under which this answer holds for every address.
    pub scope_len: u8,
}

/// The operator's CIDR → site table (longest prefix wins): a geography-style fallback
/// for clients that have no fresh measurements yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticMap {
    entries: BTreeMap<Cidr, String>,
    /// The distinct lengths present, longest first, per family: a lookup tries one exact
    /// match per length instead of scanning every entry.
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
}

impl StaticMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `("10.1.0.0/16", "eu-west")` pairs, e.g. a config table.
    pub fn from_entries<I, C, S>(entries: I) -> Result<Self, PrefixError>
    where
        I: IntoIterator<Item = (C, S)>,
        C: AsRef<str>,
        S: Into<String>,
    {
        let mut map = Self::new();
        for (cidr, site) in entries {
            map.insert(cidr.as_ref().parse()?, site)?;
        }
        Ok(map)
    }

    /// Adds an entry; a block listed twice is a configuration mistake, refused.
    pub fn insert(&mut self, cidr: Cidr, site: impl Into<String>) -> Result<(), PrefixError> {
        let site = site.into();
        if site.trim().is_empty() {
            return Err(PrefixError::EmptySite(cidr));
        }
        if self.entries.contains_key(&cidr) {
            return Err(PrefixError::Duplicate(cidr));
        }
        self.entries.insert(cidr, site);
        let lens = match cidr.addr {
            IpAddr::V4(_) => &mut self.v4_lens,
            IpAddr::V6(_) => &mut self.v6_lens,
        };
        if let Err(at) = lens.binary_search_by(|l| cidr.len.cmp(l)) {
            lens.insert(at, cidr.len);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in address order (for `GET /api/v1/routing/map`).
    pub fn entries(&self) -> impl Iterator<Item = (&Cidr, &str)> {
        self.entries.iter().map(|(c, s)| (c, s.as_str()))
    }

    /// The site of the longest entry containing `ip`.
    pub fn site_for(&self, ip: IpAddr) -> Option<&str> {
        let ip = ip.to_canonical();
        self.longest(ip, full_len(ip)).map(|(_, site)| site)
    }

    /// The longest entry containing the whole client prefix (entries more specific than
    /// the prefix cannot apply: we do not know which part of it the client is in).
    pub fn lookup(&self, prefix: &ClientPrefix) -> Option<MapMatch<'_>> {
        let (cidr, site) = self.longest(prefix.addr(), prefix.len())?;
        // Widen the scope only as far as no more specific entry reaches: a resolver
        // caches the answer for the whole scope.
        let scope_len = (cidr.len..=prefix.len())
            .find(|&s| !self.has_longer_within(mask(prefix.addr(), s), s, cidr.len))
            .unwrap_or(prefix.len());
        Some(MapMatch {
            cidr: *cidr,
            site,
            scope_len,
        })
    }

    fn longest(&self, ip: IpAddr, max_len: u8) -> Option<(&Cidr, &str)> {
        let lens = match ip {
            IpAddr::V4(_) => &self.v4_lens,
            IpAddr::V6(_) => &self.v6_lens,
        };
        lens.iter().filter(|&&l| l <= max_len).find_map(|&len| {
            let key = Cidr {
                addr: mask(ip, len),
                len,
            };
            self.entries
                .get_key_value(&key)
                .map(|(c, s)| (c, s.as_str()))
        })
    }

    /// Whether an entry longer than `than` lies within `addr/len`. Entries in the
    /// address range that are not longer all start at `addr` (at most one per length),
    /// so the scan stops quickly.
    fn has_longer_within(&self, addr: IpAddr, len: u8, than: u8) -> bool {
        let from = Cidr { addr, len: 0 };
        let to = Cidr {
            addr: last(addr, len),
            len: u8::MAX,
        };
        self.entries.range(from..=to).any(|(c, _)| c.len > than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_prefix_is_masked_to_24() {
        let p = ClientPrefix::of(ip("192.0.2.77"));
        assert_eq!(p.addr(), ip("192.0.2.0"));
        assert_eq!(p.len(), 24);
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert!(p.contains(ip("192.0.2.255")));
        assert!(!p.contains(ip("192.0.3.1")));
        assert_eq!(ClientPrefix::of(ip("192.0.2.1")), p);
    }

    #[test]
    fn v6_prefix_is_masked_to_48() {
        let p = ClientPrefix::of(ip("2001:db8:1234:5678::1"));
        assert_eq!(p.to_string(), "2001:db8:1234::/48");
        assert!(p.contains(ip("2001:db8:1234:ffff::9")));
        assert!(!p.contains(ip("2001:db8:1235::1")));
        assert!(!p.contains(ip("192.0.2.1")));
    }

    #[test]
    fn mapped_v6_is_treated_as_v4() {
        let p = ClientPrefix::of(ip("::ffff:192.0.2.77"));
        assert_eq!(p, ClientPrefix::of(ip("192.0.2.1")));
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert!(p.contains(ip("::ffff:192.0.2.9")));
        let cidr: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        assert_eq!(
            ClientPrefix::from_ecs(ip("::ffff:198.51.100.0"), 120).unwrap(),
            ClientPrefix::of(ip("198.51.100.3"))
        );
        assert_eq!(
            ClientPrefix::from_ecs(ip("::ffff:198.51.100.0"), 112)
                .unwrap()
                .to_string(),
            "198.51.0.0/16"
        );
    }

    #[test]
    fn ecs_masks_to_at_most_the_client_length() {
        let p = ClientPrefix::from_ecs(ip("198.51.100.200"), 32).unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24");
        let p = ClientPrefix::from_ecs(ip("198.51.100.200"), 16).unwrap();
        assert_eq!(p.to_string(), "198.51.0.0/16");
        let p = ClientPrefix::from_ecs(ip("2001:db8:aa:bb::1"), 64).unwrap();
        assert_eq!(p.to_string(), "2001:db8:aa::/48");
        let p = ClientPrefix::from_ecs(ip("2001:db8:aa:bb::1"), 32).unwrap();
        assert_eq!(p.to_string(), "2001:db8::/32");
        let p = ClientPrefix::from_ecs(ip("198.51.100.200"), 0).unwrap();
        assert_eq!(p.to_string(), "0.0.0.0/0");
        assert!(p.contains(ip("8.8.8.8")));
    }

    #[test]
    fn ecs_rejects_lengths_longer_than_the_address() {
        assert!(matches!(
            ClientPrefix::from_ecs(ip("198.51.100.1"), 33),
            Err(PrefixError::LengthOutOfRange {
                len: 33,
                max: 32,
                ..
            })
        ));
        assert!(ClientPrefix::from_ecs(ip("2001:db8::1"), 129).is_err());
        assert!(ClientPrefix::from_ecs(ip("2001:db8::1"), 255).is_err());
        assert!(ClientPrefix::from_ecs(ip("2001:db8::1"), 128).is_ok());
        assert!(Cidr::new(ip("10.0.0.0"), 40).is_err());
    }

    #[test]
    fn display_and_parse_round_trip() {
        for text in ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/48", "0.0.0.0/0"] {
            let p: ClientPrefix = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
            let c: Cidr = text.parse().unwrap();
            assert_eq!(c.to_string(), text);
        }
        // Client prefixes are read leniently, CIDRs strictly.
        assert_eq!(
            "192.0.2.9".parse::<ClientPrefix>().unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            "192.0.2.9/32".parse::<ClientPrefix>().unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert!(matches!(
            "10.1.2.0/16".parse::<Cidr>(),
            Err(PrefixError::HostBitsSet { .. })
        ));
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0/8",
            "10.0.0.0/-1",
            "10.0.0.0/33",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
            assert!(bad.parse::<ClientPrefix>().is_err(), "{bad}");
        }
        let a: ClientPrefix = "10.0.0.0/24".parse().unwrap();
        let b: ClientPrefix = "10.0.1.0/24".parse().unwrap();
        assert!(a < b);
    }

    #[test]
    fn static_map_longest_match() {
        let map = StaticMap::from_entries([
            ("10.0.0.0/8", "core"),
            ("10.1.0.0/16", "eu-west"),
            ("10.1.2.0/24", "eu-west-2"),
            ("2001:db8::/32", "v6-site"),
        ])
        .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.site_for(ip("10.1.2.3")), Some("eu-west-2"));
        assert_eq!(map.site_for(ip("10.1.3.3")), Some("eu-west"));
        assert_eq!(map.site_for(ip("10.9.0.1")), Some("core"));
        assert_eq!(map.site_for(ip("::ffff:10.1.2.3")), Some("eu-west-2"));
        assert_eq!(map.site_for(ip("11.0.0.1")), None);
        assert_eq!(map.site_for(ip("2001:db8:5::1")), Some("v6-site"));
        assert_eq!(map.site_for(ip("2001:db9::1")), None);

        let m = map.lookup(&ClientPrefix::of(ip("10.1.2.3"))).unwrap();
        assert_eq!(
            (m.site, m.cidr.to_string(), m.scope_len),
            ("eu-west-2", "10.1.2.0/24".into(), 24)
        );
        // An ECS /16 cannot use the /24 entry inside it.
        let m = map
            .lookup(&ClientPrefix::from_ecs(ip("10.1.0.0"), 16).unwrap())
            .unwrap();
        assert_eq!(m.site, "eu-west");
        assert!(map.lookup(&ClientPrefix::of(ip("11.0.0.1"))).is_none());
    }

    #[test]
    fn static_map_scope_stops_at_more_specific_entries() {
        let map = StaticMap::from_entries([
            ("10.0.0.0/8", "core"),
            ("10.1.0.0/16", "eu-west"),
            ("10.1.2.0/24", "eu-west-2"),
        ])
        .unwrap();
        // 10.200.0.0/24 is far from the /16: the /8 answer holds for the whole 10.128/9.
        let m = map.lookup(&ClientPrefix::of(ip("10.200.0.1"))).unwrap();
        assert_eq!((m.site, m.scope_len), ("core", 9));
        // 10.0.0.0/24 shares 15 bits with 10.1.0.0/16: the scope must exclude it.
        let m = map.lookup(&ClientPrefix::of(ip("10.0.0.1"))).unwrap();
        assert_eq!((m.site, m.scope_len), ("core", 16));
        // Inside the /16, away from the /24.
        let m = map.lookup(&ClientPrefix::of(ip("10.1.128.1"))).unwrap();
        assert_eq!((m.site, m.scope_len), ("eu-west", 17));
        // A map without nested entries answers at the entry's own length.
        let flat = StaticMap::from_entries([("10.1.0.0/16", "a"), ("10.2.0.0/16", "b")]).unwrap();
        let m = flat.lookup(&ClientPrefix::of(ip("10.2.9.9"))).unwrap();
        assert_eq!((m.site, m.scope_len), ("b", 16));
    }

    #[test]
    fn static_map_refuses_bad_entries() {
        assert!(matches!(
            StaticMap::from_entries([("10.0.0.0/8", "a"), ("10.0.0.0/8", "b")]),
            Err(PrefixError::Duplicate(_))
        ));
        assert!(matches!(
            StaticMap::from_entries([("10.0.0.0/8", " ")]),
            Err(PrefixError::EmptySite(_))
        ));
        assert!(StaticMap::from_entries([("10.0.0.1/8", "a")]).is_err());
        assert!(StaticMap::from_entries([("nonsense", "a")]).is_err());
    }
}
