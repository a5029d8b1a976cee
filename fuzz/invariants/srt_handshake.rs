/// What reaches the SRT listener from the network: datagrams, parsed by srt-protocol
/// (the handshake among them), and a caller's `streamid`, parsed by us. Neither may
/// panic; a stream id that parses names a provider and a stream that are non-empty
/// names without `/`. Needs `Packet` (srt-protocol) and `PublishRequest` in scope.
pub fn check(data: &[u8]) {
    for is_ipv6 in [false, true] {
        let _ = Packet::parse(&mut std::io::Cursor::new(data), is_ipv6);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(request) = PublishRequest::parse(Some(&text)) {
        for name in [&request.provider, &request.stream] {
            assert!(!name.is_empty() && !name.contains('/'), "{request:?}");
        }
    }
}
