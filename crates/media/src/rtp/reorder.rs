//! Puts one RTP stream's packets back in sequence order: mildly reordered packets wait a
//! little for the ones before them; a packet that does not come in time is lost, and the
//! depacketizer is told so (a gap), never handed packets out of order.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::input::Timeline;

/// How long the packets after a missing one wait for it (from the arrival of the first
/// of them): a reordering network delivers the straggler within a few milliseconds.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(40);
/// Packets held at most while waiting, whatever the clock says (a keyframe at a high
/// bitrate can come in a burst of this many packets within the wait).
pub(crate) const MAX_HELD: usize = 256;
/// A sequence number further ahead than this (RFC 3550 A.1's `MAX_DROPOUT`), or further
/// behind than `MAX_MISORDER`, is a restarted sender, or a stray packet: it is taken only
/// if the next packet follows it.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 100;

/// A packet that arrived, its payload copied out of the caller's buffer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub(crate) timestamp: u32,
    pub(crate) marker: bool,
    pub(crate) payload: Bytes,
    pub(crate) arrival: Duration,
}

/// What the buffer releases, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    Packet(Held),
    /// This many packets (at least one) were lost before the next one.
    Gap(u64),
}

/// What a push did, for the statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushOutcome {
    /// Arrived after a later packet, in time to be put back in order.
    pub(crate) reordered: bool,
    /// Arrived after its place was given up, or twice: dropped.
    pub(crate) late: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Reorder {
    /// The extended (never wrapping) sequence number of the next packet to release.
    next: Option<i64>,
    /// The highest extended sequence number seen, which unwraps the next one.
    highest: i64,
    held: BTreeMap<i64, Held>,
    /// When the packets after a gap started waiting for it.
    waiting_since: Option<Duration>,
    /// A packet far from the others, held until the next one confirms a restart.
    probation: Option<(u16, Held)>,
}

