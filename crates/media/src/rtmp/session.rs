use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::amf0::{self, object, Amf0Value};
use super::chunk::{self, ChunkDecoder, Message};
use super::error::RtmpError;

const HANDSHAKE_SIZE: usize = 1536;
const OUR_CHUNK_SIZE: u32 = 4096;
const WINDOW_ACK_SIZE: u32 = 2_500_000;

const MSG_SET_CHUNK_SIZE: u8 = 1;
const MSG_ABORT: u8 = 2;
const MSG_ACK: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_SET_PEER_BANDWIDTH: u8 = 6;
const MSG_AUDIO: u8 = 8;
const MSG_VIDEO: u8 = 9;
const MSG_DATA_AMF3: u8 = 15;
const MSG_COMMAND_AMF3: u8 = 17;
const MSG_DATA_AMF0: u8 = 18;
const MSG_COMMAND_AMF0: u8 = 20;

const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_STREAM_STATUS: u8 = 5;

#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Largest message accepted; media frames above this end the session.
    pub max_message_len: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_message_len: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The `app` of `connect`: the part of the URL path before the stream name.
    pub app: String,
    /// The publishing name, including any `?query` (where stream keys travel).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The client asked to publish; answer with `accept_publish` or `reject_publish`.
    PublishRequested(PublishRequest),
    /// `onMetaData` properties from `@setDataFrame`.
    Metadata(Vec<(String, Amf0Value)>),
    Audio {
        timestamp: u32,
        data: Bytes,
    },
    Video {
        timestamp: u32,
        data: Bytes,
    },
    /// The client stopped publishing (FCUnpublish / deleteStream / closeStream).
    PublishFinished,
    /// A command we do not implement; it was answered with `_error`.
    UnknownCommand(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitingC0C1,
    AwaitingC2,
    Chunks,
}

#[derive(Debug)]
pub struct ServerSession {
    phase: Phase,
    input: BytesMut,
    decoder: ChunkDecoder,
    output: Vec<u8>,
    events: VecDeque<SessionEvent>,
    app: Option<String>,
    next_stream_id: u32,
    /// Message stream id and name of the publish awaiting an answer or in progress.
    publish: Option<(u32, String)>,
    publishing: bool,
    peer_window: Option<u32>,
    received: u64,
    /// Length of `input` when it was last processed: what lies beyond is new.
    processed_len: usize,
    acknowledged: u64,
    random_s1: [u8; HANDSHAKE_SIZE - 8],
    /// The client's `connect` said it handles Enhanced RTMP's reconnect request.
    reconnect_capable: bool,
}

/// Enhanced RTMP v2's `capsEx` bit for `NetConnection.Connect.ReconnectRequest`.
const CAPS_EX_RECONNECT: u32 = 0x01;

impl ServerSession {
    /// `random` fills the server's handshake packet; pass fresh random bytes.
    pub fn new(limits: SessionLimits, random: [u8; HANDSHAKE_SIZE - 8]) -> Self {
        Self {
            phase: Phase::AwaitingC0C1,
            input: BytesMut::new(),
            decoder: ChunkDecoder::new(limits.max_message_len),
            output: Vec::new(),
            events: VecDeque::new(),
            app: None,
            next_stream_id: 1,
            publish: None,
            publishing: false,
            peer_window: None,
            received: 0,
            processed_len: 0,
            acknowledged: 0,
            random_s1: random,
            reconnect_capable: false,
        }
    }

