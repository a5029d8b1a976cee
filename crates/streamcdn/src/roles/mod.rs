//! The roles a streamcdn server can run, each a [`crate::context::Role`].

pub mod archiver;
pub mod carried;
pub mod cis;
pub mod control;
pub mod edge;
pub mod ingest;
pub mod playback_access;
pub mod provider_api;
pub mod router;
