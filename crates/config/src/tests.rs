//! Loading and error reporting as a whole; each section's own checks are tested in its
//! module.

use std::path::Path;
use std::time::Duration;

use crate::{Config, ConfigError, Listen, LogFormat};

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.rtmp.listen.port(), 1935);
    assert_eq!(c.http.listen.port(), 8080);
    assert_eq!(c.admin.listen.port(), 8081);
    assert_eq!(c.hls.segment_duration, Duration::from_secs(2));
}

#[test]
fn the_documented_example_is_valid() {
    let text = include_str!("../../../examples/streamcdn.toml");
    let c = parse(text).unwrap();
    assert!(!c.providers.is_empty());
}

#[test]
fn type_errors_name_line_and_key() {
    let e = parse("[hls]\nsegment_duration = \"2s\"\nlive_window = \"six\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (3, Some("hls.live_window")));
    let e = parse("[rtmp]\nlisten = \"nowhere\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (2, Some("rtmp.listen")));
    let e = parse("[hls]\nsegment_length = \"2s\"\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("segment_length"), "{e}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let text = "[[providers]]\nname = \"a\"\nstream_key = \"secret-key-1\"\n\n[[providers]]\nname = \"a\"\nstream_key = \"secret-key-2\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (6, Some("providers[1].name")));
    assert!(e.to_string().starts_with("test.toml:6:"), "{e}");
    let e = parse("[hls]\nsegment_duration = \"1h\"\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = parse("[rtmp]\nread_interval = \"250ms\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (2, Some("rtmp.read_interval")));
    let c = parse("[rtmp]\nread_interval = \"0s\"\n").unwrap();
    assert!(c.rtmp.read_interval.is_zero());
}

#[test]
fn tls_listener_is_on_by_default_and_can_be_turned_off() {
    let c = parse("").unwrap();
    assert_eq!(c.http.tls_listen, Listen::At(([0, 0, 0, 0], 8443).into()));
    let c = parse("[http]\ntls_listen = \"off\"\n").unwrap();
    assert_eq!(c.http.tls_listen.addr(), None);
    assert_eq!(c.rtmp.tls_listen, Listen::At(([0, 0, 0, 0], 1936).into()));
    let c = parse("[rtmp]\ntls_listen = \"off\"\n").unwrap();
    assert_eq!(c.rtmp.tls_listen.addr(), None);
    let e = parse("[rtmp]\nlisten = \"127.0.0.1:9000\"\ntls_listen = \"127.0.0.1:9000\"\n")
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("rtmp.tls_listen"));
    let e = parse("[http]\ntls_listen = \"\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (2, Some("http.tls_listen")));
    assert!(e.to_string().contains("\"off\""), "{e}");
    let e = parse("[http]\nlisten = \"127.0.0.1:9000\"\ntls_listen = \"127.0.0.1:9000\"\n")
        .unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (3, Some("http.tls_listen")));
}

#[test]
fn log_format_is_text_by_default_or_json() {
    assert_eq!(parse("").unwrap().log.format, LogFormat::Text);
    let c = parse("[log]\nformat = \"json\"\n").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (2, Some("log.format")));
}

#[test]
fn srt_section_and_passphrases_are_checked() {
    let c = parse("").unwrap();
    assert_eq!(c.srt.listen, Listen::At(([0, 0, 0, 0], 8890).into()));
    assert_eq!(c.srt.latency, Duration::from_millis(200));
    let c = parse("[srt]\nlisten = \"off\"\nlatency = \"1s\"\n").unwrap();
    assert_eq!(
        (c.srt.listen.addr(), c.srt.latency),
        (None, Duration::from_secs(1))
    );
    let e = parse("[srt]\nlatency = \"5ms\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (2, Some("srt.latency")));
    let e = parse("[srt]\nmax_connections = 0\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("srt.max_connections"));
    let provider = "[[providers]]\nname = \"a\"\nstream_key = \"secret-key-0000001\"\n";
    let c = parse(&format!("{provider}srt_passphrase = \"ten-chars!\"\n")).unwrap();
    assert_eq!(c.providers[0].srt_passphrase.as_deref(), Some("ten-chars!"));
    let e = parse(&format!("{provider}srt_passphrase = \"short\"\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("providers[0].srt_passphrase"));
    assert!(e.message.contains("10-79 characters"), "{}", e.message);
}

#[test]
fn webrtc_section_is_checked_and_candidates_default_to_the_origin() {
    let c = parse("").unwrap();
    assert_eq!(c.webrtc.listen, Listen::At(([0, 0, 0, 0], 8189).into()));
    assert_eq!(c.webrtc.inactivity_timeout, Duration::from_secs(10));
    assert_eq!(
        c.webrtc.candidate_hosts(&c.origin),
        vec![("127.0.0.1".to_owned(), 0)]
    );
    let c = parse(
        "[origin]\nlisten = \"0.0.0.0:8088\"\nadvertise = \"http://ingest-1.example.net:8088/\"\n",
    )
    .unwrap();
    assert_eq!(
        c.webrtc.candidate_hosts(&c.origin),
        vec![("ingest-1.example.net".to_owned(), 0)]
    );
    let c = parse("[webrtc]\ncandidates = [\"203.0.113.7\", \"198.51.100.1:3478\"]\n").unwrap();
    assert_eq!(
        c.webrtc.candidate_hosts(&c.origin),
        vec![
            ("203.0.113.7".to_owned(), 0),
            ("198.51.100.1".to_owned(), 3478)
        ]
    );
    let e = parse("[webrtc]\ncandidates = [\"0.0.0.0\"]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("webrtc.candidates[0]"));
    let e = parse("[webrtc]\ninactivity_timeout = \"100ms\"\n").unwrap_err();
    assert_eq!(
        (e.line, e.key.as_deref()),
        (2, Some("webrtc.inactivity_timeout"))
    );
    let c = parse("[webrtc]\nlisten = \"off\"\n").unwrap();
    assert_eq!(c.webrtc.listen.addr(), None);
}

#[test]
fn registry_urls_are_checked_before_anything_connects() {
    let with_url = |url: &str| {
        parse(&format!(
            "[registry]\nbackend = \"redis\"\nurl = \"{url}\"\n"
        ))
    };
    let c = with_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3/streamcdn").unwrap();
    assert!(c.registry.url.starts_with("redis+sentinel://"));
    with_url("redis://127.0.0.1:6379/0").unwrap();
    let e = with_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (3, Some("registry.url")));
    assert!(e.to_string().contains("master set"), "{e}");
    let e = with_url("redis+sentinel://10.0.0.1:2637x/m").unwrap_err();
    assert!(e.to_string().contains("\"2637x\""), "{e}");
    let e = with_url("http://10.0.0.1/").unwrap_err();
    assert!(e.to_string().contains("redis+sentinel://"), "{e}");
}
