//! The RTMP chunk stream: messages are cut into chunks of at most the peer's chunk size,
//! interleaved across chunk stream ids, with headers compressed against the previous
//! message on the same chunk stream.

use bytes::{Buf, Bytes, BytesMut};

use super::error::RtmpError;

/// A complete RTMP message, reassembled from its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Largest chunk size a peer may announce. The protocol allows 2^31-1; nothing real
/// uses more than 64 KiB, and a bigger value is a sign of a broken or hostile peer.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// At most this many chunk streams may be open at once on one connection.
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Debug, Default)]
struct ChunkStreamState {
    csid: u32,
    timestamp: u32,
    timestamp_delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended_timestamp: bool,
    /// The chunk payloads received so far of the message in progress, as slices of the
    /// input (no copy until the message is whole, and memory in proportion to what the
    /// peer sent, not to the length it announced).
    pieces: Vec<Bytes>,
    /// Bytes in `pieces`.
    received: usize,
    in_progress: bool,
}

impl ChunkStreamState {
    /// The whole payload in one exactly sized buffer, copied once.
    fn take_payload(&mut self) -> Bytes {
        let payload = match self.pieces.as_slice() {
            [] => Bytes::new(),
            // A copy even for one piece: a slice would pin the whole input buffer it
            // was read into for as long as the frame is kept.
            [only] => Bytes::copy_from_slice(only),
            pieces => {
                let mut whole = BytesMut::with_capacity(self.received);
                for piece in pieces {
                    whole.extend_from_slice(piece);
                }
                whole.freeze()
            }
        };
        self.pieces.clear();
        self.received = 0;
        payload
    }
}

/// Reassembles messages from chunk bytes. Call [`ChunkDecoder::decode`] until it returns
/// `Ok(None)` (it needs more bytes); an `Err` means the stream is invalid and the
/// connection must be closed.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    max_message_len: u32,
    /// At most [`MAX_CHUNK_STREAMS`], and a handful in practice: a linear search beats
    /// hashing the id on every chunk.
    streams: Vec<ChunkStreamState>,
}

