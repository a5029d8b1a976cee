//! LL-HLS through the cache tiers under load: an ingest, a mid-tier (the top tier, with
//! `edge.tier = "mid"`) and two edges below it, HTTP/2 between the tiers. The mid-tier
//! reaches the ingest's origin through a logging proxy in this test (the origin's
//! advertised URL), so every request the origin gets from the tier above is known by
//! URL. 500 simulated low-latency viewers, split over the two edges, play for 10 s as
//! hls.js does in low-latency mode: a blocking playlist reload for the part after the
//! last one listed and, at the same time, the hinted part; then any listed part they
//! lack. The origin must see one request per part and per blocking playlist version,
//! and every viewer must get every part from its tune-in on.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use streamcdn_urls::parse_part_file;

use common::*;

const VIEWERS: usize = 500;
const WATCH: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What the proxy in front of the origin forwarded: path and query, and the status.
type Log = Arc<Mutex<Vec<(String, u16)>>>;

/// A forwarding proxy to the origin at `origin` (HTTP/1.1 or HTTP/2 in, HTTP/1.1 out)
/// that logs every request; its port.
async fn logging_proxy(origin: u16, log: Log) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (client, log) = (client.clone(), log.clone());
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let (client, log) = (client.clone(), log.clone());
                async move {
                    let target = request
                        .uri()
                        .path_and_query()
                        .map_or("/".to_owned(), |p| p.to_string());
                    let mut forward =
                        hyper::Request::get(format!("http://127.0.0.1:{origin}{target}"));
                    for (name, value) in request.headers() {
                        if !is_hop_by_hop(name.as_str()) {
                            forward = forward.header(name, value);
                        }
                    }
                    let answer = match client.request(forward.body(Full::default()).unwrap()).await
                    {
                        Ok(response) => {
                            let (mut parts, body) = response.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            for name in ["connection", "keep-alive", "transfer-encoding", "upgrade"]
                            {
                                parts.headers.remove(name);
                            }
                            hyper::Response::from_parts(parts, Full::new(body))
                        }
                        Err(e) => hyper::Response::builder()
                            .status(502)
                            .body(Full::new(Bytes::from(e.to_string())))
                            .unwrap(),
                    };
                    log.lock().unwrap().push((target, answer.status().as_u16()));
                    Ok::<_, Infallible>(answer)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "host" | "te"
    )
}

