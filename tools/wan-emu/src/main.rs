//! `wan-emu`: a userspace WAN emulator for end-to-end tests, for kernels without `netem`.
//!
//! Each site is a network namespace holding a TUN device; this one process reads the
//! IPv4 packets every site sends towards another site's address and writes them into
//! that site's TUN after the pair's delay, with optional loss and a bandwidth cap. All
//! addresses are in 127.0.0.0/8 (with `route_localnet`), so nothing ever leaves the
//! loopback range. The matrix can be changed while it runs (JSON lines on stdin).
//!
//! Output is JSON lines on stdout: `{"event":"ready",...}` once forwarding has been
//! checked end to end (with the namespace of each site), one reply per control line,
//! and `{"event":"exit",...}` after cleanup. Namespaces and resolv.conf files are
//! removed on every exit path that runs code: stdin EOF, `{"stop":{}}`, SIGTERM, SIGINT,
//! SIGHUP, `--max-seconds`, errors and panics. After a SIGKILL they stay behind; the
//! next run removes `wanemu<pid>-*` namespaces whose process is gone.

mod forward;
mod netns;
mod scheduler;
mod topology;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::forward::{Engine, Input};
use crate::netns::Namespaces;
use crate::topology::{Command, LinkSpec, SiteSpec, Topology, TopologySpec};

/// Userspace WAN emulator: sites as network namespaces, per-pair delay, loss and
/// bandwidth between them, all in 127.0.0.0/8. Needs root, `ip` and /dev/net/tun.
///
/// Delays: `rtt_ms` is a round trip (half each way), `one_way_ms` one direction.
/// Control on stdin, one JSON object per line:
/// `{"set":{"from":"a","to":"b","rtt_ms":40}}` (also `one_way_ms`, `loss`, `rate_kbps`
/// with 0 for uncapped, `directed`), `{"stats":{}}`, `{"stop":{}}`. EOF on stdin stops.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// JSON topology: {"sites":[{"name":"a","addrs":["127.50.1.1"]}],
    /// "links":[{"from":"a","to":"b","rtt_ms":40,"loss":0.01,"rate_kbps":10000}]}
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// A site: NAME=ADDR[,ADDR...] (addresses in 127.0.0.0/8); added to --topology's.
    #[arg(long, value_name = "NAME=ADDRS")]
    site: Vec<String>,
    /// A matrix entry: FROM,TO,KEY=VALUE... with keys rtt_ms, one_way_ms, loss,
    /// rate_kbps, directed. Unset pairs have no delay.
    #[arg(long, value_name = "FROM,TO,K=V...")]
    link: Vec<String>,
    /// Namespace names are PREFIX-SITE [default: wanemu<pid>]. A custom prefix must
    /// not be in use.
    #[arg(long)]
    prefix: Option<String>,
    /// Write /etc/netns/<ns>/resolv.conf with this nameserver for every site (127/8).
    #[arg(long, value_name = "ADDR")]
    resolver: Option<String>,
    /// Stop (and clean up) after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Seed of the loss RNG [default: from the clock; printed either way].
    #[arg(long)]
    seed: Option<u64>,
    /// Packets queued per directed pair before it drops (matters with rate_kbps).
    #[arg(long, default_value_t = 10_000)]
    queue_packets: usize,
    /// Do not read stdin (no control channel; stop by signal or --max-seconds).
    #[arg(long)]
    no_stdin: bool,
}

