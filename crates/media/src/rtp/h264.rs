//! H.264 over RTP (RFC 6184, non-interleaved mode, as WebRTC sends it): single NAL unit
//! packets, STAP-A and FU-A become access units (all packets of one RTP timestamp, the
//! last marked), NAL units with 4-byte length prefixes as `VideoFrame` wants them.
//! An access unit missing a packet is damaged: it is dropped whole, never handed on.

use bytes::Bytes;

/// An access unit larger than this is damaged input, not a frame.
const MAX_ACCESS_UNIT_BYTES: usize = 16 * 1024 * 1024;
/// What a NAL unit costs besides its bytes, counted against the bound, so that a flood of
/// empty NAL units is bounded too.
const NAL_OVERHEAD: usize = 16;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One access unit as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccessUnit {
    pub(crate) timestamp: u32,
    /// Where its first packet's timestamp lies on the shared timeline.
    pub(crate) time: i64,
    /// NAL units without start codes or lengths.
    pub(crate) nals: Vec<Bytes>,
    /// A packet of it was lost or malformed: it must not be decoded.
    pub(crate) damaged: bool,
}

impl AccessUnit {
    pub(crate) fn keyframe(&self) -> bool {
        self.nals.iter().any(|n| nal_type(n) == Some(NAL_IDR))
    }

    /// The SPS and PPS it carries (the last of each).
    pub(crate) fn parameter_sets(&self) -> (Option<&Bytes>, Option<&Bytes>) {
        let last = |t| self.nals.iter().rev().find(|n| nal_type(n) == Some(t));
        (last(NAL_SPS), last(NAL_PPS))
    }

    /// The frame's NAL units with 4-byte big-endian lengths, less parameter sets and
    /// access unit delimiters (the configuration carries the one, fMP4 needs no other).
    pub(crate) fn length_prefixed(&self) -> Bytes {
        let keep = |n: &&Bytes| !matches!(nal_type(n), Some(NAL_SPS | NAL_PPS | NAL_AUD) | None);
        let len = self.nals.iter().filter(keep).map(|n| n.len() + 4).sum();
        let mut out = Vec::with_capacity(len);
        for nal in self.nals.iter().filter(keep) {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out.into()
    }
}

fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

#[derive(Debug, Default)]
pub(crate) struct H264Depacketizer {
    unit: Option<AccessUnit>,
    unit_bytes: usize,
    /// The NAL unit being reassembled from FU-A fragments.
    fragment: Option<Vec<u8>>,
    /// Packets were lost since the last complete access unit: the next one to complete
    /// is damaged, whichever it is.
    lost: bool,
    /// Payloads that were not RFC 6184 non-interleaved packets.
    pub(crate) malformed: u64,
}

impl H264Depacketizer {
    /// Packets were lost here.
    pub(crate) fn gap(&mut self) {
        self.lost = true;
    }

    /// One packet in sequence order; returns the access units it completed (the previous
    /// one if it had no marker, and this one if it is marked).
    pub(crate) fn push(
        &mut self,
        timestamp: u32,
        time: i64,
        marker: bool,
        payload: &Bytes,
        out: &mut Vec<AccessUnit>,
    ) {
        if self.unit.as_ref().is_some_and(|u| u.timestamp != timestamp) {
            // The previous unit's marked packet never came (or the sender sets none).
            self.complete(out);
        }
        let unit = self.unit.get_or_insert_with(|| AccessUnit {
            timestamp,
            time,
            nals: Vec::new(),
            damaged: false,
        });
        if let Some(damage) = depacketize(payload, &mut self.fragment, |nal| {
            self.unit_bytes += nal.len() + NAL_OVERHEAD;
            if self.unit_bytes <= MAX_ACCESS_UNIT_BYTES {
                unit.nals.push(nal);
            }
        }) {
            unit.damaged = true;
            if damage == Damage::Malformed {
                self.malformed += 1;
            }
        }
        if self.unit_bytes > MAX_ACCESS_UNIT_BYTES {
            unit.damaged = true;
            unit.nals.clear();
        }
        if marker {
            self.complete(out);
        }
    }

