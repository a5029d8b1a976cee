//! A real WebRTC viewer (str0m as a full ICE agent, as a browser is) plays from the
//! server over loopback UDP (WHEP's sending session): ICE, DTLS-SRTP, H.264 frames from
//! the first keyframe on and Opus, depacketized whole by the viewer; a keyframe request
//! (PLI) skips that viewer to the next keyframe; close ends the session.

use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use streamcdn_webrtc::{OutFrame, Track, WebRtcServer, WebRtcSettings};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What the viewer got: (video?, keyframe?, bytes) per depacketized frame.
type Got = (bool, bool, Vec<u8>);

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn video(n: u64, keyframe: bool, at: Instant) -> OutFrame {
    let mut data = Vec::new();
    if keyframe {
        for set in [SPS, PPS] {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(set);
        }
        data.extend_from_slice(&[0, 0, 0, 1, 0x65]);
    } else {
        data.extend_from_slice(&[0, 0, 0, 1, 0x41]);
    }
    // Two to three packets per frame; the frame's number in its bytes.
    data.extend(std::iter::repeat_n((n % 200) as u8 + 1, 2500));
    OutFrame {
        track: Track::Video,
        rtp_time: 900_000 + n * 3000,
        wallclock: at,
        keyframe,
        data: Bytes::from(data),
    }
}

#[tokio::test]
async fn a_viewer_gets_whole_frames_from_a_keyframe_and_a_pli_skips_to_the_next() {
    let settings = WebRtcSettings {
        candidates: vec!["127.0.0.1:0".parse().unwrap()],
        inactivity_timeout: Duration::from_secs(10),
        max_sessions: 10,
    };
    let server = WebRtcServer::bind("127.0.0.1:0".parse().unwrap(), settings)
        .await
        .unwrap();
    let handle = server.handle();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(server.serve(shutdown));

    // The viewer: offers to receive H.264 and Opus.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let video_mid: Mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let accepted = handle.accept_viewer(&offer.to_sdp_string()).await.unwrap();
    assert!(accepted.tracks.video && accepted.tracks.audio_channels.is_some());
    assert!(
        accepted.answer.contains("a=sendonly"),
        "{}",
        accepted.answer
    );
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&accepted.answer).unwrap(),
        )
        .unwrap();

    let (got_tx, mut got) = mpsc::unbounded_channel::<Got>();
    let (pli_tx, mut pli) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let timeout = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(Event::MediaData(data))) => {
                        let is_video = data.mid == video_mid;
                        let keyframe = data.data.windows(5).any(|w| w == [0, 0, 0, 1, 0x65]);
                        let _ = got_tx.send((is_video, keyframe, data.data.to_vec()));
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => return,
                }
            };
            if !rtc.is_alive() {
                return;
            }
            let input = tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents })
                }
                _ = tokio::time::sleep_until(timeout.into()) => Input::Timeout(Instant::now()),
                Some(()) = pli.recv() => {
                    if let Some(stream) = rtc.direct_api().stream_rx_by_mid(video_mid, None) {
                        stream.request_keyframe(KeyframeRequestKind::Pli);
                    }
                    Input::Timeout(Instant::now())
                }
            };
            if rtc.handle_input(input).is_err() {
                return;
            }
        }
    });

    let mut media = accepted.media;
    tokio::time::timeout(Duration::from_secs(10), media.connected())
        .await
        .expect("the viewer connects");
    // A delta frame first: not sent (nothing decodes before a keyframe).
    let start = Instant::now();
    media.send(video(0, false, start)).await.unwrap();
    for n in 1..=20u64 {
        media.send(video(n, n % 10 == 1, start)).await.unwrap();
        let audio = OutFrame {
            track: Track::Audio,
            rtp_time: n * 960,
            wallclock: start,
            keyframe: false,
            data: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
        };
        media.send(audio).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut frames = Vec::new();
    let mut audio = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.len() < 20 || audio < 20 {
        let Ok(Some((is_video, keyframe, data))) =
            tokio::time::timeout_at(deadline.into(), got.recv()).await
        else {
            panic!("{} frames, {audio} audio packets arrived", frames.len());
        };
        if is_video {
            frames.push((keyframe, data));
        } else {
            audio += 1;
        }
    }
    assert!(frames[0].0, "the first frame is the keyframe");
    assert!(
        frames[0].1.windows(SPS.len()).any(|w| w == SPS),
        "SPS with the keyframe"
    );
    assert!(frames.iter().all(|(_, d)| d.len() > 2500), "whole frames");
    // The counts reach the feeder about twice a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    while media.stats().dropped_frames == 0 {
        assert!(
            Instant::now() < deadline,
            "the delta before the keyframe is not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        media.stats().dropped_frames,
        1,
        "only the delta before the keyframe"
    );

    // The viewer asks for a keyframe: its deltas stop until the next one.
    pli_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while media.stats().plis == 0 {
        assert!(Instant::now() < deadline, "the PLI never arrived");
        media.send(video(99, false, start)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while got.try_recv().is_ok() {}
    for n in 21..=25u64 {
        media.send(video(n, false, start)).await.unwrap();
    }
    media.send(video(26, true, start)).await.unwrap();
    media.send(video(27, false, start)).await.unwrap();
    let mut after = Vec::new();
    while after.len() < 2 {
        let (is_video, keyframe, _) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        if is_video {
            after.push(keyframe);
        }
    }
    assert_eq!(after, vec![true, false], "skipped to the keyframe");

    assert!(handle.close(&accepted.id).await);
    let mut end = accepted.end;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), end.wait())
            .await
            .unwrap(),
        streamcdn_webrtc::EndReason::Deleted
    );
}
