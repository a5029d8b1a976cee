//! A real WebRTC peer (str0m as a full ICE agent, as a browser is) publishes H.264 and
//! Opus to the server over loopback UDP: ICE, DTLS-SRTP, RTP out as packets per track,
//! the PLI asked at session start reaches the publisher, and a session ends on close
//! and on inactivity with the reason.

use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use streamcdn_webrtc::{Accepted, EndReason, MediaEvent, Track, WebRtcServer, WebRtcSettings};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

struct Publisher {
    rtc: Rtc,
    video: Mid,
    audio: Mid,
    socket: UdpSocket,
}

async fn server(inactivity: Duration) -> (streamcdn_webrtc::WebRtcHandle, watch::Sender<bool>) {
    let settings = WebRtcSettings {
        candidates: vec!["127.0.0.1:0".parse().unwrap()],
        inactivity_timeout: inactivity,
        max_sessions: 10,
    };
    let server = WebRtcServer::bind("127.0.0.1:0".parse().unwrap(), settings)
        .await
        .unwrap();
    assert_eq!(
        server.handle().candidates()[0].port(),
        server.local_addr().port()
    );
    let (stop, shutdown) = watch::channel(false);
    let handle = server.handle();
    tokio::spawn(server.serve(shutdown));
    (handle, stop)
}

async fn publisher(handle: &streamcdn_webrtc::WebRtcHandle) -> (Publisher, Accepted) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let accepted = handle.accept(&offer.to_sdp_string()).await.unwrap();
    assert!(accepted.tracks.video);
    assert_eq!(accepted.tracks.audio_channels, Some(1));
    assert!(
        accepted.answer.contains("a=ice-lite"),
        "{}",
        accepted.answer
    );
    assert!(accepted.answer.contains("127.0.0.1"), "{}", accepted.answer);
    let answer = SdpAnswer::from_sdp_string(&accepted.answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
    (
        Publisher {
            rtc,
            video,
            audio,
            socket,
        },
        accepted,
    )
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Seen {
    connected: bool,
    keyframe_requests: usize,
}

/// Drives the publisher: frames every 20 ms once connected (while `send` says so);
/// reports what it saw on `seen`.
async fn drive(mut p: Publisher, send: watch::Receiver<bool>, seen: mpsc::UnboundedSender<Seen>) {
    let mut buf = vec![0u8; 2048];
    let mut next_frame = Instant::now();
    let mut frame = 0u32;
    let local = p.socket.local_addr().unwrap();
    let mut state = Seen::default();
    loop {
        let timeout = loop {
            match p.rtc.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = p.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => state.connected = true,
                Output::Event(Event::KeyframeRequest(_)) => state.keyframe_requests += 1,
                Output::Event(_) => {}
            }
        };
        let _ = seen.send(Seen {
            connected: state.connected,
            keyframe_requests: state.keyframe_requests,
        });
        if !p.rtc.is_alive() {
            return;
        }
        let wake = timeout.min(next_frame);
        let input = tokio::select! {
            r = p.socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents })
            }
            _ = tokio::time::sleep_until(wake.into()) => Input::Timeout(Instant::now()),
        };
        p.rtc.handle_input(input).unwrap();
        let now = Instant::now();
        if state.connected && *send.borrow() && now >= next_frame {
            next_frame = now + Duration::from_millis(20);
            frame += 1;
            write_frames(&mut p, frame, now);
        } else if now >= next_frame {
            next_frame = now + Duration::from_millis(20);
        }
    }
}

fn write_frames(p: &mut Publisher, frame: u32, now: Instant) {
    // An IDR every 25 frames, else a P slice: Annex B, as an encoder hands it over.
    let nal: &[u8] = if frame % 25 == 1 {
        &[
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1,
            0x65, 0x88, 0x84, 0x21,
        ]
    } else {
        &[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03]
    };
    let mut payload = nal.to_vec();
    payload.extend(std::iter::repeat_n(0x55u8, 1500));
    let video = p.rtc.writer(p.video).unwrap();
    let pt = video.payload_params().next().unwrap().pt();
    video
        .write(
            pt,
            now,
            MediaTime::new(u64::from(frame) * 1800, Frequency::NINETY_KHZ),
            payload,
        )
        .unwrap();
    let audio = p.rtc.writer(p.audio).unwrap();
    let pt = audio.payload_params().next().unwrap().pt();
    audio
        .write(
            pt,
            now,
            MediaTime::new(u64::from(frame) * 960, Frequency::FORTY_EIGHT_KHZ),
            vec![0xfc, 0xff, 0xfe],
        )
        .unwrap();
}

#[tokio::test]
async fn a_publisher_connects_its_media_arrives_and_delete_ends_it() {
    let (handle, _stop) = server(Duration::from_secs(10)).await;
    let (publisher, mut accepted) = publisher(&handle).await;
    let (_send_tx, send) = watch::channel(true);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(drive(publisher, send, seen_tx));

    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut video, mut audio, mut markers) = (0, 0, 0);
    while video < 100 || audio < 20 {
        assert!(
            Instant::now() < deadline,
            "media did not arrive: {video} video, {audio} audio packets"
        );
        match tokio::time::timeout(Duration::from_secs(10), accepted.media.next())
            .await
            .unwrap()
        {
            MediaEvent::Packet(p) => match p.track {
                Track::Video => {
                    video += 1;
                    markers += usize::from(p.marker);
                }
                Track::Audio => audio += 1,
            },
            MediaEvent::Ended(reason) => panic!("ended early: {reason}"),
        }
    }
    // Each 1.5 KB frame is two packets, the second with the marker.
    assert!(markers >= 40, "{markers} frames ended in {video} packets");
    // The PLI asked at session start reached the publisher.
    let mut requests = 0;
    while let Ok(s) = seen.try_recv() {
        requests = s.keyframe_requests;
    }
    assert!(requests >= 1, "no keyframe request reached the publisher");
    assert!(accepted.media.stats().plis >= 1);

    assert!(handle.close(&accepted.id).await);
    assert!(!handle.close(&accepted.id).await, "closed once");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), accepted.media.next())
            .await
            .unwrap()
        {
            MediaEvent::Packet(_) => {}
            MediaEvent::Ended(reason) => {
                assert_eq!(reason, EndReason::Deleted);
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_silent_publisher_ends_after_the_inactivity_timeout() {
    let (handle, _stop) = server(Duration::from_secs(1)).await;
    let (publisher, mut accepted) = publisher(&handle).await;
    let (send_tx, send) = watch::channel(true);
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    tokio::spawn(drive(publisher, send, seen_tx));
    // Media flows, then stops (the connection itself stays up: consent checks go on).
    match tokio::time::timeout(Duration::from_secs(10), accepted.media.next())
        .await
        .unwrap()
    {
        MediaEvent::Packet(_) => {}
        MediaEvent::Ended(reason) => panic!("ended early: {reason}"),
    }
    send_tx.send(false).unwrap();
    let stopped = Instant::now();
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(10), accepted.media.next())
            .await
            .unwrap()
        {
            MediaEvent::Packet(_) => {}
            MediaEvent::Ended(reason) => break reason,
        }
    };
    assert_eq!(reason, EndReason::Inactive);
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn offers_without_our_codecs_and_garbage_are_refused() {
    let (handle, _stop) = server(Duration::from_secs(10)).await;
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    assert!(handle.accept(&offer.to_sdp_string()).await.is_err());
    assert!(handle.accept("v=0\r\ngarbage").await.is_err());
}
