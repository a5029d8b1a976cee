//! Request routing without I/O: which edge a viewer should use, and the DNS answer that
//! sends it there. Pure functions of bytes, state and `now`; `streamcdn-router` is the
//! service that serves sockets around them.
//!
//! - [`prefix`]: client prefixes (/24 for IPv4, /48 for IPv6), from the client's address
//!   or its EDNS Client Subnet (RFC 7871).
//! - [`decision`]: ranks the healthy edges for a prefix from measurements (recency
//!   weighted), adjusted for load, with hysteresis; falls back to a static CIDR → site
//!   map, then to the least loaded edge.
//! - [`dns`]: the authoritative responder for the delivery zone: SOA and NS, A/AAAA
//!   answers with the chosen edges, NXDOMAIN/NODATA with the SOA, REFUSED outside the
//!   zone, ECS scope, truncation for UDP.
//! - [`ingest`]: which ingest servers answer the ingest name (publishers' nearest
//!   cluster, least loaded first, healthy only).
//! - [`map`]: the routing map, versioned, replaced whole, with the history of changes.
//! - [`rum`]: real-user measurement: signed measurement jobs, beacons checked before
//!   they are believed, per-prefix medians over distinct clients.
//! - [`probe`]: the probe requests the router sends edges and the reports they answer
//!   with (the edges' side is `streamcdn-probe-agent`).
//! - [`state`]: `RouterState`, every table the router keeps and all its policy
//!   (resolver → client mapping, probe selection, report dedup, RUM jobs), over `now`.

pub mod decision;
pub mod dns;
pub mod ingest;
pub mod map;
pub mod prefix;
pub mod probe;
pub mod rum;
pub mod state;
