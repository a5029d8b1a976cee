//! Emulated WAN sites for end-to-end tests: drives the `wan-emu` binary
//! (`tools/wan-emu`), which puts each site in its own network namespace and forwards
//! packets between them after a per-pair delay that the test can change while it runs.
//!
//! Sites get addresses in 127.0.0.0/8; a site's own addresses are local in its
//! namespace (plus 127.0.0.1), every other site's are reached through the emulator.
//! Run processes in a site with [`Wan::exec`]. Needs root, `ip` and /dev/net/tun: a
//! machine without them fails the test with how to fix it (it is not skipped).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Wan {
    child: Option<Child>,
    /// The control channel (closing it stops the emulator, which then cleans up) and
    /// the JSON lines it printed, under one lock so replies match their commands.
    control: Mutex<(Option<ChildStdin>, Receiver<Value>)>,
    stderr: Arc<Mutex<String>>,
    namespaces: BTreeMap<String, String>,
}

/// The emulator binary, next to `streamcdn` in the target directory.
pub fn wan_emu_binary() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_streamcdn")).with_file_name("wan-emu");
    assert!(
        exe.is_file(),
        "{} is missing: build it with `cargo build -p wan-emu` (scripts/test.sh's `cargo build --workspace --all-targets` does)",
        exe.display()
    );
    // `cargo nextest run -p streamcdn` does not rebuild other packages' binaries.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/wan-emu/src");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let newest_src = std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .filter_map(|e| modified(&e.ok()?.path()))
        .max();
    if let (Some(src_time), Some(exe_time)) = (newest_src, modified(&exe)) {
        assert!(
            exe_time >= src_time,
            "{} is older than its sources: rebuild it with `cargo build -p wan-emu`",
            exe.display()
        );
    }
    exe
}

/// Root, `ip` and /dev/net/tun, or a failure that says how to get them.
fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "the WAN emulator tests need root (network namespaces, TUN devices; CI runs as root): \
         run the suite as root, e.g. `sudo -E env PATH=$PATH cargo nextest run ...` (effective uid is {euid})"
    );
    super::tool_or("ip", "apt-get install iproute2");
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: `modprobe tun` (CONFIG_TUN), or in a container run with \
         `--device /dev/net/tun --cap-add NET_ADMIN`"
    );
}

impl Wan {
    /// Sites as `(name, addresses)`; `rtt_ms` as `(site, site, round trip)`, both
    /// directions. Pairs not given have no delay. Returns once forwarding works.
    pub fn start(sites: &[(&str, &[&str])], rtt_ms: &[(&str, &str, u32)]) -> Wan {
        Self::start_with(sites, rtt_ms, &[])
    }

    /// [`Wan::start`] with more `wan-emu` arguments (`--resolver`, `--link`, `--seed`...).
    pub fn start_with(
        sites: &[(&str, &[&str])],
        rtt_ms: &[(&str, &str, u32)],
        extra: &[&str],
    ) -> Wan {
        preflight();
        let mut command = Command::new(wan_emu_binary());
        for (name, addrs) in sites {
            command
                .arg("--site")
                .arg(format!("{name}={}", addrs.join(",")));
        }
        for (a, b, ms) in rtt_ms {
            command.arg("--link").arg(format!("{a},{b},rtt_ms={ms}"));
        }
        // A bound even if the test process is killed without running drops.
        if !extra.contains(&"--max-seconds") {
            command.args(["--max-seconds", "300"]);
        }
        command.args(extra);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wan-emu");

        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    eprint!("{text}");
                    stderr.lock().unwrap().push_str(&text);
                }
            });
        }
        let (tx, events) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("wan-emu stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("wan-emu printed a non-JSON line: {line}"),
                }
            }
        });
        let mut wan = Wan {
            control: Mutex::new((child.stdin.take(), events)),
            child: Some(child),
            stderr,
            namespaces: BTreeMap::new(),
        };
        let ready = {
            let control = wan.control.lock().unwrap();
            wan.next_event(&control.1, Duration::from_secs(30), "ready")
        };
        assert_eq!(ready["event"], "ready", "wan-emu: {ready}");
        wan.namespaces = ready["namespaces"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(site, ns)| Some((site.clone(), ns.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            wan.namespaces.len(),
            sites.len(),
            "wan-emu ready line: {ready}"
        );
        wan
    }

    /// The next JSON line from the emulator, failing with its stderr if none comes.
    fn next_event(&self, events: &Receiver<Value>, within: Duration, what: &str) -> Value {
        match events.recv_timeout(within) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!(
                "wan-emu: no {what} within {within:?}; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Let the stderr thread catch up before reporting.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "wan-emu exited before {what}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    /// Sends one control line and returns its reply.
    fn control(&self, command: Value) -> Value {
        let mut control = self.control.lock().unwrap();
        let (stdin, events) = &mut *control;
        let pipe = stdin.as_mut().expect("wan-emu stdin is closed");
        writeln!(pipe, "{command}")
            .and_then(|()| pipe.flush())
            .expect("write to wan-emu");
        let reply = self.next_event(events, Duration::from_secs(10), "reply");
        assert_ne!(
            reply["event"], "error",
            "wan-emu refused {command}: {reply}"
        );
        reply
    }

    /// The namespace of `site` (for `ip netns exec`, `/etc/netns/<ns>/...`).
    pub fn ns(&self, site: &str) -> String {
        self.namespaces
            .get(site)
            .unwrap_or_else(|| panic!("no site `{site}` in {:?}", self.namespaces.keys()))
            .clone()
    }

    /// All namespaces, by site.
    pub fn namespaces(&self) -> &BTreeMap<String, String> {
        &self.namespaces
    }

    /// `ip netns exec <ns> <program>`: add the program's arguments, then spawn or run.
    pub fn exec(&self, site: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(site), program]);
        command
    }

    /// Sets the round-trip time between two sites (both directions, half each way);
    /// returns once it applies to every packet sent from now on.
    pub fn set_rtt(&self, a: &str, b: &str, ms: u32) {
        self.set(json!({"from": a, "to": b, "rtt_ms": ms}));
    }

    /// Any matrix change: `{"from","to"}` with `rtt_ms`, `one_way_ms`, `loss`,
    /// `rate_kbps` (0 uncaps), `directed`; fields left out keep their value.
    pub fn set(&self, link: Value) {
        let reply = self.control(json!({ "set": link }));
        assert_eq!(reply["event"], "applied", "wan-emu: {reply}");
    }

    /// Counters: forwarded, lost, unknown destinations, per-link settings and packets.
    pub fn stats(&self) -> Value {
        self.control(json!({"stats": {}}))["stats"].clone()
    }
}

impl Drop for Wan {
    /// Closes the control channel (the emulator removes its namespaces and exits),
    /// waits for it, and removes whatever a killed emulator left behind.
    fn drop(&mut self) {
        // Even when a failed assertion poisoned the lock.
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.0.take();
        drop(control);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("wan-emu did not stop within 10 s: killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        for ns in self.namespaces.values() {
            if Path::new("/run/netns").join(ns).exists() {
                eprintln!("wan-emu left namespace {ns}: deleting it");
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
            let etc = Path::new("/etc/netns").join(ns);
            let _ = std::fs::remove_file(etc.join("resolv.conf"));
            let _ = std::fs::remove_dir(etc);
        }
    }
}
