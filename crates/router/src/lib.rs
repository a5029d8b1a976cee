//! The router as a service: serves sockets around the pure routing logic of
//! `streamcdn-routing` (prefixes, decision, map, DNS responder, RUM checks).
//!
//! - [`service`]: edges from the node directory and the router's own health checks,
//!   DNS over UDP and TCP, the HTTP redirect mode, probe requests to edges, RUM jobs and
//!   beacons, the routing API.
//! - `response_cache`: responses to repeated UDP queries, reused with their new ID.
//! - `responses`: DNS responses counted by query type and result, from their bytes.
//! - `udp`: datagrams in batches (`recvmmsg`/`sendmmsg`) for the DNS service.

mod response_cache;
mod responses;
pub mod service;
mod udp;