impl Reorder {
    pub(crate) fn push(
        &mut self,
        sequence: u16,
        packet: Held,
        out: &mut Vec<Ordered>,
    ) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        let arrival = packet.arrival;
        let Some(next) = self.next else {
            self.restart(sequence, packet, out);
            return outcome;
        };
        let highest_seq = (self.highest & 0xFFFF) as u64;
        let step = Timeline::wrapping_step(16, highest_seq, u64::from(sequence));
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&step) {
            match self.probation.take() {
                Some((previous, held)) if previous.wrapping_add(1) == sequence => {
                    // Two in a row: the sender restarted its sequence numbers.
                    self.release_all(out);
                    out.push(Ordered::Gap(1));
                    self.restart(previous, held, out);
                    self.push(sequence, packet, out);
                }
                _ => self.probation = Some((sequence, packet)),
            }
            return outcome;
        }
        self.probation = None;
        let extended = self.highest + step;
        if extended < next || self.held.contains_key(&extended) {
            outcome.late = true;
            return outcome;
        }
        if extended < self.highest {
            outcome.reordered = true;
        }
        self.highest = self.highest.max(extended);
        self.held.insert(extended, packet);
        self.release(arrival, out);
        outcome
    }

    fn restart(&mut self, sequence: u16, packet: Held, out: &mut Vec<Ordered>) {
        let extended = i64::from(sequence);
        self.next = Some(extended);
        self.highest = extended;
        self.held.clear();
        self.waiting_since = None;
        self.probation = None;
        self.held.insert(extended, packet);
        let arrival = self.held[&extended].arrival;
        self.release(arrival, out);
    }

    /// Releases what is in order, and gives up on a missing packet once the packets
    /// after it have waited long enough, or too many are held.
    pub(crate) fn release(&mut self, now: Duration, out: &mut Vec<Ordered>) {
        loop {
            let Some(next) = self.next else { return };
            if let Some(packet) = self.held.remove(&next) {
                out.push(Ordered::Packet(packet));
                self.next = Some(next + 1);
                self.waiting_since = None;
                continue;
            }
            let Some((&first, _)) = self.held.first_key_value() else {
                self.waiting_since = None;
                return;
            };
            let since = *self.waiting_since.get_or_insert(now);
            if self.held.len() < MAX_HELD && now.saturating_sub(since) < MAX_WAIT {
                return;
            }
            out.push(Ordered::Gap((first - next) as u64));
            self.next = Some(first);
            self.waiting_since = None;
        }
    }

    /// Releases everything held (the stream ends), gaps and all.
    pub(crate) fn release_all(&mut self, out: &mut Vec<Ordered>) {
        while let Some((first, packet)) = self.held.pop_first() {
            if let Some(next) = self.next.filter(|n| first > *n) {
                out.push(Ordered::Gap((first - next) as u64));
            }
            out.push(Ordered::Packet(packet));
            self.next = Some(first + 1);
        }
        self.waiting_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(at_ms: u64) -> Held {
        Held {
            timestamp: 0,
            marker: false,
            payload: Bytes::from(at_ms.to_be_bytes().to_vec()),
            arrival: Duration::from_millis(at_ms),
        }
    }

    /// Pushes `(sequence, arrival ms)` and returns what came out: packets by their
    /// arrival, gaps as negative counts.
    fn run(packets: &[(u16, u64)]) -> (Vec<i64>, u64, u64) {
        let mut r = Reorder::default();
        let mut out = Vec::new();
        let (mut reordered, mut late) = (0, 0);
        for &(seq, at) in packets {
            let o = r.push(seq, held(at), &mut out);
            reordered += u64::from(o.reordered);
            late += u64::from(o.late);
        }
        r.release_all(&mut out);
        let out = out
            .into_iter()
            .map(|o| match o {
                Ordered::Packet(p) => p.arrival.as_millis() as i64,
                Ordered::Gap(n) => -(n as i64),
            })
            .collect();
        (out, reordered, late)
    }

    #[test]
    fn swapped_packets_are_put_back_in_order() {
        let (out, reordered, late) = run(&[(10, 0), (12, 1), (11, 2), (13, 3)]);
        assert_eq!(out, [0, 2, 1, 3]);
        assert_eq!((reordered, late), (1, 0));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (out, _, _) = run(&[(65534, 0), (0, 1), (65535, 2), (1, 3)]);
        assert_eq!(out, [0, 2, 1, 3]);
    }

    #[test]
    fn a_packet_that_does_not_come_in_time_is_a_gap_and_late_ones_are_dropped() {
        // 11 is missing; 12.. wait 40 ms, then go on without it; when 11 finally comes
        // it is too late.
        let (out, reordered, late) = run(&[
            (10, 0),
            (12, 1),
            (13, 20),
            (14, 41),
            (15, 42),
            (11, 50),
            (15, 51),
        ]);
        assert_eq!(out, [0, -1, 1, 20, 41, 42]);
        assert_eq!((reordered, late), (0, 2));
    }

    #[test]
    fn a_burst_after_a_gap_does_not_wait_beyond_the_bound() {
        let mut packets = vec![(0u16, 0u64)];
        packets.extend((2..2 + MAX_HELD as u16).map(|s| (s, 1)));
        let mut r = Reorder::default();
        let mut out = Vec::new();
        for (seq, at) in packets {
            r.push(seq, held(at), &mut out);
        }
        assert_eq!(out.len(), 2 + MAX_HELD, "released without the clock moving");
        assert_eq!(out[1], Ordered::Gap(1));
    }

    #[test]
    fn a_stray_packet_is_ignored_and_a_restart_is_followed() {
        // 40000 once: a stray; 20000 then 20001: the sender restarted.
        let (out, _, _) = run(&[
            (1, 0),
            (2, 1),
            (40000, 2),
            (3, 3),
            (20000, 4),
            (20001, 5),
            (20002, 6),
        ]);
        assert_eq!(out, [0, 1, 3, -1, 4, 5, 6]);
    }
}
