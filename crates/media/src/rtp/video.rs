//! H.264 over RTP (RFC 6184, non-interleaved mode, as WebRTC sends it) and H.265 over
//! RTP (RFC 7798, without DONL, as WebRTC sends it): single NAL unit packets, aggregation
//! packets (STAP-A / AP) and fragmentation units (FU-A / FU) become access units (all
//! packets of one RTP timestamp, the last marked), NAL units with 4-byte length prefixes
//! as `VideoFrame` wants them. An access unit missing a packet is damaged: it is dropped
//! whole, never handed on.

use bytes::Bytes;

use crate::codec::VideoCodec;

/// An access unit larger than this is damaged input, not a frame.
const MAX_ACCESS_UNIT_BYTES: usize = 16 * 1024 * 1024;
/// What a NAL unit costs besides its bytes, counted against the bound, so that a flood of
/// empty NAL units is bounded too.
const NAL_OVERHEAD: usize = 16;

/// What a codec's NAL unit types and RTP payload format say.
struct Syntax {
    /// Bytes of the NAL unit header (and of the RTP payload header).
    header: usize,
    /// Parameter sets in decoder configuration order (VPS, SPS, PPS).
    parameter_sets: &'static [u8],
    /// Access unit delimiter.
    aud: u8,
    /// NAL unit types of a random access point (IDR; IRAP).
    keyframe: fn(u8) -> bool,
    aggregation: u8,
    fragmentation: u8,
    /// The largest type a single NAL unit packet may have.
    max_single: u8,
    /// Payload types of modes we do not take (interleaved, PACI).
    unsupported: fn(u8) -> bool,
}

const H264: Syntax = Syntax {
    header: 1,
    parameter_sets: &[7, 8],
    aud: 9,
    keyframe: |t| t == 5,
    aggregation: 24,
    fragmentation: 28,
    max_single: 23,
    // STAP-B, MTAP16, MTAP24 and FU-B belong to the interleaved mode.
    unsupported: |t| matches!(t, 25..=27 | 29),
};

const H265: Syntax = Syntax {
    header: 2,
    parameter_sets: &[32, 33, 34],
    aud: 35,
    // IRAP: BLA, IDR, CRA and the reserved IRAP types.
    keyframe: |t| (16..=23).contains(&t),
    aggregation: 48,
    fragmentation: 49,
    max_single: 47,
    // PACI (RFC 7798 4.4.4) carries extensions WebRTC does not use.
    unsupported: |t| t == 50,
};

fn syntax(codec: VideoCodec) -> &'static Syntax {
    match codec {
        VideoCodec::H264 => &H264,
        VideoCodec::H265 => &H265,
    }
}

fn nal_type(codec: VideoCodec, nal: &[u8]) -> Option<u8> {
    let header = *nal.first()?;
    Some(match codec {
        VideoCodec::H264 => header & 0x1f,
        VideoCodec::H265 => (header >> 1) & 0x3f,
    })
}

/// One access unit as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccessUnit {
    pub(crate) codec: VideoCodec,
    pub(crate) timestamp: u32,
    /// Where its first packet's timestamp lies on the shared timeline.
    pub(crate) time: i64,
    /// NAL units without start codes or lengths.
    pub(crate) nals: Vec<Bytes>,
    /// A packet of it was lost or malformed: it must not be decoded.
    pub(crate) damaged: bool,
}

impl AccessUnit {
    fn types(&self) -> impl Iterator<Item = Option<u8>> + '_ {
        self.nals.iter().map(|n| nal_type(self.codec, n))
    }

    pub(crate) fn keyframe(&self) -> bool {
        let keyframe = syntax(self.codec).keyframe;
        self.types().any(|t| t.is_some_and(keyframe))
    }

    /// The parameter sets it carries (the last of each kind), if it carries every kind,
    /// in decoder configuration order.
    pub(crate) fn parameter_sets(&self) -> Option<Vec<Bytes>> {
        syntax(self.codec)
            .parameter_sets
            .iter()
            .map(|&t| {
                self.nals
                    .iter()
                    .rev()
                    .find(|n| nal_type(self.codec, n) == Some(t))
                    .cloned()
            })
            .collect()
    }

    /// The frame's NAL units with 4-byte big-endian lengths, less parameter sets and
    /// access unit delimiters (the configuration carries the one, fMP4 needs no other).
    pub(crate) fn length_prefixed(&self) -> Bytes {
        let syntax = syntax(self.codec);
        let keep = |n: &&Bytes| match nal_type(self.codec, n) {
            Some(t) => t != syntax.aud && !syntax.parameter_sets.contains(&t),
            None => false,
        };
        let len = self.nals.iter().filter(keep).map(|n| n.len() + 4).sum();
        let mut out = Vec::with_capacity(len);
        for nal in self.nals.iter().filter(keep) {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out.into()
    }
}

#[derive(Debug)]
pub(crate) struct Depacketizer {
    codec: VideoCodec,
    unit: Option<AccessUnit>,
    unit_bytes: usize,
    /// The NAL unit being reassembled from fragments.
    fragment: Option<Vec<u8>>,
    /// Packets were lost since the last complete access unit: the next one to complete
    /// is damaged, whichever it is.
    lost: bool,
    /// Payloads that were not valid packets of the payload format.
    pub(crate) malformed: u64,
}

