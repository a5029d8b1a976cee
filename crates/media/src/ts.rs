//! MPEG-2 transport stream segments (ISO/IEC 13818-1) for HLS clients that want TS.
//!
//! Written by hand: the mpeg2ts crate models single packets and leaves PES
//! packetization, PCR placement, stuffing and Annex B conversion to its caller, which is
//! all of the work here.

use bytes::Bytes;

use crate::codec::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};
use crate::segmenter::{MediaPart, Tracks, VIDEO_TIMESCALE};

const PACKET: usize = 188;
const PID_PAT: u16 = 0;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x100;
const PID_AUDIO: u16 = 0x101;
/// Timestamps are shifted so that the PCR (taken as the raw decode time) runs ahead of
/// every decode time.
const TIMESTAMP_OFFSET: u64 = 63_000;
const PTS_MASK: u64 = (1 << 33) - 1;

#[derive(Debug)]
pub struct TsMuxer {
    tracks: Tracks,
    continuity: [u8; 4],
    skipped_audio: Option<&'static str>,
}

impl TsMuxer {
    /// A muxer for `tracks`, less an audio track that MPEG-TS segments cannot carry
    /// (Opus: players take it in fMP4 only): the segments are
    /// video only, and [`Self::skipped_audio`] says why, for the caller to log.
    pub fn new(mut tracks: Tracks) -> Self {
        let skipped_audio = match tracks.audio.as_ref().map(|a| &a.codec) {
            Some(AudioCodec::Opus { .. }) => {
                tracks.audio = None;
                Some("Opus audio is left out of MPEG-TS segments: players take Opus in fMP4 only")
            }
            _ => None,
        };
        Self {
            tracks,
            continuity: [0; 4],
            skipped_audio,
        }
    }

    /// The tracks the segments carry.
    pub fn tracks(&self) -> &Tracks {
        &self.tracks
    }

    /// Why the stream's audio is not in the segments, if it is not.
    pub fn skipped_audio(&self) -> Option<&'static str> {
        self.skipped_audio
    }

    /// The packets of one part; a segment's first part starts with the PAT and PMT, so
    /// every segment decodes on its own.
    pub fn part(&mut self, segment: &MediaPart) -> Bytes {
        let mut out = Vec::with_capacity(segment.bytes + segment.bytes / 8 + 4 * PACKET);
        if segment.index == 0 {
            let pat = psi_section(
                0x00,
                1,
                &[0x00, 0x01, 0xE0 | (PID_PMT >> 8) as u8, PID_PMT as u8],
            );
            self.write_packets(PID_PAT, &pat, None, false, &mut out);
            let pmt = self.pmt();
            self.write_packets(PID_PMT, &pmt, None, false, &mut out);
        }

        let audio_rate = self
            .tracks
            .audio
            .as_ref()
            .map_or(1, |a| u64::from(a.sample_rate));
        let audio_90k = |dts: u64| dts * u64::from(VIDEO_TIMESCALE) / audio_rate;
        let (mut v, mut a) = (
            segment.video.iter().peekable(),
            segment.audio.iter().peekable(),
        );
        let pcr_on_audio = self.tracks.video.is_none();
        loop {
            let take_video = match (v.peek(), a.peek()) {
                (Some(vs), Some(as_)) => vs.dts <= audio_90k(as_.dts),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_video {
                let (Some(sample), Some(config)) = (v.next(), self.tracks.video.clone()) else {
                    break;
                };
                let dts = sample.dts;
                let pts = (dts as i64 + i64::from(sample.composition_offset)).max(0) as u64;
                let payload = annex_b(&config, &sample.data, sample.keyframe);
                let pes = pes(0xE0, pts, Some(dts), &payload, false);
                self.write_packets(PID_VIDEO, &pes, Some(dts), sample.keyframe, &mut out);
            } else {
                let (Some(sample), Some(config)) = (a.next(), self.tracks.audio.clone()) else {
                    break;
                };
                let pts = audio_90k(sample.dts);
                let mut payload = adts_header(&config, sample.data.len()).to_vec();
                payload.extend_from_slice(&sample.data);
                let pes = pes(0xC0, pts, None, &payload, true);
                let pcr = pcr_on_audio.then_some(pts);
                self.write_packets(PID_AUDIO, &pes, pcr, pcr_on_audio, &mut out);
            }
        }
        out.into()
    }

    fn pmt(&self) -> Vec<u8> {
        let pcr_pid = if self.tracks.video.is_some() {
            PID_VIDEO
        } else {
            PID_AUDIO
        };
        let mut body = vec![0xE0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xF0, 0x00];
        if let Some(video) = &self.tracks.video {
            let stream_type = match video.codec {
                VideoCodec::H264 => 0x1B,
                VideoCodec::H265 => 0x24,
            };
            body.extend_from_slice(&[
                stream_type,
                0xE0 | (PID_VIDEO >> 8) as u8,
                PID_VIDEO as u8,
                0xF0,
                0,
            ]);
        }
        if self.tracks.audio.is_some() {
            body.extend_from_slice(&[
                0x0F,
                0xE0 | (PID_AUDIO >> 8) as u8,
                PID_AUDIO as u8,
                0xF0,
                0,
            ]);
        }
        psi_section(0x02, 1, &body)
    }

    /// Splits one PES or PSI payload into packets: unit start on the first, PCR and
    /// random-access flag there if asked, adaptation-field stuffing on the last.
    fn write_packets(
        &mut self,
        pid: u16,
        payload: &[u8],
        pcr: Option<u64>,
        random_access: bool,
        out: &mut Vec<u8>,
    ) {
        let cc_slot = match pid {
            PID_PAT => 0,
            PID_PMT => 1,
            PID_VIDEO => 2,
            _ => 3,
        };
        let mut rest = payload;
        let mut first = true;
        while first || !rest.is_empty() {
            // `None`: no adaptation field; `Some(bytes)`: its body after the length byte.
            let mut adaptation: Option<Vec<u8>> = None;
            if first && (pcr.is_some() || random_access) {
                let mut body = vec![if random_access { 0x40 } else { 0 }];
                if let Some(pcr) = pcr {
                    body[0] |= 0x10;
                    let base = pcr & PTS_MASK;
                    body.extend_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        ((base & 1) << 7) as u8 | 0x7E,
                        0,
                    ]);
                }
                adaptation = Some(body);
            }
            let room = PACKET - 4 - adaptation.as_ref().map_or(0, |a| 1 + a.len());
            if rest.len() < room {
                let mut stuffing = room - rest.len();
                let body = adaptation.get_or_insert_with(|| {
                    stuffing -= 1; // the length byte itself
                    Vec::new()
                });
                if body.is_empty() && stuffing > 0 {
                    body.push(0);
                    stuffing -= 1;
                }
                body.extend(std::iter::repeat_n(0xFF, stuffing));
            }
            let room = PACKET - 4 - adaptation.as_ref().map_or(0, |a| 1 + a.len());
            let take = rest.len().min(room);
            let cc = &mut self.continuity[cc_slot];
            let unit_start = if first { 0x40 } else { 0 };
            let control = if adaptation.is_some() { 0x30 } else { 0x10 };
            out.extend_from_slice(&[
                0x47,
                unit_start | ((pid >> 8) as u8 & 0x1F),
                pid as u8,
                control | *cc,
            ]);
            *cc = (*cc + 1) & 0x0F;
            if let Some(body) = &adaptation {
                out.push(body.len() as u8);
                out.extend_from_slice(body);
            }
            out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            first = false;
        }
    }
}