/// One JSON line on stdout; a closed stdout is not worth dying for.
fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn load(cli: &Cli) -> anyhow::Result<(Vec<SiteSpec>, Vec<LinkSpec>)> {
    let mut spec = TopologySpec::default();
    if let Some(path) = &cli.topology {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        spec = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    }
    for s in &cli.site {
        spec.sites.push(topology::parse_site_flag(s)?);
    }
    for l in &cli.link {
        spec.links.push(topology::parse_link_flag(l)?);
    }
    Ok((spec.sites, spec.links))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wan-emu: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Reader threads block in read(2) forever: leave without waiting for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("wan-emu: {e:#}");
            std::process::exit(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Handlers first: a signal during setup then waits for setup, and cleanup runs.
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    let (site_specs, link_specs) = load(&cli)?;
    let topology = Topology::new(&site_specs, cli.resolver.as_deref())?;
    let patches = link_specs
        .iter()
        .map(|l| {
            topology
                .patch(l)
                .with_context(|| format!("link {} - {}", l.from, l.to))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let pid = std::process::id();
    let prefix = match &cli.prefix {
        Some(p) => {
            topology::check_name("--prefix", p)?;
            let taken = netns::existing_with_prefix(p);
            if !taken.is_empty() {
                bail!("namespaces with prefix {p} exist ({}): another run, or delete them with `ip netns del`", taken.join(", "));
            }
            p.clone()
        }
        None => netns::default_prefix(pid),
    };
    for stale in netns::remove_stale(pid) {
        eprintln!("wan-emu: removed stale namespace {stale} (its process is gone)");
    }
    let seed = cli.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(pid) << 32)
    });
    eprintln!("wan-emu: loss RNG seed {seed} (replay with --seed {seed})");

    // From here on, `sites` removes what was created whenever it is dropped.
    let mut sites = Namespaces::default();
    let mut tuns = Vec::new();
    let mut ns_names = Vec::new();
    for site in &topology.sites {
        let ns = format!("{prefix}-{}", site.name);
        tuns.push(Arc::new(sites.add_site(&ns, site)?));
        ns_names.push(ns);
    }

    let (tx, rx) = std::sync::mpsc::channel();
    for (i, tun) in tuns.iter().enumerate() {
        forward::spawn_reader(i, topology.sites[i].name.clone(), tun.clone(), tx.clone())
            .context("spawn TUN reader")?;
    }
    let (alive_tx, mut engine_gone) = tokio::sync::oneshot::channel::<()>();
    let engine = Engine::new(topology.clone(), tuns, seed, cli.queue_packets.max(1));
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine.run(rx, alive_tx))
        .context("spawn engine")?;

    // Prove forwarding works (all links still at zero delay) before the matrix applies.
    for (i, (site, ns)) in topology.sites.iter().zip(&ns_names).enumerate() {
        let next = &topology.sites[(i + 1) % topology.sites.len()];
        if next.name != site.name {
            let to = next.addrs[0];
            netns::probe(ns, to, Duration::from_secs(3)).with_context(|| {
                format!("forwarding self-check from {} to {to} failed", site.name)
            })?;
        }
    }
    for patch in patches {
        apply(&tx, patch).await?;
    }

    let namespaces: serde_json::Map<String, serde_json::Value> = topology
        .sites
        .iter()
        .zip(&ns_names)
        .map(|(s, ns)| (s.name.clone(), json!(ns)))
        .collect();
    emit(json!({
        "event": "ready",
        "pid": pid,
        "prefix": prefix,
        "seed": seed,
        "namespaces": namespaces,
        "tun": netns::TUN_NAME,
    }));

    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    if !cli.no_stdin {
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if line_tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawn stdin reader")?;
    } else {
        // Keep the channel open forever.
        std::mem::forget(line_tx);
    }

    let deadline = tokio::time::sleep(Duration::from_secs(cli.max_seconds));
    tokio::pin!(deadline);
    let reason: anyhow::Result<&str> = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sighup.recv() => break Ok("SIGHUP"),
            _ = &mut deadline => break Ok("max-seconds"),
            _ = &mut engine_gone => break Err(anyhow::anyhow!("the forwarding engine stopped")),
            line = lines.recv() => {
                let Some(line) = line else { break Ok("stdin closed") };
                if line.trim().is_empty() {
                    continue;
                }
                match control(&tx, &topology, &line).await {
                    Ok(Some(reply)) => emit(reply),
                    Ok(None) => break Ok("stop"),
                    Err(e) => emit(json!({"event": "error", "line": line, "error": format!("{e:#}")})),
                }
            }
        }
    };
    let stats = stats(&tx).await.unwrap_or(serde_json::Value::Null);
    sites.cleanup();
    let reason = reason?;
    emit(json!({"event": "exit", "reason": reason, "stats": stats}));
    Ok(())
}

async fn apply(
    tx: &std::sync::mpsc::Sender<Input>,
    patch: topology::LinkPatch,
) -> anyhow::Result<()> {
    let (done, applied) = tokio::sync::oneshot::channel();
    tx.send(Input::Patch(patch, done))
        .context("the forwarding engine stopped")?;
    applied.await.context("the forwarding engine stopped")
}

async fn stats(tx: &std::sync::mpsc::Sender<Input>) -> anyhow::Result<serde_json::Value> {
    let (reply, value) = tokio::sync::oneshot::channel();
    tx.send(Input::Stats(reply))
        .context("the forwarding engine stopped")?;
    value.await.context("the forwarding engine stopped")
}

/// One control line: `Ok(None)` means stop.
async fn control(
    tx: &std::sync::mpsc::Sender<Input>,
    topology: &Topology,
    line: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let command: Command = serde_json::from_str(line).context("not a control command")?;
    match command {
        Command::Set(spec) => {
            apply(tx, topology.patch(&spec)?).await?;
            Ok(Some(json!({"event": "applied", "set": spec})))
        }
        Command::Stats {} => Ok(Some(json!({"event": "stats", "stats": stats(tx).await?}))),
        Command::Stop {} => Ok(None),
    }
}
