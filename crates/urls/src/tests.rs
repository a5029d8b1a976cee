use super::*;

fn stream(p: &str, s: &str) -> StreamName {
    StreamName::new(p, s).unwrap()
}

#[test]
fn every_url_of_the_scheme_parses_to_its_target() {
    let s = stream("demo", "cam");
    let r = s.recording("20261121T120000Z-1a2b").unwrap();
    let cases = [
        (
            "/demo/cam/index.m3u8",
            Target::StreamMultivariant(s.clone()),
        ),
        ("/demo/cam/live.m3u8", Target::StreamLive(s.clone())),
        ("/demo/cam/recordings", Target::Recordings(s.clone())),
        ("/demo/cam/", Target::PlayerPage(s.clone())),
        (
            "/demo/cam/20261121T120000Z-1a2b/index.m3u8",
            Target::Recording(r.clone(), RecordingObject::Multivariant),
        ),
        (
            "/demo/cam/20261121T120000Z-1a2b/playlist.m3u8",
            Target::Recording(r.clone(), RecordingObject::Playlist),
        ),
        (
            "/demo/cam/20261121T120000Z-1a2b/init-2.mp4",
            Target::Recording(
                r.clone(),
                RecordingObject::Media {
                    file: "init-2.mp4".into(),
                    kind: MediaKind::Init,
                },
            ),
        ),
        (
            "/demo/cam/20261121T120000Z-1a2b/000042.ts",
            Target::Recording(
                r,
                RecordingObject::Media {
                    file: "000042.ts".into(),
                    kind: MediaKind::Segment,
                },
            ),
        ),
    ];
    for (path, target) in cases {
        assert_eq!(Target::parse(path).as_ref(), Ok(&target), "{path}");
        assert_eq!(target.path(), path);
    }
}

#[test]
fn part_file_names_round_trip() {
    assert_eq!(part_file(42, 3), "000042.3.m4s");
    assert_eq!(parse_part_file("000042.3.m4s"), Some((42, 3)));
    assert_eq!(parse_part_file("1234567.12.m4s"), Some((1_234_567, 12)));
    assert_eq!(parse_part_file("000042.m4s"), None);
    assert_eq!(parse_part_file("000042.x.m4s"), None);
}

#[test]
fn kinds_come_from_the_target() {
    let kind = |p: &str| Target::parse(p).unwrap().kind();
    assert_eq!(kind("/p/s/index.m3u8"), ObjectKind::Playlist);
    assert_eq!(kind("/p/s/r/playlist.m3u8"), ObjectKind::Playlist);
    assert_eq!(kind("/p/s/r/000001.m4s"), ObjectKind::Segment);
    assert_eq!(kind("/p/s/r/init.mp4"), ObjectKind::Segment);
    assert_eq!(kind("/p/s/r/000001.3.m4s"), ObjectKind::Part);
    assert_eq!(
        Target::parse("/p/s/r/000001.3.m4s").unwrap().label(),
        "part"
    );
    assert_eq!(kind("/p/s/recordings"), ObjectKind::Listing);
    assert_eq!(Target::parse("/p/s/r/init.mp4").unwrap().label(), "init");
    assert_eq!(kind("/p/s/"), ObjectKind::Page);
}

#[test]
fn the_player_page_has_two_urls_and_builds_the_one_ending_in_a_slash() {
    let page = Target::PlayerPage(stream("demo", "cam"));
    assert_eq!(Target::parse("/demo/cam/player").as_ref(), Ok(&page));
    assert_eq!(Target::parse("/demo/cam/").as_ref(), Ok(&page));
    assert_eq!(page.path(), "/demo/cam/");
    // Only `/<p>/<s>/` may end in a slash; everything else that does is invalid, as
    // before the page existed.
    for bad in [
        "//",
        "/demo/",
        "/demo/cam/x/",
        "/demo/cam//",
        "/-p/s/",
        "/é/",
        "/a.b/s/",
    ] {
        assert_eq!(Target::parse(bad), Err(UrlError::Invalid), "{bad}");
    }
    // Not a directory: the page's relative `index.m3u8` would miss the stream.
    assert_eq!(Target::parse("/demo/cam"), Err(UrlError::Unknown));
    // Edges render it: no cache key, no stored object.
    for path in ["/demo/cam/", "/demo/cam/player"] {
        assert_eq!(
            CacheKey::parse(path, None),
            Err(UrlError::Unknown),
            "{path}"
        );
    }
    assert_eq!(Stored::of(&page), None);
}

