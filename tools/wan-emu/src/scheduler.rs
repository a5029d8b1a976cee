//! The link model, sans IO: packets go in with the time they were read, come out when
//! their pair's link would have delivered them.
//!
//! Kept free of TUN devices, threads and clocks so that delay, loss, pacing and ordering
//! are unit-tested with made-up instants. Each directed pair of sites is one FIFO link:
//! a packet is lost with the link's probability (a seeded RNG, so a run can be
//! replayed), waits for the link to be free when a bandwidth cap is set (serialization
//! at the cap), then travels for the link's one-way delay. A packet is never delivered
//! before an earlier packet of the same pair, even when the delay is lowered while
//! packets are in flight: a change applies to packets enqueued after it.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// One direction between two sites.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub one_way: Duration,
    /// Probability in `0..=1` that a packet is dropped.
    pub loss: f64,
    /// Bandwidth cap in kilobits (1000 bits) per second; `None` is uncapped.
    pub rate_kbps: Option<u64>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            one_way: Duration::ZERO,
            loss: 0.0,
            rate_kbps: None,
        }
    }
}

/// What became of an enqueued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Queued {
        due: Instant,
    },
    /// Dropped by the link's loss probability.
    Lost,
    /// The pair already holds `queue_limit` packets (a capped link that is overrun).
    QueueFull,
}

/// A packet whose time has come.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<P> {
    pub from: usize,
    pub to: usize,
    pub packet: P,
}

/// SplitMix64: tiny, fast, and its sequence for a seed never changes across library
/// versions, which is what "print the seed to replay a run" needs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Default)]
struct PairState {
    /// Due time of the last packet queued on this pair (FIFO floor).
    last_due: Option<Instant>,
    /// When the capped link finishes sending what it already holds.
    busy_until: Option<Instant>,
    queued: usize,
}

struct Entry<P> {
    due: Instant,
    seq: u64,
    from: usize,
    to: usize,
    packet: P,
}

impl<P> PartialEq for Entry<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<P> Eq for Entry<P> {}
impl<P> PartialOrd for Entry<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Entry<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// All links between `sites` sites and the packets in flight on them.
pub struct Scheduler<P> {
    sites: usize,
    links: Vec<Link>,
    pairs: Vec<PairState>,
    /// Ordered by (due, enqueue sequence): per pair, due times never decrease, so the
    /// sequence keeps packets of one pair in order even when their due times are equal.
    heap: BinaryHeap<Reverse<Entry<P>>>,
    seq: u64,
    rng: Rng,
    queue_limit: usize,
}

impl<P> Scheduler<P> {
    /// Every link starts with no delay, no loss and no cap.
    pub fn new(sites: usize, seed: u64, queue_limit: usize) -> Self {
        Scheduler {
            sites,
            links: vec![Link::default(); sites * sites],
            pairs: vec![PairState::default(); sites * sites],
            heap: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            queue_limit,
        }
    }

    pub fn sites(&self) -> usize {
        self.sites
    }

    fn index(&self, from: usize, to: usize) -> usize {
        assert!(
            from < self.sites && to < self.sites,
            "site index out of range"
        );
        from * self.sites + to
    }

    pub fn link(&self, from: usize, to: usize) -> Link {
        self.links[self.index(from, to)]
    }