    /// Takes bytes read from the peer; see also [`ServerSession::input_buffer`].
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        self.input.extend_from_slice(data);
        self.handle_buffered_input()
    }

    /// The buffer to read the socket into, with room for at least `room` more bytes,
    /// so that bytes go from the socket to the chunk decoder without another copy.
    /// Only append to it; then call [`ServerSession::handle_buffered_input`].
    pub fn input_buffer(&mut self, room: usize) -> &mut BytesMut {
        self.input.reserve(room);
        &mut self.input
    }

    /// Processes the bytes appended to [`ServerSession::input_buffer`] since the last
    /// call.
    pub fn handle_buffered_input(&mut self) -> Result<(), RtmpError> {
        self.received += self.input.len().saturating_sub(self.processed_len) as u64;
        let result = self.process_input();
        self.processed_len = self.input.len();
        result
    }

    fn process_input(&mut self) -> Result<(), RtmpError> {
        loop {
            match self.phase {
                Phase::AwaitingC0C1 => {
                    if self.input.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    let version = self.input[0];
                    if version != 3 {
                        return Err(RtmpError::UnsupportedVersion(version));
                    }
                    let c1 = self.input[1..1 + HANDSHAKE_SIZE].to_vec();
                    self.input.advance(1 + HANDSHAKE_SIZE);
                    // Plain handshake: S1 carries no digest, S2 echoes C1. OBS and ffmpeg
                    // publishers accept it; the digest variant only matters to Flash.
                    self.output.push(3);
                    self.output.extend_from_slice(&[0; 8]);
                    self.output.extend_from_slice(&self.random_s1);
                    self.output.extend_from_slice(&c1);
                    self.phase = Phase::AwaitingC2;
                }
                Phase::AwaitingC2 => {
                    if self.input.len() < HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    self.input.advance(HANDSHAKE_SIZE);
                    self.phase = Phase::Chunks;
                }
                Phase::Chunks => {
                    while let Some(message) = self.decoder.decode(&mut self.input)? {
                        self.handle_message(message)?;
                    }
                    self.maybe_acknowledge();
                    return Ok(());
                }
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn accept_publish(&mut self) {
        let Some((stream_id, name)) = self.publish.clone() else {
            return;
        };
        self.publishing = true;
        let mut stream_begin = vec![0, 0];
        stream_begin.extend_from_slice(&stream_id.to_be_bytes());
        self.send(CSID_CONTROL, MSG_USER_CONTROL, 0, stream_begin);
        self.send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published."),
        );
    }

    /// Whether the client announced support for Enhanced RTMP's reconnect request
    /// (`capsEx` in `connect`).
    pub fn supports_reconnect_request(&self) -> bool {
        self.reconnect_capable
    }

    /// Asks the client to reconnect (Enhanced RTMP v2, `NetConnection onStatus` with
    /// `NetConnection.Connect.ReconnectRequest`), to the same `tcUrl`: a load balancer
    /// in front sends it to another server. The session keeps processing what the
    /// client sends until it disconnects. False (and nothing sent) if the client did
    /// not announce support.
    pub fn request_reconnect(&mut self, description: &str) -> bool {
        if !self.reconnect_capable {
            return false;
        }
        self.send_command(
            0,
            &[
                Amf0Value::String("onStatus".into()),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                object(&[
                    ("level", Amf0Value::String("status".into())),
                    (
                        "code",
                        Amf0Value::String("NetConnection.Connect.ReconnectRequest".into()),
                    ),
                    ("description", Amf0Value::String(description.into())),
                ]),
            ],
        );
        true
    }

    /// Refuses the pending publish with an `onStatus` error; the caller should then flush
    /// the output and close the connection.
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        let stream_id = self.publish.take().map_or(1, |(id, _)| id);
        self.send_status(stream_id, "error", code, description);
    }

    fn maybe_acknowledge(&mut self) {
        if let Some(window) = self.peer_window {
            if self.received - self.acknowledged >= u64::from(window) {
                self.acknowledged = self.received;
                let seq = (self.received & 0xFFFF_FFFF) as u32;
                self.send(CSID_CONTROL, MSG_ACK, 0, seq.to_be_bytes().to_vec());
            }
        }
    }

    fn handle_message(&mut self, message: Message) -> Result<(), RtmpError> {
        let payload = &message.payload;
        let u32_payload = || {
            (payload.len() >= 4)
                .then(|| u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]))
                .ok_or_else(|| RtmpError::Protocol("control message too short".into()))
        };
        match message.type_id {
            MSG_SET_CHUNK_SIZE => self.decoder.set_chunk_size(u32_payload()? & 0x7FFF_FFFF)?,
            MSG_ABORT => self.decoder.abort(u32_payload()?),
            MSG_WINDOW_ACK_SIZE => self.peer_window = Some(u32_payload()?.max(1)),
            MSG_ACK | MSG_USER_CONTROL | MSG_SET_PEER_BANDWIDTH => {}
            MSG_AUDIO | MSG_VIDEO => {
                // Media may follow `publish` in the same read, before the caller has
                // answered it: queue it behind the request; a refusal closes the
                // session and drops it.
                let ours = matches!(&self.publish, Some((id, _)) if *id == message.stream_id);
                if ours && !message.payload.is_empty() {
                    let (timestamp, data) = (message.timestamp, message.payload);
                    self.events.push_back(if message.type_id == MSG_AUDIO {
                        SessionEvent::Audio { timestamp, data }
                    } else {
                        SessionEvent::Video { timestamp, data }
                    });
                }
            }
            MSG_DATA_AMF0 => self.handle_data(payload)?,
            MSG_DATA_AMF3 if !payload.is_empty() => self.handle_data(&payload[1..])?,
            MSG_COMMAND_AMF0 => self.handle_command(message.stream_id, payload)?,
            MSG_COMMAND_AMF3 if !payload.is_empty() => {
                self.handle_command(message.stream_id, &payload[1..])?
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_data(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let values = amf0::decode_all(payload)?;
        let mut values = values.iter();
        let mut name = values.next().and_then(Amf0Value::as_str);
        if name == Some("@setDataFrame") {
            name = values.next().and_then(Amf0Value::as_str);
        }
        if name == Some("onMetaData") {
            if let Some(props) = values.next().and_then(Amf0Value::properties) {
                self.events
                    .push_back(SessionEvent::Metadata(props.to_vec()));
            }
        }
        Ok(())
    }

    fn handle_command(&mut self, stream_id: u32, payload: &[u8]) -> Result<(), RtmpError> {
        let values = amf0::decode_all(payload)?;
        let name = values
            .first()
            .and_then(Amf0Value::as_str)
            .ok_or_else(|| RtmpError::Protocol("command without a name".into()))?;
        let transaction = values.get(1).and_then(Amf0Value::as_number).unwrap_or(0.0);
        let arg = |i: usize| values.get(i).and_then(Amf0Value::as_str).map(str::to_owned);
        match name {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.property("app"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_owned();
                self.app = Some(app);
                let caps_ex = values
                    .get(2)
                    .and_then(|o| o.property("capsEx"))
                    .and_then(Amf0Value::as_number)
                    .filter(|n| n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX))
                    .map_or(0, |n| n as u32);
                self.reconnect_capable = caps_ex & CAPS_EX_RECONNECT != 0;
                self.send(
                    CSID_CONTROL,
                    MSG_WINDOW_ACK_SIZE,
                    0,
                    WINDOW_ACK_SIZE.to_be_bytes().to_vec(),
                );
                let mut bandwidth = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
                bandwidth.push(2);
                self.send(CSID_CONTROL, MSG_SET_PEER_BANDWIDTH, 0, bandwidth);
                self.send(
                    CSID_CONTROL,
                    MSG_SET_CHUNK_SIZE,
                    0,
                    OUR_CHUNK_SIZE.to_be_bytes().to_vec(),
                );
                self.send_command(
                    0,
                    &[
                        Amf0Value::String("_result".into()),
                        Amf0Value::Number(transaction),
                        object(&[
                            ("fmsVer", Amf0Value::String("FMS/3,0,1,123".into())),
                            ("capabilities", Amf0Value::Number(31.0)),
                            // What we support of what the client offered (E-RTMP v2).
                            (
                                "capsEx",
                                Amf0Value::Number(f64::from(caps_ex & CAPS_EX_RECONNECT)),
                            ),
                        ]),
                        object(&[
                            ("level", Amf0Value::String("status".into())),
                            (
                                "code",
                                Amf0Value::String("NetConnection.Connect.Success".into()),
                            ),
                            (
                                "description",
                                Amf0Value::String("Connection succeeded.".into()),
                            ),
                            ("objectEncoding", Amf0Value::Number(0.0)),
                        ]),
                    ],
                );
            }
            "releaseStream" | "FCPublish" => self.send_result(transaction, Amf0Value::Undefined),
            "createStream" => {
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.send_result(transaction, Amf0Value::Number(f64::from(id)));
            }
            "publish" => {
                let Some(app) = self.app.clone() else {
                    return Err(RtmpError::Protocol("publish before connect".into()));
                };
                if self.publish.is_some() {
                    return Err(RtmpError::Protocol(
                        "second publish on one connection".into(),
                    ));
                }
                let name = arg(3).unwrap_or_default();
                self.publish = Some((stream_id, name.clone()));
                self.events
                    .push_back(SessionEvent::PublishRequested(PublishRequest { app, name }));
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if self.publishing {
                    self.publishing = false;
                    self.events.push_back(SessionEvent::PublishFinished);
                }
                if name == "FCUnpublish" {
                    self.send_result(transaction, Amf0Value::Undefined);
                }
            }
            "_result" | "_error" | "onStatus" | "_checkbw" | "getStreamLength" => {}
            other => {
                if transaction != 0.0 {
                    self.send_command(
                        0,
                        &[
                            Amf0Value::String("_error".into()),
                            Amf0Value::Number(transaction),
                            Amf0Value::Null,
                            object(&[
                                ("level", Amf0Value::String("error".into())),
                                (
                                    "code",
                                    Amf0Value::String("NetConnection.Call.Failed".into()),
                                ),
                                (
                                    "description",
                                    Amf0Value::String(format!("unsupported command {other}")),
                                ),
                            ]),
                        ],
                    );
                }
                self.events
                    .push_back(SessionEvent::UnknownCommand(other.to_owned()));
            }
        }
        Ok(())
    }

    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            type_id,
            stream_id,
            timestamp: 0,
            payload: Bytes::from(payload),
        };
        let chunk_size = if type_id == MSG_SET_CHUNK_SIZE {
            128
        } else {
            OUR_CHUNK_SIZE
        };
        // Everything after our SetChunkSize is chunked at OUR_CHUNK_SIZE; before connect
        // nothing is sent, and SetChunkSize itself fits in one 128-byte chunk.
        chunk::encode(csid, &message, chunk_size, &mut self.output);
    }

    fn send_command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let mut payload = Vec::new();
        for v in values {
            amf0::encode(v, &mut payload);
        }
        let csid = if stream_id == 0 {
            CSID_COMMAND
        } else {
            CSID_STREAM_STATUS
        };
        self.send(csid, MSG_COMMAND_AMF0, stream_id, payload);
    }

    fn send_result(&mut self, transaction: f64, value: Amf0Value) {
        if transaction != 0.0 {
            self.send_command(
                0,
                &[
                    Amf0Value::String("_result".into()),
                    Amf0Value::Number(transaction),
                    Amf0Value::Null,
                    value,
                ],
            );
        }
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.send_command(
            stream_id,
            &[
                Amf0Value::String("onStatus".into()),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                object(&[
                    ("level", Amf0Value::String(level.into())),
                    ("code", Amf0Value::String(code.into())),
                    ("description", Amf0Value::String(description.into())),
                ]),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(values: &[Amf0Value], stream_id: u32) -> Vec<u8> {
        let mut payload = Vec::new();
        for v in values {
            amf0::encode(v, &mut payload);
        }
        let mut out = Vec::new();
        let message = Message {
            type_id: MSG_COMMAND_AMF0,
            stream_id,
            timestamp: 0,
            payload: payload.into(),
        };
        chunk::encode(3, &message, 128, &mut out);
        out
    }

    fn handshaken() -> ServerSession {
        let mut s = ServerSession::new(SessionLimits::default(), [7; HANDSHAKE_SIZE - 8]);
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[1u8; HANDSHAKE_SIZE]);
        s.handle_input(&c0c1).unwrap();
        let out = s.take_output();
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &[1u8; HANDSHAKE_SIZE][..]);
        s.handle_input(&[0u8; HANDSHAKE_SIZE]).unwrap();
        s
    }

    #[test]
    fn publish_flow_produces_request_then_media() {
        let mut s = handshaken();
        let s_ = |v: &str| Amf0Value::String(v.into());
        let mut wire = command(
            &[
                s_("connect"),
                Amf0Value::Number(1.0),
                object(&[("app", s_("demo"))]),
            ],
            0,
        );
        wire.extend(command(
            &[s_("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
            0,
        ));
        wire.extend(command(
            &[
                s_("publish"),
                Amf0Value::Number(3.0),
                Amf0Value::Null,
                s_("cam?key=k"),
                s_("live"),
            ],
            1,
        ));
        s.handle_input(&wire).unwrap();
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::PublishRequested(PublishRequest {
                app: "demo".into(),
                name: "cam?key=k".into()
            }))
        );
        s.accept_publish();
        let mut video = Vec::new();
        let message = Message {
            type_id: MSG_VIDEO,
            stream_id: 1,
            timestamp: 40,
            payload: Bytes::from_static(&[0x17, 1, 0, 0, 0]),
        };
        chunk::encode(6, &message, 128, &mut video);
        s.handle_input(&video).unwrap();
        assert!(matches!(
            s.poll_event(),
            Some(SessionEvent::Video { timestamp: 40, .. })
        ));
        let out = s.take_output();
        let needle = b"NetStream.Publish.Start";
        assert!(out.windows(needle.len()).any(|w| w == needle));
    }

    fn connected(properties: &[(&str, Amf0Value)]) -> ServerSession {
        let mut s = handshaken();
        let mut props = vec![("app", Amf0Value::String("demo".into()))];
        props.extend(properties.iter().cloned());
        s.handle_input(&command(
            &[
                Amf0Value::String("connect".into()),
                Amf0Value::Number(1.0),
                object(&props),
            ],
            0,
        ))
        .unwrap();
        s
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_reconnect_request_goes_only_to_clients_that_announced_support() {
        const CODE: &str = "NetConnection.Connect.ReconnectRequest";
        // capsEx with the reconnect bit (and others we do not do): asked, and the
        // connect answer says which of the offered capabilities we support.
        let mut s = connected(&[("capsEx", Amf0Value::Number(7.0))]);
        assert!(s.supports_reconnect_request());
        let answer = s.take_output();
        assert!(contains(&answer, "capsEx"));
        assert!(s.request_reconnect("the server is restarting"));
        let out = s.take_output();
        assert!(contains(&out, CODE) && contains(&out, "the server is restarting"));

        // Legacy clients, other bits only, and garbage are never asked.
        for caps in [
            None,
            Some(Amf0Value::Number(2.0)),
            Some(Amf0Value::Number(f64::NAN)),
            Some(Amf0Value::Number(-1.0)),
            Some(Amf0Value::Number(1e300)),
            Some(Amf0Value::String("1".into())),
        ] {
            let props: Vec<(&str, Amf0Value)> = caps.into_iter().map(|c| ("capsEx", c)).collect();
            let mut s = connected(&props);
            s.take_output();
            assert!(!s.supports_reconnect_request());
            assert!(!s.request_reconnect("bye"));
            assert!(!contains(&s.take_output(), CODE));
        }
    }

    #[test]
    fn reads_into_the_input_buffer_count_towards_acknowledgements() {
        let mut s = handshaken();
        let window = Message {
            type_id: MSG_WINDOW_ACK_SIZE,
            stream_id: 0,
            timestamp: 0,
            // Past the handshake and the first read, not past the second.
            payload: Bytes::from(4000u32.to_be_bytes().to_vec()),
        };
        let mut wire = Vec::new();
        chunk::encode(CSID_CONTROL, &window, 128, &mut wire);
        let unknown = Message {
            type_id: 30,
            stream_id: 0,
            timestamp: 0,
            payload: Bytes::from(vec![0; 1200]),
        };
        chunk::encode(4, &unknown, 128, &mut wire);
        // In two reads, as a socket would deliver them.
        let (first, second) = wire.split_at(500);
        for piece in [first, second] {
            s.input_buffer(64).extend_from_slice(piece);
            s.handle_buffered_input().unwrap();
        }
        let out = s.take_output();
        let received = (1 + 2 * HANDSHAKE_SIZE + wire.len()) as u32;
        // One acknowledgement, after the second read, of every byte received.
        let mut ack = Vec::new();
        let message = Message {
            type_id: MSG_ACK,
            stream_id: 0,
            timestamp: 0,
            payload: Bytes::from(received.to_be_bytes().to_vec()),
        };
        chunk::encode(CSID_CONTROL, &message, 128, &mut ack);
        assert_eq!(out, ack);
    }

    #[test]
    fn wrong_handshake_version_is_an_error() {
        let mut s = ServerSession::new(SessionLimits::default(), [0; HANDSHAKE_SIZE - 8]);
        let mut c0c1 = vec![6u8];
        c0c1.extend_from_slice(&[0u8; HANDSHAKE_SIZE]);
        assert_eq!(s.handle_input(&c0c1), Err(RtmpError::UnsupportedVersion(6)));
    }
}
