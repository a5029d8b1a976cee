//! What a viewer's browser gets from an edge besides media: the stream's player page,
//! hls.js (a pinned copy, compiled in) and rum.js, the real-user measurement tool, plus
//! the test object rum.js downloads. Text and bytes only: the binary serves them.
//!
//! ```text
//! /<provider>/<stream>/      the player page (streamcdn-urls: `Target::PlayerPage`)
//! /_streamcdn/hls.min.js     hls.js, long-cached, asked for as `?v=<digest>`
//! /_streamcdn/rum.js         the measurement tool; operators embed it in their pages
//! /_streamcdn/rum/object     64 KiB that rum.js times (any query: a cache-busting nonce)
//! ```

use std::sync::LazyLock;

/// A file served as is under a fixed path.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: &'static [u8],
    digest: LazyLock<String>,
}

impl Asset {
    /// A digest of the body (FNV-1a, 64 bits, hex): the same on every edge built from
    /// the same file, so it serves as the ETag and as the cache-busting version.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The path with the body's digest as the query, so a browser's cached copy is
    /// never used for another version.
    pub fn versioned_path(&self) -> String {
        format!("{}?v={}", self.path, self.digest())
    }
}

fn fnv1a_hex(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

const HLS_JS_BODY: &[u8] = include_bytes!("../assets/hls.min.js");
const DASHBOARD_BODY: &[u8] = include_bytes!("../assets/dashboard.html");

/// The operator's dashboard, served by the admin listener: one page, no data in it (it
/// asks for an admin token, then reads the admin API and refreshes by itself).
pub static DASHBOARD: Asset = Asset {
    path: "/dashboard",
    content_type: "text/html; charset=utf-8",
    cache_control: "no-cache",
    body: DASHBOARD_BODY,
    digest: LazyLock::new(|| fnv1a_hex(DASHBOARD_BODY)),
};
const RUM_JS_BODY: &[u8] = include_bytes!("../assets/rum.js");

/// hls.js 1.7.4 (Apache-2.0; see `assets/README.md`). Cached for a year: pages ask for
/// it by [`Asset::versioned_path`].
pub static HLS_JS: Asset = Asset {
    path: "/_streamcdn/hls.min.js",
    content_type: "text/javascript; charset=utf-8",
    cache_control: "public, max-age=31536000",
    body: HLS_JS_BODY,
    digest: LazyLock::new(|| fnv1a_hex(HLS_JS_BODY)),
};

/// The measurement tool. Operators' pages embed it by its plain path, so a new version
/// reaches them within minutes.
pub static RUM_JS: Asset = Asset {
    path: "/_streamcdn/rum.js",
    content_type: "text/javascript; charset=utf-8",
    cache_control: "public, max-age=300",
    body: RUM_JS_BODY,
    digest: LazyLock::new(|| fnv1a_hex(RUM_JS_BODY)),
};

/// Large enough for the transfer time to show a path's bandwidth, small enough to cost
/// a viewer nothing.
pub const RUM_OBJECT_BYTES: usize = 64 * 1024;
/// The test object's body, the same for every request.
pub static RUM_OBJECT: [u8; RUM_OBJECT_BYTES] = [0; RUM_OBJECT_BYTES];

const PLAYER_TEMPLATE: &str = include_str!("../assets/player.html");

/// The player page of `provider/stream` (names already validated by streamcdn-urls;
/// escaped all the same). The page plays the relative `index.m3u8`, so it must be
/// served at `/<provider>/<stream>/` or `/<provider>/<stream>/player`. With `router`
/// (the router's HTTP base URL), the page embeds rum.js pointed at it.
pub fn player_page(provider: &str, stream: &str, router: Option<&str>) -> String {
    let rum = router.map_or_else(String::new, |router| {
        format!(
            r#"<script src="{}" data-router="{}" async></script>"#,
            escape_html(&RUM_JS.versioned_path()),
            escape_html(router)
        )
    });
    render(PLAYER_TEMPLATE, |name| match name {
        "provider" => escape_html(provider),
        "stream" => escape_html(stream),
        "hls_js" => escape_html(&HLS_JS.versioned_path()),
        "rum" => rum.clone(),
        // Left as written, for the tests to catch.
        other => format!("{{{{{other}}}}}"),
    })
}

/// Replaces each `{{name}}` of `template` by `value(name)` in one pass, so nothing a
/// value contains is ever read as a placeholder.
fn render(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&value(&rest[start + 2..start + 2 + len]));
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Text safe inside HTML elements and quoted attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_plays_the_relative_playlist_with_the_embedded_hls_js() {
        let page = player_page("demo", "cam", None);
        assert!(page.starts_with("<!doctype html>"), "{page}");
        assert!(page.contains("<title>demo/cam"), "{page}");
        assert!(page.contains("'index.m3u8'"), "{page}");
        assert!(
            page.contains(&format!(
                r#"<script src="/_streamcdn/hls.min.js?v={}">"#,
                HLS_JS.digest()
            )),
            "{page}"
        );
        assert!(
            !page.contains("rum.js"),
            "no router, no measurement: {page}"
        );
        assert!(!page.contains("{{"), "a placeholder was left: {page}");
    }

    #[test]
    fn the_page_embeds_rum_js_pointed_at_the_router() {
        let page = player_page("demo", "cam", Some("http://router.example:8082"));
        assert!(
            page.contains(&format!(
                r#"<script src="/_streamcdn/rum.js?v={}" data-router="http://router.example:8082" async></script>"#,
                RUM_JS.digest()
            )),
            "{page}"
        );
    }

    #[test]
    fn everything_interpolated_is_escaped() {
        let page = player_page("<evil>", "a\"b'&", Some(r#""><script>alert(1)</script>"#));
        assert!(page.contains("&lt;evil&gt;/a&quot;b&#39;&amp;"), "{page}");
        assert!(
            page.contains(r#"data-router="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;""#),
            "{page}"
        );
        assert!(
            !page.contains("<evil>") && !page.contains("alert(1)</script>"),
            "{page}"
        );
        // A value that looks like a placeholder stays text.
        assert!(player_page("{{rum}}", "s", Some("x")).contains("<title>{{rum}}/s"));
    }

    #[test]
    fn assets_are_the_pinned_files_with_stable_digests() {
        assert!(HLS_JS.body.starts_with(b"!function"));
        assert!(std::str::from_utf8(RUM_JS.body).is_ok());
        assert_eq!(HLS_JS.digest(), fnv1a_hex(HLS_JS.body));
        assert_eq!(HLS_JS.digest().len(), 16);
        assert_ne!(HLS_JS.digest(), RUM_JS.digest());
        // FNV-1a's published test vector.
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
