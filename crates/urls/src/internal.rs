//! streamcdn's own paths beside the playback scheme, all under [`PREFIX`], and which
//! listener serves each.
//!
//! ```text
//! /_streamcdn/hls.min.js   edge playback listener: hls.js for player pages
//! /_streamcdn/rum.js       edge and router: the real-user measurement script
//! /_streamcdn/rum/object   edge playback listener: the 64 KiB object rum.js times
//! /_streamcdn/rum/job      router HTTP listener: a measurement job for a browser
//! /_streamcdn/rum/beacon   router HTTP listener: the browser's results
//! /_streamcdn/probe        edge playback listener: the router's signed probe requests
//! /_streamcdn/control      edge playback listener: signed purge/invalidate commands
//! ```

/// What every internal path starts with. [`crate::is_valid_name`] accepts `_streamcdn`
/// as a provider name, so these paths stay apart from the playback scheme by their shape
/// alone: none of them parses as a [`crate::Target`] (tested below).
pub const PREFIX: &str = "/_streamcdn/";

/// hls.js, served long-cached (asked for as `?v=<digest>`). Also written as
/// `streamcdn_web::HLS_JS.path`; routed by the edge role (`streamcdn/src/roles/edge.rs`)
/// and named in player pages (`web::player_page`). (The admin dashboard serves the same
/// file at its own `/dashboard/hls.min.js`.)
pub const HLS_JS_PATH: &str = "/_streamcdn/hls.min.js";

/// rum.js, the real-user measurement script operators embed. Also written as
/// `streamcdn_web::RUM_JS.path`; routed by the edge role (`roles/edge.rs`) and the router
/// role (`roles/router.rs`); `web/assets/rum.js` documents it.
pub const RUM_JS_PATH: &str = "/_streamcdn/rum.js";

/// The test object rum.js downloads from each candidate edge: routed by the edge role
/// (`roles/edge.rs`, the body is `streamcdn_web::RUM_OBJECT`), written into jobs by
/// `routing::state`.
pub const RUM_OBJECT_PATH: &str = "/_streamcdn/rum/object";

/// Measurement jobs for browsers, on the router's HTTP listener (routed by
/// `router::service`); `web/assets/rum.js` fetches it.
pub const RUM_JOB_PATH: &str = "/_streamcdn/rum/job";

/// The browsers' beacons, on the router's HTTP listener (routed by `router::service`,
/// named in each job by `routing::state`).
pub const RUM_BEACON_PATH: &str = "/_streamcdn/rum/beacon";

/// Signed probe requests from the router, on an edge's playback listener: the router
/// (`router::service`) sends to it, the edge role (`roles/edge.rs`) routes it;
/// `routing::probe` is their wire format.
pub const PROBE_PATH: &str = "/_streamcdn/probe";

/// Signed control commands (purge, invalidate) on an edge's playback listener: routed
/// by `edge::control_endpoint`; the edge role (`roles/edge.rs`) announces
/// `<playback>/_streamcdn/control?tier=<tier>` as the server's `control` address for
/// the CIS; `edge::control` describes its body.
pub const CONTROL_PATH: &str = "/_streamcdn/control";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_path_is_under_the_prefix_and_no_playback_target() {
        let all = [
            HLS_JS_PATH,
            RUM_JS_PATH,
            RUM_OBJECT_PATH,
            RUM_JOB_PATH,
            RUM_BEACON_PATH,
            PROBE_PATH,
            CONTROL_PATH,
        ];
        for path in all {
            assert!(path.starts_with(PREFIX), "{path}");
            assert!(crate::Target::parse(path).is_err(), "{path}");
        }
    }
}
