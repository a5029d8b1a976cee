//! Federation end to end: three participants on their own loopback addresses, each a
//! `streamcdn up` (its CIS, its edge) with its own registry namespace, certificates
//! from one CA made with openssl. A owns `live.a.test` and delegates it to B, which
//! carries it on one of its two servers and delegates it on to C. A's commands reach
//! exactly the servers that carry the configuration, through B's and C's command
//! invocation systems, and complete only when all have; partners are driven with curl
//! as an independent CDNI client.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const COMMAND: &str = "application/cdni; ptype=ci-trigger-command";
const A: &str = "AS64496:1";
const B: &str = "AS64500:1";
const C: &str = "AS64502:1";
const HOST: &str = "live.a.test";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool_or("openssl", "apt-get install openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` (`<ca>.pem`, `<ca>.key`).
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=federation test {ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
}

/// `<name>.pem` / `<name>.key` signed by `ca`, naming `participant`, valid for `ip`.
fn make_leaf(dir: &Path, ca: &str, name: &str, participant: &str, ip: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={participant}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One HTTPS exchange with curl presenting `who`'s certificate; `Err` with curl's exit
/// code when no HTTP answer came (a refused handshake).
fn fed(
    certs: &Path,
    who: &str,
    method: &str,
    url: &str,
    body: Option<(&str, &str)>,
) -> Result<Answer, i32> {
    let mut curl = Command::new(tool_or("curl", "apt-get install curl"));
    curl.current_dir(certs)
        .args(["-sS", "-i", "--max-time", "10", "--cacert", "ca.pem"])
        .args([
            "--cert",
            &format!("{who}.pem"),
            "--key",
            &format!("{who}.key"),
        ])
        .args(["-X", method, url]);
    if let Some((content_type, body)) = body {
        curl.args([
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            body,
        ]);
    }
    let out = curl.output().unwrap();
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    Ok(parse_answer(&String::from_utf8_lossy(&out.stdout)))
}

fn get_as(node: &Node, path: &str) -> HttpResponse {
    http_request_at(&node.host, node.http, "GET", path, &[("Host", HOST)]).unwrap()
}

/// `X-Cache` of `path` on `node` as a request for A's hostname.
fn x_cache(node: &Node, path: &str) -> String {
    let answer = get_as(node, path);
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.header("x-cache").unwrap_or_default().to_owned()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn trigger(admin: &Node, operation: &str, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamcdn"))
        .env("STREAMCDN_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["trigger", operation])
        .args(args)
        .args([
            "--admin",
            &format!("http://{}:{}", admin.host, admin.admin),
            "--timeout",
            "60",
        ])
        .output()
        .expect("streamcdn trigger")
}

fn assert_complete(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("complete"),
        "trigger failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn metric_with(node: &Node, name: &str, label: &str) -> f64 {
    let text = http_request_at(&node.host, node.admin, "GET", "/metrics", &[])
        .expect("metrics")
        .text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn federation_toml(
    participant: &str,
    host: &str,
    port: u16,
    certs: &Path,
    name: &str,
    carry_on: &str,
    partners: &[(&str, &str, u16, &str)],
) -> String {
    let mut text = format!(
        "[federation]\nparticipant = \"{participant}\"\nlisten = \"{host}:{port}\"\ncert = \"{dir}/{name}.pem\"\nkey = \"{dir}/{name}.key\"\nca = \"{dir}/ca.pem\"\ncarry_on = [{carry_on}]\n",
        dir = certs.display()
    );
    for (id, partner_host, partner_port, delegate) in partners {
        text.push_str(&format!(
            "[[federation.partners]]\nid = \"{id}\"\nurl = \"https://{partner_host}:{partner_port}\"\ndelegate = [{delegate}]\n"
        ));
    }
    text
}

/// The recording's playlist path and its media paths (segments and init).
fn recording_paths(a: &Node, stream: &str) -> (String, Vec<String>) {
    a.wait_recording_state("demo", stream, "ended");
    let dir = a.recordings("demo", stream).pop().expect("a recording");
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    let base = format!("/demo/{stream}/{id}");
    let playlist = format!("{base}/playlist.m3u8");
    let text = http_request_at(&a.host, a.http, "GET", &playlist, &[])
        .unwrap()
        .text();
    let mut paths: Vec<String> = playlist_segments(&text)
        .into_iter()
        .map(|(_, name)| format!("{base}/{name}"))
        .collect();
    assert!(paths.len() >= 3, "{text}");
    paths.push(format!("{base}/init.mp4"));
    (playlist, paths)
}

#[test]
fn commands_reach_exactly_the_carrying_servers_across_three_participants() {
    let certs = temp_dir("fed-certs");
    make_ca(&certs, "ca");
    make_ca(&certs, "rogue-ca");
    let (a_ip, b_ip, c_ip) = ("127.0.1.1", "127.0.2.1", "127.0.3.1");
    make_leaf(&certs, "ca", "a", A, a_ip);
    make_leaf(&certs, "ca", "b", B, b_ip);
    make_leaf(&certs, "ca", "c", C, c_ip);
    // From our CA but no partner of anyone; and B's id from a CA nobody trusts.
    make_leaf(&certs, "ca", "stranger", "AS64999:1", "127.0.9.1");
    make_leaf(&certs, "rogue-ca", "rogue", B, b_ip);
    let (fa, fb, fc) = (free_port(), free_port(), free_port());
    let redis = Redis::start();

    let a_extra = format!(
        "{}{}[[configurations]]\nid = \"live-a\"\nhostnames = [\"{HOST}\"]\nmax_ttl = \"3s\"\n",
        redis.registry_toml("fed-a"),
        federation_toml(A, a_ip, fa, &certs, "a", "", &[(B, b_ip, fb, "\"live-a\"")]),
    );
    let a = Node::role_on("fed-a", "up", a_ip, free_port(), None, &a_extra);
    // B carries A's configuration on its `up` (site b-top), not on its second edge.
    let b_extra = format!(
        "{}{}",
        redis.registry_toml("fed-b"),
        federation_toml(
            B,
            b_ip,
            fb,
            &certs,
            "b",
            "\"b-top\"",
            &[(A, a_ip, fa, ""), (C, c_ip, fc, "\"live-a\"")]
        ),
    );
    let mut b = Node::role_with_node(
        "fed-b",
        "up",
        b_ip,
        free_port(),
        None,
        "site = \"b-top\"",
        &b_extra,
    );
    let b_edge_extra = format!(
        "{}[edge]\nparents = [\"http://{b_ip}:{}\"]\n",
        redis.registry_toml("fed-b"),
        b.http
    );
    let b_edge = Node::role_with_node(
        "fed-b-edge",
        "edge",
        "127.0.2.2",
        free_port(),
        None,
        "site = \"b-low\"",
        &b_edge_extra,
    );
    let c_extra = format!(
        "{}{}",
        redis.registry_toml("fed-c"),
        federation_toml(C, c_ip, fc, &certs, "c", "", &[(B, b_ip, fb, "")]),
    );
    let mut c = Node::role_on("fed-c", "up", c_ip, free_port(), None, &c_extra);

    // Two recordings of A's: one to purge and invalidate, one to preposition.
    let ffmpeg = tool("ffmpeg");
    let publishers = [
        publish(&ffmpeg, &a.publish_url("demo", "cam", KEY), 6, "h264"),
        publish(&ffmpeg, &a.publish_url("demo", "vod", KEY), 6, "h264"),
    ];
    for publisher in publishers {
        assert!(wait_output(publisher).status.success());
    }
    let (playlist, paths) = recording_paths(&a, "cam");
    let (vod_playlist, vod_paths) = recording_paths(&a, "vod");

    // The configuration reaches B, then C through B; both serve A's host from A.
    for node in [&b, &c] {
        wait_until(
            "A's configuration deployed",
            Duration::from_secs(20),
            || get_as(node, &playlist).status == 200,
        );
    }
    assert_eq!(
        get_as(&b_edge, &playlist).status,
        404,
        "B's second edge does not carry A's hostname"
    );
    // ffmpeg plays A's recording through B's and C's edges.
    for node in [&b, &c] {
        let url = format!("http://{}:{}{playlist}", node.host, node.http);
        let decoded = decode(&url, &["-headers", &format!("Host: {HOST}\r\n")]);
        assert!(decoded.video_frames > 60, "{url}: {decoded:?}");
    }

    // Purge one segment: every carrying server misses next, and A's origin refetches.
    let segment = &paths[0];
    for node in [&b, &c] {
        x_cache(node, segment);
        assert_eq!(x_cache(node, segment), "HIT");
    }
    let a_fetches = a.metric("streamcdn_edge_upstream_fetches_total");
    let url = format!("http://{HOST}{segment}");
    let started = Instant::now();
    let stdout = assert_complete(&trigger(&a, "purge", std::slice::from_ref(&url)));
    eprintln!(
        "purge across three participants complete in {:?}:\n{stdout}",
        started.elapsed()
    );
    assert!(
        stdout.contains("servers 2/2 done"),
        "A's server and partner B: {stdout}"
    );
    for node in [&b, &c] {
        assert_eq!(x_cache(node, segment), "MISS");
    }
    assert!(
        a.metric("streamcdn_edge_upstream_fetches_total") > a_fetches,
        "A's top tier refetched"
    );
    // What B did for A, as A sees it over the federation interface: B's carrying
    // server and C, not B's second edge.
    let collection = fed(
        &certs,
        "a",
        "GET",
        &format!("https://{b_ip}:{fb}/cdni/v1/triggers"),
        None,
    )
    .unwrap();
    assert_eq!(collection.status, 200, "{}", collection.body);
    assert!(
        collection.body.contains("\"cdn-id\":\"AS64500:1\""),
        "{}",
        collection.body
    );
    let at_b: serde_json::Value = serde_json::from_str(&collection.body).unwrap();
    let first = at_b["triggers"][0].as_str().unwrap().to_owned();
    // B's one carrying server (not its second edge) and C; B's addresses stay B's.
    let servers = fed(&certs, "a", "GET", &format!("{first}/servers"), None).unwrap();
    let list: serde_json::Value = serde_json::from_str(&servers.body).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"cdni:AS64502:1"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("top server")) && !servers.body.contains(b_ip),
        "{names:?}"
    );
    let status = fed(&certs, "a", "GET", &first, None).unwrap();
    assert!(
        status.body.contains("\"status\":\"complete\""),
        "{}",
        status.body
    );
    assert_eq!(
        metric_with(&b_edge, "streamcdn_edge_control_requests_total", "purge"),
        0.0
    );

    // A pattern: every segment of the recording, on every carrying server.
    for node in [&b, &c] {
        for path in &paths[1..3] {
            x_cache(node, path);
        }
    }
    let pattern = format!(
        "http://{HOST}{}",
        playlist.replace("playlist.m3u8", "*.m4s")
    );
    assert_complete(&trigger(&a, "purge", &["--pattern".into(), pattern]));
    for node in [&b, &c] {
        for path in &paths[1..3] {
            assert_eq!(x_cache(node, path), "MISS", "{path}");
        }
    }

    // Invalidate: the next request at B revalidates, and A answers 304.
    let invalidated = &paths[1];
    assert_eq!(x_cache(&b, invalidated), "HIT");
    let not_modified = metric_with(&b, "streamcdn_edge_revalidations_total", "not_modified");
    assert_complete(&trigger(
        &a,
        "invalidate",
        &[format!("http://{HOST}{invalidated}")],
    ));
    x_cache(&b, invalidated);
    assert_eq!(
        metric_with(&b, "streamcdn_edge_revalidations_total", "not_modified"),
        not_modified + 1.0
    );

    // Preposition of the other recording's playlist: its first requests at B and C hit.
    assert_complete(&trigger(
        &a,
        "preposition",
        &[format!("http://{HOST}{vod_playlist}")],
    ));
    for node in [&b, &c] {
        for path in &vod_paths {
            assert_eq!(x_cache(node, path), "HIT", "{path} at {}", node.host);
        }
    }
    let prepositioned = Instant::now();

    // Isolation. B commanding A's configuration: eperm.
    let purge = |path: &str| {
        format!(
            r#"{{"trigger": {{"type": "purge", "content.urls": ["http://{HOST}{path}"]}}, "cdn-path": ["{B}"]}}"#
        )
    };
    let at_a = format!("https://{a_ip}:{fa}/cdni/v1/triggers");
    let refused = fed(&certs, "b", "POST", &at_a, Some((COMMAND, &purge(segment)))).unwrap();
    assert_eq!(refused.status, 201, "{}", refused.body);
    assert!(
        refused.body.contains("\"failed\"") && refused.body.contains("\"eperm\""),
        "{}",
        refused.body
    );
    // C reading B's triggers (A's): refused; C's own collection at B is empty.
    let read = fed(&certs, "c", "GET", &first, None).unwrap();
    assert_eq!(read.status, 403, "{}", read.body);
    let own = fed(
        &certs,
        "c",
        "GET",
        &format!("https://{b_ip}:{fb}/cdni/v1/triggers"),
        None,
    )
    .unwrap();
    assert!(own.body.contains("\"triggers\":[]"), "{}", own.body);
    // A looped cdn-path, malformed JSON, an unknown type, a wrong media type.
    let at_b_url = format!("https://{b_ip}:{fb}/cdni/v1/triggers");
    let looped = format!(
        r#"{{"trigger": {{"type": "purge", "content.urls": ["http://{HOST}/x"]}}, "cdn-path": ["{B}", "{A}"]}}"#
    );
    let answer = fed(&certs, "a", "POST", &at_b_url, Some((COMMAND, &looped))).unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = fed(
        &certs,
        "a",
        "POST",
        &at_b_url,
        Some((COMMAND, "{\"trigger\": ")),
    )
    .unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    let unknown = format!(
        r#"{{"trigger": {{"type": "melt", "content.urls": ["http://{HOST}/x"]}}, "cdn-path": ["{A}"]}}"#
    );
    let answer = fed(&certs, "a", "POST", &at_b_url, Some((COMMAND, &unknown))).unwrap();
    assert!(
        answer.status == 201 && answer.body.contains("eunsupported"),
        "{}",
        answer.body
    );
    let answer = fed(
        &certs,
        "a",
        "POST",
        &at_b_url,
        Some(("application/json", &purge("/x").replace(B, A))),
    )
    .unwrap();
    assert_eq!(answer.status, 415, "{}", answer.body);
    // An unknown participant gets nothing; a certificate from another CA, no handshake.
    let answer = fed(&certs, "stranger", "GET", &at_b_url, None).unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(!answer.body.contains("triggers"), "{}", answer.body);
    assert!(
        fed(&certs, "rogue", "GET", &at_a, None).is_err(),
        "a certificate from an untrusted CA"
    );

    // A's cache rule (`max_ttl`, MI.CachePolicy): B keeps nothing fresh longer than 3 s,
    // though segments say a day.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(prepositioned.elapsed()));
    let fetches = b.metric("streamcdn_edge_upstream_fetches_total");
    assert_eq!(x_cache(&b, &vod_paths[0]), "MISS");
    assert!(b.metric("streamcdn_edge_upstream_fetches_total") > fetches);
    // C down during a purge: A's trigger waits, then completes once C is back.
    x_cache(&c, &paths[2]);
    c.stop_with("KILL");
    let waiting = {
        let url = format!("http://{HOST}{}", paths[2]);
        let a_admin = format!("http://{}:{}", a.host, a.admin);
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_streamcdn"))
                .env("STREAMCDN_ADMIN_TOKEN", ADMIN_TOKEN)
                .args([
                    "trigger",
                    "purge",
                    &url,
                    "--admin",
                    &a_admin,
                    "--timeout",
                    "60",
                ])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(!waiting.is_finished(), "the purge completed without C");
    // B's CIS killed mid-command too: nothing is lost across its restart.
    b.stop_with("KILL");
    b.start();
    c.start();
    let output = waiting.join().unwrap();
    assert_complete(&output);
    assert_eq!(
        x_cache(&c, &paths[2]),
        "MISS",
        "the purge reached C's disk copy"
    );

    // Cancelling a trigger that waits for C: A asks B to cancel, B drops C.
    c.stop_with("KILL");
    let command = format!(
        r#"{{"trigger": {{"type": "purge", "content.urls": ["http://{HOST}{}"]}}}}"#,
        paths[3]
    );
    let admin = format!("http://{}:{}/api/v1/triggers", a.host, a.admin);
    let created = admin_post(&admin, &command);
    assert_eq!(created.status, 201, "{}", created.body);
    let location = created.location.expect("Location");
    std::thread::sleep(Duration::from_millis(500));
    let cancel = admin_post(&admin, &format!(r#"{{"cancel": ["{location}"]}}"#));
    assert!([200, 202].contains(&cancel.status), "{}", cancel.body);
    let path = format!("/api/v1/{}", location.split_once("/api/v1/").unwrap().1);
    let mut status = String::new();
    wait_until("the trigger cancelled", Duration::from_secs(20), || {
        status = http_request_at(&a.host, a.admin, "GET", &path, &[])
            .unwrap()
            .text();
        status.contains("\"status\":\"cancelled\"")
    });
    drop(redis);
    let _ = std::fs::remove_dir_all(&certs);
}

/// A command to a CIS's admin API, with curl.
fn admin_post(url: &str, body: &str) -> Answer {
    let out = Command::new(tool_or("curl", "apt-get install curl"))
        .args(["-sS", "-i", "--max-time", "10", "-X", "POST", url])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "-H",
            &format!("Content-Type: {COMMAND}"),
            "--data-binary",
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_answer(&text)
}

fn parse_answer(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let location = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Answer {
        status,
        location,
        body: body.to_owned(),
    }
}
