//! The IO around the scheduler: one blocking reader thread per TUN device, and one
//! engine thread that owns the [`Scheduler`], writes due packets to the destination
//! site's TUN and applies control changes between packets.
//!
//! Plain threads rather than async tasks: the engine sleeps on a channel with a timeout
//! until the next packet is due, which keeps sub-millisecond timing (tokio's timer has
//! 1 ms granularity, which would add up to 2 ms per round trip).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::scheduler::{Scheduler, Verdict};
use crate::topology::{LinkPatch, Topology};

pub enum Input {
    /// A packet read from site `from`'s TUN at `at`.
    Packet {
        from: usize,
        at: Instant,
        data: Vec<u8>,
    },
    Patch(LinkPatch, tokio::sync::oneshot::Sender<()>),
    Stats(tokio::sync::oneshot::Sender<serde_json::Value>),
}

#[derive(Default, Serialize)]
pub struct Counters {
    pub read: u64,
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    pub lost: u64,
    pub queue_full: u64,
    /// No site owns the destination address.
    pub unknown_destination: u64,
    pub not_ipv4: u64,
    pub write_errors: u64,
}

/// The IPv4 destination of a raw packet (TUN without packet info: the IP header first).
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}

/// Reads packets from one site's TUN forever (the process exits around it).
pub fn spawn_reader(
    site: usize,
    name: String,
    tun: Arc<File>,
    tx: Sender<Input>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("tun-{name}"))
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                match (&*tun).read(&mut buf) {
                    Ok(0) => continue,
                    Ok(n) => {
                        let packet = Input::Packet {
                            from: site,
                            at: Instant::now(),
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(packet).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!(
                            "wan-emu: reading the TUN of site {name}: {e}; this site is cut off"
                        );
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

pub struct Engine {
    pub topology: Topology,
    pub tuns: Vec<Arc<File>>,
    pub scheduler: Scheduler<Vec<u8>>,
    pub counters: Counters,
    /// Packets forwarded per directed pair, `from * sites + to`.
    pub per_pair: Vec<u64>,
}

impl Engine {
    pub fn new(topology: Topology, tuns: Vec<Arc<File>>, seed: u64, queue_limit: usize) -> Self {
        let n = topology.sites.len();
        Engine {
            topology,
            tuns,
            scheduler: Scheduler::new(n, seed, queue_limit),
            counters: Counters::default(),
            per_pair: vec![0; n * n],
        }
    }

    /// Runs until every sender is gone; `_alive` is dropped on return or panic, which
    /// tells the main task the engine is gone.
    pub fn run(mut self, rx: Receiver<Input>, _alive: tokio::sync::oneshot::Sender<()>) {
        loop {
            self.deliver_due();
            let input = match self.scheduler.next_due() {
                Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(input) => input,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(input) => input,
                    Err(_) => return,
                },
            };
            self.handle(input);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Packet { from, at, data } => self.route(from, at, data),
            Input::Patch(patch, done) => {
                for &(from, to) in &patch.directions {
                    let mut link = self.scheduler.link(from, to);
                    patch.apply(&mut link);
                    self.scheduler.set_link(from, to, link);
                }
                let _ = done.send(());
            }
            Input::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
        }
    }

    fn route(&mut self, from: usize, at: Instant, data: Vec<u8>) {
        self.counters.read += 1;
        let Some(dst) = ipv4_destination(&data) else {
            self.counters.not_ipv4 += 1;
            return;
        };
        let Some(to) = self.topology.site_of(dst) else {
            self.counters.unknown_destination += 1;
            return;
        };
        let len = data.len();
        match self.scheduler.enqueue(at, from, to, len, data) {
            Verdict::Queued { .. } => {}
            Verdict::Lost => self.counters.lost += 1,
            Verdict::QueueFull => self.counters.queue_full += 1,
        }
    }

    fn deliver_due(&mut self) {
        let now = Instant::now();
        while let Some(d) = self.scheduler.pop_due(now) {
            match (&*self.tuns[d.to]).write(&d.packet) {
                // A TUN write takes a whole packet or fails.
                Ok(n) if n == d.packet.len() => {
                    self.counters.forwarded += 1;
                    self.counters.forwarded_bytes += d.packet.len() as u64;
                    self.per_pair[d.from * self.scheduler.sites() + d.to] += 1;
                }
                Ok(_) | Err(_) => self.counters.write_errors += 1,
            }
        }
    }

    fn stats(&self) -> serde_json::Value {
        let n = self.scheduler.sites();
        let mut links = Vec::new();
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                let link = self.scheduler.link(from, to);
                links.push(json!({
                    "from": self.topology.sites[from].name,
                    "to": self.topology.sites[to].name,
                    "one_way_ms": link.one_way.as_secs_f64() * 1000.0,
                    "loss": link.loss,
                    "rate_kbps": link.rate_kbps,
                    "forwarded": self.per_pair[from * n + to],
                }));
            }
        }
        json!({
            "counters": self.counters,
            "in_flight": self.scheduler.queued(),
            "links": links,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_of_ipv4_packets_only() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[127, 50, 2, 1]);
        assert_eq!(ipv4_destination(&p), Some(Ipv4Addr::new(127, 50, 2, 1)));
        assert_eq!(ipv4_destination(&p[..19]), None);
        p[0] = 0x60;
        assert_eq!(ipv4_destination(&p), None);
        assert_eq!(ipv4_destination(&[]), None);
    }
}
