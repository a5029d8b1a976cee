//! The MPEG-TS front end of the media pipeline (ISO/IEC 13818-1): transport stream bytes,
//! in chunks of any size, become [`MediaInput`] on one continuous timeline. This is what
//! an SRT publisher (or an HTTP upload of `-f mpegts`) sends.
//!
//! Written by hand, not with `mpeg2ts-reader` (0.18, an "unstable API" with 16 breaking
//! releases): that crate parses packets, PSI and PES headers into borrowed slices through
//! its own filter traits and macros, and leaves to its caller everything that is our work
//! here: PES assembly and what to drop on loss, Annex B to length-prefixed NAL units,
//! parameter sets to decoder configuration records, ADTS to AudioSpecificConfig, and the
//! 33-bit timeline. The packet and table syntax it would save is a page of code.
//!
//! Loss is a clean gap, never garbage downstream: a continuity-counter gap or a packet
//! flagged with a transport error drops the access unit it falls in, and after a lost
//! video access unit the video waits for the next keyframe (later frames would predict
//! from the lost one). Bytes that are not packets are skipped until a sync byte that is
//! followed, one packet later, by another.

use std::collections::HashMap;

use bytes::Bytes;

use crate::codec::{
    asc_from_adts, AudioCodec, AudioConfig, VideoCodec, VideoConfig, AAC_FRAME_SAMPLES,
};
use crate::input::{AudioFrame, MediaInput, Timeline, VideoFrame, TIMESCALE};
use crate::ts::crc32_mpeg2;

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
const PID_PAT: u16 = 0;
const PID_NULL: u16 = 0x1FFF;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_H265: u8 = 0x24;
/// A step between timestamps larger than this (10 s) is a splice or an encoder restart.
const MAX_TIMESTAMP_STEP: i64 = 10 * TIMESCALE as i64;
/// A PES larger than this is damaged input, not a frame: it is dropped.
const MAX_PES_BYTES: usize = 16 * 1024 * 1024;
/// Output waits at most this long (in ticks) for every stream's configuration, so that the
/// tracks start with both audio and video; after that it goes on with what it knows.
const CONFIG_WAIT: i64 = 3 * TIMESCALE as i64;
/// A PSI section is at most 1024 bytes (4096 for private sections, which we skip).
const MAX_SECTION_BYTES: usize = 4096;
/// Inputs held while waiting for configurations, at most (ten seconds at 60 fps with
/// audio), whatever the timestamps say.
const MAX_HELD: usize = 1500;

/// What the demuxer has seen, for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TsStats {
    pub packets: u64,
    /// Bytes skipped while looking for packet sync.
    pub skipped_bytes: u64,
    /// Continuity-counter gaps (lost packets) and packets flagged with transport errors.
    pub gaps: u64,
    /// Access units dropped because they were damaged, or followed a damaged video one.
    pub dropped_units: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// The last program clock reference, in 90 kHz ticks (the 27 MHz extension dropped).
    pub last_pcr: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video(VideoCodec),
    Aac,
}

#[derive(Debug)]
struct ElementaryStream {
    kind: Kind,
    last_cc: Option<u8>,
    /// The PES being assembled; `None` until a packet starts one.
    pes: Option<Vec<u8>>,
    damaged: bool,
}

#[derive(Debug, Default)]
struct Section {
    data: Vec<u8>,
    last_cc: Option<u8>,
}

#[derive(Debug)]
pub struct TsDemuxer {
    /// Input not yet consumed: less than a packet, or bytes being checked for sync.
    pending: Vec<u8>,
    pmt_pid: Option<u16>,
    pcr_pid: Option<u16>,
    sections: HashMap<u16, Section>,
    streams: HashMap<u16, ElementaryStream>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    timeline: Timeline,
    parameter_sets: Vec<Bytes>,
    video_config: Option<VideoConfig>,
    audio_config: Option<AudioConfig>,
    /// Video is dropped until the next keyframe (at start, and after a loss).
    awaiting_keyframe: bool,
    /// Output held until every stream's configuration is known (or `CONFIG_WAIT`).
    held: Option<Vec<MediaInput>>,
    output: Vec<MediaInput>,
    stats: TsStats,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            pmt_pid: None,
            pcr_pid: None,
            sections: HashMap::new(),
            streams: HashMap::new(),
            video_pid: None,
            audio_pid: None,
            timeline: Timeline::new(33, MAX_TIMESTAMP_STEP),
            parameter_sets: Vec::new(),
            video_config: None,
            audio_config: None,
            awaiting_keyframe: true,
            held: Some(Vec::new()),
            output: Vec::new(),
            stats: TsStats::default(),
        }
    }
}