async fn get(client: &HttpClient, url: &str) -> Result<(u16, Bytes), String> {
    let response = client
        .get(url.parse().map_err(|e| format!("{url}: {e}"))?)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// A part of a live playlist: its segment's media sequence number, index and URI.
type PartRef = (u64, u32, String);

/// The parts a live LL-HLS playlist lists, in order, and its preload hint.
fn listed_parts(text: &str) -> (Vec<PartRef>, Option<String>) {
    let uri_of = |line: &str| {
        let start = line.find("URI=\"")? + 5;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    };
    let position = |uri: &str| parse_part_file(uri.rsplit('/').next().unwrap_or_default());
    let mut parts = Vec::new();
    let mut hint = None;
    for line in text.lines() {
        if line.starts_with("#EXT-X-PART:") {
            let uri = uri_of(line).expect("EXT-X-PART without URI");
            let (msn, index) = position(&uri).expect("a part's URI names its position");
            parts.push((msn, index, uri));
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            hint = uri_of(line);
        }
    }
    (parts, hint)
}

#[derive(Default)]
struct Viewer {
    /// Parts fetched (`200`).
    got: HashSet<String>,
    /// Parts listed at or after the tune-in point.
    expected: HashSet<String>,
    blocking_reloads: usize,
    /// Hinted parts that never came (their segment ended before them): `404`.
    hints_missed: usize,
    errors: Vec<String>,
}

/// One low-latency player on the edge at `port` until `until`.
async fn watch(port: u16, until: Instant) -> Viewer {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://127.0.0.1:{port}/demo/cam/");
    let mut viewer = Viewer::default();
    let (parts, mut hint) = match get(&client, &format!("{base}live.m3u8")).await {
        Ok((200, body)) => listed_parts(&String::from_utf8_lossy(&body)),
        other => {
            viewer.errors.push(format!("tune-in: {other:?}"));
            return viewer;
        }
    };
    // Playback starts three parts behind the newest (PART-HOLD-BACK).
    let Some(start) = parts.len().checked_sub(3).map(|i| (parts[i].0, parts[i].1)) else {
        viewer
            .errors
            .push("tune-in: fewer than three parts listed".into());
        return viewer;
    };
    let mut listed = parts;
    while Instant::now() < until {
        for (msn, index, uri) in &listed {
            if (*msn, *index) < start || viewer.got.contains(uri) {
                continue;
            }
            viewer.expected.insert(uri.clone());
            match get(&client, &format!("{base}{uri}")).await {
                Ok((200, _)) => {
                    viewer.got.insert(uri.clone());
                }
                other => viewer.errors.push(format!("{uri}: {other:?}")),
            }
        }
        let Some((msn, index, _)) = listed.last().cloned() else {
            viewer.errors.push("a playlist without parts".into());
            return viewer;
        };
        let reload = format!("{base}live.m3u8?_HLS_msn={msn}&_HLS_part={}", index + 1);
        let wanted_hint = hint.take().filter(|h| !viewer.got.contains(h));
        let hinted = async {
            match &wanted_hint {
                Some(uri) => Some(get(&client, &format!("{base}{uri}")).await),
                None => None,
            }
        };
        let (playlist, hinted) = tokio::join!(get(&client, &reload), hinted);
        viewer.blocking_reloads += 1;
        match (wanted_hint, hinted) {
            (Some(uri), Some(Ok((200, _)))) => {
                viewer.got.insert(uri);
            }
            (Some(_), Some(Ok((404, _)))) => viewer.hints_missed += 1,
            (Some(uri), Some(other)) => viewer.errors.push(format!("hint {uri}: {other:?}")),
            _ => {}
        }
        match playlist {
            Ok((200, body)) => {
                (listed, hint) = listed_parts(&String::from_utf8_lossy(&body));
                viewer.expected.extend(
                    listed
                        .iter()
                        .filter(|(m, i, _)| (*m, *i) >= start)
                        .map(|(_, _, uri)| uri.clone()),
                );
            }
            other => {
                viewer.errors.push(format!("{reload}: {other:?}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The parts of the last playlist are the viewer's too.
    for uri in viewer.expected.clone() {
        if !viewer.got.contains(&uri) {
            match get(&client, &format!("{base}{uri}")).await {
                Ok((200, _)) => {
                    viewer.got.insert(uri);
                }
                other => viewer.errors.push(format!("{uri}: {other:?}")),
            }
        }
    }
    viewer
}

#[test]
fn llhls_viewers_through_two_tiers_cost_the_origin_one_request_per_object() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let log: Log = Arc::default();
    let redis = Redis::start();
    let registry = redis.registry_toml("llhls-tiers");
    let mut ingest = Node::role("llt-ingest", "ingest", &registry);
    // The mid-tier finds the origin through the registry, at the advertised URL: the
    // proxy's.
    let proxy = runtime.block_on(logging_proxy(ingest.origin, log.clone()));
    ingest.stop_with("TERM");
    let config = std::fs::read_to_string(&ingest.config).unwrap();
    let listen = format!("[origin]\nlisten = \"127.0.0.1:{}\"\n", ingest.origin);
    assert!(config.contains(&listen), "{config}");
    let config = config.replace(
        &listen,
        &format!("{listen}advertise = \"http://127.0.0.1:{proxy}\"\n"),
    );
    std::fs::write(&ingest.config, config).unwrap();
    ingest.start();
    let mid = Node::role(
        "llt-mid",
        "edge",
        &format!("{registry}[edge]\ntier = \"mid\"\nupstream_http2 = true\n"),
    );
    let below = |name| {
        Node::role(
            name,
            "edge",
            &format!(
                "{registry}[edge]\nparents = [\"{}\"]\nupstream_http2 = true\n",
                mid.http_base()
            ),
        )
    };
    let edges = [below("llt-edge-a"), below("llt-edge-b")];
    let mut publisher = publish(
        &tool("ffmpeg"),
        &ingest.publish_url("demo", "cam", KEY),
        40,
        "h264",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http_get(edges[0].http, "/demo/cam/live.m3u8", &[]);
        if let Some(answer) = answer.ok().filter(|a| a.status == 200) {
            let text = answer.text();
            if playlist_segments(&text).len() >= 2 && listed_parts(&text).0.len() >= 3 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no LL-HLS playlist at the edge:\n{}",
            ingest.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tuned_in_at = log.lock().unwrap().len();

    let started = Instant::now();
    let until = started + WATCH;
    let viewers: Vec<Viewer> = runtime.block_on(async {
        let tasks: Vec<_> = (0..VIEWERS)
            .map(|i| {
                let port = edges[i % 2].http;
                tokio::spawn(async move {
                    // Viewers arrive over the first second.
                    tokio::time::sleep(Duration::from_millis((i * 1000 / VIEWERS) as u64)).await;
                    watch(port, until).await
                })
            })
            .collect();
        let mut viewers = Vec::new();
        for task in tasks {
            viewers.push(task.await.unwrap());
        }
        viewers
    });
    let elapsed = started.elapsed();
    let _ = publisher.kill();
    let _ = publisher.wait();

    let log = log.lock().unwrap()[tuned_in_at..].to_vec();
    let mut by_url: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
    for (url, status) in &log {
        by_url.entry(url).or_default().push(*status);
    }
    let is_part = |url: &str| parse_part_file(url.rsplit('/').next().unwrap_or_default()).is_some();
    let is_blocking = |url: &str| url.contains("_HLS_msn=");
    let count = |pick: &dyn Fn(&str) -> bool, status: u16| {
        by_url
            .iter()
            .filter(|(url, _)| pick(url))
            .map(|(_, statuses)| statuses.iter().filter(|s| **s == status).count())
            .sum::<usize>()
    };
    let distinct = |pick: &dyn Fn(&str) -> bool| {
        by_url
            .iter()
            .filter(|(url, statuses)| pick(url) && statuses.contains(&200))
            .count()
    };
    let parts_served: HashSet<&str> = by_url
        .iter()
        .filter(|(url, statuses)| is_part(url) && statuses.contains(&200))
        .map(|(url, _)| *url)
        .collect();
    let viewer_parts: usize = viewers.iter().map(|v| v.got.len()).sum();
    let viewer_reloads: usize = viewers.iter().map(|v| v.blocking_reloads).sum();
    let hints_missed: usize = viewers.iter().map(|v| v.hints_missed).sum();
    let fewest = viewers.iter().map(|v| v.got.len()).min().unwrap_or(0);
    let errors: Vec<&String> = viewers.iter().flat_map(|v| &v.errors).collect();
    let non_blocking = count(&|u: &str| u.ends_with("live.m3u8"), 200);
    eprintln!(
        "{VIEWERS} viewers for {elapsed:.1?}: {viewer_parts} parts and {viewer_reloads} blocking reloads fetched \
         (fewest parts for one viewer: {fewest}; hinted parts that never came: {hints_missed}); \
         the origin got {} requests from the mid-tier: {} parts ({} distinct, {} answered 404), \
         {} blocking playlists ({} distinct, {} answered 503, {} 400), {non_blocking} non-blocking playlists; \
         viewer errors: {}",
        log.len(),
        count(&is_part, 200),
        distinct(&is_part),
        count(&is_part, 404),
        count(&is_blocking, 200),
        distinct(&is_blocking),
        count(&is_blocking, 503),
        count(&is_blocking, 400),
        errors.len(),
    );

    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // One origin request per part and per blocking playlist version.
    let repeated: Vec<_> = by_url
        .iter()
        .filter(|(url, statuses)| (is_part(url) || is_blocking(url)) && statuses.contains(&200))
        .filter(|(_, statuses)| statuses.len() > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "asked of the origin more than once: {repeated:?}"
    );
    // Every viewer got every part from its tune-in on, and they are the origin's.
    for (i, viewer) in viewers.iter().enumerate() {
        let missing: Vec<_> = viewer.expected.difference(&viewer.got).collect();
        assert!(missing.is_empty(), "viewer {i} lacks {missing:?}");
        assert!(
            viewer.got.len() >= 20,
            "viewer {i} got only {} parts",
            viewer.got.len()
        );
        for uri in &viewer.got {
            let url = format!("/demo/cam/{uri}");
            assert!(
                parts_served.contains(url.as_str()),
                "{url} never came from the origin"
            );
        }
    }
    // Coalescing: the origin saw a small fraction of what the viewers asked for.
    assert!(
        count(&is_part, 200) * 50 < viewer_parts && count(&is_blocking, 200) * 50 < viewer_reloads,
        "little coalescing"
    );
}