fn psi_section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let section_length = 5 + body.len() + 4;
    let mut section = vec![
        table_id,
        0xB0 | (section_length >> 8) as u8,
        section_length as u8,
        (id >> 8) as u8,
        id as u8,
        0xC1,
        0,
        0,
    ];
    section.extend_from_slice(body);
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut payload = vec![0]; // pointer field
    payload.extend_from_slice(&section);
    payload
}

pub(crate) fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn timestamp_field(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = (ts + TIMESTAMP_OFFSET) & PTS_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8) << 1) | 1,
    ]
}

fn pes(stream_id: u8, pts: u64, dts: Option<u64>, payload: &[u8], bounded: bool) -> Vec<u8> {
    let dts = dts.filter(|&d| d != pts);
    let header_data_len = if dts.is_some() { 10 } else { 5 };
    let mut out = vec![0, 0, 1, stream_id, 0, 0, 0x80];
    out.push(if dts.is_some() { 0xC0 } else { 0x80 });
    out.push(header_data_len);
    out.extend_from_slice(&timestamp_field(if dts.is_some() { 3 } else { 2 }, pts));
    if let Some(dts) = dts {
        out.extend_from_slice(&timestamp_field(1, dts));
    }
    // Video PES may be unbounded (length 0); audio must fit the 16-bit length.
    let length = out.len() - 6 + payload.len();
    if bounded || length <= usize::from(u16::MAX) {
        let length = u16::try_from(length).unwrap_or(0);
        out[4..6].copy_from_slice(&length.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Length-prefixed NAL units to Annex B, with an access unit delimiter and, on
/// keyframes, the parameter sets (TS carries no out-of-band decoder configuration).
fn annex_b(config: &VideoConfig, data: &[u8], keyframe: bool) -> Vec<u8> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let mut out = Vec::with_capacity(data.len() + 64);
    let (aud, nal_type): (&[u8], fn(u8) -> u8) = match config.codec {
        VideoCodec::H264 => (&[0x09, 0xF0], |b| b & 0x1F),
        VideoCodec::H265 => (&[0x46, 0x01, 0x50], |b| (b >> 1) & 0x3F),
    };
    let (aud_type, param_types): (u8, &[u8]) = match config.codec {
        VideoCodec::H264 => (9, &[7, 8]),
        VideoCodec::H265 => (35, &[32, 33, 34]),
    };
    out.extend_from_slice(&START);
    out.extend_from_slice(aud);
    let mut nals = Vec::new();
    let len_size = usize::from(config.nal_length_size.clamp(1, 4));
    let mut rest = data;
    while rest.len() > len_size {
        let len = rest[..len_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let Some(nal) = rest.get(len_size..len_size + len) else {
            break;
        };
        nals.push(nal);
        rest = &rest[len_size + len..];
    }
    let has_params = nals.iter().any(|n| {
        n.first()
            .is_some_and(|&b| param_types.contains(&nal_type(b)))
    });
    if keyframe && !has_params {
        for ps in &config.parameter_sets {
            out.extend_from_slice(&START);
            out.extend_from_slice(ps);
        }
    }
    for nal in nals {
        if nal.first().is_some_and(|&b| nal_type(b) == aud_type) {
            continue;
        }
        out.extend_from_slice(&START);
        out.extend_from_slice(nal);
    }
    out
}

fn adts_header(config: &AudioConfig, payload_len: usize) -> [u8; 7] {
    let len = payload_len + 7;
    let (object_type, sample_rate_index) = match config.codec {
        AudioCodec::Aac {
            object_type,
            sample_rate_index,
            ..
        } => (object_type, sample_rate_index),
        // Not reached: the muxer never takes an Opus track.
        AudioCodec::Opus { .. } => (2, 3),
    };
    let profile = object_type.saturating_sub(1).min(3);
    let freq = sample_rate_index.min(12);
    let channels = config.channels;
    [
        0xFF,
        0xF1,
        (profile << 6) | (freq << 2) | ((channels >> 2) & 1),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        ((len as u8 & 0x07) << 5) | 0x1F,
        0xFC,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segmenter::Sample;

    #[test]
    fn packets_are_aligned_and_continuity_counts_per_pid() {
        let config = VideoConfig {
            codec: VideoCodec::H264,
            record: Bytes::new(),
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 1]),
                Bytes::from_static(&[0x68, 2]),
            ],
            nal_length_size: 4,
            width: 0,
            height: 0,
            codec_string: String::new(),
        };
        let mut muxer = TsMuxer::new(Tracks {
            video: Some(config),
            audio: None,
        });
        for size in [1usize, 170, 171, 172, 173, 183, 184, 185, 5000] {
            let mut data = (size as u32).to_be_bytes().to_vec();
            data.extend(std::iter::repeat_n(0x41u8, size));
            let segment = MediaPart {
                segment: 1,
                index: 0,
                start_ms: 0,
                independent: true,
                duration_secs: 1.0,
                video: vec![Sample {
                    dts: 0,
                    duration: 3000,
                    composition_offset: 0,
                    keyframe: size % 2 == 0,
                    data: data.into(),
                }],
                audio: vec![],
                discontinuity: false,
                bytes: size,
            };
            let ts = muxer.part(&segment);
            assert_eq!(ts.len() % PACKET, 0, "size {size}");
            assert!(ts.chunks(PACKET).all(|p| p[0] == 0x47));
            let payload_bytes: usize = ts
                .chunks(PACKET)
                .filter(|p| u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]) == PID_VIDEO)
                .map(|p| {
                    if p[3] & 0x20 != 0 {
                        PACKET - 5 - p[4] as usize
                    } else {
                        PACKET - 4
                    }
                })
                .sum();
            let expected_payload = annex_b(
                &muxer.tracks.video.clone().unwrap(),
                &segment.video[0].data,
                segment.video[0].keyframe,
            )
            .len()
                + 14;
            assert_eq!(payload_bytes, expected_payload, "size {size}");
        }
    }

    #[test]
    fn crc_matches_known_pat() {
        // CRC of a standard single-program PAT section (as written by ffmpeg).
        let section = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
        ];
        assert_eq!(crc32_mpeg2(&section), 0x2AB1_04B2);
    }

    #[test]
    fn opus_audio_is_left_out_and_the_muxer_says_why() {
        let muxer = TsMuxer::new(Tracks {
            video: None,
            audio: Some(AudioConfig::opus(2, 312)),
        });
        assert!(muxer.tracks().audio.is_none());
        assert!(muxer
            .skipped_audio()
            .is_some_and(|why| why.contains("Opus")));
        let aac = AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        let muxer = TsMuxer::new(Tracks {
            video: None,
            audio: Some(aac),
        });
        assert!(muxer.tracks().audio.is_some() && muxer.skipped_audio().is_none());
    }
}
