//! The roles a streamcdn server can run, each a [`crate::context::Role`].

pub mod archiver;
pub mod cis;
pub mod edge;
pub mod ingest;
pub mod playback_access;
pub mod provider_api;
pub mod router;
