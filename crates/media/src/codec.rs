//! Codec configurations (avcC, hvcC, AudioSpecificConfig) and what HLS needs from them:
//! RFC 6381 codec strings, resolution, parameter sets.

use bytes::Bytes;

use crate::bits::BitReader;
use crate::error::FlvError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// The decoder configuration record (avcC or hvcC body) exactly as the encoder sent it.
    pub record: Bytes,
    /// VPS/SPS/PPS in decoding order, for Annex B streams (MPEG-TS).
    pub parameter_sets: Vec<Bytes>,
    pub nal_length_size: u8,
    pub width: u16,
    pub height: u16,
    pub codec_string: String,
}

impl VideoConfig {
    pub fn parse(codec: VideoCodec, record: Bytes) -> Result<Self, FlvError> {
        match codec {
            VideoCodec::H264 => parse_avcc(record),
            VideoCodec::H265 => parse_hvcc(record),
        }
    }

    /// The configuration of an Annex B stream (MPEG-TS) from the parameter sets it sent in
    /// band (NAL units without start codes; H.264: SPS then PPS, H.265: VPS, SPS, PPS),
    /// as a decoder configuration record with 4-byte NAL lengths, which is what the
    /// TS front end writes.
    pub fn from_parameter_sets(codec: VideoCodec, sets: &[Bytes]) -> Result<Self, FlvError> {
        let record = match codec {
            VideoCodec::H264 => avcc_record(sets)?,
            VideoCodec::H265 => hvcc_record(sets)?,
        };
        Self::parse(codec, Bytes::from(record))
    }
}

fn nal_type(codec: VideoCodec, nal: &[u8]) -> Option<u8> {
    let header = *nal.first()?;
    Some(match codec {
        VideoCodec::H264 => header & 0x1f,
        VideoCodec::H265 => (header >> 1) & 0x3f,
    })
}

fn push_nal(record: &mut Vec<u8>, nal: &[u8]) -> Result<(), FlvError> {
    let len = u16::try_from(nal.len())
        .map_err(|_| FlvError::InvalidConfig("parameter set over 64 KiB"))?;
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(nal);
    Ok(())
}

/// ISO/IEC 14496-15 5.3.3.1: AVCDecoderConfigurationRecord.
fn avcc_record(sets: &[Bytes]) -> Result<Vec<u8>, FlvError> {
    let of_type = |t| {
        sets.iter()
            .filter(move |n| nal_type(VideoCodec::H264, n) == Some(t))
            .take(31)
    };
    let sps = of_type(7)
        .next()
        .filter(|sps| sps.len() >= 4)
        .ok_or(FlvError::InvalidConfig("H.264 stream without SPS"))?;
    let mut record = vec![1, sps[1], sps[2], sps[3], 0xFF];
    record.push(0xE0 | of_type(7).count() as u8);
    for nal in of_type(7) {
        push_nal(&mut record, nal)?;
    }
    record.push(of_type(8).count() as u8);
    for nal in of_type(8) {
        push_nal(&mut record, nal)?;
    }
    Ok(record)
}

/// ISO/IEC 14496-15 8.3.3.1: HEVCDecoderConfigurationRecord.
fn hvcc_record(sets: &[Bytes]) -> Result<Vec<u8>, FlvError> {
    let sps = sets
        .iter()
        .find(|n| nal_type(VideoCodec::H265, n) == Some(33))
        .ok_or(FlvError::InvalidConfig("H.265 stream without SPS"))?;
    let missing = FlvError::InvalidConfig("H.265 SPS truncated");
    // After the 2-byte NAL header: sps_video_parameter_set_id(4),
    // sps_max_sub_layers_minus1(3), sps_temporal_id_nesting_flag(1), then the general
    // profile_tier_level: 12 bytes.
    let rbsp = crate::bits::unescape_rbsp(sps.get(2..).ok_or(missing.clone())?);
    let header = rbsp.get(..13).ok_or(missing.clone())?;
    let format = h265_sps_format(sps).ok_or(missing)?;
    let sub_layers = (header[0] >> 1) & 0x07;
    let temporal_id_nested = header[0] & 1;
    let mut record = vec![1];
    record.extend_from_slice(&header[1..13]);
    record.extend_from_slice(&[
        0xF0,
        0x00,
        0xFC,
        0xFC | (format.chroma_format & 0x03),
        0xF8 | (format.bit_depth_luma_minus8 & 0x07),
        0xF8 | (format.bit_depth_chroma_minus8 & 0x07),
        0,
        0,
        ((sub_layers + 1) << 3) | (temporal_id_nested << 2) | 0x03,
    ]);
    let arrays: Vec<u8> = [32u8, 33, 34]
        .into_iter()
        .filter(|t| {
            sets.iter()
                .any(|n| nal_type(VideoCodec::H265, n) == Some(*t))
        })
        .collect();
    record.push(arrays.len() as u8);
    for t in arrays {
        let nals: Vec<&Bytes> = sets
            .iter()
            .filter(|n| nal_type(VideoCodec::H265, n) == Some(t))
            .take(usize::from(u16::MAX))
            .collect();
        record.push(0x80 | t);
        record.extend_from_slice(&(nals.len() as u16).to_be_bytes());
        for nal in nals {
            push_nal(&mut record, nal)?;
        }
    }
    Ok(record)
}