#[test]
fn hostile_and_unknown_paths_are_told_apart() {
    for bad in [
        "/demo/../etc/passwd",
        "/demo//x",
        "/demo/%2e%2e/x",
        "demo",
        "/a/./b",
        "/a?b",
        "/a/b/c\0",
    ] {
        assert_eq!(Target::parse(bad), Err(UrlError::Invalid), "{bad}");
    }
    assert_eq!(
        Target::parse(&format!("/{}", "a".repeat(600))),
        Err(UrlError::Invalid)
    );
    for unknown in [
        "/",
        "/p",
        "/p/s",
        "/p/s/other.m3u8",
        "/p/s/r/file.exe",
        "/p/s/r/.m4s",
        "/-p/s/index.m3u8",
        "/p/s/r/x/y",
        "/p/s/r/a.b.m4s",
        "/p/s/r/000001.03.m4s",
        "/p/s/r/000001..m4s",
        "/p/s/r/000001.3.ts",
        "/p/s/r/1.2.3.m4s",
    ] {
        assert_eq!(Target::parse(unknown), Err(UrlError::Unknown), "{unknown}");
    }
}

#[test]
fn cache_keys_keep_only_the_directives_and_normalize_them() {
    let key = |path: &str, q: Option<&str>| CacheKey::parse(path, q).map(|k| k.to_string());
    assert_eq!(
        key("/p/s/live.m3u8", Some("player=x&_HLS_part=1&_HLS_msn=5")),
        Ok("/p/s/live.m3u8?_HLS_msn=5&_HLS_part=1".into())
    );
    assert_eq!(
        key("/p/s/live.m3u8", Some("_HLS_msn=5&_HLS_part=1")),
        key("/p/s/live.m3u8", Some("_HLS_part=1&_HLS_msn=5&t=123"))
    );
    assert_eq!(
        key("/p/s/live.m3u8", Some("_HLS_skip=YES&_HLS_msn=7")),
        Ok("/p/s/live.m3u8?_HLS_msn=7&_HLS_skip=YES".into())
    );
    assert_eq!(
        key("/p/s/live.m3u8", Some("token=abc")),
        Ok("/p/s/live.m3u8".into())
    );
    assert_eq!(key("/p/s/live.m3u8", Some("")), Ok("/p/s/live.m3u8".into()));
    // Directives mean nothing to segments or multivariant playlists: ignored there.
    assert_eq!(
        key("/p/s/r/000001.m4s", Some("_HLS_msn=5")),
        Ok("/p/s/r/000001.m4s".into())
    );
    assert_eq!(
        key("/p/s/index.m3u8", Some("_HLS_msn=x")),
        Ok("/p/s/index.m3u8".into())
    );
    // Malformed directives on a media playlist are the client's error (400).
    for bad in [
        "_HLS_msn=abc",
        "_HLS_msn=-1",
        "_HLS_msn=",
        "_HLS_msn=99999999999999999999999",
        "_HLS_part=1",
        "_HLS_msn=1&_HLS_part=x",
        "_HLS_skip=no",
    ] {
        assert!(
            matches!(
                key("/p/s/r/playlist.m3u8", Some(bad)),
                Err(UrlError::BadDirective(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn stored_objects_follow_the_target() {
    let target = Target::parse("/p/s/r1/000003.m4s").unwrap();
    let Some(Stored::InRecording { recording, name }) = stored::Stored::of(&target) else {
        panic!("a recording's file is stored in the recording");
    };
    assert_eq!(stored::key(&recording, &name), "p/s/r1/000003.m4s");
    assert_eq!(
        stored::Stored::of(&Target::parse("/p/s/index.m3u8").unwrap()),
        Some(Stored::InCurrentRecording {
            stream: stream("p", "s"),
            name: stored::STREAM_MULTIVARIANT
        })
    );
    assert_eq!(
        stored::listing_key(&stream("p", "s")),
        "p/s/recordings.json"
    );
}
use stored::Stored;

/// A small deterministic generator (SplitMix64) so the round-trip test needs no
/// property-testing crate; the seed is printed so a failure can be replayed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn name(&mut self) -> String {
        const CHARS: &[u8] = b"abcXYZ019-_";
        let len = 1 + self.below(64) as usize;
        let mut s: String = (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect();
        if s.starts_with('-') {
            s.replace_range(0..1, "a");
        }
        s
    }

    fn target(&mut self) -> Target {
        let s = StreamName::new(&self.name(), &self.name()).unwrap();
        match self.below(5) {
            0 => Target::StreamMultivariant(s),
            1 => Target::StreamLive(s),
            2 => Target::Recordings(s),
            3 => Target::PlayerPage(s),
            _ => {
                let r = s.recording(&self.name()).unwrap();
                let object = match self.below(5) {
                    0 => RecordingObject::Multivariant,
                    1 => RecordingObject::Playlist,
                    2 => RecordingObject::Media {
                        file: format!("{}.mp4", self.name()),
                        kind: MediaKind::Init,
                    },
                    3 => RecordingObject::Media {
                        file: format!("{:06}.m4s", self.below(1_000_000)),
                        kind: MediaKind::Segment,
                    },
                    _ => RecordingObject::Media {
                        file: part_file(self.below(1_000_000), self.below(30) as u32),
                        kind: MediaKind::Part,
                    },
                };
                Target::Recording(r, object)
            }
        }
    }
}

#[test]
fn targets_and_keys_round_trip() {
    let seed = std::env::var("URLS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("round-trip seed: {seed} (replay with URLS_SEED={seed})");
    let mut g = Gen(seed);
    for _ in 0..20_000 {
        let target = g.target();
        let path = target.path();
        assert_eq!(
            Target::parse(&path).as_ref(),
            Ok(&target),
            "seed {seed}: {path}"
        );
        let directives = Directives {
            msn: (g.below(2) == 0).then(|| g.next() >> 1),
            part: None,
            skip: match g.below(3) {
                0 => Some(Skip::Yes),
                1 => Some(Skip::V2),
                _ => None,
            },
        };
        let directives = Directives {
            part: directives
                .msn
                .and_then(|_| (g.below(2) == 0).then(|| g.below(100))),
            ..directives
        };
        if target.kind() == ObjectKind::Page {
            assert_eq!(CacheKey::parse(&path, None), Err(UrlError::Unknown));
            continue;
        }
        let key = CacheKey::with_directives(target.clone(), directives);
        let (key_path, query) = match key.as_str().split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (key.as_str(), None),
        };
        let reparsed = CacheKey::parse(key_path, query).unwrap();
        if target.takes_directives() {
            assert_eq!(reparsed, key, "seed {seed}");
        } else {
            assert_eq!(reparsed.as_str(), path, "seed {seed}");
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_parsers() {
    let mut g = Gen(7);
    for _ in 0..20_000 {
        let len = g.below(40) as usize;
        let text: String = (0..len)
            .map(|_| b"/ab._-?=&%0_HLSmsnpartskipYES"[g.below(29) as usize] as char)
            .collect();
        let _ = CacheKey::parse(&format!("/{text}"), Some(&text));
        let _ = Directives::parse(&text);
    }
}

#[test]
fn feed_paths_name_a_stream_and_nothing_else() {
    let name = feed_stream("/demo/cam-1/feed").expect("a feed path");
    assert_eq!(name, StreamName::new("demo", "cam-1").unwrap());
    assert_eq!(feed_path(&name), "/demo/cam-1/feed");
    for not_a_feed in [
        "/demo/feed",
        "/demo/cam/x/feed",
        "/demo/../feed",
        "/demo/cam/feed/",
        "demo/cam/feed",
        "/demo/cam/live.m3u8",
    ] {
        assert_eq!(feed_stream(not_a_feed), None, "{not_a_feed}");
    }
}
