//! The sites on the machine: one network namespace each, its addresses, its TUN device,
//! and the cleanup that removes all of it whatever way the process ends.
//!
//! Layout inside a site's namespace (why: the kernel must deliver the site's own
//! addresses locally and hand every other loopback-range address to us):
//! - `lo` up with `127.0.0.1/32` (instead of the default `127.0.0.1/8`, which would make
//!   all of 127/8 local) and the site's addresses as `/32`s;
//! - a TUN device `wan0` (created from a thread that `setns`-ed into the namespace), up,
//!   with the route `127.0.0.0/8 dev wan0 src <first address>`;
//! - `route_localnet=1` (all, default, lo, wan0) so 127/8 may leave through and arrive on
//!   `wan0`, `rp_filter=0` so replies are not dropped as martians, IPv6 off on `wan0`.
//!
//! Everything is done with `ip -n <ns>` and per-thread `setns`: the emulator's own
//! namespace is never changed.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::topology::Site;

/// The TUN device's name inside every site namespace.
pub const TUN_NAME: &str = "wan0";
const NETNS_DIR: &str = "/run/netns";
const ETC_NETNS: &str = "/etc/netns";

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What this run created; removed on drop (normal exit, error, panic unwinding).
#[derive(Default)]
pub struct Namespaces {
    created: Vec<String>,
    resolv_dirs: Vec<PathBuf>,
}

impl Namespaces {
    /// Creates namespace `ns` for `site` and returns its TUN device.
    pub fn add_site(&mut self, ns: &str, site: &Site) -> anyhow::Result<File> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        let n = ["-n", ns];
        let run = |rest: &[&str]| ip(&[&n[..], rest].concat());
        run(&["link", "set", "lo", "up"])?;
        // Bringing lo up gives it 127.0.0.1/8; narrow it so other sites' addresses are not local.
        run(&["addr", "del", "127.0.0.1/8", "dev", "lo"])?;
        run(&["addr", "add", "127.0.0.1/32", "dev", "lo"])?;
        for addr in &site.addrs {
            run(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
        }
        let tun = open_tun_in(ns).with_context(|| format!("TUN device in namespace {ns}"))?;
        run(&["link", "set", TUN_NAME, "up"])?;
        let src = site.addrs[0].to_string();
        run(&["route", "add", "127.0.0.0/8", "dev", TUN_NAME, "src", &src])?;
        if let Some(resolver) = site.resolver {
            self.write_resolv_conf(ns, resolver)?;
        }
        Ok(tun)
    }

    fn write_resolv_conf(&mut self, ns: &str, resolver: Ipv4Addr) -> anyhow::Result<()> {
        let dir = Path::new(ETC_NETNS).join(ns);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        self.resolv_dirs.push(dir.clone());
        let file = dir.join("resolv.conf");
        std::fs::write(
            &file,
            format!("# written by wan-emu, removed at its exit\nnameserver {resolver}\n"),
        )
        .with_context(|| format!("write {}", file.display()))
    }

    /// Deletes everything created; errors are reported, not fatal (best effort).
    pub fn cleanup(&mut self) {
        for dir in self.resolv_dirs.drain(..) {
            let _ = std::fs::remove_file(dir.join("resolv.conf"));
            let _ = std::fs::remove_dir(&dir);
        }
        for ns in self.created.drain(..) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("wan-emu: cleanup: {e:#}");
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs `f` on a new thread that has entered namespace `ns` (only that thread moves).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = Path::new(NETNS_DIR).join(ns);
    let thread = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            let handle = File::open(&path).with_context(|| format!("open {}", path.display()))?;
            // SAFETY: setns on a valid namespace fd; it only affects this thread, which
            // ends when `f` returns.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context("setns");
            }
            f()
        })
        .context("spawn thread")?;
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Sysctls written from inside the namespace (`/proc/sys/net` follows the thread's namespace).
fn sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))
}

fn open_tun_in(ns: &str) -> anyhow::Result<File> {
    in_netns(ns, || {
        for iface in ["all", "default", "lo"] {
            sysctl(&format!("net.ipv4.conf.{iface}.route_localnet"), "1")?;
            sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
        }
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .context("open /dev/net/tun (needs CONFIG_TUN and root)")?;
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(TUN_NAME.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
            return Err(io::Error::last_os_error()).context("ioctl TUNSETIFF");
        }
        sysctl(&format!("net.ipv4.conf.{TUN_NAME}.route_localnet"), "1")?;
        sysctl(&format!("net.ipv4.conf.{TUN_NAME}.rp_filter"), "0")?;
        // No IPv6 chatter on the TUN (and no error where IPv6 is compiled out).
        let _ = sysctl(&format!("net.ipv6.conf.{TUN_NAME}.disable_ipv6"), "1");
        Ok(tun)
    })
}

/// A TCP connect from inside `ns` to `to:9`: a SYN/ACK or a RST both prove the path
/// both ways (sites start with nothing listening).
pub fn probe(ns: &str, to: Ipv4Addr, timeout: Duration) -> anyhow::Result<()> {
    in_netns(ns, move || {
        match TcpStream::connect_timeout(&SocketAddr::from((to, 9)), timeout) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(e).with_context(|| format!("TCP connect to {to}:9")),
        }
    })
}

/// Namespace names under the default prefix scheme `wanemu<pid>-<site>`.
pub fn default_prefix(pid: u32) -> String {
    format!("wanemu{pid}")
}

/// Namespaces (`/run/netns`) whose names start with `prefix-`.
pub fn existing_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let start = format!("{prefix}-");
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&start))
        .collect()
}

/// Removes namespaces of earlier runs that died without cleaning up (SIGKILL): those
/// named `wanemu<pid>-*` whose pid is not a live process, or is ours (a reused pid).
pub fn remove_stale(own_pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in dir.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let Some(pid) = name
            .strip_prefix("wanemu")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own_pid && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = std::fs::remove_file(Path::new(ETC_NETNS).join(&name).join("resolv.conf"));
        let _ = std::fs::remove_dir(Path::new(ETC_NETNS).join(&name));
        if ip(&["netns", "del", &name]).is_ok() {
            removed.push(name);
        }
    }
    removed
}
