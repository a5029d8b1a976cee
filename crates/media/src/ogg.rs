//! Ogg Opus (RFC 3533 pages, RFC 7845 headers) read from bytes split anywhere: how an
//! Opus encoder's output (ffmpeg's `-f opus`) comes back as packets. By hand: the page
//! format is a dozen lines, and the Ogg crates either own the reader (`Read`, not pushed
//! bytes) or pull in a codec.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

const CAPTURE: &[u8; 4] = b"OggS";
const HEADER_LEN: usize = 27;
/// The largest packet accepted: an Opus packet is at most 120 ms of up to 510 kbit/s.
const MAX_PACKET: usize = 64 * 1024;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum OggError {
    #[error("not an Ogg page (lost sync)")]
    LostSync,
    #[error("Ogg packet over {MAX_PACKET} bytes")]
    PacketTooLarge,
    #[error("not an Opus stream: {0}")]
    NotOpus(&'static str),
}

/// What an Ogg Opus stream carries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpusEvent {
    /// The identification header (`OpusHead`).
    Head { channels: u8, pre_skip: u16 },
    /// One Opus packet.
    Packet(Bytes),
}

/// Pages → packets → Opus headers and packets.
#[derive(Debug, Default)]
pub struct OggOpusReader {
    buffer: BytesMut,
    /// A packet continued on the next page.
    partial: BytesMut,
    /// Packets seen: the first is `OpusHead`, the second `OpusTags`.
    packets: u64,
}

impl OggOpusReader {
    /// What `bytes` completes. An error is final (the stream is broken).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<OpusEvent>, OggError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while self.buffer.len() >= HEADER_LEN {
            if &self.buffer[..4] != CAPTURE {
                return Err(OggError::LostSync);
            }
            let segments = usize::from(self.buffer[26]);
            if self.buffer.len() < HEADER_LEN + segments {
                break;
            }
            let lacing = &self.buffer[HEADER_LEN..HEADER_LEN + segments];
            let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            if self.buffer.len() < HEADER_LEN + segments + body_len {
                break;
            }
            let continued = self.buffer[5] & 0x01 != 0;
            let lacing = lacing.to_vec();
            self.buffer.advance(HEADER_LEN + segments);
            let mut body = self.buffer.split_to(body_len).freeze();
            if !continued {
                // A packet left open by a lost page is not completed by this one.
                self.partial.clear();
            }
            for value in lacing {
                let piece = body.split_to(usize::from(value));
                if self.partial.len() + piece.len() > MAX_PACKET {
                    return Err(OggError::PacketTooLarge);
                }
                self.partial.extend_from_slice(&piece);
                if value < 255 {
                    let packet = self.partial.split().freeze();
                    if let Some(event) = self.packet(packet)? {
                        events.push(event);
                    }
                }
            }
        }
        Ok(events)
    }

    fn packet(&mut self, packet: Bytes) -> Result<Option<OpusEvent>, OggError> {
        self.packets += 1;
        match self.packets {
            1 => {
                // RFC 7845 5.1: magic, version, channels, pre-skip (LE), ...
                if packet.len() < 19 || &packet[..8] != b"OpusHead" {
                    return Err(OggError::NotOpus("the first packet is not OpusHead"));
                }
                Ok(Some(OpusEvent::Head {
                    channels: packet[9],
                    pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
                }))
            }
            2 => Ok(None), // OpusTags
            _ => Ok(Some(OpusEvent::Packet(packet))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(continued: bool, packets: &[&[u8]], open_last: bool) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let mut left = p.len();
            while left >= 255 {
                lacing.push(255);
                left -= 255;
            }
            if !(open_last && i == packets.len() - 1) {
                lacing.push(left as u8);
            } else {
                assert_eq!(left, 0, "an open packet fills its segments");
            }
            body.extend_from_slice(p);
        }
        let mut page = b"OggS".to_vec();
        page.extend_from_slice(&[0, u8::from(continued)]);
        page.extend_from_slice(&[0; 8 + 4 + 4 + 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        page.extend_from_slice(&body);
        page
    }

    fn head(channels: u8, pre_skip: u16) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, channels]);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&[0x80, 0xbb, 0, 0, 0, 0, 0]);
        head
    }

    #[test]
    fn headers_then_packets_whatever_the_split_and_across_pages() {
        let big = vec![7u8; 510];
        let mut stream = page(false, &[&head(2, 312)], false);
        stream.extend(page(false, &[b"OpusTags\0\0\0\0\0\0\0\0"], false));
        stream.extend(page(false, &[b"\xfc\x01", &big[..255]], true));
        stream.extend(page(true, &[&big[255..], b"\xfc\x02"], false));
        for chunk in [1, 3, 64, stream.len()] {
            let mut reader = OggOpusReader::default();
            let mut events = Vec::new();
            for piece in stream.chunks(chunk) {
                events.extend(reader.push(piece).unwrap());
            }
            assert_eq!(
                events,
                vec![
                    OpusEvent::Head { channels: 2, pre_skip: 312 },
                    OpusEvent::Packet(Bytes::from_static(b"\xfc\x01")),
                    OpusEvent::Packet(Bytes::from(big.clone())),
                    OpusEvent::Packet(Bytes::from_static(b"\xfc\x02")),
                ],
                "read in pieces of {chunk}"
            );
        }
    }

    #[test]
    fn garbage_and_other_codecs_are_refused() {
        assert_eq!(
            OggOpusReader::default().push(&[0u8; 64]),
            Err(OggError::LostSync)
        );
        let vorbis = page(false, &[b"\x01vorbis\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"], false);
        assert!(matches!(
            OggOpusReader::default().push(&vorbis),
            Err(OggError::NotOpus(_))
        ));
    }
}
