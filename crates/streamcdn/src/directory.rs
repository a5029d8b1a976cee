//! This process in the node directory: its leased record (roles, site, addresses) with
//! a load summary measured between refreshes, renewed every third of the lease (and at
//! once when the registry comes back from an outage) until the process has drained,
//! then withdrawn. A drain is announced at once (`draining`), so routers stop sending
//! viewers and other ingest servers know the stream's holder is letting go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamcdn_registry::{Load, NodeRecord, Registry};
use tokio::sync::{oneshot, watch};

use crate::http::Traffic;

/// Linux reports process CPU time in clock ticks of `USER_HZ`, which the kernel fixes
/// at 100 for userspace on every architecture.
const USER_HZ: f64 = 100.0;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Counts the publishers this server holds now (the ingest role sets it).
pub type PublisherCount = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Turns counters into rates between two measurements.
struct LoadMeter {
    traffic: Arc<Traffic>,
    publishers: Option<PublisherCount>,
    last_at: Instant,
    last_bytes: u64,
    last_cpu: Option<f64>,
}

impl LoadMeter {
    fn new(traffic: Arc<Traffic>, publishers: Option<PublisherCount>) -> Self {
        Self {
            last_bytes: traffic.bytes_out(),
            traffic,
            publishers,
            last_at: Instant::now(),
            last_cpu: process_cpu_seconds(),
        }
    }

    fn measure(&mut self) -> Load {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let bytes = self.traffic.bytes_out();
        let cpu = process_cpu_seconds();
        let load = Load {
            viewer_connections: self.traffic.open_connections(),
            egress_bytes_per_sec: (bytes.saturating_sub(self.last_bytes) as f64 / elapsed) as u64,
            cpu: match (cpu, self.last_cpu) {
                (Some(now), Some(before)) => {
                    ((now - before).max(0.0) / elapsed * 100.0).round() / 100.0
                }
                _ => 0.0,
            },
            publishers: self.publishers.as_ref().map_or(0, |count| count()),
            measured_at_ms: streamcdn_support::clock::now_ms(),
        };
        (self.last_at, self.last_bytes, self.last_cpu) = (now, bytes, cpu);
        load
    }
}

/// Keeps `node` announced until `stop` fires (after the process has drained), then
/// withdraws it.
pub async fn announce(
    registry: Registry,
    mut node: NodeRecord,
    lease: Duration,
    playback: Arc<Traffic>,
    publishers: Option<PublisherCount>,
    mut draining: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut meter = LoadMeter::new(playback, publishers);
    let mut comebacks = registry.continuity();
    tracing::info!(node = node.id, roles = ?node.roles, site = node.site, "announcing this server in the node directory");
    loop {
        node.load = meter.measure();
        node.draining = *draining.borrow_and_update();
        if let Err(e) = registry.register_node(&node, lease).await {
            tracing::warn!(error = %e, "cannot renew this server's lease in the node directory");
        }
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            Ok(()) = draining.changed() => {}
            // The registry is back and may have lost this server's lease: renew now.
            Ok(()) = comebacks.changed() => {}
            _ = &mut stop => break,
        }
    }
    if let Err(e) = registry.remove_node(&node).await {
        tracing::warn!(error = %e, "cannot withdraw this server from the node directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_and_grows_with_work() {
        let before = process_cpu_seconds().expect("/proc/self/stat is readable on Linux");
        // Busy until the kernel has charged 50 ms more (10 s at most on a loaded box).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let grown = loop {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let now = process_cpu_seconds().unwrap_or(before);
            if now - before >= 0.05 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
        };
        std::hint::black_box(x);
        assert!(grown, "process CPU time did not grow with work");
    }
}
