/// What reaches the WHIP and WHEP endpoints and the WebRTC port from the network: an SDP offer
/// (str0m's parser and the whole answer, as `POST .../whip` runs it) and UDP datagrams
/// (our demultiplexer's classification and str0m's STUN parse, as the server's socket
/// loop runs them). Nothing may panic; an answered offer has a track; a datagram we do
/// not classify is never parsed. Needs `Answerer`, `classify`, `parse`, `DatagramKind`
/// and `Demux` in scope.
pub fn check(data: &[u8]) {
    use std::sync::OnceLock;
    static ANSWERER: OnceLock<Answerer> = OnceLock::new();
    let answerer = ANSWERER.get_or_init(|| {
        Answerer::new(vec!["127.0.0.1:8189".parse().expect("an address")]).expect("an answerer")
    });
    let offer = String::from_utf8_lossy(data);
    if let Ok(tracks) = answerer.check(&offer) {
        assert!(tracks.video || tracks.audio_channels.is_some(), "{tracks:?}");
    }
    // The same offer as a viewer's (WHEP `POST`): answered in str0m's frame mode.
    if let Ok(tracks) = answerer.check_viewer(&offer) {
        assert!(tracks.video || tracks.audio_channels.is_some(), "{tracks:?}");
    }
    let kind = classify(data);
    let parsed = parse(data);
    if kind == DatagramKind::Other {
        assert!(parsed.is_none());
    }
    let mut demux: Demux<u8> = Demux::default();
    let source = "192.0.2.1:5000".parse().expect("an address");
    let routed = demux.route(source, [1u8, 2], |k| parsed.is_some() && usize::from(k) == data.len() % 3);
    assert_eq!(routed.is_some(), demux.len() == 1);
}
