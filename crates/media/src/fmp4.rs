//! CMAF fragmented MP4: one init segment per track set, one `moof`+`mdat` per part (a
//! CMAF chunk); a segment is its parts, the first preceded by `styp`.

use bytes::Bytes;
use mp4_atom::{
    Audio, Avc1, Avcc, Dinf, Dops, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mdia, Mfhd,
    Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Styp, Tfdt, Tfhd, Tkhd, Traf,
    Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};
use thiserror::Error;

use crate::codec::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};
use crate::segmenter::{MediaPart, Sample, Tracks, VIDEO_TIMESCALE};

const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

#[derive(Debug, Error)]
pub enum Fmp4Error {
    #[error("codec configuration rejected by the MP4 writer: {0}")]
    Config(mp4_atom::Error),
    #[error("MP4 encoding failed: {0}")]
    Encode(#[from] mp4_atom::Error),
}

fn decode_record<T: mp4_atom::Atom>(record: &Bytes) -> Result<T, Fmp4Error> {
    T::decode_body(&mut record.as_ref()).map_err(Fmp4Error::Config)
}

pub fn init_segment(tracks: &Tracks) -> Result<Bytes, Fmp4Error> {
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = &tracks.video {
        trak.push(video_trak(video)?);
        trex.push(trex_for(VIDEO_TRACK));
    }
    if let Some(audio) = &tracks.audio {
        trak.push(audio_trak(audio));
        trex.push(trex_for(AUDIO_TRACK));
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::new();
    Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    }
    .encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out.into())
}

fn trex_for(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        default_sample_duration: 0,
        default_sample_size: 0,
        default_sample_flags: 0,
    }
}

fn base_trak(track_id: u32, timescale: u32, handler: &[u8; 4], name: &str, minf: Minf) -> Trak {
    Trak {
        tkhd: Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf,
        },
        ..Default::default()
    }
}

