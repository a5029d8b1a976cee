//! A streamcdn deployment spread over emulated WAN sites ([`Wan`]): Redis for the
//! shared directory, servers each in their own site with their own configuration,
//! every site resolving names through the router (`/etc/netns/<ns>/resolv.conf`, so the
//! router listens on port 53), and helpers to ask things from inside a site. Processes
//! are killed when the deployment is dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::wan::Wan;

pub struct Sites {
    pub wan: Wan,
    pub dir: PathBuf,
    redis: String,
    /// Started processes by name, killed on drop.
    processes: Vec<(String, Child)>,
}

impl Drop for Sites {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sites {
    /// The emulated network (every site resolving through `resolver`) and Redis at
    /// `redis` in site `redis_site`, answering before this returns.
    pub fn start(
        name: &str,
        sites: &[(&str, &[&str])],
        rtt_ms: &[(&str, &str, u32)],
        resolver: &str,
        (redis_site, redis): (&str, &str),
    ) -> Sites {
        let wan = Wan::start_with(sites, rtt_ms, &["--resolver", resolver]);
        let dir = super::temp_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut deployment = Sites {
            wan,
            dir,
            redis: redis.to_owned(),
            processes: Vec::new(),
        };
        let redis_server = super::tool_or("redis-server", "apt-get install redis-server");
        let log = std::fs::File::create(deployment.dir.join("redis.log")).unwrap();
        let child = deployment
            .wan
            .exec(redis_site, &redis_server.to_string_lossy())
            .args([
                "--port",
                "6379",
                "--bind",
                redis,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // The other sites reach it at an address Redis does not count as loopback;
            // the namespaces hold only 127.0.0.0/8 addresses.
            .args(["--protected-mode", "no"])
            .stdout(log)
            .spawn()
            .expect("redis-server in its site");
        deployment.processes.push(("redis".into(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !deployment
            .wan
            .exec(redis_site, "redis-cli")
            .args(["-h", redis, "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in site {redis_site}: {}",
                std::fs::read_to_string(deployment.dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        deployment
    }

    /// Writes the configuration of a server at `addr` in `site` (every listener on that
    /// address, the router's DNS on port 53) with `extra` TOML appended.
    pub fn config(&self, site: &str, addr: &str, extra: &str) -> PathBuf {
        let dir = self.dir.join(site);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("streamcdn.toml");
        std::fs::write(
            &path,
            format!(
                r#"[node]
data_dir = "{data}"
shutdown_grace = "2s"
site = "{site}"
[rtmp]
listen = "{addr}:1935"
tls_listen = "{addr}:1936"
[srt]
listen = "{addr}:8890"
[webrtc]
listen = "{addr}:8189"
[origin]
listen = "{addr}:8088"
[http]
listen = "{addr}:8080"
tls_listen = "{addr}:8443"
[admin]
listen = "{addr}:8081"
[federation]
listen = "{addr}:9443"
[registry]
backend = "redis"
url = "redis://{redis}:6379/"
namespace = "sites"
lease = "3s"
[[providers]]
name = "demo"
stream_key = "{key}"
{extra}
"#,
                data = dir.join("data").display(),
                redis = self.redis,
                key = super::KEY,
            ),
        )
        .unwrap();
        path
    }

    /// Starts `streamcdn <role>` at `addr` in `site`; its log is `<dir>/<site>/streamcdn.log`.
    pub fn spawn(&mut self, site: &str, role: &str, addr: &str, extra: &str) {
        let config = self.config(site, addr, extra);
        let log = std::fs::File::create(self.dir.join(site).join("streamcdn.log")).unwrap();
        let child = self
            .wan
            .exec(site, env!("CARGO_BIN_EXE_streamcdn"))
            .args([role, "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("streamcdn in its site");
        self.processes.push((site.to_owned(), child));
    }

    /// Starts any process in `site`, killed with the deployment (or by [`Sites::kill`]).
    pub fn spawn_command(&mut self, name: &str, mut command: Command) {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.processes.push((name.to_owned(), child));
    }

    /// SIGKILLs the processes started under `name` (a site, or a [`Sites::spawn_command`] name).
    pub fn kill(&mut self, name: &str) {
        for (_, child) in self.processes.iter_mut().filter(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes.retain(|(n, _)| n != name);
    }

    /// The log of the server in `site`.
    pub fn log(&self, site: &str) -> String {
        std::fs::read_to_string(self.dir.join(site).join("streamcdn.log")).unwrap_or_default()
    }

    /// What `dig +short` gets from `site` for `name` (type A), asking `server`.
    pub fn dig(&self, site: &str, server: &str, name: &str) -> String {
        let out = self
            .wan
            .exec(site, "dig")
            .args([
                &format!("@{server}"),
                name,
                "A",
                "+short",
                "+time=2",
                "+tries=1",
            ])
            .output()
            .expect("run dig in a site (apt-get install bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `curl -s` from `site`, with `args`; the body, or what curl printed with `-w`.
    pub fn curl(&self, site: &str, args: &[&str]) -> String {
        let out = self
            .wan
            .exec(site, "curl")
            .args(["-s", "--max-time", "5"])
            .args(args)
            .output()
            .expect("run curl in a site (apt-get install curl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sum of a server's metric samples whose line starts with `prefix` and
    /// contains every one of `labels`, read from its admin listener from `site`.
    pub fn metric(&self, site: &str, admin: &str, prefix: &str, labels: &[&str]) -> f64 {
        self.curl(site, &[&format!("http://{admin}/metrics")])
            .lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Sites {
    /// A router's `GET /api/v1/routing/explain?ip=` answer, asked from its own site
    /// (`router_addr` is where its admin listener is, port 8081).
    pub fn explain(&self, router_site: &str, router_addr: &str, ip: &str) -> serde_json::Value {
        let url = format!("http://{router_addr}:8081/api/v1/routing/explain?ip={ip}");
        serde_json::from_str(&self.curl(router_site, &[&url])).unwrap_or_default()
    }
}

/// One candidate of an explanation, by edge address (`Null` if none).
pub fn candidate<'a>(explain: &'a serde_json::Value, edge_addr: &str) -> &'a serde_json::Value {
    explain["explain"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["edge"].as_str().is_some_and(|e| e.contains(edge_addr)))
        })
        .unwrap_or(&serde_json::Value::Null)
}

/// Polls `check` every 250 ms until it returns `Ok`; returns how long that took, or
/// panics with the last `Err` after `within`.
pub fn wait_until<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return (value, started.elapsed()),
            Err(last) => assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
