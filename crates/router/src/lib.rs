//! Request routing: which edge a viewer should use, and the DNS answer (or HTTP
//! redirect) that sends it there. The decision and the DNS responder are pure functions
//! of bytes, state and `now`; [`service`] is the thin async shell around them.
//!
//! - [`prefix`]: client prefixes (/24 for IPv4, /48 for IPv6), from the client's address
//!   or its EDNS Client Subnet (RFC 7871).
//! - [`decision`]: ranks the healthy edges for a prefix from measurements (recency
//!   weighted), adjusted for load, with hysteresis; falls back to a static CIDR → site
//!   map, then to the least loaded edge.
//! - [`dns`]: the authoritative responder for the delivery zone: SOA and NS, A/AAAA
//!   answers with the chosen edges, NXDOMAIN/NODATA with the SOA, REFUSED outside the
//!   zone, ECS scope, truncation for UDP.
//! - [`map`]: the routing map, versioned, replaced whole, with the history of changes.
//! - [`service`]: edges from the node directory and the router's own health checks,
//!   DNS over UDP and TCP, the HTTP redirect mode, the routing API.
//! - `response_cache`: responses to repeated UDP queries, reused with their new ID.
//! - `responses`: DNS responses counted by query type and result, from their bytes.
//! - [`rum`]: real-user measurement: signed measurement jobs, beacons checked before
//!   they are believed, per-prefix medians over distinct clients.
//! - `udp`: datagrams in batches (`recvmmsg`/`sendmmsg`) for the DNS service.

pub mod decision;
pub mod dns;
pub mod map;
pub mod prefix;
pub mod probe;
mod response_cache;
mod responses;
pub mod rum;
pub mod service;
mod udp;