impl Depacketizer {
    pub(crate) fn new(codec: VideoCodec) -> Self {
        Self {
            codec,
            unit: None,
            unit_bytes: 0,
            fragment: None,
            lost: false,
            malformed: 0,
        }
    }

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
        let codec = self.codec;
        let unit = self.unit.get_or_insert_with(|| AccessUnit {
            codec,
            timestamp,
            time,
            nals: Vec::new(),
            damaged: false,
        });
        if let Some(damage) = depacketize(syntax(codec), payload, &mut self.fragment, |nal| {
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
    /// Not a valid payload.
    Malformed,
}

/// RFC 6184 5.6–5.8, RFC 7798 4.4.1–4.4.3: the NAL units of one payload, to `nal`.
/// Fragments collect in `fragment` until their end.
fn depacketize(
    syntax: &Syntax,
    payload: &Bytes,
    fragment: &mut Option<Vec<u8>>,
    mut nal: impl FnMut(Bytes),
) -> Option<Damage> {
    let header = payload.get(..syntax.header)?;
    let kind = if syntax.header == 1 {
        header[0] & 0x1f
    } else {
        (header[0] >> 1) & 0x3f
    };
    if kind == syntax.aggregation {
        let mut at = syntax.header;
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
        return damage;
    }
    if kind == syntax.fragmentation {
        let Some(&fu) = payload.get(syntax.header) else {
            return Some(Damage::Malformed);
        };
        let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
        let body = &payload[syntax.header + 1..];
        let mut damage = None;
        if start {
            if fragment.is_some() {
                damage = Some(Damage::Incomplete);
            }
            let mut unit = Vec::with_capacity(body.len() * 4 + 2);
            // The reconstructed NAL unit header: the payload header's other fields, the
            // type from the FU header.
            if syntax.header == 1 {
                unit.push((header[0] & 0xe0) | (fu & 0x1f));
            } else {
                unit.push((header[0] & 0x81) | ((fu & 0x3f) << 1));
                unit.push(header[1]);
            }
            *fragment = Some(unit);
        }
        let Some(unit) = fragment.as_mut() else {
            // A middle or end whose start was lost.
            return Some(Damage::Incomplete);
        };
        unit.extend_from_slice(body);
        if start && end {
            // A start and end in one packet is not allowed.
            fragment.take();
            return Some(Damage::Malformed);
        }
        if end {
            if let Some(unit) = fragment.take() {
                nal(unit.into());
            }
        }
        return damage;
    }
    if (syntax.unsupported)(kind) {
        return Some(Damage::Malformed);
    }
    if kind == 0 && syntax.header == 1 || kind > syntax.max_single {
        // Undefined types are ignored (RFC 6184 5.2, RFC 7798 4.4).
        return None;
    }
    let damage = fragment.take().map(|_| Damage::Incomplete);
    nal(payload.clone());
    damage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(packets: &[(u32, bool, &[u8])]) -> Vec<AccessUnit> {
        let mut d = Depacketizer::new(VideoCodec::H264);
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
        assert_eq!(
            out[0].parameter_sets().unwrap(),
            [
                Bytes::from_static(&[0x67, 1, 2]),
                Bytes::from_static(&[0x68, 3])
            ]
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
        let mut d = Depacketizer::new(VideoCodec::H264);
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
        let mut d = Depacketizer::new(VideoCodec::H264);
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

    #[test]
    fn h265_aggregation_and_fragmentation_units() {
        let mut d = Depacketizer::new(VideoCodec::H265);
        let mut out = Vec::new();
        // AP (type 48: 0x60 0x01) with a VPS (0x40 0x01) and an SPS (0x42 0x01).
        let ap = [0x60, 0x01, 0, 3, 0x40, 0x01, 7, 0, 3, 0x42, 0x01, 8];
        d.push(0, 0, false, &Bytes::copy_from_slice(&ap), &mut out);
        // FU (type 49: 0x62 0x01) of an IDR_W_RADL (19): start, end.
        d.push(
            0,
            0,
            false,
            &Bytes::from_static(&[0x62, 0x01, 0x80 | 19, 1, 2]),
            &mut out,
        );
        d.push(
            0,
            0,
            true,
            &Bytes::from_static(&[0x62, 0x01, 0x40 | 19, 3]),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let unit = &out[0];
        assert!(!unit.damaged && unit.keyframe());
        assert_eq!(&unit.nals[2][..], &[19 << 1, 0x01, 1, 2, 3]);
        assert!(unit.parameter_sets().is_none(), "no PPS");
        assert_eq!(
            &unit.length_prefixed()[..],
            &[0, 0, 0, 5, 19 << 1, 0x01, 1, 2, 3]
        );
        // A lone TRAIL_N (type 0) is a NAL unit in H.265; PACI (50) is not taken.
        d.push(
            3000,
            3000,
            true,
            &Bytes::from_static(&[0x00, 0x01, 9]),
            &mut out,
        );
        assert!(!out[1].damaged && !out[1].keyframe());
        d.push(
            6000,
            6000,
            true,
            &Bytes::from_static(&[0x64, 0x01, 0, 0]),
            &mut out,
        );
        assert!(out[2].damaged);
    }
}