impl TsDemuxer {
    pub fn stats(&self) -> &TsStats {
        &self.stats
    }

    /// Takes the next bytes of the stream, however they were split, and returns the
    /// inputs they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<MediaInput> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.pending.len() - at >= PACKET {
            if self.pending[at] != SYNC || !self.sync_confirmed(at) {
                let skip = self.pending[at + 1..]
                    .iter()
                    .position(|&b| b == SYNC)
                    .map_or(self.pending.len() - at, |i| i + 1);
                self.stats.skipped_bytes += skip as u64;
                at += skip;
                continue;
            }
            let mut packet = [0u8; PACKET];
            packet.copy_from_slice(&self.pending[at..at + PACKET]);
            at += PACKET;
            self.packet(&packet);
        }
        self.pending.drain(..at);
        std::mem::take(&mut self.output)
    }

    /// The stream ended: the access units still being assembled (their end is only known
    /// from the next one's start) are complete.
    pub fn finish(&mut self) -> Vec<MediaInput> {
        let pids: Vec<u16> = [self.video_pid, self.audio_pid]
            .into_iter()
            .flatten()
            .collect();
        for pid in pids {
            self.complete_pes(pid);
        }
        self.release_held();
        std::mem::take(&mut self.output)
    }

    /// A sync byte starts a packet if the next packet, when we have it, starts with one
    /// too (a lone 0x47 in garbage is not enough).
    fn sync_confirmed(&self, at: usize) -> bool {
        self.pending
            .get(at + PACKET)
            .is_none_or(|&next| next == SYNC)
    }

    fn packet(&mut self, p: &[u8; PACKET]) {
        self.stats.packets += 1;
        let transport_error = p[1] & 0x80 != 0;
        let unit_start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let adaptation = p[3] & 0x20 != 0;
        let has_payload = p[3] & 0x10 != 0;
        let cc = p[3] & 0x0f;
        if pid == PID_NULL {
            return;
        }
        let mut payload_at = 4;
        let mut discontinuity = false;
        if adaptation {
            let len = usize::from(p[4]);
            payload_at = 5 + len;
            if payload_at > PACKET {
                self.lost(pid);
                return;
            }
            if len > 0 {
                let flags = p[5];
                discontinuity = flags & 0x80 != 0;
                if flags & 0x10 != 0 && len >= 7 && Some(pid) == self.pcr_pid {
                    let base = (u64::from(p[6]) << 25)
                        | (u64::from(p[7]) << 17)
                        | (u64::from(p[8]) << 9)
                        | (u64::from(p[9]) << 1)
                        | (u64::from(p[10]) >> 7);
                    self.stats.last_pcr = Some(base);
                }
            }
        }
        if transport_error {
            self.lost(pid);
            return;
        }
        if !has_payload {
            return;
        }
        let payload = &p[payload_at..];
        if payload.is_empty() {
            return;
        }
        if pid == PID_PAT || Some(pid) == self.pmt_pid {
            self.psi(pid, cc, unit_start, payload);
            return;
        }
        let Some(stream) = self.streams.get_mut(&pid) else {
            return;
        };
        let expected = stream.last_cc.map(|last| (last + 1) & 0x0f);
        if stream.last_cc == Some(cc) && !discontinuity {
            // A duplicate packet (allowed once by the standard): same payload again.
            return;
        }
        stream.last_cc = Some(cc);
        if expected.is_some_and(|e| e != cc) && !discontinuity {
            self.stats.gaps += 1;
            stream.damaged = true;
        }
        if unit_start {
            self.complete_pes(pid);
            if let Some(stream) = self.streams.get_mut(&pid) {
                stream.pes = Some(payload.to_vec());
                stream.damaged = false;
            }
        } else if let Some(pes) = stream.pes.as_mut().filter(|_| !stream.damaged) {
            if pes.len() + payload.len() > MAX_PES_BYTES {
                stream.damaged = true;
            } else {
                pes.extend_from_slice(payload);
            }
        }
        self.complete_bounded_pes(pid);
    }

    /// A packet of `pid` was lost or damaged: so is the unit it belongs to.
    fn lost(&mut self, pid: u16) {
        self.stats.gaps += 1;
        if let Some(stream) = self.streams.get_mut(&pid) {
            stream.damaged = true;
        }
    }

    /// A PES that says how long it is is complete as soon as it has that many bytes
    /// (audio, usually): no need to wait for the next one.
    fn complete_bounded_pes(&mut self, pid: u16) {
        let Some(pes) = self.streams.get(&pid).and_then(|s| s.pes.as_ref()) else {
            return;
        };
        let declared = pes
            .get(4..6)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        if declared != 0 && pes.len() >= 6 + declared {
            self.complete_pes(pid);
        }
    }

    fn psi(&mut self, pid: u16, cc: u8, unit_start: bool, payload: &[u8]) {
        let section = self.sections.entry(pid).or_default();
        let in_order = section.last_cc.is_none_or(|last| (last + 1) & 0x0f == cc);
        section.last_cc = Some(cc);
        if unit_start {
            let pointer = usize::from(payload[0]);
            section.data = payload.get(1 + pointer..).unwrap_or_default().to_vec();
        } else if in_order && !section.data.is_empty() && section.data.len() < MAX_SECTION_BYTES {
            section.data.extend_from_slice(payload);
        } else {
            section.data.clear();
            return;
        }
        let data = &section.data;
        let Some(len) = data
            .get(1..3)
            .map(|b| usize::from(u16::from_be_bytes([b[0] & 0x0f, b[1]])))
        else {
            return;
        };
        if data.len() < 3 + len {
            return;
        }
        let table = data[..3 + len].to_vec();
        section.data.clear();
        if len < 9 || crc32_mpeg2(&table) != 0 {
            return;
        }
        // Skip the 8-byte header (table id, length, id, version, section numbers), drop
        // the CRC.
        let body = &table[8..table.len() - 4];
        match table[0] {
            0x00 if pid == PID_PAT => self.pat(body),
            0x02 if Some(pid) == self.pmt_pid => self.pmt(body),
            _ => {}
        }
    }

    fn pat(&mut self, body: &[u8]) {
        // The first program that is not the network information table.
        let pmt = body.chunks_exact(4).find_map(|entry| {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            (program != 0).then(|| (u16::from(entry[2] & 0x1f) << 8) | u16::from(entry[3]))
        });
        if pmt.is_some() && pmt != self.pmt_pid {
            self.pmt_pid = pmt;
        }
    }

    fn pmt(&mut self, body: &[u8]) {
        let Some(header) = body.get(..4) else {
            return;
        };
        self.pcr_pid = Some((u16::from(header[0] & 0x1f) << 8) | u16::from(header[1]));
        let info_len = usize::from(u16::from_be_bytes([header[2] & 0x0f, header[3]]));
        let mut rest = body.get(4 + info_len..).unwrap_or_default();
        let (mut video, mut audio) = (None, None);
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = (u16::from(rest[1] & 0x1f) << 8) | u16::from(rest[2]);
            let es_info_len = usize::from(u16::from_be_bytes([rest[3] & 0x0f, rest[4]]));
            rest = rest.get(5 + es_info_len..).unwrap_or_default();
            let kind = match stream_type {
                STREAM_TYPE_H264 => Kind::Video(VideoCodec::H264),
                STREAM_TYPE_H265 => Kind::Video(VideoCodec::H265),
                STREAM_TYPE_AAC_ADTS => Kind::Aac,
                // Opus in TS (stream type 6 with an `Opus` registration descriptor) would
                // be one more kind here.
                _ => continue,
            };
            match kind {
                Kind::Video(_) if video.is_none() => video = Some((pid, kind)),
                Kind::Aac if audio.is_none() => audio = Some((pid, kind)),
                _ => {}
            }
        }
        // A PMT repeats every 100 ms or so: only a change of streams resets anything.
        for ((pid, kind), slot) in [(video, self.video_pid), (audio, self.audio_pid)]
            .into_iter()
            .filter_map(|(new, old)| new.map(|n| (n, old)))
        {
            if slot == Some(pid) && self.streams.get(&pid).is_some_and(|s| s.kind == kind) {
                continue;
            }
            if let Some(old) = slot {
                self.streams.remove(&old);
            }
            self.streams.insert(
                pid,
                ElementaryStream {
                    kind,
                    last_cc: None,
                    pes: None,
                    damaged: false,
                },
            );
            match kind {
                Kind::Video(_) => {
                    self.video_pid = Some(pid);
                    self.awaiting_keyframe = true;
                }
                Kind::Aac => self.audio_pid = Some(pid),
            }
        }
    }

    /// The PES being assembled on `pid` is complete: its access units go out, unless it
    /// was damaged.
    fn complete_pes(&mut self, pid: u16) {
        let Some(stream) = self.streams.get_mut(&pid) else {
            return;
        };
        let (kind, damaged) = (stream.kind, std::mem::take(&mut stream.damaged));
        let Some(pes) = stream.pes.take() else {
            return;
        };
        let parsed = if damaged { None } else { parse_pes(&pes) };
        let Some((pts, dts, data)) = parsed else {
            self.stats.dropped_units += 1;
            if matches!(kind, Kind::Video(_)) {
                self.awaiting_keyframe = true;
            }
            return;
        };
        match kind {
            Kind::Video(codec) => self.video(codec, pts, dts, data),
            Kind::Aac => self.audio(pts, data),
        }
    }

    fn video(&mut self, codec: VideoCodec, pts: Option<u64>, dts: Option<u64>, data: &[u8]) {
        let Some(pts) = pts else {
            self.stats.dropped_units += 1;
            return;
        };
        let dts = dts.unwrap_or(pts);
        let mut keyframe = false;
        let mut sets = Vec::new();
        let mut frame = Vec::with_capacity(data.len() + 16);
        for nal in annex_b_nal_units(data) {
            let Some(&header) = nal.first() else {
                continue;
            };
            match (codec, header & 0x1f, (header >> 1) & 0x3f) {
                // Parameter sets go into the configuration, delimiters nowhere.
                (VideoCodec::H264, 7 | 8, _) | (VideoCodec::H265, _, 32..=34) => {
                    sets.push(Bytes::copy_from_slice(nal));
                    continue;
                }
                (VideoCodec::H264, 9, _) | (VideoCodec::H265, _, 35) => continue,
                (VideoCodec::H264, 5, _) | (VideoCodec::H265, _, 16..=21) => keyframe = true,
                _ => {}
            }
            frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            frame.extend_from_slice(nal);
        }
        if !sets.is_empty() && sets != self.parameter_sets {
            if let Ok(config) = VideoConfig::from_parameter_sets(codec, &sets) {
                self.parameter_sets = sets;
                if self.video_config.as_ref() != Some(&config) {
                    self.video_config = Some(config.clone());
                    self.emit(MediaInput::VideoConfig(config));
                }
            }
        }
        if self.awaiting_keyframe && !keyframe || self.video_config.is_none() || frame.is_empty() {
            self.stats.dropped_units += 1;
            return;
        }
        self.awaiting_keyframe = false;
        let composition_offset = Timeline::wrapping_step(33, dts, pts)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
            as i32;
        let dts = self.timeline.map(dts);
        self.stats.video_frames += 1;
        self.emit(MediaInput::Video(VideoFrame {
            dts,
            composition_offset,
            keyframe,
            data: Bytes::from(frame),
        }));
    }

    fn audio(&mut self, pts: Option<u64>, mut data: &[u8]) {
        // One PES holds one or more ADTS frames; those after the first are timed by
        // sample count from the PES's timestamp.
        let start = match pts {
            Some(pts) => self.timeline.map(pts),
            None => {
                self.stats.dropped_units += 1;
                return;
            }
        };
        let mut samples = 0i64;
        while let Some(adts) = Adts::parse(data) {
            let Some(frame) = data.get(adts.header_len..adts.frame_len) else {
                break;
            };
            let asc = asc_from_adts(adts.profile, adts.sample_rate_index, adts.channels);
            let same =
                |c: &AudioConfig| matches!(&c.codec, AudioCodec::Aac { asc: a, .. } if *a == asc);
            if !self.audio_config.as_ref().is_some_and(same) {
                match AudioConfig::parse(asc) {
                    Ok(config) => {
                        self.audio_config = Some(config.clone());
                        self.emit(MediaInput::AudioConfig(config));
                    }
                    Err(_) => break,
                }
            }
            let rate = self
                .audio_config
                .as_ref()
                .map_or(1, |c| c.sample_rate.max(1));
            self.stats.audio_frames += 1;
            self.emit(MediaInput::Audio(AudioFrame {
                pts: start + samples * i64::from(TIMESCALE) / i64::from(rate),
                data: Bytes::copy_from_slice(frame),
            }));
            samples += i64::from(AAC_FRAME_SAMPLES);
            data = &data[adts.frame_len..];
        }
    }

    fn emit(&mut self, input: MediaInput) {
        let Some(held) = self.held.as_mut() else {
            self.output.push(input);
            return;
        };
        held.push(input);
        let configured = (self.video_pid.is_none() || self.video_config.is_some())
            && (self.audio_pid.is_none() || self.audio_config.is_some());
        let first = held.iter().find_map(time_of);
        let waited_too_long = first.is_some_and(|first| self.timeline.last() - first > CONFIG_WAIT);
        if configured || waited_too_long || held.len() > MAX_HELD {
            self.release_held();
        }
    }

    /// Ends the wait for configurations: they go out first, then the frames held.
    fn release_held(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let (configs, frames): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|i| matches!(i, MediaInput::VideoConfig(_) | MediaInput::AudioConfig(_)));
        self.output.extend(configs);
        self.output.extend(frames);
    }
}

