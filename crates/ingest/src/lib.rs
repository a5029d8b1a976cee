//! The ingest role: RTMP, MPEG-TS (over HTTP and SRT) and WebRTC (WHIP) publishers in, HLS out over HTTP,
//! every segment recorded.
//!
//! [`rtmp_server`] is the socket shell around the sans-IO session in `streamcdn-media`;
//! [`ts_ingest::TsPublisher`] publishes a transport stream (the entry point of every
//! protocol that carries one: [`ts_upload`] over HTTP, SRT); both end through `publish`;
//! [`hub::StreamHub`] owns stream state; [`publisher::Publisher`] runs one stream's
//! pipeline, whose files the [`recorder`] threads write (`streamcdn-recording`);
//! [`origin`] serves it all over
//! HTTP; [`cluster`] decides when this server may take over a stream from a dead one
//! and announces the hub's [`events`] in the registry.
//!
//! [`whip`] publishes WebRTC (WHIP) sessions of `streamcdn-webrtc` through the RTP front
//! end; it and [`ts_ingest`] publish through [`media_publish::MediaPublisher`].
//!
//! Modules depend one way: `ts_upload` → `ts_ingest`; `whip` and `ts_ingest` →
//! `media_publish`; `rtmp_server` and `media_publish` →
//! `publish` → `publisher` → `recorder` → `hub` → `cluster` → `events`;
//! `origin` → `hub`; `srt_server` → `ts_ingest` (the SRT
//! transport is `streamcdn-srt`, the WebRTC one `streamcdn-webrtc`).

// The SRT publish task's future (transport, demuxer, publisher, recorder) is deep
// enough that proving it `Send` passes the default query depth.
#![recursion_limit = "256"]

pub mod cluster;
pub mod events;
pub mod hub;
pub mod media_publish;
pub mod origin;
mod publish;
pub mod publisher;
pub mod recorder;
pub mod rtmp_server;
pub mod srt_server;
pub mod ts_ingest;
pub mod ts_upload;
pub mod whip;