/// The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) an ADTS header describes:
/// `profile` is the ADTS profile (object type - 1).
pub fn asc_from_adts(profile: u8, sample_rate_index: u8, channels: u8) -> Bytes {
    let object_type = (profile & 0x03) + 1;
    let (rate, channels) = (sample_rate_index & 0x0f, channels & 0x0f);
    Bytes::from(vec![
        (object_type << 3) | (rate >> 1),
        ((rate & 1) << 7) | (channels << 3),
    ])
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FlvError> {
        if self.0.len() < n {
            return Err(FlvError::InvalidConfig(
                "decoder configuration record truncated",
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FlvError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FlvError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn nal(&mut self) -> Result<Bytes, FlvError> {
        let len = self.u16()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
}

fn parse_avcc(record: Bytes) -> Result<VideoConfig, FlvError> {
    let mut r = Reader(&record);
    let header = r.take(5)?;
    let (profile, compat, level) = (header[1], header[2], header[3]);
    let nal_length_size = (header[4] & 0x03) + 1;
    let mut parameter_sets = Vec::new();
    for _ in 0..(r.u8()? & 0x1f) {
        parameter_sets.push(r.nal()?);
    }
    let sps = parameter_sets
        .first()
        .cloned()
        .ok_or(FlvError::InvalidConfig("avcC without SPS"))?;
    for _ in 0..r.u8()? {
        parameter_sets.push(r.nal()?);
    }
    let (width, height) = h264_sps_resolution(&sps).unwrap_or((0, 0));
    Ok(VideoConfig {
        codec: VideoCodec::H264,
        codec_string: format!("avc1.{profile:02x}{compat:02x}{level:02x}"),
        record,
        parameter_sets,
        nal_length_size,
        width,
        height,
    })
}

fn parse_hvcc(record: Bytes) -> Result<VideoConfig, FlvError> {
    let mut r = Reader(&record);
    let header = r.take(23)?;
    let profile_space = header[1] >> 6;
    let tier = (header[1] >> 5) & 1;
    let profile_idc = header[1] & 0x1f;
    let compat = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let constraints = &header[6..12];
    let level = header[12];
    let nal_length_size = (header[21] & 0x03) + 1;
    let mut parameter_sets = Vec::new();
    let mut sps = None;
    for _ in 0..header[22] {
        let nal_type = r.u8()? & 0x3f;
        for _ in 0..r.u16()? {
            let nal = r.nal()?;
            if nal_type == 33 && sps.is_none() {
                sps = Some(nal.clone());
            }
            parameter_sets.push(nal);
        }
    }
    let sps = sps.ok_or(FlvError::InvalidConfig("hvcC without SPS"))?;
    let (width, height) = h265_sps_resolution(&sps).unwrap_or((0, 0));

    // ISO/IEC 14496-15 annex E: hvc1.<space><profile>.<compat, bit-reversed>.<tier><level>
    // .<constraint bytes, trailing zero bytes dropped>.
    let space = ["", "A", "B", "C"][profile_space as usize];
    let tier = if tier == 1 { 'H' } else { 'L' };
    let mut codec_string = format!(
        "hvc1.{space}{profile_idc}.{:X}.{tier}{level}",
        compat.reverse_bits()
    );
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        codec_string.push_str(&format!(".{b:X}"));
    }
    Ok(VideoConfig {
        codec: VideoCodec::H265,
        codec_string,
        record,
        parameter_sets,
        nal_length_size,
        width,
        height,
    })
}

/// Width and height from an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1).
fn h264_sps_resolution(nal: &[u8]) -> Option<(u16, u16)> {
    let rbsp = crate::bits::unescape_rbsp(nal.get(1..)?);
    let mut b = BitReader::new(&rbsp);
    let profile = b.bits(8)?;
    b.skip(16)?;
    b.ue()?;
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = b.ue()?;
        if chroma_format == 3 {
            b.skip(1)?;
        }
        b.ue()?;
        b.ue()?;
        b.skip(1)?;
        if b.bit()? {
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if b.bit()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + b.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    b.ue()?;
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.skip(1)?;
            b.se()?;
            b.se()?;
            for _ in 0..b.ue()?.min(255) {
                b.se()?;
            }
        }
        _ => {}
    }
    b.ue()?;
    b.skip(1)?;
    let width_mbs = b.ue()? + 1;
    let height_units = b.ue()? + 1;
    let frame_mbs_only = u64::from(b.bit()?);
    if frame_mbs_only == 0 {
        b.skip(1)?;
    }
    b.skip(1)?;
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.bit()? {
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (l + r);
        crop_y = unit_y * (t + bo);
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// Width and height from an H.265 SPS NAL unit (ITU-T H.265 7.3.2.2).
fn h265_sps_resolution(nal: &[u8]) -> Option<(u16, u16)> {
    h265_sps_format(nal).map(|f| (f.width, f.height))
}

/// What an hvcC record needs from an H.265 SPS besides its profile, tier and level.
struct H265Format {
    width: u16,
    height: u16,
    chroma_format: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

fn h265_sps_format(nal: &[u8]) -> Option<H265Format> {
    let rbsp = crate::bits::unescape_rbsp(nal.get(2..)?);
    let mut b = BitReader::new(&rbsp);
    b.skip(4)?;
    let max_sub_layers_minus1 = b.bits(3)? as usize;
    b.skip(1)?;
    b.skip(96)?; // general profile, tier and level
    let mut sub_layer_flags = Vec::new();
    for _ in 0..max_sub_layers_minus1 {
        sub_layer_flags.push((b.bit()?, b.bit()?));
    }
    if max_sub_layers_minus1 > 0 {
        b.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for (profile_present, level_present) in sub_layer_flags {
        if profile_present {
            b.skip(88)?;
        }
        if level_present {
            b.skip(8)?;
        }
    }
    b.ue()?;
    let chroma_format = b.ue()?;
    if chroma_format == 3 {
        b.skip(1)?;
    }
    let mut width = b.ue()?;
    let mut height = b.ue()?;
    if b.bit()? {
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (sub_w, sub_h) = match chroma_format {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        width = width.checked_sub(sub_w * (l + r))?;
        height = height.checked_sub(sub_h * (t + bo))?;
    }
    let bit_depth_luma_minus8 = u8::try_from(b.ue()?).ok()?;
    let bit_depth_chroma_minus8 = u8::try_from(b.ue()?).ok()?;
    Some(H265Format {
        width: u16::try_from(width).ok()?,
        height: u16::try_from(height).ok()?,
        chroma_format: u8::try_from(chroma_format).ok()?,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
    })
}

/// The audio track's configuration: what every codec has (rate, channels, the RFC 6381
/// codec string HLS lists), and what is particular to the codec.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub codec: AudioCodec,
    /// The track's sample rate, which is its timescale in fMP4 (48000 for Opus, whatever
    /// rate the stream was encoded at).
    pub sample_rate: u32,
    pub channels: u8,
    pub codec_string: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AudioCodec {
    /// AAC (ISO/IEC 14496-3): frames of [`AAC_FRAME_SAMPLES`].
    Aac {
        /// The AudioSpecificConfig exactly as the encoder sent it.
        asc: Bytes,
        object_type: u8,
        sample_rate_index: u8,
    },
    /// Opus (RFC 6716): always decoded at 48 kHz, in packets of 2.5 to 120 ms that each
    /// say how long they are ([`opus_packet_samples`]).
    Opus {
        /// Samples the decoder discards at the start (the encoder's lookahead).
        pre_skip: u16,
    },
}

const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Samples per AAC access unit (AAC-LC and HE-AAC at the core rate).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// Opus's one decoding rate (RFC 7587: the RTP clock and the decoder's output).
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

/// The pre-skip libopus's encoder needs (its lookahead at 48 kHz), which ffmpeg and
/// browsers write; the decoder drops that many samples at the start of a stream.
pub const OPUS_DEFAULT_PRE_SKIP: u16 = 312;

impl AudioConfig {
    pub fn parse(asc: Bytes) -> Result<Self, FlvError> {
        let mut b = BitReader::new(&asc);
        let bad = FlvError::InvalidConfig("AudioSpecificConfig truncated");
        let mut object_type = b.bits(5).ok_or(bad.clone())? as u8;
        if object_type == 31 {
            object_type = 32 + b.bits(6).ok_or(bad.clone())? as u8;
        }
        let sample_rate_index = b.bits(4).ok_or(bad.clone())? as u8;
        let sample_rate = if sample_rate_index == 15 {
            b.bits(24).ok_or(bad.clone())? as u32
        } else {
            *AAC_SAMPLE_RATES
                .get(sample_rate_index as usize)
                .ok_or(FlvError::InvalidConfig("reserved AAC sample rate index"))?
        };
        if sample_rate == 0 {
            return Err(FlvError::InvalidConfig("AAC sample rate 0"));
        }
        let channels = b.bits(4).ok_or(bad)? as u8;
        Ok(Self {
            codec_string: format!("mp4a.40.{object_type}"),
            codec: AudioCodec::Aac {
                asc,
                object_type,
                sample_rate_index,
            },
            sample_rate,
            channels,
        })
    }

    /// Opus with `channels` output channels (1 or 2: channel mapping family 0, all that
    /// WebRTC sends), at 48 kHz, codec string `opus` (as the HLS authoring spec writes it).
    pub fn opus(channels: u8, pre_skip: u16) -> Self {
        Self {
            codec: AudioCodec::Opus { pre_skip },
            sample_rate: OPUS_SAMPLE_RATE,
            channels: channels.clamp(1, 2),
            codec_string: "opus".into(),
        }
    }

    /// The ADTS header (ISO/IEC 13818-7) for one raw AAC frame of `payload_len` bytes of
    /// this configuration: how a raw frame is handed to a decoder that reads a byte
    /// stream. `None` for Opus, for object types ADTS cannot say (over 4), and for a frame
    /// too long for its 13-bit length.
    pub fn adts_header(&self, payload_len: usize) -> Option<[u8; 7]> {
        let AudioCodec::Aac {
            object_type,
            sample_rate_index,
            ..
        } = self.codec
        else {
            return None;
        };
        let len = payload_len + 7;
        if !(1..=4).contains(&object_type) || sample_rate_index > 12 || len >= 1 << 13 {
            return None;
        }
        let (profile, channels) = (object_type - 1, self.channels & 0x07);
        Some([
            0xff,
            0xf1,
            (profile << 6) | (sample_rate_index << 2) | (channels >> 2),
            ((channels & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1f,
            0xfc,
        ])
    }

    /// Samples in every frame, where the codec fixes it (AAC); `None` where each frame says
    /// (Opus).
    pub fn fixed_frame_samples(&self) -> Option<u32> {
        match self.codec {
            AudioCodec::Aac { .. } => Some(AAC_FRAME_SAMPLES),
            AudioCodec::Opus { .. } => None,
        }
    }

    /// Samples (at [`Self::sample_rate`]) that one frame of this codec lasts, if the frame
    /// says: always for AAC, from the table of contents for Opus.
    pub fn frame_samples(&self, frame: &[u8]) -> Option<u32> {
        match self.codec {
            AudioCodec::Aac { .. } => Some(AAC_FRAME_SAMPLES),
            AudioCodec::Opus { .. } => opus_packet_samples(frame),
        }
    }
}

/// How many 48 kHz samples an Opus packet holds (RFC 6716 3.1: the TOC byte's
/// configuration gives the frame size, its code the frame count); `None` for a packet
/// that is malformed or longer than the 120 ms a packet may hold.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Configurations 0..=11 SILK (10, 20, 40, 60 ms), 12..=15 hybrid (10, 20 ms),
    // 16..=31 CELT (2.5, 5, 10, 20 ms).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_adts_header_says_what_the_configuration_says() {
        // AAC-LC, 44.1 kHz, stereo: ADTS profile 1, rate index 4, channels 2.
        let config = AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        let header = config.adts_header(100).unwrap();
        // Frame length 107 (13 bits) = 0x0d << 3 | 3.
        assert_eq!(header, [0xff, 0xf1, 0x50, 0x80, 0x0d, 0x7f, 0xfc]);
        // And the demuxer's own reading of it gives the configuration back.
        assert_eq!(asc_from_adts(1, 4, 2), Bytes::from_static(&[0x12, 0x10]));
        assert_eq!(AudioConfig::opus(2, 312).adts_header(100), None);
        assert_eq!(config.adts_header(8192), None, "over 13 bits");
    }

    use super::*;

    // avcC of a 1280x720 High profile stream from x264 (ffmpeg -s 1280x720).
    const AVCC_720P: &[u8] = &[
        1, 100, 0, 31, 255, 225, 0, 28, 103, 100, 0, 31, 172, 217, 128, 80, 5, 187, 1, 106, 2, 2,
        2, 128, 0, 0, 3, 0, 128, 0, 0, 30, 7, 140, 24, 205, 1, 0, 5, 104, 233, 123, 44, 139,
    ];

    #[test]
    fn avcc_gives_codec_string_resolution_and_parameter_sets() {
        let c = VideoConfig::parse(VideoCodec::H264, Bytes::from_static(AVCC_720P)).unwrap();
        assert_eq!(c.codec_string, "avc1.64001f");
        assert_eq!((c.width, c.height), (1280, 720));
        assert_eq!(c.parameter_sets.len(), 2);
        assert_eq!(c.nal_length_size, 4);
    }

    #[test]
    fn aac_lc_stereo_44100() {
        let c = AudioConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((c.sample_rate, c.channels), (44100, 2));
        assert!(matches!(
            c.codec,
            AudioCodec::Aac {
                object_type: 2,
                sample_rate_index: 4,
                ..
            }
        ));
        assert_eq!(c.codec_string, "mp4a.40.2");
        assert_eq!(c.fixed_frame_samples(), Some(1024));
    }

    #[test]
    fn opus_packets_say_how_long_they_are() {
        let c = AudioConfig::opus(2, OPUS_DEFAULT_PRE_SKIP);
        assert_eq!((c.sample_rate, c.channels), (48000, 2));
        assert_eq!(c.codec_string, "opus");
        assert_eq!(c.fixed_frame_samples(), None);
        // libopus at 20 ms: CELT fullband (config 31), one frame, code 0.
        assert_eq!(c.frame_samples(&[0xF8, 0xFF, 0xFE]), Some(960));
        // SILK 60 ms, two frames (code 1): 120 ms, the most a packet holds.
        assert_eq!(opus_packet_samples(&[(3 << 3) | 1]), Some(5760));
        // Code 3 with 6 CELT 2.5 ms frames.
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 6]), Some(720));
        // 49 frames of 2.5 ms is over 120 ms; no frames, no bytes: malformed.
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 49]), None);
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 0]), None);
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3]), None);
        assert_eq!(opus_packet_samples(&[]), None);
        assert_eq!(AudioConfig::opus(6, 0).channels, 2);
    }

    #[test]
    fn truncated_records_are_errors() {
        for n in 0..AVCC_720P.len() - 6 {
            assert!(
                VideoConfig::parse(VideoCodec::H264, Bytes::copy_from_slice(&AVCC_720P[..n]))
                    .is_err()
            );
        }
        assert!(VideoConfig::parse(VideoCodec::H265, Bytes::from_static(&[1; 10])).is_err());
        assert!(AudioConfig::parse(Bytes::from_static(&[0x12])).is_err());
    }
}