    /// Replaces the link `from → to`; packets already queued keep their due times.
    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        let i = self.index(from, to);
        self.links[i] = link;
    }

    /// A packet of `len` bytes read at `now` from site `from`, for site `to`.
    pub fn enqueue(
        &mut self,
        now: Instant,
        from: usize,
        to: usize,
        len: usize,
        packet: P,
    ) -> Verdict {
        let i = self.index(from, to);
        let link = self.links[i];
        if link.loss > 0.0 && self.rng.next_f64() < link.loss {
            return Verdict::Lost;
        }
        let pair = &mut self.pairs[i];
        if pair.queued >= self.queue_limit {
            return Verdict::QueueFull;
        }
        let mut sent = now;
        if let Some(kbps) = link.rate_kbps.filter(|&k| k > 0) {
            let start = pair.busy_until.map_or(now, |busy| busy.max(now));
            // bits / (kbps * 1000) seconds = len * 8 * 10^6 / kbps nanoseconds.
            let nanos = (len as u64).saturating_mul(8_000_000) / kbps;
            sent = start + Duration::from_nanos(nanos);
            pair.busy_until = Some(sent);
        }
        let mut due = sent + link.one_way;
        if let Some(last) = pair.last_due {
            due = due.max(last);
        }
        pair.last_due = Some(due);
        pair.queued += 1;
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            due,
            seq: self.seq,
            from,
            to,
            packet,
        }));
        Verdict::Queued { due }
    }

    /// When the next packet is due, if any is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.due)
    }

    /// The next packet due at or before `now`, in due order.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delivery<P>> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        let i = self.index(e.from, e.to);
        self.pairs[i].queued = self.pairs[i].queued.saturating_sub(1);
        Some(Delivery {
            from: e.from,
            to: e.to,
            packet: e.packet,
        })
    }

    /// Packets in flight on all links.
    pub fn queued(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(one_way_ms: u64) -> Link {
        Link {
            one_way: ms(one_way_ms),
            ..Link::default()
        }
    }

    fn drain<P>(s: &mut Scheduler<P>, now: Instant) -> Vec<Delivery<P>> {
        std::iter::from_fn(|| s.pop_due(now)).collect()
    }

    #[test]
    fn delay_is_applied_per_direction() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(3, 1, 100);
        s.set_link(0, 1, link(5));
        s.set_link(1, 0, link(20));
        assert_eq!(
            s.enqueue(t0, 0, 1, 100, "ab"),
            Verdict::Queued { due: t0 + ms(5) }
        );
        assert_eq!(
            s.enqueue(t0, 1, 0, 100, "ba"),
            Verdict::Queued { due: t0 + ms(20) }
        );
        // Unset pairs have no delay.
        assert_eq!(s.enqueue(t0, 0, 2, 100, "ac"), Verdict::Queued { due: t0 });
        assert_eq!(s.next_due(), Some(t0));

        let now = t0 + ms(4);
        assert_eq!(
            drain(&mut s, now)
                .iter()
                .map(|d| d.packet)
                .collect::<Vec<_>>(),
            ["ac"]
        );
        assert_eq!(s.next_due(), Some(t0 + ms(5)));
        let got = drain(&mut s, t0 + ms(5));
        assert_eq!(
            got,
            [Delivery {
                from: 0,
                to: 1,
                packet: "ab"
            }]
        );
        assert!(s.pop_due(t0 + ms(19)).is_none());
        assert_eq!(drain(&mut s, t0 + ms(20)).len(), 1);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn packets_of_a_pair_stay_in_order() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, 1, 1000);
        s.set_link(0, 1, link(10));
        for i in 0..100u32 {
            // Many packets at the same instant and later ones: same due or later.
            let at = t0 + Duration::from_micros(u64::from(i / 10) * 100);
            assert!(matches!(
                s.enqueue(at, 0, 1, 1500, i),
                Verdict::Queued { .. }
            ));
        }
        let got: Vec<u32> = drain(&mut s, t0 + ms(100))
            .into_iter()
            .map(|d| d.packet)
            .collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_change_applies_to_later_packets_and_never_reorders() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, 1, 100);
        s.set_link(0, 1, link(40));
        assert_eq!(
            s.enqueue(t0, 0, 1, 60, 1),
            Verdict::Queued { due: t0 + ms(40) }
        );
        // Lowered while packet 1 is in flight: packet 2 cannot overtake it.
        s.set_link(0, 1, link(10));
        assert_eq!(
            s.enqueue(t0 + ms(1), 0, 1, 60, 2),
            Verdict::Queued { due: t0 + ms(40) }
        );
        // Once the link has drained, the new delay holds exactly.
        let got: Vec<i32> = drain(&mut s, t0 + ms(40))
            .into_iter()
            .map(|d| d.packet)
            .collect();
        assert_eq!(got, [1, 2]);
        assert_eq!(
            s.enqueue(t0 + ms(50), 0, 1, 60, 3),
            Verdict::Queued { due: t0 + ms(60) }
        );
        // Raised: applies to the next packet only.
        s.set_link(0, 1, link(60));
        assert_eq!(
            s.enqueue(t0 + ms(50), 0, 1, 60, 4),
            Verdict::Queued { due: t0 + ms(110) }
        );
        assert_eq!(s.link(0, 1), link(60));
        // The other direction is untouched.
        assert_eq!(s.link(1, 0), Link::default());
    }

    #[test]
    fn loss_rate_follows_the_probability_and_the_seed() {
        let t0 = Instant::now();
        let run = |seed: u64| {
            let mut s = Scheduler::new(2, seed, usize::MAX);
            s.set_link(
                0,
                1,
                Link {
                    loss: 0.2,
                    ..link(1)
                },
            );
            (0..20_000)
                .map(|i| s.enqueue(t0, 0, 1, 100, i) == Verdict::Lost)
                .collect::<Vec<bool>>()
        };
        let a = run(42);
        let lost = a.iter().filter(|&&l| l).count();
        assert!(
            (3_600..=4_400).contains(&lost),
            "lost {lost} of 20000 at p=0.2"
        );
        assert_eq!(a, run(42), "same seed, same losses");
        assert_ne!(a, run(43), "another seed, other losses");

        // 0 never drops, 1 always does.
        let mut s = Scheduler::new(2, 7, usize::MAX);
        assert!((0..1000).all(|i| s.enqueue(t0, 0, 1, 100, i) != Verdict::Lost));
        s.set_link(
            0,
            1,
            Link {
                loss: 1.0,
                ..link(0)
            },
        );
        assert!((0..1000).all(|i| s.enqueue(t0, 0, 1, 100, i) == Verdict::Lost));
    }

    #[test]
    fn bandwidth_cap_paces_packets() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, 1, 1000);
        // 1000 kbit/s: a 1250-byte packet takes 10 ms to send.
        s.set_link(
            0,
            1,
            Link {
                rate_kbps: Some(1000),
                ..link(5)
            },
        );
        let dues: Vec<Instant> = (0..5)
            .map(|i| match s.enqueue(t0, 0, 1, 1250, i) {
                Verdict::Queued { due } => due,
                other => panic!("{other:?}"),
            })
            .collect();
        let expect: Vec<Instant> = (1..=5).map(|k| t0 + ms(10 * k + 5)).collect();
        assert_eq!(dues, expect);
        // An idle link starts sending at once again.
        assert_eq!(
            s.enqueue(t0 + ms(200), 0, 1, 125, 9),
            Verdict::Queued { due: t0 + ms(206) }
        );
        // Throughput over many packets matches the cap.
        let mut s = Scheduler::new(2, 1, usize::MAX);
        s.set_link(
            0,
            1,
            Link {
                rate_kbps: Some(8_000),
                ..link(0)
            },
        );
        let mut last = t0;
        for i in 0..1000 {
            if let Verdict::Queued { due } = s.enqueue(t0, 0, 1, 1000, i) {
                last = due;
            }
        }
        // 1000 × 8000 bits at 8 Mbit/s = 1 s.
        assert_eq!(last - t0, Duration::from_secs(1));
    }

    #[test]
    fn an_overrun_pair_drops_at_its_queue_limit() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(2, 1, 3);
        s.set_link(0, 1, link(10));
        for i in 0..3 {
            assert!(matches!(
                s.enqueue(t0, 0, 1, 100, i),
                Verdict::Queued { .. }
            ));
        }
        assert_eq!(s.enqueue(t0, 0, 1, 100, 3), Verdict::QueueFull);
        // Another pair has its own queue.
        assert_eq!(s.enqueue(t0, 1, 0, 100, 4), Verdict::Queued { due: t0 });
        assert_eq!(s.pop_due(t0).map(|d| d.packet), Some(4));
        assert_eq!(s.enqueue(t0, 0, 1, 100, 5), Verdict::QueueFull);
        // Each delivery frees a slot.
        assert_eq!(s.pop_due(t0 + ms(10)).map(|d| d.packet), Some(0));
        assert!(matches!(
            s.enqueue(t0 + ms(10), 0, 1, 100, 6),
            Verdict::Queued { .. }
        ));
    }
}