impl ChunkDecoder {
    pub fn new(max_message_len: u32) -> Self {
        Self {
            chunk_size: 128,
            max_message_len,
            streams: Vec::new(),
        }
    }

    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.chunk_size = size;
        Ok(())
    }

    pub fn abort(&mut self, csid: u32) {
        if let Some(state) = self.streams.iter_mut().find(|s| s.csid == csid) {
            state.pieces.clear();
            state.received = 0;
            state.in_progress = false;
        }
    }

    /// Consumes at most one chunk from `buf`. Returns a message when that chunk completes
    /// one; leaves `buf` untouched when it does not hold a whole chunk yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, RtmpError> {
        loop {
            let Some(consumed_and_message) = self.decode_one_chunk(buf)? else {
                return Ok(None);
            };
            if let Some(message) = consumed_and_message {
                return Ok(Some(message));
            }
        }
    }

    /// `Ok(None)`: not enough bytes. `Ok(Some(None))`: a chunk was consumed, the message
    /// is not complete yet.
    fn decode_one_chunk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Option<Message>>, RtmpError> {
        let data = &buf[..];
        let Some(&first) = data.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3f {
            0 => match data.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match (data.get(1), data.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        if data.len() < pos + header_len {
            return Ok(None);
        }
        let header = &data[pos..pos + header_len];
        pos += header_len;

        let index = self.streams.iter().position(|s| s.csid == csid);
        if index.is_none() {
            if fmt != 0 {
                return Err(RtmpError::Protocol(format!(
                    "chunk of format {fmt} on chunk stream {csid} with no prior header"
                )));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(RtmpError::Protocol("too many chunk streams".into()));
            }
        }
        let prior = index.map(|i| &self.streams[i]);
        let in_progress = prior.is_some_and(|s| s.in_progress);
        let prior_extended = prior.is_some_and(|s| s.extended_timestamp);

        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let timestamp_field = (fmt < 3).then(|| u24(header));
        let extended = match timestamp_field {
            Some(t) => t == 0xFF_FFFF,
            None => prior_extended,
        };
        let mut extended_value = None;
        if extended {
            if data.len() < pos + 4 {
                return Ok(None);
            }
            extended_value = Some(u32::from_be_bytes([
                data[pos],
                data[pos + 1],
                data[pos + 2],
                data[pos + 3],
            ]));
            pos += 4;
        }

        // What the message will look like once this header is applied; only committed
        // once the whole chunk is available.
        let mut next = match prior {
            Some(s) => (
                s.timestamp,
                s.timestamp_delta,
                s.length,
                s.type_id,
                s.stream_id,
            ),
            None => (0, 0, 0, 0, 0),
        };
        let ts_value = |field: u32| extended_value.unwrap_or(field);
        match fmt {
            0 => {
                next.0 = ts_value(u24(header));
                next.1 = 0;
                next.2 = u24(&header[3..]);
                next.3 = header[6];
                next.4 = u32::from_le_bytes([header[7], header[8], header[9], header[10]]);
            }
            1 | 2 => {
                next.1 = ts_value(u24(header));
                if fmt == 1 {
                    next.2 = u24(&header[3..]);
                    next.3 = header[6];
                }
                next.0 = next.0.wrapping_add(next.1);
            }
            _ => {
                if !in_progress {
                    next.0 = next.0.wrapping_add(next.1);
                }
            }
        }
        if fmt < 3 && in_progress {
            return Err(RtmpError::Protocol(format!(
                "new message header on chunk stream {csid} before the previous message completed"
            )));
        }
        let (timestamp, delta, length, type_id, stream_id) = next;
        if length > self.max_message_len {
            return Err(RtmpError::MessageTooLarge {
                length,
                limit: self.max_message_len,
            });
        }
        let already = prior.map_or(0, |s| if in_progress { s.received } else { 0 });
        let remaining = length as usize - already;
        let payload_len = remaining.min(self.chunk_size as usize);
        if data.len() < pos + payload_len {
            return Ok(None);
        }

        buf.advance(pos);
        let piece = buf.split_to(payload_len).freeze();
        let index = index.unwrap_or_else(|| {
            self.streams.push(ChunkStreamState {
                csid,
                ..ChunkStreamState::default()
            });
            self.streams.len() - 1
        });
        let state = &mut self.streams[index];
        state.timestamp = timestamp;
        state.timestamp_delta = delta;
        state.length = length;
        state.type_id = type_id;
        state.stream_id = stream_id;
        state.extended_timestamp = extended;
        if !in_progress {
            state.pieces.clear();
            state.received = 0;
        }
        if !piece.is_empty() {
            state.received += piece.len();
            state.pieces.push(piece);
        }
        if state.received < length as usize {
            state.in_progress = true;
            return Ok(Some(None));
        }
        state.in_progress = false;
        let payload = state.take_payload();
        Ok(Some(Some(Message {
            type_id,
            stream_id,
            timestamp,
            payload,
        })))
    }
}

/// Writes `message` as chunks of `chunk_size` on chunk stream `csid`: a full header
/// first, then continuation headers.
pub fn encode(csid: u8, message: &Message, chunk_size: u32, out: &mut Vec<u8>) {
    debug_assert!((2..64).contains(&csid));
    let extended = message.timestamp >= 0xFF_FFFF;
    let ts_field = if extended {
        0xFF_FFFF
    } else {
        message.timestamp
    };
    out.push(csid);
    out.extend_from_slice(&ts_field.to_be_bytes()[1..]);
    out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes()[1..]);
    out.push(message.type_id);
    out.extend_from_slice(&message.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&message.timestamp.to_be_bytes());
    }
    let mut chunks = message.payload.chunks(chunk_size.max(1) as usize);
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for chunk in chunks {
        out.push(0xC0 | csid);
        if extended {
            out.extend_from_slice(&message.timestamp.to_be_bytes());
        }
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, timestamp: u32) -> Message {
        Message {
            type_id: 9,
            stream_id: 1,
            timestamp,
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn reassembles_across_chunks_and_byte_by_byte_feeding() {
        let m = message(1000, 0x0123_4567);
        let mut wire = Vec::new();
        encode(6, &m, 128, &mut wire);
        let mut decoder = ChunkDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in wire {
            buf.extend_from_slice(&[b]);
            if let Some(msg) = decoder.decode(&mut buf).unwrap() {
                got = Some(msg);
            }
        }
        assert_eq!(got, Some(m));
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_messages_interleaved_across_chunk_streams() {
        let video = message(1000, 40);
        let audio = Message {
            type_id: 8,
            ..message(300, 41)
        };
        let (mut video_wire, mut audio_wire) = (Vec::new(), Vec::new());
        encode(6, &video, 128, &mut video_wire);
        encode(4, &audio, 128, &mut audio_wire);
        // Full header chunk first (12 + 128 bytes), then continuation chunks (1 + 128).
        let cut = |wire: &[u8]| -> Vec<Vec<u8>> {
            let mut chunks = vec![wire[..140.min(wire.len())].to_vec()];
            chunks.extend(
                wire.get(140..)
                    .unwrap_or_default()
                    .chunks(129)
                    .map(<[u8]>::to_vec),
            );
            chunks
        };
        let (video_chunks, audio_chunks) = (cut(&video_wire), cut(&audio_wire));
        let mut wire = Vec::new();
        for i in 0..video_chunks.len().max(audio_chunks.len()) {
            for chunks in [&video_chunks, &audio_chunks] {
                if let Some(chunk) = chunks.get(i) {
                    wire.extend_from_slice(chunk);
                }
            }
        }
        let mut decoder = ChunkDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let got: Vec<Message> = std::iter::from_fn(|| decoder.decode(&mut buf).unwrap()).collect();
        assert_eq!(got, vec![audio, video]);
        assert!(buf.is_empty());
    }

    #[test]
    fn applies_timestamp_deltas_of_compressed_headers() {
        // fmt 0 at t=1000, then fmt 2 with delta 40, then fmt 3 (reuses delta 40).
        let mut wire = vec![
            0x04, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x01, 0x08, 1, 0, 0, 0, 0xAA,
        ];
        wire.extend_from_slice(&[0x84, 0x00, 0x00, 0x28, 0xBB]);
        wire.extend_from_slice(&[0xC4, 0xCC]);
        let mut decoder = ChunkDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let stamps: Vec<u32> = std::iter::from_fn(|| decoder.decode(&mut buf).unwrap())
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(stamps, vec![1000, 1040, 1080]);
    }

    #[test]
    fn refuses_oversize_messages_and_headerless_chunks() {
        let mut decoder = ChunkDecoder::new(1000);
        let mut wire = Vec::new();
        encode(6, &message(2000, 0), 4096, &mut wire);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(RtmpError::MessageTooLarge { .. })
        ));
        let mut buf = BytesMut::from(&[0xC7u8, 1, 2, 3][..]);
        assert!(ChunkDecoder::new(1000).decode(&mut buf).is_err());
        assert!(ChunkDecoder::new(1000).set_chunk_size(0x7FFF_FFFF).is_err());
    }
}
