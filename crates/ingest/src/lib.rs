//! The ingest role: RTMP (and SRT) publishers in, HLS out over HTTP, every segment recorded.
//!
//! [`rtmp_server`] is the socket shell around the sans-IO session in `streamcdn-media`;
//! [`hub::StreamHub`] owns stream state; [`publisher::Publisher`] runs one stream's
//! pipeline, whose files the [`recorder`] threads write (`streamcdn-recording`);
//! [`origin`] serves it all over
//! HTTP; [`cluster`] decides when this server may take over a stream from a dead one
//! and announces the hub's [`events`] in the registry.
//!
//! Modules depend one way: `rtmp_server` → `publisher` → `recorder` → `hub` → `cluster`
//! → `events`;
//! `origin` → `hub`; `srt_server` → `hub` (the SRT transport is `streamcdn-srt`).

pub mod cluster;
pub mod events;
pub mod hub;
pub mod origin;
pub mod publisher;
pub mod recorder;
pub mod rtmp_server;
pub mod srt_server;
