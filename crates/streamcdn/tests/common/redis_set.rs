//! Redis servers and sentinels on loopback for the registry's fault tests: a primary
//! with a replica watched by three sentinels (`appendonly yes`, as the README asks),
//! or one server killed and started again on its files. Standard library only: the
//! registry crate's tests include this file too.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The master set the sentinels watch.
pub const MASTER_SET: &str = "streamcdn";

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-cli -p port args…`, its output trimmed; empty when it fails.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli is required: apt-get install redis-tools (it comes with redis-server)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A `redis-server` (or `redis-sentinel`) process that can be killed and started again
/// on the same port with the same files.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    program: &'static str,
    args: Vec<String>,
}

impl RedisProcess {
    fn start(program: &'static str, port: u16, args: Vec<String>) -> Self {
        let mut process = Self {
            child: None,
            port,
            program,
            args,
        };
        process.restart();
        process
    }

    /// A server keeping its files in `dir`, with `extra` settings (`--name value`…).
    pub fn server(dir: &Path, extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start("redis-server", port, args)
    }

    /// Starts the process (again); waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.program);
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is required ({e}): apt-get install redis-server redis-sentinel \
                     (scripts/test.sh installs them)",
                    self.program
                )
            });
        self.child = Some(child);
        wait_port(self.port, self.program);
    }

    /// `kill -9`, as a crash or an operator pulling the plug does it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A primary, a replica and three sentinels watching them as [`MASTER_SET`], their
/// files in a directory of their own (removed on drop).
pub struct Sentinels {
    /// The primary first, then the replica.
    pub servers: Vec<RedisProcess>,
    pub sentinels: Vec<RedisProcess>,
    /// The primary's port when the set started.
    first_primary: u16,
    dir: PathBuf,
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        self.servers.clear();
        self.sentinels.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sentinels {
    pub fn start() -> Self {
        static SETS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamcdn-sentinels-{}-{}",
            std::process::id(),
            SETS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let dir = dir.as_path();
        let primary = RedisProcess::server(&dir.join("primary"), &["--appendonly", "yes"]);
        let primary_port = primary.port.to_string();
        let replica = RedisProcess::server(
            &dir.join("replica"),
            &[
                "--appendonly",
                "yes",
                "--replicaof",
                "127.0.0.1",
                &primary_port,
            ],
        );
        let sentinels = (0..3)
            .map(|i| {
                let port = port();
                let sentinel_dir = dir.join(format!("sentinel{i}"));
                std::fs::create_dir_all(&sentinel_dir).unwrap();
                let config = sentinel_dir.join("sentinel.conf");
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {MASTER_SET} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_SET} 1000\n\
                         sentinel failover-timeout {MASTER_SET} 10000\n\
                         sentinel parallel-syncs {MASTER_SET} 1\n",
                        sentinel_dir.display()
                    ),
                )
                .unwrap();
                RedisProcess::start("redis-sentinel", port, vec![config.display().to_string()])
            })
            .collect();
        let set = Self {
            first_primary: primary.port,
            servers: vec![primary, replica],
            sentinels,
            dir: dir.to_owned(),
        };
        set.wait_ready();
        set
    }

    /// Until the replica is in sync and every sentinel knows the replica and the other
    /// sentinels: before that, a failover cannot happen.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = redis_cli(self.servers[1].port, &["INFO", "replication"])
                .contains("master_link_status:up");
            let known = self.sentinels.iter().all(|s| {
                let master = redis_cli(s.port, &["SENTINEL", "MASTER", MASTER_SET]);
                let field = |name: &str| {
                    let lines: Vec<&str> = master.lines().collect();
                    lines
                        .iter()
                        .position(|l| *l == name)
                        .and_then(|i| lines.get(i + 1))
                        .map(|v| v.to_string())
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            });
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the replica and each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_SET}", hosts.join(","))
    }

    /// The `[registry]` table that points a node at the set (lease 3 s, as
    /// [`super::Redis::registry_toml`]).
    pub fn registry_toml(&self, namespace: &str) -> String {
        format!(
            "[registry]\nbackend = \"redis\"\nurl = \"{}\"\nnamespace = \"{namespace}\"\nlease = \"3s\"\n",
            self.url()
        )
    }

    /// `kill -9` of the primary the set started with.
    pub fn kill_primary(&mut self) {
        self.servers[0].kill9();
    }

    /// Whether the sentinels name another master than the one the set started with.
    pub fn promoted(&self) -> bool {
        self.master_port()
            .is_some_and(|port| port != self.first_primary)
    }

    /// The master's port as the sentinels name it now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let answer = redis_cli(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_SET]);
            answer.lines().nth(1)?.trim().parse().ok()
        })
    }
}