fn time_of(input: &MediaInput) -> Option<i64> {
    match input {
        MediaInput::Video(v) => Some(v.dts),
        MediaInput::Audio(a) => Some(a.pts),
        _ => None,
    }
}

/// A PES packet's PTS, DTS and payload; `None` if it is not one.
fn parse_pes(pes: &[u8]) -> Option<(Option<u64>, Option<u64>, &[u8])> {
    if pes.get(..3)? != [0, 0, 1] {
        return None;
    }
    let header_len = usize::from(*pes.get(8)?);
    let flags = pes.get(7)? >> 6;
    let optional = pes.get(9..9 + header_len)?;
    let timestamp = |b: &[u8]| -> Option<u64> {
        let b = b.get(..5)?;
        Some(
            (u64::from(b[0] >> 1 & 0x07) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1),
        )
    };
    let pts = if flags & 0b10 != 0 {
        Some(timestamp(optional)?)
    } else {
        None
    };
    let dts = if flags == 0b11 {
        Some(timestamp(optional.get(5..)?)?)
    } else {
        None
    };
    let declared = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
    let end = if declared == 0 {
        pes.len()
    } else {
        (6 + declared).min(pes.len())
    };
    Some((pts, dts, pes.get(9 + header_len..end)?))
}

/// The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes; the trailing
/// zero of a 4-byte start code is not part of the previous unit).
fn annex_b_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| {
            let mut end = next - 3;
            while end > 0 && data[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| data.get(start..end.max(start)).unwrap_or_default())
}