fn stbl(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn dinf() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn video_trak(video: &VideoConfig) -> Result<Trak, Fmp4Error> {
    let visual = Visual {
        data_reference_index: 1,
        width: video.width,
        height: video.height,
        ..Default::default()
    };
    let codec: mp4_atom::Codec = match video.codec {
        VideoCodec::H264 => Avc1 {
            visual,
            avcc: decode_record::<Avcc>(&video.record)?,
            ..Default::default()
        }
        .into(),
        VideoCodec::H265 => Hvc1 {
            visual,
            hvcc: decode_record::<Hvcc>(&video.record)?,
            ..Default::default()
        }
        .into(),
    };
    let mut trak = base_trak(
        VIDEO_TRACK,
        VIDEO_TIMESCALE,
        b"vide",
        "streamcdn video",
        Minf {
            vmhd: Some(Vmhd::default()),
            dinf: dinf(),
            stbl: stbl(codec),
            ..Default::default()
        },
    );
    trak.tkhd.width = video.width.into();
    trak.tkhd.height = video.height.into();
    Ok(trak)
}

fn audio_trak(audio: &AudioConfig) -> Trak {
    let sample_entry = Audio {
        data_reference_index: 1,
        channel_count: u16::from(audio.channels.max(1)),
        sample_size: 16,
        // The sample entry's 16.16 field cannot hold rates above 65535; mdhd's
        // timescale carries the real rate.
        sample_rate: (audio.sample_rate.min(u32::from(u16::MAX)) as u16).into(),
    };
    let codec: mp4_atom::Codec = match &audio.codec {
        AudioCodec::Aac {
            asc,
            object_type,
            sample_rate_index,
        } => Mp4a {
            audio: sample_entry,
            esds: Esds {
                es_desc: mp4_atom::esds::EsDescriptor {
                    es_id: AUDIO_TRACK as u16,
                    dec_config: mp4_atom::esds::DecoderConfig {
                        object_type_indication: 0x40,
                        stream_type: 5,
                        dec_specific: Some(mp4_atom::esds::DecoderSpecific {
                            profile: *object_type,
                            freq_index: *sample_rate_index,
                            chan_conf: audio.channels,
                            raw: asc.to_vec(),
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            btrt: None,
            taic: None,
        }
        .into(),
        // Encapsulation of Opus in ISOBMFF (opus-codec.org, 4.3): an `Opus` sample entry
        // at 48 kHz with a `dOps` box, channel mapping family 0 (mono or stereo).
        AudioCodec::Opus { pre_skip } => Opus {
            audio: sample_entry,
            dops: Dops {
                output_channel_count: audio.channels.clamp(1, 2),
                pre_skip: *pre_skip,
                input_sample_rate: audio.sample_rate,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
    };
    let mut trak = base_trak(
        AUDIO_TRACK,
        audio.sample_rate,
        b"soun",
        "streamcdn audio",
        Minf {
            smhd: Some(Smhd::default()),
            dinf: dinf(),
            stbl: stbl(codec),
            ..Default::default()
        },
    );
    trak.tkhd.volume = 1.into();
    trak.tkhd.alternate_group = 1;
    trak
}

fn traf(track_id: u32, samples: &[Sample]) -> Traf {
    let entries = samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            size: Some(s.data.len() as u32),
            flags: Some(if s.keyframe {
                SYNC_SAMPLE
            } else {
                NON_SYNC_SAMPLE
            }),
            cts: Some(i64::from(s.composition_offset)),
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: samples.first().map_or(0, |s| s.dts),
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Default::default()
    }
}

/// The fragment number of a part: increasing through the stream (and across publishers
/// of one recording, whose segment numbers continue), as `mfhd` requires.
pub fn fragment_sequence(part: &MediaPart) -> u32 {
    // 1024 parts per segment would take parts of 2 ms in a 2 s segment.
    (part.segment.wrapping_mul(1024) + u64::from(part.index.min(1023)) + 1) as u32
}

/// `moof` + `mdat` for one part, preceded by `styp` when it starts a segment.
pub fn part(part: &MediaPart) -> Result<Bytes, Fmp4Error> {
    let sequence = fragment_sequence(part);
    let segment = part;
    let tracks = [(VIDEO_TRACK, &segment.video), (AUDIO_TRACK, &segment.audio)];
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: tracks
            .iter()
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(id, samples)| traf(*id, samples))
            .collect(),
    };
    // Data offsets are relative to the moof start, so its size must be known first;
    // filling them in does not change that size.
    let mut sized = Vec::new();
    moof.encode(&mut sized)?;
    let mut offset = sized.len() as i32 + 8;
    for traf in &mut moof.traf {
        let samples = if traf.tfhd.track_id == VIDEO_TRACK {
            &segment.video
        } else {
            &segment.audio
        };
        traf.trun[0].data_offset = Some(offset);
        offset += samples.iter().map(|s| s.data.len() as i32).sum::<i32>();
    }
    let mut out = Vec::with_capacity(segment.bytes + sized.len() + 64);
    if segment.index == 0 {
        Styp {
            major_brand: b"msdh".into(),
            minor_version: 0,
            compatible_brands: vec![b"msdh".into(), b"msix".into()],
        }
        .encode(&mut out)?;
    }
    moof.encode(&mut out)?;
    // The mdat is written here rather than through mp4_atom::Mdat, whose encoder copies
    // its body byte by byte (it was most of the ingest's CPU time).
    let mdat_size = u32::try_from(8 + segment.bytes).map_err(|_| {
        Fmp4Error::Encode(mp4_atom::Error::TooLarge(mp4_atom::FourCC::new(b"mdat")))
    })?;
    out.extend_from_slice(&mdat_size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (_, samples) in tracks {
        for s in samples {
            out.extend_from_slice(&s.data);
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AudioConfig, OPUS_DEFAULT_PRE_SKIP};

    #[test]
    fn opus_is_an_opus_sample_entry_with_dops_at_48khz() {
        let init = init_segment(&Tracks {
            video: None,
            audio: Some(AudioConfig::opus(2, OPUS_DEFAULT_PRE_SKIP)),
        })
        .unwrap();
        let moov = {
            let mut rest = &init[..];
            loop {
                let any = <mp4_atom::Any as mp4_atom::Decode>::decode(&mut rest).unwrap();
                if let mp4_atom::Any::Moov(moov) = any {
                    break moov;
                }
            }
        };
        let mdia = &moov.trak[0].mdia;
        assert_eq!(mdia.mdhd.timescale, 48000);
        match &mdia.minf.stbl.stsd.codecs[0] {
            mp4_atom::Codec::Opus(opus) => {
                assert_eq!(opus.audio.channel_count, 2);
                assert_eq!(opus.dops.pre_skip, 312);
                assert_eq!(opus.dops.input_sample_rate, 48000);
                assert_eq!(opus.dops.output_channel_count, 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
