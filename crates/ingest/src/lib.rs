//! The ingest role: RTMP publishers in, HLS out over HTTP, every segment recorded.
//!
//! [`rtmp_server`] is the socket shell around the sans-IO session in `streamcdn-media`;
//! [`hub::StreamHub`] owns stream state; [`publisher::Publisher`] runs one stream's
//! pipeline; [`recording`] is the on-disk format (segments + journal); [`origin`]
//! serves it all over HTTP.

pub mod hub;
pub mod origin;
pub mod publisher;
pub mod recording;
pub mod rtmp_server;
