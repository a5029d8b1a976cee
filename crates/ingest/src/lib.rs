//! The ingest role: RTMP publishers in, HLS out over HTTP, every segment recorded.
//!
//! [`rtmp_server`] is the socket shell around the sans-IO session in `streamcdn-media`;
//! [`hub::StreamHub`] owns stream state; [`publisher::Publisher`] runs one stream's
//! pipeline; [`recording`] is the on-disk format (segments + journal); [`origin`]
//! serves it all over HTTP; [`cluster`] announces it all in the registry and decides
//! when this server may take over a stream from a dead one; [`archiver`] moves finished
//! recordings to on-demand storage.

pub mod archiver;
pub mod cluster;
pub mod hub;
pub mod origin;
pub mod publisher;
pub mod recording;
pub mod rtmp_server;
