//! Progressive MP4 from CMAF fragments, without re-encoding: a clip of a recording is
//! its init segment's tracks with the samples of some of its fragments (`moof`+`mdat`
//! pairs) copied into one `mdat`, described by one `moov` written before it (faststart:
//! a player can start before the whole file is in).
//!
//! The cut is at keyframes: the clip starts at the last sync sample of the reference
//! track (video if there is one) at or before `start`, and ends where the GOP covering
//! `end` ends (the first sync sample at or after `end`, else the last sample given).
//! The other tracks keep the samples that start within that span. Times are seconds
//! from the first sample of the reference track in the first fragment given.
//!
//! Pure over bytes; every length and offset read from the input is checked (fuzzed by
//! the `progressive_clip` target).

use mp4_atom::{
    Co64, Ctts, CttsEntry, Decode, Edts, Elst, ElstEntry, Encode, Ftyp, Moof, Moov, Stco, Stsc,
    StscEntry, Stss, Stsz, StszSamples, Stts, SttsEntry, Trak,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClipError {
    #[error("invalid fragmented MP4: {0}")]
    Invalid(&'static str),
    #[error("invalid fragmented MP4: {0}")]
    Mp4(#[from] mp4_atom::Error),
    #[error("no samples in the requested span")]
    Empty,
    #[error("the reference track has no keyframe")]
    NoKeyframe,
}

/// Where to cut, in seconds from the first sample of the reference track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    pub start_secs: f64,
    pub end_secs: f64,
}

/// A progressive MP4 and where it was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub bytes: Vec<u8>,
    /// Where the clip starts (the keyframe), in seconds as [`Cut`] counts.
    pub start_secs: f64,
    /// The reference track's duration.
    pub duration_secs: f64,
}

/// A sync sample (`sample_is_non_sync_sample` clear).
const NON_SYNC: u32 = 0x0001_0000;

/// One box in a byte slice: its type and where it and its body lie.
struct BoxAt {
    kind: [u8; 4],
    start: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    body: usize,
    end: usize,
}

/// The top-level boxes of `bytes`, each checked to lie within it.
fn boxes(bytes: &[u8]) -> Result<Vec<BoxAt>, ClipError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 8)
            .ok_or(ClipError::Invalid("truncated box header"))?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (size, body) = match size32 {
            0 => ((bytes.len() - at) as u64, at + 8),
            1 => {
                let large = bytes
                    .get(at + 8..at + 16)
                    .ok_or(ClipError::Invalid("truncated box header"))?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(large);
                (u64::from_be_bytes(raw), at + 16)
            }
            n => (u64::from(n), at + 8),
        };
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&end| end >= body && end <= bytes.len())
            .ok_or(ClipError::Invalid("box size out of range"))?;
        out.push(BoxAt {
            kind,
            start: at,
            body,
            end,
        });
        at = end;
    }
    Ok(out)
}

/// A track of the init segment.
struct Track {
    trak: Trak,
    timescale: u32,
    defaults: mp4_atom::Trex,
    is_video: bool,
}

/// A sample found in a fragment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    track: usize,
    dts: u64,
    duration: u32,
    cts: i64,
    sync: bool,
    fragment: usize,
    offset: usize,
    size: u32,
}

fn tracks(init: &[u8]) -> Result<Vec<Track>, ClipError> {
    let found = boxes(init)?;
    let moov = found
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or(ClipError::Invalid("no moov in the init segment"))?;
    let moov = Moov::decode(&mut &init[moov.start..moov.end])?;
    let trex = moov
        .mvex
        .as_ref()
        .map(|m| m.trex.clone())
        .unwrap_or_default();
    let tracks: Vec<Track> = moov
        .trak
        .into_iter()
        .map(|trak| {
            let id = trak.tkhd.track_id;
            Track {
                timescale: trak.mdia.mdhd.timescale,
                defaults: trex
                    .iter()
                    .find(|t| t.track_id == id)
                    .cloned()
                    .unwrap_or_default(),
                is_video: trak.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"),
                trak,
            }
        })
        .collect();
    if tracks.is_empty() || tracks.iter().any(|t| t.timescale == 0) {
        return Err(ClipError::Invalid("no usable track in the init segment"));
    }
    Ok(tracks)
}

