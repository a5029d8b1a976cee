//! A capture of one publisher's RTP packets, both tracks, as the fixtures
//! (`tests/fixtures/h264_opus.rtp`, written by `tests/fixtures/capture_rtp.py` from
//! ffmpeg's RTP output) and the fuzz targets hold them: records of
//! `flags (bit 0 audio, bit 1 marker) | sequence u16 | timestamp u32 | arrival step in
//! ms u8 | payload length u16 | payload`, big-endian. Reading stops at a record that does
//! not fit.

use std::time::Duration;

use super::RtpPacket;

const HEADER: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureRecord<'a> {
    pub audio: bool,
    /// Since the first record.
    pub arrival: Duration,
    pub packet: RtpPacket<'a>,
}

/// The records of a capture, in order.
pub fn records(mut input: &[u8]) -> impl Iterator<Item = CaptureRecord<'_>> {
    let mut arrival = Duration::ZERO;
    std::iter::from_fn(move || {
        let h = input.get(..HEADER)?;
        let len = usize::from(u16::from_be_bytes([h[8], h[9]]));
        let payload = input.get(HEADER..HEADER + len)?;
        arrival += Duration::from_millis(u64::from(h[7]));
        let record = CaptureRecord {
            audio: h[0] & 1 != 0,
            arrival,
            packet: RtpPacket {
                sequence: u16::from_be_bytes([h[1], h[2]]),
                timestamp: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
                marker: h[0] & 2 != 0,
                payload,
            },
        };
        input = &input[HEADER + len..];
        Some(record)
    })
}

/// Appends one record (for tests that write captures).
pub fn write_record(out: &mut Vec<u8>, audio: bool, arrival_step_ms: u8, packet: &RtpPacket<'_>) {
    out.push(u8::from(audio) | (u8::from(packet.marker) << 1));
    out.extend_from_slice(&packet.sequence.to_be_bytes());
    out.extend_from_slice(&packet.timestamp.to_be_bytes());
    out.push(arrival_step_ms);
    let len = packet.payload.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&packet.payload[..len]);
}
