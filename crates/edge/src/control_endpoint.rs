//! The edge control endpoint, `POST /_streamcdn/control` on the playback listener:
//! the command invocation system asks a cache to purge, invalidate or preposition
//! ([`crate::control`]), authenticated by an HMAC of the body with the deployment's key
//! in [`CONTROL_HEADER`]. Each cache announces it in the node directory as its
//! `control` address, with its tier (`streamcdn_cdni::Tier::announce`).

pub const CONTROL_PATH: &str = "/_streamcdn/control";
pub const CONTROL_HEADER: &str = "X-Streamcdn-Control";