/// Every sample of every fragment, in file order.
fn samples(tracks: &[Track], fragments: &[&[u8]]) -> Result<Vec<Sample>, ClipError> {
    let mut out = Vec::new();
    for (fragment, bytes) in fragments.iter().enumerate() {
        for moof_box in boxes(bytes)?.iter().filter(|b| &b.kind == b"moof") {
            let moof = Moof::decode(&mut &bytes[moof_box.start..moof_box.end])?;
            for traf in &moof.traf {
                let track = tracks
                    .iter()
                    .position(|t| t.trak.tkhd.track_id == traf.tfhd.track_id)
                    .ok_or(ClipError::Invalid("fragment of a track the init lacks"))?;
                let defaults = &tracks[track].defaults;
                let tfhd = &traf.tfhd;
                let base = match tfhd.base_data_offset {
                    Some(offset) => usize::try_from(offset)
                        .map_err(|_| ClipError::Invalid("base data offset out of range"))?,
                    None => moof_box.start,
                };
                let mut dts = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                for trun in &traf.trun {
                    let mut offset = base
                        .checked_add_signed(trun.data_offset.unwrap_or(0) as isize)
                        .ok_or(ClipError::Invalid("data offset out of range"))?;
                    for entry in trun.samples.iter() {
                        let duration = entry
                            .duration
                            .or(tfhd.default_sample_duration)
                            .unwrap_or(defaults.default_sample_duration);
                        let size = entry
                            .size
                            .or(tfhd.default_sample_size)
                            .unwrap_or(defaults.default_sample_size);
                        let flags = entry
                            .flags
                            .or(tfhd.default_sample_flags)
                            .unwrap_or(defaults.default_sample_flags);
                        let end = offset
                            .checked_add(size as usize)
                            .filter(|&end| size > 0 && end <= bytes.len())
                            .ok_or(ClipError::Invalid("sample outside its fragment"))?;
                        out.push(Sample {
                            track,
                            dts,
                            duration,
                            cts: entry.cts.unwrap_or(0),
                            sync: flags & NON_SYNC == 0,
                            fragment,
                            offset,
                            size,
                        });
                        dts = dts.saturating_add(u64::from(duration));
                        offset = end;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Cuts `fragments` (each a CMAF segment or chunk: `moof`+`mdat` pairs, optionally with
/// `styp`) decoded with `init` at keyframes around `cut`, into a progressive MP4.
pub fn build(init: &[u8], fragments: &[&[u8]], cut: Cut) -> Result<Clip, ClipError> {
    if !(cut.start_secs.is_finite() && cut.end_secs.is_finite() && cut.start_secs < cut.end_secs) {
        return Err(ClipError::Empty);
    }
    let tracks = tracks(init)?;
    let all = samples(&tracks, fragments)?;
    let reference = tracks.iter().position(|t| t.is_video).unwrap_or(0);
    let ref_scale = f64::from(tracks[reference].timescale);
    let ref_samples: Vec<&Sample> = all.iter().filter(|s| s.track == reference).collect();
    let origin = ref_samples.first().ok_or(ClipError::Empty)?.dts;
    let secs = |s: &Sample| (s.dts as f64 - origin as f64) / ref_scale;
    // A hundredth of a millisecond of slack for times that went through decimal text.
    const SLACK: f64 = 1e-5;
    let first = ref_samples
        .iter()
        .rev()
        .find(|s| s.sync && secs(s) <= cut.start_secs + SLACK)
        .or_else(|| ref_samples.iter().find(|s| s.sync))
        .ok_or(ClipError::NoKeyframe)?;
    let start_dts = first.dts;
    let end_dts = ref_samples
        .iter()
        .find(|s| s.sync && s.dts > start_dts && secs(s) >= cut.end_secs - SLACK)
        .map(|s| s.dts);
    let start_secs = secs(first);
    let end_secs = match end_dts {
        Some(dts) => (dts as f64 - origin as f64) / ref_scale,
        None => f64::INFINITY,
    };
    let keep = |s: &Sample| {
        if s.track == reference {
            s.dts >= start_dts && end_dts.is_none_or(|end| s.dts < end)
        } else {
            let t =
                (s.dts as f64 / f64::from(tracks[s.track].timescale)) - origin as f64 / ref_scale;
            t >= start_secs - SLACK && t < end_secs - SLACK
        }
    };
    let kept: Vec<Sample> = all.into_iter().filter(keep).collect();
    if kept.is_empty() {
        return Err(ClipError::Empty);
    }
    let bytes = write(&tracks, fragments, &kept)?;
    let duration: u64 = kept
        .iter()
        .filter(|s| s.track == reference)
        .map(|s| u64::from(s.duration))
        .sum();
    Ok(Clip {
        bytes,
        start_secs,
        duration_secs: duration as f64 / ref_scale,
    })
}

/// A track of the output: its samples and its chunks (first sample, count), in the
/// order they are written.
#[derive(Default)]
struct Out {
    samples: Vec<Sample>,
    chunks: Vec<(usize, u32)>,
    chunk_offsets: Vec<u64>,
}

fn write(tracks: &[Track], fragments: &[&[u8]], kept: &[Sample]) -> Result<Vec<u8>, ClipError> {
    let mut outs: Vec<Out> = tracks.iter().map(|_| Out::default()).collect();
    // A chunk is a run of consecutive samples of one track (as a trun wrote them).
    let mut data_len = 0u64;
    let mut previous: Option<(usize, usize)> = None;
    for sample in kept {
        let out = &mut outs[sample.track];
        let run = (sample.track, sample.fragment);
        if previous != Some(run) || out.chunks.is_empty() {
            out.chunks.push((out.samples.len(), 0));
            out.chunk_offsets.push(data_len);
        }
        if let Some(chunk) = out.chunks.last_mut() {
            chunk.1 += 1;
        }
        out.samples.push(*sample);
        data_len += u64::from(sample.size);
        previous = Some(run);
    }
    let ftyp = {
        let mut buf = Vec::new();
        Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: vec![
                b"isom".into(),
                b"iso2".into(),
                b"avc1".into(),
                b"mp41".into(),
            ],
        }
        .encode(&mut buf)?;
        buf
    };
    let large = data_len + 16 > u64::from(u32::MAX);
    let mdat_header = if large { 16 } else { 8 };
    // The moov's size does not depend on the offsets it holds (stco or co64 is chosen
    // first), so it is encoded once to learn where the mdat starts, then for real.
    let sized = moov(tracks, &outs, 0, large)?;
    let data_start = (ftyp.len() + sized.len() + mdat_header) as u64;
    let moov_bytes = moov(tracks, &outs, data_start, large)?;
    let capacity =
        usize::try_from(data_start + data_len).map_err(|_| ClipError::Invalid("clip too large"))?;
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(&ftyp);
    bytes.extend_from_slice(&moov_bytes);
    if large {
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"mdat");
        bytes.extend_from_slice(&(data_len + 16).to_be_bytes());
    } else {
        bytes.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
        bytes.extend_from_slice(b"mdat");
    }
    for sample in kept {
        let from = fragments[sample.fragment];
        bytes.extend_from_slice(&from[sample.offset..sample.offset + sample.size as usize]);
    }
    Ok(bytes)
}

/// Run-length entries: consecutive equal values counted.
fn runs<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Vec<(u32, T)> {
    let mut out: Vec<(u32, T)> = Vec::new();
    for value in values {
        match out.last_mut() {
            Some((count, last)) if *last == value => *count += 1,
            _ => out.push((1, value)),
        }
    }
    out
}

const MOVIE_TIMESCALE: u32 = 1000;

fn moov(
    tracks: &[Track],
    outs: &[Out],
    data_start: u64,
    large: bool,
) -> Result<Vec<u8>, ClipError> {
    let mut traks = Vec::new();
    let mut movie_duration = 0u64;
    for (track, out) in tracks.iter().zip(outs) {
        if out.samples.is_empty() {
            continue;
        }
        let duration: u64 = out.samples.iter().map(|s| u64::from(s.duration)).sum();
        let movie =
            duration.saturating_mul(u64::from(MOVIE_TIMESCALE)) / u64::from(track.timescale);
        movie_duration = movie_duration.max(movie);
        let mut trak = track.trak.clone();
        trak.tkhd.duration = movie;
        trak.mdia.mdhd.duration = duration;
        let stbl = &mut trak.mdia.minf.stbl;
        stbl.stts = Stts {
            entries: runs(out.samples.iter().map(|s| s.duration))
                .into_iter()
                .map(|(sample_count, sample_delta)| SttsEntry {
                    sample_count,
                    sample_delta,
                })
                .collect(),
        };
        stbl.ctts = out.samples.iter().any(|s| s.cts != 0).then(|| Ctts {
            entries: runs(out.samples.iter().map(|s| s.cts))
                .into_iter()
                .map(|(sample_count, sample_offset)| CttsEntry {
                    sample_count,
                    sample_offset,
                })
                .collect(),
        });
        stbl.stss = out.samples.iter().any(|s| !s.sync).then(|| Stss {
            entries: out
                .samples
                .iter()
                .enumerate()
                .filter(|(_, s)| s.sync)
                .map(|(i, _)| i as u32 + 1)
                .collect(),
        });
        let mut stsc = Vec::new();
        let mut last_count = None;
        for (index, (_, count)) in out.chunks.iter().enumerate() {
            if last_count != Some(*count) {
                stsc.push(StscEntry {
                    first_chunk: index as u32 + 1,
                    samples_per_chunk: *count,
                    sample_description_index: 1,
                });
                last_count = Some(*count);
            }
        }
        stbl.stsc = Stsc { entries: stsc };
        stbl.stsz = Stsz {
            samples: StszSamples::Different {
                sizes: out.samples.iter().map(|s| s.size).collect(),
            },
        };
        let offsets = out.chunk_offsets.iter().map(|o| o + data_start);
        if large {
            stbl.stco = None;
            stbl.co64 = Some(Co64 {
                entries: offsets.collect(),
            });
        } else {
            stbl.co64 = None;
            stbl.stco = Some(Stco {
                entries: offsets.map(|o| o as u32).collect(),
            });
        }
        // Presentation starts at the first frame shown, not at its composition offset.
        let first_cts = out.samples.first().map_or(0, |s| s.cts);
        trak.edts = (first_cts > 0).then(|| Edts {
            elst: Some(Elst {
                entries: vec![ElstEntry {
                    segment_duration: movie,
                    media_time: Some(first_cts as u64),
                    ..Default::default()
                }],
            }),
        });
        traks.push(trak);
    }
    let next_track_id = traks.iter().map(|t| t.tkhd.track_id).max().unwrap_or(0) + 1;
    let moov = Moov {
        mvhd: mp4_atom::Mvhd {
            timescale: MOVIE_TIMESCALE,
            duration: movie_duration,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id,
            ..Default::default()
        },
        trak: traks,
        ..Default::default()
    };
    let mut buf = Vec::new();
    moov.encode(&mut buf)?;
    Ok(buf)
}

/// The segments of a recording to read for a clip of `[start, end)` seconds from its
/// start, given each segment's duration in order: the index of the first (the one
/// holding `start`), one past the last (the one holding `end`), and the first one's
/// start, in seconds. `None` if `start` is at or past the end of the segments.
pub fn segments_for(
    durations: &[f64],
    start_secs: f64,
    end_secs: f64,
) -> Option<(usize, usize, f64)> {
    let mut offset = 0.0;
    let mut first = None;
    for (index, duration) in durations.iter().enumerate() {
        let next = offset + duration;
        if first.is_none() && start_secs < next {
            first = Some((index, offset));
        }
        if let Some((from, at)) = first {
            if end_secs <= next {
                return Some((from, index + 1, at));
            }
        }
        offset = next;
    }
    first.map(|(from, at)| (from, durations.len(), at))
}

#[cfg(test)]
mod tests;