    /// Ends the stream: an access unit still open never got its marked packet, so it may
    /// be missing its end; it is handed on damaged.
    pub(crate) fn finish(&mut self, out: &mut Vec<AccessUnit>) {
        if let Some(unit) = self.unit.as_mut() {
            unit.damaged = true;
        }
        self.complete(out);
    }

    fn complete(&mut self, out: &mut Vec<AccessUnit>) {
        let Some(mut unit) = self.unit.take() else {
            return;
        };
        if self.fragment.take().is_some() {
            // A fragmented NAL unit never got its end.
            unit.damaged = true;
        }
        unit.damaged |= std::mem::take(&mut self.lost);
        self.unit_bytes = 0;
        out.push(unit);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Fragments of a NAL unit whose start or middle is missing.
    Incomplete,
    /// Not a valid non-interleaved payload.
    Malformed,
}

/// RFC 6184 5.6–5.8: the NAL units of one payload, to `nal`. FU-A fragments collect in
/// `fragment` until their end.
fn depacketize(
    payload: &Bytes,
    fragment: &mut Option<Vec<u8>>,
    mut nal: impl FnMut(Bytes),
) -> Option<Damage> {
    let header = *payload.first()?;
    match header & 0x1f {
        1..=23 => {
            if fragment.take().is_some() {
                nal(payload.clone());
                return Some(Damage::Incomplete);
            }
            nal(payload.clone());
            None
        }
        STAP_A => {
            let mut at = 1;
            let mut damage = fragment.take().map(|_| Damage::Incomplete);
            while at < payload.len() {
                let Some(len) = payload.get(at..at + 2) else {
                    return Some(Damage::Malformed);
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if payload.len() < at + 2 + len {
                    return Some(Damage::Malformed);
                }
                if len == 0 {
                    damage = Some(Damage::Malformed);
                } else {
                    nal(payload.slice(at + 2..at + 2 + len));
                }
                at += 2 + len;
            }
            damage
        }
        FU_A => {
            let Some(&fu) = payload.get(1) else {
                return Some(Damage::Malformed);
            };
            let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
            let body = &payload[2..];
            let mut damage = None;
            if start {
                if fragment.is_some() {
                    damage = Some(Damage::Incomplete);
                }
                let mut unit = Vec::with_capacity(body.len() * 4 + 1);
                // The reconstructed NAL header: F and NRI from the indicator, the type
                // from the FU header.
                unit.push((header & 0xe0) | (fu & 0x1f));
                *fragment = Some(unit);
            }
            let Some(unit) = fragment.as_mut() else {
                // A middle or end whose start was lost.
                return Some(Damage::Incomplete);
            };
            unit.extend_from_slice(body);
            if start && end {
                // RFC 6184 5.8: a start and end in one packet is not allowed.
                fragment.take();
                return Some(Damage::Malformed);
            }
            if end {
                if let Some(unit) = fragment.take() {
                    nal(unit.into());
                }
            }
            damage
        }
        // STAP-B, MTAP16, MTAP24 and FU-B belong to the interleaved mode, which WebRTC
        // does not use; 0, 30 and 31 are undefined and ignored (RFC 6184 5.2).
        25..=27 | 29 => Some(Damage::Malformed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(packets: &[(u32, bool, &[u8])]) -> Vec<AccessUnit> {
        let mut d = H264Depacketizer::default();
        let mut out = Vec::new();
        for &(ts, marker, payload) in packets {
            d.push(
                ts,
                i64::from(ts),
                marker,
                &Bytes::copy_from_slice(payload),
                &mut out,
            );
        }
        out
    }

    #[test]
    fn single_nal_units_make_an_access_unit_up_to_the_marker() {
        let out = run(&[
            (3000, false, &[0x67, 1, 2]),
            (3000, false, &[0x68, 3]),
            (3000, true, &[0x65, 4, 5]),
        ]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].damaged && out[0].keyframe());
        assert_eq!(out[0].nals.len(), 3);
        assert_eq!(&out[0].length_prefixed()[..], &[0, 0, 0, 3, 0x65, 4, 5]);
        let (sps, pps) = out[0].parameter_sets();
        assert_eq!(
            (&sps.unwrap()[..], &pps.unwrap()[..]),
            (&[0x67, 1, 2][..], &[0x68, 3][..])
        );
    }

    #[test]
    fn stap_a_carries_several_nal_units() {
        let stap: &[u8] = &[0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3, 0, 2, 0x65, 9];
        let out = run(&[(0, true, stap)]);
        assert_eq!(out[0].nals.len(), 3);
        assert!(out[0].keyframe() && !out[0].damaged);
        // Truncated aggregate: malformed.
        let out = run(&[(0, true, &stap[..stap.len() - 1])]);
        assert!(out[0].damaged);
    }

    #[test]
    fn fu_a_fragments_are_joined_with_the_reconstructed_header() {
        // NRI 3 (0x60), FU-A (28): indicator 0x7c; IDR fragments.
        let out = run(&[
            (0, false, &[0x7c, 0x85, 1, 2]),
            (0, false, &[0x7c, 0x05, 3]),
            (0, true, &[0x7c, 0x45, 4]),
        ]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].damaged);
        assert_eq!(&out[0].nals[0][..], &[0x65, 1, 2, 3, 4]);
    }

    #[test]
    fn a_missing_fragment_damages_the_access_unit() {
        // Middle lost: the end has no start to join (the gap is also reported).
        let out = run(&[(0, false, &[0x7c, 0x85, 1]), (0, true, &[0x7c, 0x45, 4])]);
        assert!(
            !out[0].damaged,
            "without a gap, start and end make a NAL unit"
        );
        let mut d = H264Depacketizer::default();
        let mut out = Vec::new();
        d.push(0, 0, false, &Bytes::from_static(&[0x7c, 0x85, 1]), &mut out);
        d.gap();
        d.push(0, 0, true, &Bytes::from_static(&[0x7c, 0x45, 4]), &mut out);
        assert!(out[0].damaged);
        // Start lost: the rest has nothing to join.
        let out = run(&[(0, false, &[0x7c, 0x05, 3]), (0, true, &[0x7c, 0x45, 4])]);
        assert!(out[0].damaged);
        // End lost, next unit starts: the open fragment damages the first unit only.
        let out = run(&[(0, false, &[0x7c, 0x85, 1]), (3000, true, &[0x41, 7])]);
        assert_eq!(out.len(), 2);
        assert!(out[0].damaged && !out[1].damaged);
    }

    #[test]
    fn a_new_timestamp_ends_an_unmarked_access_unit() {
        let out = run(&[
            (0, false, &[0x65, 1]),
            (3000, false, &[0x41, 2]),
            (6000, true, &[0x41, 3]),
        ]);
        assert_eq!(
            out.iter().map(|u| u.timestamp).collect::<Vec<_>>(),
            [0, 3000, 6000]
        );
        assert!(out.iter().all(|u| !u.damaged));
    }

    #[test]
    fn interleaved_mode_and_garbage_are_malformed_not_panics() {
        let mut d = H264Depacketizer::default();
        let mut out = Vec::new();
        for payload in [
            &[0x79u8, 0, 1][..],
            &[0x7c],
            &[0x78, 0],
            &[0x78, 0, 9, 1],
            &[0x7d, 0x80],
            &[],
        ] {
            d.push(0, 0, true, &Bytes::copy_from_slice(payload), &mut out);
        }
        assert!(out.iter().all(|u| u.damaged || u.nals.is_empty()));
        assert!(d.malformed >= 4);
    }
}