/// An ADTS header (ISO/IEC 14496-3 1.A.2).
struct Adts {
    profile: u8,
    sample_rate_index: u8,
    channels: u8,
    header_len: usize,
    frame_len: usize,
}

impl Adts {
    fn parse(data: &[u8]) -> Option<Self> {
        let h = data.get(..7)?;
        if h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
            return None;
        }
        let protection_absent = h[1] & 1 == 1;
        let header_len = if protection_absent { 7 } else { 9 };
        let frame_len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if frame_len < header_len {
            return None;
        }
        Some(Self {
            profile: h[2] >> 6,
            sample_rate_index: (h[2] >> 2) & 0x0f,
            channels: ((h[2] & 1) << 2) | (h[3] >> 6),
            header_len,
            frame_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 s of 160x96 H.264 (30 fps, keyframe every second, B-frames) and mono AAC at
    /// 44.1 kHz, timestamps starting 1 s before the 33-bit wrap: `ffmpeg -f lavfi -i
    /// testsrc=size=160x96:rate=30 -f lavfi -i sine=sample_rate=44100 -t 3 -c:v libx264
    /// -g 30 -bf 2 -c:a aac -ac 1 -output_ts_offset 95442.7 -mpegts_copyts 1 -f mpegts`.
    const H264_AAC_WRAP: &[u8] = include_bytes!("../tests/fixtures/h264_aac_pts_wrap.ts");
    /// 2 s of 160x96 HEVC (25 fps, keyframe every second) and stereo AAC at 48 kHz.
    const HEVC_AAC: &[u8] = include_bytes!("../tests/fixtures/hevc_aac.ts");

    #[derive(Debug, Default)]
    struct Demuxed {
        video_configs: Vec<VideoConfig>,
        audio_configs: Vec<AudioConfig>,
        video: Vec<VideoFrame>,
        audio: Vec<AudioFrame>,
    }

    fn demux_in_chunks(input: &[u8], chunk: usize) -> (Demuxed, TsStats) {
        let mut demuxer = TsDemuxer::default();
        let mut out = Demuxed::default();
        let mut inputs = Vec::new();
        for piece in input.chunks(chunk) {
            inputs.extend(demuxer.push(piece));
        }
        inputs.extend(demuxer.finish());
        for input in inputs {
            match input {
                MediaInput::VideoConfig(c) => {
                    assert!(out.video.is_empty() || !out.video_configs.is_empty());
                    out.video_configs.push(c)
                }
                MediaInput::AudioConfig(c) => out.audio_configs.push(c),
                MediaInput::Video(v) => {
                    assert!(
                        !out.video_configs.is_empty(),
                        "a frame before its configuration"
                    );
                    out.video.push(v)
                }
                MediaInput::Audio(a) => {
                    assert!(
                        !out.audio_configs.is_empty(),
                        "a frame before its configuration"
                    );
                    out.audio.push(a)
                }
            }
        }
        (out, demuxer.stats().clone())
    }

    fn packets(input: &[u8]) -> Vec<&[u8]> {
        input.chunks(PACKET).collect()
    }

    fn pid(packet: &[u8]) -> u16 {
        (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
    }

    #[test]
    fn h264_and_aac_from_ffmpeg_give_every_frame_whatever_the_chunking() {
        for chunk in [1, 7, 188, 1000, 65536] {
            let (out, stats) = demux_in_chunks(H264_AAC_WRAP, chunk);
            assert_eq!(out.video_configs.len(), 1, "chunk {chunk}");
            let video = &out.video_configs[0];
            assert_eq!(video.codec, VideoCodec::H264);
            assert_eq!((video.width, video.height), (160, 96));
            assert!(
                video.codec_string.starts_with("avc1."),
                "{}",
                video.codec_string
            );
            assert_eq!(video.parameter_sets.len(), 2, "SPS and PPS");
            let audio = &out.audio_configs[..];
            assert_eq!(audio.len(), 1);
            assert_eq!((audio[0].sample_rate, audio[0].channels), (44100, 1));
            assert_eq!(audio[0].codec_string, "mp4a.40.2");
            // ffprobe -count_frames: 90 video and 131 audio frames.
            assert_eq!(
                (out.video.len(), out.audio.len()),
                (90, 131),
                "chunk {chunk}"
            );
            let keyframes: Vec<usize> = (0..90).filter(|&i| out.video[i].keyframe).collect();
            assert_eq!(keyframes, [0, 30, 60]);
            assert_eq!(
                (stats.gaps, stats.dropped_units, stats.skipped_bytes),
                (0, 0, 0)
            );
            assert!(stats.last_pcr.is_some());
        }
    }

    #[test]
    fn frames_are_length_prefixed_nal_units_without_parameter_sets() {
        let (out, _) = demux_in_chunks(H264_AAC_WRAP, 188);
        for frame in &out.video {
            let mut rest = &frame.data[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let nal_type = rest[4] & 0x1f;
                assert!(
                    !(7..=9).contains(&nal_type),
                    "type {nal_type} left in a frame"
                );
                rest = &rest[4 + len..];
            }
        }
        // Raw AAC, the ADTS header gone.
        assert!(out.audio.iter().all(|a| a.data[..2] != [0xFF, 0xF1]));
    }

    #[test]
    fn the_33_bit_wrap_keeps_one_continuous_timeline() {
        let (out, _) = demux_in_chunks(H264_AAC_WRAP, 188);
        // Decode order steps by one frame (3000 ticks) across the wrap, 1 s in.
        for pair in out.video.windows(2) {
            assert_eq!(pair[1].dts - pair[0].dts, 3000);
        }
        // B-frames (x264 with -bf 2): presentation after decode by up to four frames.
        assert!(out
            .video
            .iter()
            .all(|v| (0..=12000).contains(&v.composition_offset)));
        assert!(out.video.iter().any(|v| v.composition_offset > 3000));
        // Audio is on the same timeline: it starts with the video and steps by 1024
        // samples.
        assert!((out.audio[0].pts - out.video[0].dts).abs() < 9000);
        for pair in out.audio.windows(2) {
            let step = pair[1].pts - pair[0].pts;
            assert!((2088..=2091).contains(&step), "{step}");
        }
    }

    #[test]
    fn hevc_parameter_sets_become_an_hvcc_configuration() {
        let (out, stats) = demux_in_chunks(HEVC_AAC, 1316);
        let video = &out.video_configs[..];
        assert_eq!(video.len(), 1);
        assert_eq!(video[0].codec, VideoCodec::H265);
        assert_eq!((video[0].width, video[0].height), (160, 96));
        assert!(
            video[0].codec_string.starts_with("hvc1.1.6.L"),
            "{}",
            video[0].codec_string
        );
        assert_eq!(video[0].parameter_sets.len(), 3, "VPS, SPS and PPS");
        assert_eq!((out.video.len(), out.audio.len()), (50, 95));
        assert_eq!(
            (
                out.audio_configs[0].sample_rate,
                out.audio_configs[0].channels
            ),
            (48000, 2)
        );
        assert!(out.video[0].keyframe && out.video[25].keyframe);
        assert_eq!(stats.dropped_units, 0);
    }

    #[test]
    fn lost_packets_drop_the_damaged_frames_and_video_resumes_on_a_keyframe() {
        // Lose one video packet in the middle of the first second, and one audio packet.
        let all = packets(H264_AAC_WRAP);
        let video_packets: Vec<usize> = (0..all.len()).filter(|&i| pid(all[i]) == 0x100).collect();
        let audio_packets: Vec<usize> = (0..all.len()).filter(|&i| pid(all[i]) == 0x101).collect();
        let lost = [
            video_packets[video_packets.len() / 6],
            audio_packets[audio_packets.len() / 2],
        ];
        let damaged: Vec<u8> = (0..all.len())
            .filter(|i| !lost.contains(i))
            .flat_map(|i| all[i].to_vec())
            .collect();
        let (out, stats) = demux_in_chunks(&damaged, 1000);
        assert_eq!(stats.gaps, 2);
        // Video: the damaged frame and those after it up to the next keyframe (frame 30)
        // are gone; every frame after is there.
        assert!(
            out.video.len() >= 60 && out.video.len() < 90,
            "{}",
            out.video.len()
        );
        let resumed = out
            .video
            .windows(2)
            .find(|w| w[1].dts - w[0].dts != 3000)
            .map(|w| (w[1].keyframe, w[1].dts - out.video[0].dts));
        assert_eq!(resumed, Some((true, 30 * 3000)));
        // Audio: one PES (several frames) lost, the rest kept.
        assert!(
            out.audio.len() < 131 && out.audio.len() >= 131 - 20,
            "{}",
            out.audio.len()
        );
        assert!(stats.dropped_units >= 2);
    }

    #[test]
    fn garbage_between_packets_is_skipped_and_nothing_else_lost() {
        let mut noisy = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut garbage = 0;
        for (i, packet) in packets(H264_AAC_WRAP).into_iter().enumerate() {
            if i % 50 == 7 {
                // Garbage with sync bytes in it, as a broken relay might send.
                let n = (x % 300) as usize;
                for j in 0..n {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    noisy.push(if j % 40 == 0 { SYNC } else { x as u8 });
                }
                garbage += n;
            }
            noisy.extend_from_slice(packet);
        }
        let (out, stats) = demux_in_chunks(&noisy, 777);
        assert_eq!(stats.skipped_bytes, garbage as u64);
        assert_eq!((out.video.len(), out.audio.len()), (90, 131));
    }

    #[test]
    fn garbage_alone_is_no_input_and_no_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let junk: Vec<u8> = (0..100_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 188 == 0 {
                    SYNC
                } else {
                    x as u8
                }
            })
            .collect();
        let (out, _) = demux_in_chunks(&junk, 4096);
        assert!(out.video.is_empty());
    }
}
