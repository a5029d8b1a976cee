//! The WAN emulator the multi-site tests stand on (`tools/wan-emu`): three sites in
//! their own network namespaces, TCP connect times from one site to the others follow
//! the RTT matrix, for a SYN/ACK (a listener) and a RST (a closed port) alike, a change
//! made while it runs is followed, and nothing is left behind. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::wan::{wan_emu_binary, Wan};

const A: &str = "127.60.1.1";
const B: &str = "127.60.2.1";
const C: &str = "127.60.3.1";
const OPEN: u16 = 8080;
const CLOSED: u16 = 8081;

/// A TCP listener inside a site that accepts and closes; killed on drop.
struct Listener(Child);

impl Listener {
    fn start(wan: &Wan, site: &str, host: &str, port: u16) -> Listener {
        // Exits when its stdin closes: the test ended, even if it was killed.
        let script = "import os, socket, sys, threading\n\
            threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)\n\
            print('listening', flush=True)\n\
            while True:\n    c, _ = s.accept(); c.close()\n";
        let mut child = wan
            .exec(site, "python3")
            .args(["-c", script, host, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is required (scripts/test.sh installs it)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("listener stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listener");
        assert_eq!(line.trim(), "listening", "listener in {site} did not start");
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Median TCP connect time in ms from inside `site` to each `host:port` (after one
/// warm-up), checking that open ports answered SYN/ACK and closed ones RST.
fn connect_rtts(wan: &Wan, site: &str, targets: &[(&str, u16)], samples: u32) -> Vec<f64> {
    let script = r#"
import json, socket, sys, time
samples = int(sys.argv[1])
targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in sys.argv[2:]]
out = [[] for _ in targets]
for i in range(samples + 1):
    for k, (host, port) in enumerate(targets):
        s = socket.socket()
        s.settimeout(2)
        start = time.perf_counter()
        try:
            s.connect((host, port))
            kind = "synack"
        except ConnectionRefusedError:
            kind = "rst"
        ms = (time.perf_counter() - start) * 1000
        s.close()
        if i > 0:
            out[k].append([ms, kind])
print(json.dumps(out))
"#;
    let out = wan
        .exec(site, "python3")
        .args(["-c", script, &samples.to_string()])
        .args(targets.iter().map(|(h, p)| format!("{h}:{p}")))
        .output()
        .expect("python3 is required (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "connect probe from {site} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Vec<(f64, String)>> = serde_json::from_slice(&out.stdout).unwrap();
    targets
        .iter()
        .zip(results)
        .map(|(&(host, port), samples)| {
            let expected = if port == OPEN { "synack" } else { "rst" };
            assert!(
                samples.iter().all(|(_, kind)| kind == expected),
                "{host}:{port} from {site}: expected {expected}: {samples:?}"
            );
            let mut ms: Vec<f64> = samples.iter().map(|(ms, _)| *ms).collect();
            ms.sort_by(f64::total_cmp);
            let median = ms[ms.len() / 2];
            eprintln!("{site} -> {host}:{port} ({expected}): median {median:.2} ms of {ms:.2?}");
            median
        })
        .collect()
}

fn assert_rtt(measured: f64, rtt: u32, what: &str) {
    let rtt = f64::from(rtt);
    assert!(
        (rtt..=rtt + 15.0).contains(&measured),
        "{what}: median connect time {measured:.2} ms, expected within [{rtt}, {}] ms",
        rtt + 15.0
    );
}

/// None of `namespaces` is listed by `ip netns list`, nor has an /etc/netns directory.
fn assert_removed(namespaces: &[String]) {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for ns in namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "{ns} left behind: {list}"
        );
        assert!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left behind"
        );
    }
}

#[test]
fn tcp_connect_times_follow_the_rtt_matrix_and_its_changes() {
    let started = Instant::now();
    let wan = Wan::start(
        &[("a", &[A]), ("b", &[B, "127.60.2.2"]), ("c", &[C])],
        &[("a", "b", 10), ("a", "c", 40), ("b", "c", 20)],
    );
    let namespaces: Vec<String> = wan.namespaces().values().cloned().collect();
    eprintln!("sites up in {:?}: {namespaces:?}", started.elapsed());
    let _b = Listener::start(&wan, "b", B, OPEN);
    let _c = Listener::start(&wan, "c", C, OPEN);

    let targets = [(B, OPEN), (B, CLOSED), (C, OPEN), (C, CLOSED)];
    let rtts = connect_rtts(&wan, "a", &targets, 7);
    assert_rtt(rtts[0], 10, "a -> b SYN/ACK");
    assert_rtt(rtts[1], 10, "a -> b RST");
    assert_rtt(rtts[2], 40, "a -> c SYN/ACK");
    assert_rtt(rtts[3], 40, "a -> c RST");
    // b's second address is b too; c reaches b over its own pair.
    assert_rtt(
        connect_rtts(&wan, "a", &[("127.60.2.2", CLOSED)], 5)[0],
        10,
        "a -> b's second address",
    );
    assert_rtt(connect_rtts(&wan, "c", &[(B, OPEN)], 5)[0], 20, "c -> b");

    wan.set_rtt("a", "b", 60);
    let rtts = connect_rtts(&wan, "a", &targets[..2], 7);
    assert_rtt(rtts[0], 60, "a -> b SYN/ACK after the change");
    assert_rtt(rtts[1], 60, "a -> b RST after the change");

    let stats = wan.stats();
    assert!(
        stats["counters"]["forwarded"].as_u64().unwrap() > 100,
        "{stats}"
    );
    assert_eq!(stats["counters"]["lost"], 0, "{stats}");

    drop((_b, _c));
    drop(wan);
    assert_removed(&namespaces);
    eprintln!("whole test: {:?}", started.elapsed());
}

#[test]
fn refused_input_fails_loudly_and_leaves_nothing_behind() {
    // Addresses outside 127.0.0.0/8 are refused before anything is created.
    let out = Command::new(wan_emu_binary())
        .args(["--site", "a=10.1.1.1", "--site", "b=127.60.2.1"])
        .output()
        .expect("run wan-emu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("outside 127.0.0.0/8"),
        "{stderr}"
    );

    // A bad change fails the test that made it; dropping still cleans up, with a
    // resolv.conf per site that goes too.
    let wan = Wan::start_with(
        &[("a", &[A]), ("b", &[B])],
        &[("a", "b", 10)],
        &["--resolver", B],
    );
    let namespaces: Vec<String> = wan.namespaces().values().cloned().collect();
    let resolv = Path::new("/etc/netns")
        .join(wan.ns("a"))
        .join("resolv.conf");
    let text = std::fs::read_to_string(&resolv).expect("resolv.conf of site a");
    assert!(text.contains(&format!("nameserver {B}")), "{text}");
    let refused = std::panic::catch_unwind(AssertUnwindSafe(|| wan.set_rtt("a", "nowhere", 5)));
    assert!(refused.is_err(), "a change to an unknown site was accepted");
    drop(wan);
    assert_removed(&namespaces);
}
