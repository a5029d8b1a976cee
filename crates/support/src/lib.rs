//! Small helpers that several crates need and no one of them owns: durable file writes
//! ([`durable`]), the wall clock ([`clock`]), with the `http-client` feature the one
//! builder of HTTP clients (`http_client`), and with the `certs` feature the one maker
//! of certificates (`certs`). A leaf: it depends on no streamcdn
//! crate, so any crate may use it without a cycle or a role importing another role.

#[cfg(feature = "certs")]
pub mod certs;
pub mod clock;
pub mod durable;
#[cfg(feature = "http-client")]
pub mod http_client;
