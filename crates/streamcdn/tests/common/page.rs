//! A page open in headless Chromium through one of `tests/browser/*.mjs`: the script
//! prints one JSON sample per line (what the test watches), takes commands on stdin, and
//! ends when stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{browser_dir, tool};

pub struct Page {
    child: Child,
    stdin: Option<ChildStdin>,
    samples: Receiver<Value>,
}

impl Page {
    /// Runs `tests/browser/<script>` on `url` for at most 150 s.
    pub fn open(script: &str, url: &str) -> Page {
        Self::open_for(script, url, 150)
    }

    /// [`Page::open`] for at most `seconds`.
    pub fn open_for(script: &str, url: &str, seconds: u32) -> Page {
        let mut child = Command::new(tool("node"))
            .arg(browser_dir().join(script))
            .args([url, &seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (send, samples) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let sample =
                    serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsed": line }));
                if send.send(sample).is_err() {
                    return;
                }
            }
        });
        Page {
            child,
            stdin,
            samples,
        }
    }

    /// Sends the script one command line.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The newest sample printed so far, if any (without waiting).
    pub fn latest(&self) -> Option<Value> {
        self.samples.try_iter().last()
    }

    /// Every sample printed since the last call (without waiting).
    pub fn samples(&self) -> Vec<Value> {
        self.samples.try_iter().collect()
    }

    /// The first sample for which `done` holds; fails after `limit` with the last one.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.samples.recv_timeout(left) {
                Ok(sample) if done(&sample) => return sample,
                Ok(sample) => last = sample,
                Err(_) => break,
            }
        }
        panic!("the page never showed {what}; last sample: {last:#}");
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Closing stdin lets the script close Chromium; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
