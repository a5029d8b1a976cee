//! Request routing without I/O: which edge a viewer should use, and the DNS answer that
//! sends it there. Everything here is a pure function of bytes, state and `now`; the
//! router role in the binary is the socket shell around it.
//!
//! - [`prefix`]: client prefixes (/24 for IPv4, /48 for IPv6), from the client's address
//!   or its EDNS Client Subnet (RFC 7871).
//! - [`decision`]: ranks the healthy edges for a prefix from measurements (recency
//!   weighted), adjusted for load, with hysteresis; falls back to a static CIDR → site
//!   map, then to the least loaded edge.
//! - [`dns`]: the authoritative responder for the delivery zone: SOA and NS, A/AAAA
//!   answers with the chosen edges, NXDOMAIN/NODATA with the SOA, REFUSED outside the
//!   zone, ECS scope, truncation for UDP.

pub mod decision;
pub mod dns;
pub mod prefix;
